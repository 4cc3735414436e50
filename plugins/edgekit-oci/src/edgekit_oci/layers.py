"""Layers: reproducible tar streams, compressed and hashed in one streaming pass.

A layer is described by entries (a host tree, a file, inline content, a symlink, a
directory, whiteouts). Building walks the entries' metadata once (never following
symlinks inside a tree), sorts the members, then streams: tar bytes -> sha256 (diff_id) ->
compressor -> sha256 (digest) -> blob file, in 1 MiB chunks with a bounded number in
flight, so memory does not grow with the tree. gzip is compressed pigz-style on a thread
pool (zlib releases the GIL); zstd in one worker thread.

Reproducibility: members sorted by path; every mtime is SOURCE_DATE_EPOCH (else 0); uid and
gid 0 with empty user and group names; PAX format (POSIX; extended headers only where ustar
fields cannot hold a value, e.g. long names, and those headers carry no time or pid);
gzip header with mtime 0, no file name, OS 255, and chunk boundaries fixed at 1 MiB of
tar; zstd frames without content size.
"""

from __future__ import annotations

import hashlib
import os
import queue
import stat
import struct
import tarfile
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Literal, Protocol

import attrs
import zstandard

from edgekit.errors import BuildError

from .cache import LayerCache
from .layout import Descriptor, OCILayout, canonical_json
from .progress import LayerDone, LayerProgress, LayerStarted, ProgressCallback

__all__ = [
    "MEDIA_LAYER_GZIP",
    "MEDIA_LAYER_TAR",
    "MEDIA_LAYER_ZSTD",
    "Compression",
    "ContentEntry",
    "DirEntry",
    "FileEntry",
    "LayerEntry",
    "LayerResult",
    "LayerSpec",
    "OpaqueWhiteoutEntry",
    "SymlinkEntry",
    "TreeEntry",
    "WhiteoutEntry",
    "build_layer",
    "image_path",
    "resolve_source_date_epoch",
]

MEDIA_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

Compression = Literal["gzip", "zstd"]
_MEDIA = {"gzip": MEDIA_LAYER_GZIP, "zstd": MEDIA_LAYER_ZSTD}
_DEFAULT_LEVEL = {"gzip": 6, "zstd": 3}
_LEVELS = {"gzip": range(10), "zstd": range(-7, 23)}

_CHUNK = 1 << 20
_QUEUE_DEPTH = 8  # chunks in flight between the tar producer and the compressor
_PROGRESS_EVERY = 8 << 20
_WH = ".wh."
_OPAQUE = ".wh..wh..opq"
#: Bumped when the tar encoding changes, so old cache entries stop matching.
_FORMAT_VERSION = "edgekit-layer-v2"


# -- entries -------------------------------------------------------------------------------


def image_path(path: str) -> str:
    """Normalise a path in the image to a relative tar name; reject escapes.

    ``/usr/bin/k3s`` and ``usr/bin/k3s`` both mean the same place under the image root;
    a ``..`` component, a NUL byte, or a path that names nothing raises BuildError.
    """
    if "\x00" in path:
        raise BuildError(f"image path {path!r} contains a NUL byte")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BuildError(f"image path {path!r} escapes the image root ('..' component)")
    return "/".join(parts)


