"""QR registration URLs: shape, round trip, and QR codes that a real decoder (zbarimg) reads."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from edgekit.errors import RegistrationError
from edgekit.hub.qr import parse_registration_url, registration_url, render_qr
from edgekit.hub.security import Secret

TOKEN = "ekt_Zm9vYmFy-_baz0123456789abcdefghijklmnopqrs"


def _zbarimg(image: Path) -> str:
    if shutil.which("zbarimg") is None:
        pytest.fail("zbarimg is required (apt-get install zbar-tools)")
    out = subprocess.run(
        ["zbarimg", "--quiet", "--raw", str(image)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.rstrip("\n")


def test_url_shape_keeps_the_token_in_the_fragment() -> None:
    url = registration_url("https://hub.example.com:8443/", TOKEN)
    assert url == f"https://hub.example.com:8443/edge/register#token={TOKEN}"
    assert registration_url("api.example.com", Secret("a b/c")) == (
        "https://api.example.com/edge/register#token=a%20b%2Fc"
    )


def test_url_round_trips() -> None:
    for endpoint in ("https://hub.example.com", "http://10.0.2.2:8080/prefix/hub"):
        parsed_endpoint, token = parse_registration_url(registration_url(endpoint, TOKEN))
        assert parsed_endpoint == endpoint
        assert token.reveal() == TOKEN
    endpoint, token = parse_registration_url(registration_url("h.example", "a b/c&d"))
    assert token.reveal() == "a b/c&d"


def test_bad_inputs() -> None:
    with pytest.raises(RegistrationError, match="token is empty"):
        registration_url("https://h", "")
    with pytest.raises(RegistrationError, match="not an http"):
        registration_url("ftp://h", TOKEN)
    with pytest.raises(RegistrationError, match="query or fragment"):
        registration_url("https://h/?a=1", TOKEN)
    with pytest.raises(RegistrationError, match="no /edge/register"):
        parse_registration_url("https://h/other#token=x")
    with pytest.raises(RegistrationError, match="carries no token"):
        parse_registration_url("https://h/edge/register")


def test_segno_png_decodes_to_the_url(tmp_path: Path) -> None:
    import segno

    url = registration_url("https://hub.example.com", TOKEN)
    png = tmp_path / "qr.png"
    segno.make(url, error="m", micro=False).save(str(png), scale=6, border=4)
    assert _zbarimg(png) == url


def _text_to_pgm(text: str, dest: Path, *, dark_background: bool, scale: int = 6) -> Path:
    """Turn half-block text back into pixels (as a screen shows it) and write a PGM."""
    top = {" ": 0, "▀": 1, "▄": 0, "█": 1}
    bottom = {" ": 0, "▀": 0, "▄": 1, "█": 1}
    rows: list[list[int]] = []
    for line in text.splitlines():
        rows.append([top[c] for c in line])
        rows.append([bottom[c] for c in line])
    # Ink is light on a dark terminal; a scanner sees the screen, so map ink to luminance.
    pixels: list[bytes] = []
    for row in rows:
        luminance = [(255 if ink else 0) if dark_background else (0 if ink else 255) for ink in row]
        pixels += [bytes(v for v in luminance for _ in range(scale))] * scale
    width = len(pixels[0])
    pad = 8 * scale
    background = 0 if dark_background else 255
    out = bytearray()
    blank = bytes([background]) * (width + 2 * pad)
    for _ in range(pad):
        out += blank
    for pixel_row in pixels:
        out += bytes([background]) * pad + pixel_row + bytes([background]) * pad
    for _ in range(pad):
        out += blank
    header = f"P5\n{width + 2 * pad} {len(pixels) + 2 * pad}\n255\n".encode()
    dest.write_bytes(header + bytes(out))
    return dest


@pytest.mark.parametrize("dark_background", [True, False])
def test_terminal_rendering_decodes_to_the_url(tmp_path: Path, dark_background: bool) -> None:
    url = registration_url("https://hub.example.com", TOKEN)
    text = render_qr(url, dark_background=dark_background)
    assert set(text) <= {" ", "▀", "▄", "█", "\n"}
    assert len({len(line) for line in text.splitlines()}) == 1  # a rectangle
    # The screen as a scanner sees it, terminal background around it.
    screen = _text_to_pgm(text, tmp_path / "screen.pgm", dark_background=dark_background)
    assert _zbarimg(screen) == url
