"""Content-true fingerprints of the forge's file inputs, with a stat shortcut that is safe.

A cache key must change whenever an input's *content* changes. Stat data alone (size,
mtime) misses edits that keep both (``cp -p``, ``git checkout`` of an equal-size file, tools
that reset mtimes), so every file is identified by the sha256 of its bytes. Hashing a
large tree on every ``plan()`` would be slow, so a digest is reused when, and only when,
the file's inode, size, mtime_ns and ctime_ns all equal those recorded when it was hashed.
``ctime`` cannot be set from user space: any write or ``utime`` moves it, so an edit that
restores size and mtime still misses the shortcut.

One race remains, the one git calls "racy": file systems store times with a coarse
granularity, so a file changed within the same clock tick as it was hashed can keep every
stat field. A digest is therefore only recorded as reusable when the file's ctime and
mtime are at least :data:`RACY_NS` older than the moment hashing began; a file touched
more recently is simply hashed again next time.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

from edgekit.fsutil import atomic_write_text

__all__ = ["RACY_NS", "DigestCache"]

#: Files changed less than this long before they were hashed get no reusable record (2 s
#: covers the coarsest common time stamps: FAT's 2 s, and ext4/XFS/tmpfs's clock ticks).
RACY_NS = 2_000_000_000


class DigestCache:
    """sha256 of files and trees, remembered by (inode, size, mtime_ns, ctime_ns).

    ``path`` (optional) persists the records as JSON so a new process reuses them; a
    missing or unreadable file just means everything is hashed once.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._records: dict[str, list[Any]] = {}
        self._dirty = False
        #: How many files were hashed (read) since creation: lets tests see the shortcut.
        self.hashed = 0
        if path is not None:
            try:
                data = json.loads(path.read_text())
                if isinstance(data, dict) and data.get("version") == 1:
                    self._records = dict(data.get("files", {}))
            except (OSError, ValueError):
                pass

    # --- one file -----------------------------------------------------------------------

    def file_digest(self, path: Path, st: os.stat_result | None = None) -> str:
        """``sha256:<hex>`` of a regular file's bytes (the stat shortcut when it is safe)."""
        st = st or path.stat()
        if not stat.S_ISREG(st.st_mode):  # a device or FIFO would be read forever
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        ident = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        key = str(path)
        with self._lock:
            rec = self._records.get(key)
        if rec is not None and rec[:4] == ident:
            return str(rec[4])
        began = time.time_ns()
        h = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        digest = f"sha256:{h.hexdigest()}"
        after = path.stat()
        with self._lock:
            self.hashed += 1
            stable = [after.st_ino, after.st_size, after.st_mtime_ns, after.st_ctime_ns] == ident
            settled = max(st.st_mtime_ns, st.st_ctime_ns) < began - RACY_NS
            if stable and settled:
                self._records[key] = [*ident, digest]
                self._dirty = True
            elif self._records.pop(key, None) is not None:
                self._dirty = True
        return digest

    # --- files and trees ------------------------------------------------------------------

    def fingerprint(self, path: Path) -> str:
        """A digest of a file or tree: names, types, modes, symlink targets and contents.

        A missing path has a fingerprint too, so a key still changes when it appears. The
        path itself is followed if it is a symlink (builders read through it); links inside
        a tree are fingerprinted as links.
        """
        try:
            st = path.stat()
        except FileNotFoundError:
            return "missing" if not path.is_symlink() else f"dangling\0{os.readlink(path)}"
        h = hashlib.sha256()
        if stat.S_ISDIR(st.st_mode):
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files + dirs):
                    p = Path(root, name)
                    h.update(f"{p.relative_to(path).as_posix()}\0{self._entry(p)}\n".encode())
        else:
            h.update(self._entry(path, st).encode())
        return h.hexdigest()

    def _entry(self, path: Path, st: os.stat_result | None = None) -> str:
        st = st or path.lstat()
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            return f"link\0{os.readlink(path)}"
        if stat.S_ISDIR(st.st_mode):
            return f"dir\0{mode:o}"
        if stat.S_ISREG(st.st_mode):
            return f"file\0{mode:o}\0{self.file_digest(path, st)}"
        return f"other\0{stat.S_IFMT(st.st_mode)}"

    def save(self) -> None:
        """Persist new records (if there is a path and anything changed)."""
        if self.path is None or not self._dirty:
            return
        with self._lock:
            text = json.dumps({"version": 1, "files": self._records}, sort_keys=True)
            self._dirty = False
        with contextlib.suppress(OSError):  # a cache: losing it only costs hashing again
            atomic_write_text(self.path, text)