def _target_validator(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    image_path(value)


@attrs.frozen
class TreeEntry:
    """The contents of host directory ``source`` placed at ``target`` in the image.

    Symlinks inside the tree are stored as symlinks and never followed.
    """

    source: Path = attrs.field(converter=Path)
    target: str = attrs.field(validator=_target_validator)


@attrs.frozen
class FileEntry:
    """One host file copied to ``target``; ``mode`` overrides the file's permission bits."""

    source: Path = attrs.field(converter=Path)
    target: str = attrs.field(validator=_target_validator)
    mode: int | None = None


@attrs.frozen
class ContentEntry:
    """A file with inline ``content`` (rendered configuration, small scripts)."""

    content: bytes
    target: str = attrs.field(validator=_target_validator)
    mode: int = 0o644


@attrs.frozen
class SymlinkEntry:
    """A symlink at ``target`` pointing to ``link`` (stored verbatim, never resolved)."""

    target: str = attrs.field(validator=_target_validator)
    link: str


@attrs.frozen
class DirEntry:
    """A directory at ``target``."""

    target: str = attrs.field(validator=_target_validator)
    mode: int = 0o755


@attrs.frozen
class WhiteoutEntry:
    """Removes ``target`` (file or directory) of the layers below (``.wh.<name>``)."""

    target: str = attrs.field(validator=_target_validator)


@attrs.frozen
class OpaqueWhiteoutEntry:
    """Hides everything the layers below have inside directory ``target``."""

    target: str = attrs.field(validator=_target_validator)


LayerEntry = (
    TreeEntry
    | FileEntry
    | ContentEntry
    | SymlinkEntry
    | DirEntry
    | WhiteoutEntry
    | OpaqueWhiteoutEntry
)


def _compression_validator(_: object, __: object, value: str) -> None:
    if value not in _MEDIA:
        raise BuildError(f"unknown layer compression {value!r}; known: gzip, zstd")


def _entries(value: Iterable[LayerEntry]) -> tuple[LayerEntry, ...]:
    return tuple(value)


@attrs.frozen
class LayerSpec:
    """What one layer contains and how it is compressed (gzip level 6 unless told)."""

    name: str
    entries: tuple[LayerEntry, ...] = attrs.field(converter=_entries)
    compression: Compression = attrs.field(default="gzip", validator=_compression_validator)
    level: int | None = None

    @property
    def effective_level(self) -> int:
        level = _DEFAULT_LEVEL[self.compression] if self.level is None else self.level
        if level not in _LEVELS[self.compression]:
            raise BuildError(f"layer {self.name}: {self.compression} level {level} is out of range")
        return level

    @property
    def media_type(self) -> str:
        return _MEDIA[self.compression]


@attrs.frozen
class LayerResult:
    """A layer written to a layout."""

    name: str
    descriptor: Descriptor
    #: sha256 of the uncompressed tar (goes into the config's ``rootfs.diff_ids``).
    diff_id: str
    cached: bool


# -- members -------------------------------------------------------------------------------


@attrs.frozen(slots=True)
class _Member:
    name: str
    type: bytes  # tarfile.REGTYPE / DIRTYPE / SYMTYPE
    mode: int
    size: int = 0
    source: str | None = None  # host file to read
    content: bytes | None = None
    linkname: str = ""
    mtime_ns: int = 0  # of the host file, for the cache key only
    follow: bool = False  # a file the user named explicitly may be reached via a symlink


def _sort_key(name: str) -> list[str]:
    return name.split("/")


def _check_name(name: str, what: str) -> None:
    base = name.rsplit("/", 1)[-1]
    if base.startswith(_WH):
        raise BuildError(
            f"{what}: {name!r} starts with '{_WH}', which OCI reserves for whiteouts; "
            "use WhiteoutEntry to remove files"
        )


def _join(target: str, rel: str) -> str:
    return f"{target}/{rel}" if target else rel


def _walk_tree(entry: TreeEntry, add: Callable[[_Member], None]) -> None:
    root = entry.source
    try:
        st = os.stat(root)  # the root itself may be reached through a symlink the user chose
    except OSError as exc:
        raise BuildError(f"layer source {root}: {exc.strerror or exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise BuildError(f"layer source {root} is not a directory (use FileEntry for files)")
    target = image_path(entry.target)
    if target:
        add(_Member(target, tarfile.DIRTYPE, stat.S_IMODE(st.st_mode), mtime_ns=st.st_mtime_ns))
    stack = [(str(root), target)]
    while stack:
        host_dir, image_dir = stack.pop()
        try:
            with os.scandir(host_dir) as it:
                items = list(it)
        except OSError as exc:
            raise BuildError(f"cannot read {host_dir}: {exc.strerror or exc}") from exc
        for item in items:
            name = _join(image_dir, os.fsdecode(item.name))
            _check_name(name, f"layer source {root}")
            try:
                ist = item.stat(follow_symlinks=False)
            except OSError as exc:
                raise BuildError(f"cannot stat {item.path}: {exc.strerror or exc}") from exc
            mode = stat.S_IMODE(ist.st_mode)
            if stat.S_ISLNK(ist.st_mode):
                link = os.readlink(item.path)
                add(_Member(name, tarfile.SYMTYPE, 0o777, linkname=link, mtime_ns=ist.st_mtime_ns))
            elif stat.S_ISDIR(ist.st_mode):
                add(_Member(name, tarfile.DIRTYPE, mode, mtime_ns=ist.st_mtime_ns))
                stack.append((item.path, name))
            elif stat.S_ISREG(ist.st_mode):
                add(
                    _Member(
                        name,
                        tarfile.REGTYPE,
                        mode,
                        size=ist.st_size,
                        source=item.path,
                        mtime_ns=ist.st_mtime_ns,
                    )
                )
            else:
                raise BuildError(
                    f"{item.path} is a device, FIFO or socket; layers hold only files, "
                    "directories and symlinks"
                )


def _collect(spec: LayerSpec) -> list[_Member]:
    """Every member of the layer, with implied parent directories, sorted by path."""
    members: dict[str, _Member] = {}
    origin: dict[str, str] = {}

    def add_from(what: str) -> Callable[[_Member], None]:
        def add(m: _Member) -> None:
            if not m.name:
                raise BuildError(f"layer {spec.name}: {what} names the image root itself")
            if m.name in members:
                raise BuildError(
                    f"layer {spec.name}: duplicate path /{m.name} "
                    f"(from {origin[m.name]} and {what})"
                )
            members[m.name] = m
            origin[m.name] = what

        return add

    for e in spec.entries:
        if isinstance(e, TreeEntry):
            _walk_tree(e, add_from(f"tree {e.source}"))
            continue
        name = image_path(e.target)
        add = add_from(f"{type(e).__name__} {e.target}")
        if isinstance(e, FileEntry):
            _check_name(name, f"layer {spec.name}")
            try:
                st = os.stat(e.source)
            except OSError as exc:
                raise BuildError(f"layer source {e.source}: {exc.strerror or exc}") from exc
            if not stat.S_ISREG(st.st_mode):
                raise BuildError(f"layer source {e.source} is not a regular file")
            mode = stat.S_IMODE(st.st_mode) if e.mode is None else e.mode
            add(
                _Member(
                    name,
                    tarfile.REGTYPE,
                    mode,
                    size=st.st_size,
                    source=str(e.source),
                    mtime_ns=st.st_mtime_ns,
                    follow=True,
                )
            )
        elif isinstance(e, ContentEntry):
            _check_name(name, f"layer {spec.name}")
            add(_Member(name, tarfile.REGTYPE, e.mode, size=len(e.content), content=e.content))
        elif isinstance(e, SymlinkEntry):
            _check_name(name, f"layer {spec.name}")
            add(_Member(name, tarfile.SYMTYPE, 0o777, linkname=e.link))
        elif isinstance(e, DirEntry):
            add(_Member(name, tarfile.DIRTYPE, e.mode))
        elif isinstance(e, WhiteoutEntry):
            if not name:
                raise BuildError(f"layer {spec.name}: cannot white out the image root")
            parent, _, base = name.rpartition("/")
            add(_Member(_join(parent, _WH + base), tarfile.REGTYPE, 0o644, content=b""))
        else:  # OpaqueWhiteoutEntry
            add(_Member(_join(name, _OPAQUE), tarfile.REGTYPE, 0o644, content=b""))

    # Parents every member needs, so the tar extracts the same way everywhere.
    for name in list(members):
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            existing = members.get(parent)
            if existing is None:
                members[parent] = _Member(parent, tarfile.DIRTYPE, 0o755)
            elif existing.type != tarfile.DIRTYPE:
                raise BuildError(
                    f"layer {spec.name}: /{parent} is not a directory but /{name} is inside it"
                )
    return [members[k] for k in sorted(members, key=_sort_key)]


# -- cache key -----------------------------------------------------------------------------


def _cache_key(spec: LayerSpec, members: Sequence[_Member], mtime: int) -> str:
    """Hash of everything the layer's bytes depend on; host files by path/size/mtime/mode."""
    h = hashlib.sha256()
    h.update(
        canonical_json(
            {
                "format": _FORMAT_VERSION,
                "compression": spec.compression,
                "level": spec.effective_level,
                "mtime": mtime,
            }
        )
    )
    for m in members:
        content = hashlib.sha256(m.content).hexdigest() if m.content is not None else None
        row = [m.name, m.type.decode(), m.mode, m.size, m.source, m.mtime_ns, m.linkname, content]
        h.update(b"\n" + canonical_json(row))
    return h.hexdigest()


def resolve_source_date_epoch(value: int | None = None) -> int:
    """``value``, else ``$SOURCE_DATE_EPOCH``, else 0."""
    if value is not None:
        if value < 0:
            raise BuildError(f"source_date_epoch must not be negative (got {value})")
        return value
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env is None or env == "":
        return 0
    try:
        parsed = int(env)
    except ValueError:
        raise BuildError(f"SOURCE_DATE_EPOCH={env!r} is not an integer") from None
    if parsed < 0:
        raise BuildError(f"SOURCE_DATE_EPOCH={env!r} must not be negative")
    return parsed


# -- streaming -----------------------------------------------------------------------------


class _Sink(Protocol):
    def write(self, data: bytes | memoryview) -> None: ...


class _TarOut(Protocol):
    def write(self, data: bytes) -> None: ...


class _Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...
    def flush(self) -> bytes: ...


def _zstd_compressor(level: int) -> _Compressor:
    # Single-threaded zstd in the pipeline's worker thread. (zstd's own workers, threads>=1,
    # measured no faster here on 2 cores, cost ~30 MiB of job buffers and ~0.6% in size.)
    return zstandard.ZstdCompressor(level=level, write_content_size=False).compressobj()


#: gzip compression threads. The bytes produced do not depend on this number.
_WORKERS = max(1, min(4, os.cpu_count() or 1))
_GZIP_WINDOW = 32 << 10
# gzip member header: no flags, mtime 0, no extra flags, OS 255 ("unknown", not the host's).
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_DEFLATE_FINAL_EMPTY = b"\x03\x00"  # an empty fixed-Huffman block with BFINAL set


def _deflate_block(chunk: bytes, window: bytes, level: int) -> bytes:
    """Raw deflate of one chunk, primed with the 32 KiB before it, ending byte-aligned."""
    if window:
        c = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, window)
    else:
        c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(chunk) + c.flush(zlib.Z_SYNC_FLUSH)


class _ParallelGzip:
    """pigz-style gzip: chunks deflated in parallel, concatenated in order.

    Each chunk is compressed independently, with the previous 32 KiB as its dictionary,
    and ends with a sync flush, so the pieces concatenate into one valid deflate stream.
    The output depends only on the data, the level and the chunk size, never on the
    number of threads or on timing. The main thread computes CRC-32 and size for the
    trailer and hashes and writes the compressed pieces as they complete, in order.
    """

    def __init__(self, level: int, sink: _Sink) -> None:
        self._level = level
        self._sink = sink
        self._pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="edgekit-gzip")
        self._pending: deque[Future[bytes]] = deque()
        self._window = b""
        self._crc = 0
        self._size = 0
        self._sink.write(_GZIP_HEADER)

    def compress(self, chunk: bytes) -> None:
        self._crc = zlib.crc32(chunk, self._crc)
        self._size += len(chunk)
        self._pending.append(self._pool.submit(_deflate_block, chunk, self._window, self._level))
        self._window = chunk[-_GZIP_WINDOW:]
        while len(self._pending) > 2 * _WORKERS:  # bounded memory: a few chunks in flight
            self._sink.write(self._pending.popleft().result())

    def finish(self) -> None:
        try:
            while self._pending:
                self._sink.write(self._pending.popleft().result())
            self._sink.write(_DEFLATE_FINAL_EMPTY)
            self._sink.write(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))
        finally:
            self._pool.shutdown(wait=True)

    def abandon(self) -> None:
        for f in self._pending:
            f.cancel()
        self._pool.shutdown(wait=True)


