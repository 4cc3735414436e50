"""Small filesystem helpers: atomic writes and cheap change fingerprints."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "fingerprint", "sha256_file"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Like :func:`atomic_write_bytes`, for UTF-8 text."""
    atomic_write_bytes(path, text.encode())


def sha256_file(path: Path, blocksize: int = 1 << 20) -> str:
    """``sha256:<hex>`` of a file, read in blocks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(blocksize):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def fingerprint(path: Path) -> str:
    """A cheap fingerprint of a file or tree: names, sizes, modes and mtimes (like make).

    Used in cache keys: it changes whenever a file is edited, added, removed or renamed,
    without reading file contents. A missing path has a fingerprint too, so a key still
    changes when it appears.
    """
    h = hashlib.sha256()
    if not path.exists() and not path.is_symlink():
        return "missing"
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files + dirs):
                p = Path(root, name)
                st = p.lstat()
                rel = p.relative_to(path).as_posix()
                h.update(f"{rel}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    else:
        st = path.lstat()
        h.update(f"{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()
