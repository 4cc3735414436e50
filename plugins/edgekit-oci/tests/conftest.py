"""Fixtures for edgekit-oci tests: the real umoci and skopeo, run on what the tests build."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Unpack = Callable[[Path, str], Path]
Inspect = Callable[..., dict[str, Any]]


def _run(*args: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture
def umoci_unpack(tmp_path: Path) -> Unpack:
    """Unpack ``layout:tag`` with umoci (which checks every diff_id); returns the rootfs."""
    if shutil.which("umoci") is None:
        pytest.fail("umoci is required (apt-get install umoci)")
    counter = iter(range(1000))

    def unpack(layout: Path, tag: str) -> Path:
        bundle = tmp_path / f"bundle-{next(counter)}"
        _run("umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle))
        return bundle / "rootfs"

    return unpack


@pytest.fixture
def skopeo_inspect() -> Inspect:
    """``skopeo inspect [--raw] oci:layout:tag`` parsed as JSON."""

    def inspect(layout: Path, tag: str, *extra: str) -> dict[str, Any]:
        out = _run("skopeo", "inspect", *extra, f"oci:{layout}:{tag}")
        data = json.loads(out)
        assert isinstance(data, dict)
        return data

    return inspect


@pytest.fixture
def epoch(monkeypatch: pytest.MonkeyPatch) -> int:
    """SOURCE_DATE_EPOCH set for the test."""
    value = 1_700_000_000
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(value))
    return value


MakeTree = Callable[..., Path]


@pytest.fixture
def make_tree() -> MakeTree:
    """``make_tree(root, {rel: bytes}, mtime=None)``: create files, optionally set every mtime."""

    def write_tree(root: Path, files: dict[str, bytes], *, mtime: int | None = None) -> Path:
        for rel, data in files.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        if mtime is not None:
            for dirpath, dirnames, filenames in os.walk(root):
                for name in dirnames + filenames:
                    os.utime(Path(dirpath) / name, (mtime, mtime), follow_symlinks=False)
        return root

    return write_tree
