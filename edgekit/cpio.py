"""A reproducible writer for ``newc`` cpio archives (the Linux initramfs format).

Output is deterministic: entries are sorted by path, missing parent directories are added,
owners are root, every timestamp is one fixed ``mtime`` (``SOURCE_DATE_EPOCH`` or 0) and
inode numbers are assigned in order. File contents are streamed from disk in chunks, so an
archive may hold files larger than memory.

The kernel unpacks several archives concatenated one after the other (later entries win),
which is how the installer adds files to a base initrd without rebuilding it.
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal

from edgekit.errors import BuildError

__all__ = [
    "CpioEntry",
    "EntryKind",
    "append_to_initrd",
    "default_mtime",
    "newc_from_tree",
    "write_initrd_gz",
    "write_newc",
]

EntryKind = Literal["file", "dir", "symlink", "chardev", "blockdev"]

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"
_CHUNK = 1 << 20
_TYPE_BITS: dict[str, int] = {
    "file": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "chardev": stat.S_IFCHR,
    "blockdev": stat.S_IFBLK,
}


def _normalise(path: str) -> str:
    """``/bin/sh``, ``./bin/sh`` and ``bin/sh`` all name the archive member ``bin/sh``."""
    parts = [p for p in PurePosixPath(path).parts if p not in ("/", ".")]
    if not parts or any(p == ".." for p in parts):
        raise BuildError(f"cpio entry path {path!r} is empty or leaves the archive root")
    return "/".join(parts)


@dataclass(frozen=True)
class CpioEntry:
    """One archive member; build it with :meth:`file`, :meth:`dir`, :meth:`symlink` or
    :meth:`device` rather than the constructor."""

    #: Path inside the archive, relative, ``/``-separated (``bin/busybox``).
    path: str
    kind: EntryKind
    #: Permission bits only (``0o755``); the type bits come from :attr:`kind`.
    mode: int
    #: Contents of a file: bytes, or a path read (streamed) when the archive is written.
    data: bytes | Path | None = None
    #: Target of a symlink.
    target: str | None = None
    #: Major and minor numbers of a device node.
    rdev: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", _normalise(self.path))
        if self.kind not in _TYPE_BITS:
            raise BuildError(f"cpio entry {self.path!r}: unknown kind {self.kind!r}")
        if self.mode & ~0o7777:
            raise BuildError(
                f"cpio entry {self.path!r}: mode {self.mode:#o} must hold permission bits only"
            )
        if self.kind == "symlink" and not self.target:
            raise BuildError(f"cpio entry {self.path!r}: a symlink needs a target")

    @classmethod
    def file(cls, path: str, data: bytes | Path, mode: int = 0o644) -> CpioEntry:
        """A regular file with ``data`` (bytes, or a file streamed at write time)."""
        return cls(path, "file", mode, data=data)

    @classmethod
    def dir(cls, path: str, mode: int = 0o755) -> CpioEntry:
        """A directory."""
        return cls(path, "dir", mode)

    @classmethod
    def symlink(cls, path: str, target: str) -> CpioEntry:
        """A symbolic link to ``target`` (stored verbatim)."""
        return cls(path, "symlink", 0o777, target=target)

    @classmethod
    def device(
        cls,
        path: str,
        major: int,
        minor: int,
        mode: int = 0o600,
        *,
        kind: Literal["chardev", "blockdev"] = "chardev",
    ) -> CpioEntry:
        """A character (default) or block device node."""
        return cls(path, kind, mode, rdev=(major, minor))


def default_mtime() -> int:
    """The timestamp written on every member: ``$SOURCE_DATE_EPOCH``, or 0 when unset."""
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise BuildError(f"SOURCE_DATE_EPOCH must be an integer, not {raw!r}") from None
    if value < 0 or value > 0xFFFFFFFF:
        raise BuildError(f"SOURCE_DATE_EPOCH {value} does not fit a cpio timestamp")
    return value


def _header(
    *,
    ino: int,
    mode: int,
    nlink: int,
    mtime: int,
    size: int,
    rdev: tuple[int, int],
    name: bytes,
) -> bytes:
    fields = (ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
    head = _MAGIC + b"".join(b"%08X" % f for f in fields) + name + b"\0"
    return head + _pad(len(head))


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _with_parents(entries: Iterable[CpioEntry]) -> list[CpioEntry]:
    by_path: dict[str, CpioEntry] = {}
    for entry in entries:
        if entry.path in by_path:
            raise BuildError(f"cpio archive lists {entry.path!r} twice")
        by_path[entry.path] = entry
    for path in list(by_path):
        parent = PurePosixPath(path).parent
        while str(parent) != ".":
            existing = by_path.get(str(parent))
            if existing is None:
                by_path[str(parent)] = CpioEntry.dir(str(parent))
            elif existing.kind != "dir":
                raise BuildError(f"cpio entry {path!r} lies under {str(parent)!r}, not a directory")
            parent = parent.parent
    # Sorting by components puts every directory before its contents.
    return sorted(by_path.values(), key=lambda e: PurePosixPath(e.path).parts)


def write_newc(entries: Iterable[CpioEntry], fileobj: BinaryIO, *, mtime: int | None = None) -> int:
    """Write ``entries`` as one newc archive ending in ``TRAILER!!!``; return bytes written.

    Missing parent directories are added (mode 0755); a path listed twice raises
    :class:`~edgekit.errors.BuildError`. Files given as paths are streamed.
    """
    when = default_mtime() if mtime is None else mtime
    written = 0
    for ino, entry in enumerate(_with_parents(entries), start=1):
        written += _write_entry(fileobj, entry, ino=ino, mtime=when)
    trailer = _header(ino=0, mode=0, nlink=1, mtime=0, size=0, rdev=(0, 0), name=_TRAILER.encode())
    fileobj.write(trailer)
    return written + len(trailer)


def _write_entry(out: BinaryIO, entry: CpioEntry, *, ino: int, mtime: int) -> int:
    mode = _TYPE_BITS[entry.kind] | entry.mode
    name = entry.path.encode()
    nlink = 2 if entry.kind == "dir" else 1
    body: bytes | None = None
    size = 0
    if entry.kind == "symlink":
        assert entry.target is not None  # checked in __post_init__
        body = entry.target.encode()
        size = len(body)
    elif entry.kind == "file":
        if isinstance(entry.data, Path):
            try:
                size = entry.data.stat().st_size
            except OSError as exc:
                raise BuildError(f"cannot read {entry.data} for {entry.path!r}: {exc}") from exc
        else:
            body = entry.data or b""
            size = len(body)
    head = _header(
        ino=ino, mode=mode, nlink=nlink, mtime=mtime, size=size, rdev=entry.rdev, name=name
    )
    out.write(head)
    if body is not None:
        out.write(body)
    elif isinstance(entry.data, Path):
        _stream(entry.data, out, size, entry.path)
    out.write(_pad(size))
    return len(head) + size + len(_pad(size))


def _stream(source: Path, out: BinaryIO, size: int, member: str) -> None:
    copied = 0
    try:
        with source.open("rb") as src:
            while copied < size:
                chunk = src.read(min(_CHUNK, size - copied))
                if not chunk:
                    break
                out.write(chunk)
                copied += len(chunk)
            grew = bool(src.read(1))
    except OSError as exc:
        raise BuildError(f"cannot read {source} for {member!r}: {exc}") from exc
    if copied != size or grew:
        # The header already promised ``size`` bytes; a shorter or longer body corrupts it.
        raise BuildError(f"{source} changed size while being archived as {member!r}")


def newc_from_tree(root_dir: Path) -> Iterator[CpioEntry]:
    """Entries for everything under ``root_dir`` (not the root itself), in sorted order.

    Owners are dropped (everything becomes root's); hard links become separate files.
    FIFOs and sockets raise :class:`~edgekit.errors.BuildError`.
    """
    root = Path(root_dir)
    if not root.is_dir():
        raise BuildError(f"{root} is not a directory to archive")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted([*dirnames, *filenames]):
            full = base / name
            rel = full.relative_to(root).as_posix()
            st = full.lstat()
            perm = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                yield CpioEntry.dir(rel, perm)
            elif stat.S_ISLNK(st.st_mode):
                yield CpioEntry.symlink(rel, os.readlink(full))
            elif stat.S_ISREG(st.st_mode):
                yield CpioEntry.file(rel, full, perm)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                kind: Literal["chardev", "blockdev"] = (
                    "chardev" if stat.S_ISCHR(st.st_mode) else "blockdev"
                )
                yield CpioEntry.device(
                    rel, os.major(st.st_rdev), os.minor(st.st_rdev), perm, kind=kind
                )
            else:
                raise BuildError(f"{full} is a FIFO or socket, which an initrd cannot hold")


def write_initrd_gz(entries: Iterable[CpioEntry], path: Path, *, mtime: int | None = None) -> Path:
    """Write ``entries`` as a gzip-compressed newc archive at ``path``, atomically.

    The gzip header carries no name and a zero timestamp, so equal inputs give equal bytes.
    """
    dest = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
                write_newc(entries, gz, mtime=mtime)  # type: ignore[arg-type]
            raw.flush()
            os.fsync(raw.fileno())
        tmp.chmod(0o644)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def append_to_initrd(
    base: Path, entries: Iterable[CpioEntry], dest: Path, *, mtime: int | None = None
) -> Path:
    """Write ``dest`` = ``base`` (any initrd) + an uncompressed newc archive of ``entries``.

    The kernel unpacks concatenated archives in order, later files replacing earlier ones.
    It only recognises an uncompressed archive that starts on a 4-byte boundary, so zeros
    are added after ``base`` when needed. Written atomically; ``dest`` may equal ``base``.
    """
    target = Path(dest)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with Path(base).open("rb") as src:
                    shutil.copyfileobj(src, out, _CHUNK)
            except OSError as exc:
                raise BuildError(f"cannot read base initrd {base}: {exc}") from exc
            out.write(_pad(out.tell()))
            write_newc(entries, out, mtime=mtime)
            out.flush()
            os.fsync(out.fileno())
        tmp.chmod(0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
