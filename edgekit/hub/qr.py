"""QR-code registration: a URL carrying a hub endpoint and a token, drawn in a terminal.

The URL's shape (edgekit's choice, close to Palette's ``registrationURL``, which is an https
URL of a registration page)::

    {endpoint}/edge/register#token={token}

for example ``https://hub.example.com/edge/register#token=ekt_AbC...``. The token is in
the URL's **fragment**: a browser or HTTP client never sends a fragment to a server, so
opening the URL does not put the token in access logs or proxies. A scanner (a phone, or a
device with a camera) recovers both parts with :func:`parse_registration_url`. The endpoint
may carry a path prefix (``https://example.com/hub``); it is kept.

Needs the ``segno`` package (the core's ``hub`` extra).
"""

from __future__ import annotations

from urllib.parse import parse_qs, quote, urlsplit

from edgekit.errors import RegistrationError
from edgekit.hub.security import Secret

__all__ = ["REGISTER_PATH", "parse_registration_url", "registration_url", "render_qr"]

#: The path appended to the endpoint.
REGISTER_PATH = "/edge/register"


def _endpoint(endpoint: str) -> str:
    endpoint = endpoint.strip().rstrip("/")
    if "://" not in endpoint:  # Palette writes endpoints without a scheme
        endpoint = "https://" + endpoint
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RegistrationError(f"endpoint {endpoint!r} is not an http(s) URL")
    if parts.query or parts.fragment:
        raise RegistrationError(f"endpoint {endpoint!r} must not have a query or fragment")
    return endpoint


def registration_url(endpoint: str, token: str | Secret) -> str:
    """The registration URL for ``token`` at ``endpoint`` (see the module docstring)."""
    secret = token.reveal() if isinstance(token, Secret) else token
    if not secret:
        raise RegistrationError("the registration token is empty")
    return f"{_endpoint(endpoint)}{REGISTER_PATH}#token={quote(secret, safe='')}"


def parse_registration_url(url: str) -> tuple[str, Secret]:
    """``(endpoint, token)`` from a URL made by :func:`registration_url`."""
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    if parts.scheme not in ("http", "https") or not path.endswith(REGISTER_PATH):
        raise RegistrationError(f"not an edgekit registration URL (no {REGISTER_PATH} path)")
    tokens = parse_qs(parts.fragment).get("token")
    if not tokens or not tokens[0]:
        raise RegistrationError("the registration URL carries no token")
    prefix = path[: -len(REGISTER_PATH)]
    return f"{parts.scheme}://{parts.netloc}{prefix}", Secret(tokens[0])


def render_qr(text: str, *, border: int = 2, dark_background: bool = True) -> str:
    """``text`` as a QR code drawn with Unicode half blocks (two module rows per line).

    With ``dark_background`` (most terminals) the glyphs draw the *light* modules, so the
    code reads dark-on-light on screen; pass False for a light terminal or for printing.
    Error correction M; a quiet zone of ``border`` modules (scanners read 2 on a screen).
    """
    import segno  # the hub extra; only QR rendering needs it

    qr = segno.make(text, error="m", micro=False, boost_error=False)
    rows = [list(row) for row in qr.matrix_iter(scale=1, border=border)]
    if len(rows) % 2:
        rows.append([0] * len(rows[0]))  # a light row: part of the quiet zone
    glyphs = {(0, 0): " ", (1, 0): "▀", (0, 1): "▄", (1, 1): "█"}
    lines = []
    for top, bottom in zip(rows[0::2], rows[1::2], strict=True):
        line = []
        for up, down in zip(top, bottom, strict=True):
            # matrix_iter yields True/1 for dark modules; draw what shows as ink.
            ink_up, ink_down = (not up, not down) if dark_background else (bool(up), bool(down))
            line.append(glyphs[(int(ink_up), int(ink_down))])
        lines.append("".join(line))
    return "\n".join(lines) + "\n"
