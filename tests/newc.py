"""A reader of gzip'd newc (cpio) archives for tests: parsed here, never by the code under
test or the device's own tools, so a test compares against an independent reading."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path


def newc_entries(path: Path) -> Iterator[tuple[str, int, bytes]]:
    """``(name, mode, body)`` of every member of the archive at ``path``, in order."""
    data = gzip.decompress(path.read_bytes())
    pos = 0
    while True:
        head = data[pos : pos + 110]
        assert head[:6] == b"070701", f"not newc at {pos}"
        mode = int(head[14:22], 16)
        size = int(head[54:62], 16)
        namesize = int(head[94:102], 16)
        name = data[pos + 110 : pos + 110 + namesize - 1].decode()
        pos = (pos + 110 + namesize + 3) & ~3
        if name == "TRAILER!!!":
            return
        yield name, mode, data[pos : pos + size]
        pos = (pos + size + 3) & ~3
