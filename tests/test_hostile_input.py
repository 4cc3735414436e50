"""Hostile input through `edgekit validate`: exit 2, no traceback, a path, no secret printed.

The corpus is tests/hostile/ (index.yaml maps each document to a fragment of its error);
cases that need special files (FIFOs, devices, symlinks, sockets, huge or binary files) are
made here. Each case runs in-process through click's runner, plain and with --json.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from ruamel.yaml import YAML

from edgekit import limits
from edgekit.cli import cli
from edgekit.errors import ConfigError

HOSTILE = Path(__file__).resolve().parent / "hostile"
INDEX: dict[str, str] = dict(YAML(typ="safe").load((HOSTILE / "index.yaml").read_text()))
SECRETS = ("867530912345678901", "8675.30912345", "S3CRET-hostile-0123456789")
# A problem line: a JSON path ($, $.a[0]) or a file:line (inventory.csv:3).
PATH_ADDRESSED = re.compile(r"(^|\s)(\$[.\[:]|\$:|\S+\.csv:\d+:)", re.M)


def _validate(path: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["validate", str(path), *extra])
    out = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exception is None or isinstance(result.exception, SystemExit), out
    return result.exit_code, out


def _check(path: Path, fragment: str) -> None:
    for extra in ((), ("--json",)):
        code, out = _validate(path, *extra)
        assert code == 2, out
        assert "Traceback" not in out, out
        assert fragment in out if not extra else fragment in _json_messages(out), out
        assert PATH_ADDRESSED.search(out) or '"path": "$' in out, out
        for secret in SECRETS:
            assert secret not in out, out


def _json_messages(out: str) -> str:
    doc = json.loads(out)
    assert doc["ok"] is False
    return " ".join(f"{p['path']}: {p['message']}" for p in doc["problems"])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory holding the corpus, the files it references, and a k8s source."""
    shutil.copytree(HOSTILE, tmp_path, dirs_exist_ok=True)
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "k3s").write_text("placeholder")
    (tmp_path / "overlay.txt").write_text("hello")
    return tmp_path


def test_index_lists_every_document() -> None:
    docs = {p.name for p in HOSTILE.iterdir() if p.is_file() and p.name != "index.yaml"}
    assert sorted(docs) == sorted(INDEX)


@pytest.mark.parametrize("name", sorted(INDEX))
def test_corpus(project: Path, name: str) -> None:
    _check(project / name, INDEX[name])


# --- cases made at run time ---------------------------------------------------------------

BASE = (
    (HOSTILE / "k8s-without-source.yaml")
    .read_text()
    .replace('version: "1.30.4"}', 'version: "1.30.4", source: {path: ./k8s}}', 1)
)


def _fifo(p: Path) -> None:
    os.mkfifo(p / "sites.csv")


def _socket(p: Path) -> None:
    (p / "tree").mkdir()
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(p / "tree" / "sock"))
    s.close()


def _outside_link(p: Path) -> None:
    (p / "tree").mkdir()
    (p / "tree" / "passwd").symlink_to("/etc/passwd")


def _root_link(p: Path) -> None:
    (p / "tree").symlink_to("/etc")


def _dir_as_file(p: Path) -> None:
    (p / "sites.csv").mkdir()


def _binary(p: Path) -> None:
    (p / "sites.csv").write_bytes(b"name\n\xff\xfe\n")


MADE: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "fifo-inventory": (_fifo, "siteInventory: ./sites.csv\n", "a FIFO (named pipe)"),
    "directory-inventory": (_dir_as_file, "siteInventory: ./sites.csv\n", "is a directory"),
    "binary-inventory": (_binary, "siteInventory: ./sites.csv\n", "not UTF-8 text"),
    "socket-in-overlay": (
        _socket,
        "    overlays: [{source: ./tree, target: /etc}]\n",
        "is a socket",
    ),
    "symlink-in-overlay": (
        _outside_link,
        "    overlays: [{source: ./tree, target: /etc}]\n",
        "is a symlink to /etc/passwd, outside",
    ),
    "overlay-is-symlink-out": (
        _root_link,
        "    overlays: [{source: ./tree, target: /etc}]\n",
        "is a symlink to /etc, outside",
    ),
}


@pytest.mark.parametrize("name", sorted(MADE))
def test_made_cases(tmp_path: Path, name: str) -> None:
    make, extra, fragment = MADE[name]
    (tmp_path / "k8s").mkdir()
    make(tmp_path)
    (tmp_path / "edgeforge.yaml").write_text(BASE + extra)
    started = time.monotonic()
    _check(tmp_path / "edgeforge.yaml", fragment)
    assert time.monotonic() - started < 30  # a FIFO is never opened, /dev/zero never read


def test_the_forge_file_itself_may_not_be_a_device_or_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "edgeforge.yaml")
    _check(tmp_path / "edgeforge.yaml", "a FIFO (named pipe), not a regular file")
    _check(Path("/dev/zero"), "a device, not a regular file")


def test_documents_past_the_size_limits(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("name: x\n# " + "x" * limits.MAX_YAML_BYTES + "\n")
    _check(big, "more than the limit of 2,097,152 bytes for YAML")
    huge = tmp_path / "huge.json"
    huge.write_text('{"name": "' + "x" * limits.MAX_DOCUMENT_BYTES + '"}')
    _check(huge, "more than the limit of 10,485,760 bytes")


def test_sixty_kilobytes_of_nested_json(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 30_000 + "]" * 30_000)
    _check(deep, "nested more than 64 levels deep")
    with pytest.raises(ConfigError, match="nested more than 64"):
        limits.loads_json(b"{" + b'"a":{' * 30_000 + b"}" * 30_001)


def test_external_paths_are_allowed_when_the_file_opts_in(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "motd").write_text("hi")
    proj = tmp_path / "proj"
    (proj / "k8s").mkdir(parents=True)
    text = BASE + f"    overlays: [{{source: {outside / 'motd'}, target: /etc/motd}}]\n"
    (proj / "edgeforge.yaml").write_text(text)
    _check(proj / "edgeforge.yaml", "is an absolute path")
    (proj / "edgeforge.yaml").write_text(text + "allowExternalPaths: true\n")
    code, out = _validate(proj / "edgeforge.yaml")
    assert code == 0, out
