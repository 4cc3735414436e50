"""Content digests of host files for layer cache keys, with a stat shortcut that is safe.

A layer's cache key holds the sha256 of every host file's content, so a change that keeps
size and mtime (``cp -p``, tools that reset mtimes, ``git checkout`` of equal-size files)
is a miss. Hashing a large tree on every build would be slow, so a digest computed earlier
is reused when the file's device, inode, size, ``mtime_ns`` and ``ctime_ns`` all match the
ones recorded with it. ctime cannot be set back by tools (only the kernel sets it, to "now",
on every change, including ``utime``), so a match means no change since then.

One subtlety: file timestamps come from a coarse clock, so a change made within the same
tick as the recording could keep the same ctime. A digest is therefore recorded only for
files whose ctime was already ``_SETTLED_NS`` older than the moment hashing began; files
changed more recently are hashed again on every build until they settle (as git does with
"racily clean" index entries).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs

from edgekit.errors import BuildError

__all__ = ["DigestStore", "FileDigest", "FileToHash", "hash_file", "open_regular"]

#: How long after its last change a file's stat data may vouch for its digest. Covers
#: coarse kernel clocks (a few ms) and filesystems with 1-2 s timestamps.
_SETTLED_NS = 3 * 10**9
_READ = 1 << 20
_FORMAT = 1


@attrs.frozen(slots=True)
class FileToHash:
    """A host file whose digest the cache key needs, with the stat the walk saw."""

    path: str
    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int
    follow: bool = False

    def stat_key(self) -> list[int]:
        return [self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns]


@attrs.frozen(slots=True)
class FileDigest:
    """A file's sha256 (hex); ``settled`` when its stat data can vouch for it later."""

    hexdigest: str
    settled: bool


def open_regular(path: str, follow: bool) -> int:
    """A read-only fd on ``path``, which must be a regular file (never a FIFO that blocks)."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
    if not follow:
        flags |= os.O_NOFOLLOW  # a file swapped for a symlink after the walk is not followed
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise BuildError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BuildError(f"{path} stopped being a regular file while the layer was built")
    return fd


def hash_file(f: FileToHash, started_ns: int) -> FileDigest:
    """sha256 of ``f``'s content; settled if it did not change since ``started_ns - 3 s``."""
    fd = open_regular(f.path, f.follow)
    try:
        before = os.fstat(fd)
        h = hashlib.sha256()
        while chunk := os.read(fd, _READ):
            h.update(chunk)
        after = os.fstat(fd)
    except OSError as exc:
        raise BuildError(f"cannot read {f.path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    same = [after.st_dev, after.st_ino, after.st_size, after.st_mtime_ns, after.st_ctime_ns]
    settled = (
        same == f.stat_key()
        and before.st_ctime_ns == after.st_ctime_ns
        and after.st_ctime_ns < started_ns - _SETTLED_NS
    )
    return FileDigest(h.hexdigest(), settled)


class DigestStore:
    """Recorded digests under ``directory`` (one JSON file per group of sources), or none."""

    def __init__(self, directory: Path | None) -> None:
        self._dir = directory

    def _shard(self, group: str) -> Path | None:
        if self._dir is None:
            return None
        return self._dir / (hashlib.sha256(group.encode()).hexdigest()[:32] + ".json")

    def _load(self, shard: Path | None) -> dict[str, list[object]]:
        if shard is None:
            return {}
        try:
            data = json.loads(shard.read_bytes())
            files = data["files"] if data.get("format") == _FORMAT else {}
            return files if isinstance(files, dict) else {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}  # missing or damaged: everything is hashed again and rewritten

    def digests(self, group: str, files: Sequence[FileToHash], *, workers: int) -> list[FileDigest]:
        """The digest of every file in ``files``, in order, hashing those not vouched for.

        ``group`` names the set of sources (e.g. a layer's source roots); its record then
        holds exactly these files, so deleted files do not accumulate.
        """
        shard = self._shard(group)
        recorded = self._load(shard)
        out: list[FileDigest | None] = []
        todo: list[int] = []
        for i, f in enumerate(files):
            row = recorded.get(os.path.abspath(f.path))
            if isinstance(row, list) and len(row) == 6 and row[:5] == f.stat_key():
                out.append(FileDigest(str(row[5]), True))
            else:
                out.append(None)
                todo.append(i)
        if todo:
            started = time.time_ns()
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgekit-hash") as pool:
                hashed = list(pool.map(lambda i: hash_file(files[i], started), todo))
            for i, d in zip(todo, hashed, strict=True):
                out[i] = d
        result = [d for d in out if d is not None]
        if shard is not None:
            rows = {
                os.path.abspath(f.path): [*f.stat_key(), d.hexdigest]
                for f, d in zip(files, result, strict=True)
                if d.settled
            }
            if todo or rows.keys() != recorded.keys():
                self._save(shard, rows)
        return result

    def _save(self, shard: Path, rows: dict[str, list[object]]) -> None:
        # Best effort: a record that cannot be written only means hashing again next time.
        with contextlib.suppress(OSError):
            shard.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=shard.parent)
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump({"format": _FORMAT, "files": rows}, f, separators=(",", ":"))
                os.replace(tmp, shard)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