class _GzipPipeline:
    """Main thread: tar bytes -> sha256 and CRC-32; pool: deflate; main: hash + write."""

    def __init__(self, level: int, sink: _Sink) -> None:
        self._gzip = _ParallelGzip(level, sink)
        self._buf = bytearray()
        self.diff_hash = hashlib.sha256()

    def _emit(self, chunk: bytes) -> None:
        self.diff_hash.update(chunk)
        self._gzip.compress(chunk)

    def write(self, data: bytes) -> None:
        # Chunk boundaries decide the output bytes: always cut at exact _CHUNK multiples.
        self._buf += data
        while len(self._buf) >= _CHUNK:
            self._emit(bytes(self._buf[:_CHUNK]))
            del self._buf[:_CHUNK]

    def close(self) -> None:
        if self._buf:
            self._emit(bytes(self._buf))
            self._buf.clear()
        self._gzip.finish()

    def abandon(self) -> None:
        self._gzip.abandon()


class _Pipeline:
    """zstd: main thread tar bytes -> sha256; worker: compress -> sink (hashes and writes)."""

    def __init__(self, compressor: _Compressor, sink: _Sink) -> None:
        self._compressor = compressor
        self._sink = sink
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUE_DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="edgekit-compress", daemon=True)
        self._buf = bytearray()
        self.diff_hash = hashlib.sha256()
        self.uncompressed = 0
        self._thread.start()

    def _run(self) -> None:
        while True:
            chunk = self._queue.get()
            if chunk is None:
                break
            if self._error is not None:
                continue  # keep draining so the producer never blocks
            try:
                out = self._compressor.compress(chunk)
                if out:
                    self._sink.write(out)
            except BaseException as exc:
                self._error = exc
        if self._error is None:
            try:
                self._sink.write(self._compressor.flush())
            except BaseException as exc:
                self._error = exc

    def _emit(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error  # the worker failed (disk full?): stop reading the tree
        self.diff_hash.update(chunk)
        self.uncompressed += len(chunk)
        self._queue.put(chunk)

    def write(self, data: bytes) -> None:
        # Cut at exact _CHUNK multiples, so short reads never change what the compressor sees.
        self._buf += data
        while len(self._buf) >= _CHUNK:
            self._emit(bytes(self._buf[:_CHUNK]))
            del self._buf[:_CHUNK]

    def close(self) -> None:
        """Flush and wait for the worker; re-raise its error."""
        if self._buf:
            self._emit(bytes(self._buf))
            self._buf.clear()
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        self._queue.put(None)
        self._thread.join()


_ZERO8 = b"0000000\0"
_USTAR_TAIL = b"ustar\x0000" + b"\0" * (32 + 32 + 8 + 8 + 155 + 12)
_OCTAL_11 = 8**11


def _header(m: _Member, mtime: int) -> bytes:
    """The tar header of ``m``: exactly what ``TarInfo.tobuf(PAX_FORMAT)`` gives, faster.

    Most members have short ASCII names and fit a plain ustar header; building that
    directly is ~5x cheaper than tarfile, which matters for trees of many small files.
    Anything else (long or non-ASCII names, huge sizes) goes through tarfile's PAX path.
    """
    name = m.name + "/" if m.type == tarfile.DIRTYPE else m.name
    size = m.size if m.type == tarfile.REGTYPE else 0
    if (
        len(name) <= 100
        and len(m.linkname) <= 100
        and name.isascii()
        and m.linkname.isascii()
        and size < _OCTAL_11
        and 0 <= mtime < _OCTAL_11
    ):
        buf = b"".join(
            (
                name.encode().ljust(100, b"\0"),
                b"%07o\0" % (m.mode & 0o7777),
                _ZERO8,
                _ZERO8,
                b"%011o\0" % size,
                b"%011o\0" % mtime,
                b" " * 8,
                m.type,
                m.linkname.encode().ljust(100, b"\0"),
                _USTAR_TAIL,
            )
        )
        return buf[:148] + b"%06o\0" % sum(buf) + buf[155:]
    return _tarfile_header(m, mtime)


def _tarfile_header(m: _Member, mtime: int) -> bytes:
    info = tarfile.TarInfo(m.name)
    info.type = m.type
    info.mode = m.mode
    info.size = m.size if m.type == tarfile.REGTYPE else 0
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.linkname = m.linkname
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _open_member(m: _Member) -> int:
    """A read-only fd on a member's host file, which must still be a regular file."""
    assert m.source is not None
    # O_NONBLOCK: a file swapped for a FIFO after the walk must not hang the build.
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
    if not m.follow:
        flags |= os.O_NOFOLLOW  # a file swapped for a symlink after the walk is not followed
    try:
        fd = os.open(m.source, flags)
    except OSError as exc:
        raise BuildError(f"cannot read {m.source}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BuildError(f"{m.source} stopped being a regular file while the layer was built")
    return fd


def _stream_tar(
    members: Sequence[_Member],
    mtime: int,
    out: _TarOut,
    on_bytes: Callable[[int], None],
) -> None:
    done = 0
    for m in members:
        out.write(_header(m, mtime))
        if m.type != tarfile.REGTYPE or m.size == 0:
            continue
        if m.content is not None:
            out.write(m.content)
        else:
            fd = _open_member(m)
            try:
                remaining = m.size
                while remaining:
                    chunk = os.read(fd, min(_CHUNK, remaining))
                    if not chunk:
                        raise BuildError(f"{m.source} shrank while the layer was being built")
                    out.write(chunk)
                    remaining -= len(chunk)
                    done += len(chunk)
                    if done >= _PROGRESS_EVERY:
                        on_bytes(done)
                        done = 0
                if os.read(fd, 1):
                    raise BuildError(f"{m.source} grew while the layer was being built")
            finally:
                os.close(fd)
        pad = -m.size % tarfile.BLOCKSIZE
        if pad:
            out.write(b"\0" * pad)
    out.write(b"\0" * (2 * tarfile.BLOCKSIZE))  # end-of-archive marker
    on_bytes(done)


def _write_blob(
    target: OCILayout,
    spec: LayerSpec,
    members: Sequence[_Member],
    mtime: int,
    progress: ProgressCallback | None,
) -> tuple[str, int, str]:
    """Stream the layer into ``target``'s blobs; returns (digest, size, diff_id)."""
    processed = 0

    def on_bytes(n: int) -> None:
        nonlocal processed
        processed += n
        if progress is not None and n:
            progress(LayerProgress(spec.name, processed))

    try:
        with target.blob_writer() as writer:
            pipe: _Pipeline | _GzipPipeline
            if spec.compression == "gzip":
                pipe = _GzipPipeline(spec.effective_level, writer)
            else:
                pipe = _Pipeline(_zstd_compressor(spec.effective_level), writer)
            try:
                _stream_tar(members, mtime, pipe, on_bytes)
            except BaseException:
                pipe.abandon()
                raise
            pipe.close()
            diff_id = "sha256:" + pipe.diff_hash.hexdigest()
            digest, size = writer.commit()
    except OSError as exc:  # reads raise BuildError themselves: this is the output side
        raise BuildError(
            f"cannot write layer {spec.name} to {target.path}: {exc.strerror or exc}"
        ) from exc
    return digest, size, diff_id


# -- public --------------------------------------------------------------------------------


def build_layer(
    layout: OCILayout,
    spec: LayerSpec,
    *,
    source_date_epoch: int | None = None,
    cache: LayerCache | None = None,
    no_cache: bool = False,
    progress: ProgressCallback | None = None,
) -> LayerResult:
    """Build one layer into ``layout`` (through ``cache``, a :class:`LayerCache`, if given).

    With a cache, a layer whose inputs (entries, host file path/size/mtime_ns/mode, build
    options) are unchanged is taken from the cache; ``no_cache=True`` rebuilds it (and
    refreshes the cache entry).
    """
    mtime = resolve_source_date_epoch(source_date_epoch)
    members = _collect(spec)
    total = sum(m.size for m in members if m.source is not None)
    if progress is not None:
        progress(LayerStarted(spec.name, total))
    key = _cache_key(spec, members, mtime) if cache is not None else None
    if cache is not None and key is not None and not no_cache:
        hit = cache.lookup(key)
        if hit is not None:
            layout.import_blob_file(cache.blob_path(hit.digest), hit.digest)
            result = LayerResult(
                spec.name, Descriptor(hit.media_type, hit.digest, hit.size), hit.diff_id, True
            )
            if progress is not None:
                progress(LayerDone(spec.name, hit.digest, hit.size, True))
            return result
    target = cache.layout if cache is not None else layout
    digest, size, diff_id = _write_blob(target, spec, members, mtime, progress)
    if cache is not None and key is not None:
        cache.store(key, digest=digest, size=size, diff_id=diff_id, media_type=spec.media_type)
        layout.import_blob_file(cache.blob_path(digest), digest)
    if progress is not None:
        progress(LayerDone(spec.name, digest, size, False))
    return LayerResult(spec.name, Descriptor(spec.media_type, digest, size), diff_id, False)


def iter_members(spec: LayerSpec) -> Iterator[tuple[str, str]]:
    """``(path, kind)`` for every member the layer would contain, in tar order (for dry runs)."""
    kinds = {tarfile.REGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink"}
    for m in _collect(spec):
        yield "/" + m.name, kinds[m.type]
