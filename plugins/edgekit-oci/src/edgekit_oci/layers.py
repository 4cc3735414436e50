"""Layers: reproducible tar streams, compressed and hashed in one streaming pass.

A layer is described by entries (a host tree, a file, inline content, a symlink, a
directory, whiteouts). Building walks the entries' metadata once (never following
symlinks inside a tree), sorts the members, then streams: tar bytes -> sha256 (diff_id) ->
compressor -> sha256 (digest) -> blob file, in fixed chunks with a bounded number in
flight, so memory does not grow with the tree. Compression uses every core (see
:mod:`.compress`); the bytes do not depend on how many.

Reproducibility: members sorted by path; every mtime is SOURCE_DATE_EPOCH (else 0); uid and
gid 0 with empty user and group names; PAX format (POSIX; extended headers only where ustar
fields cannot hold a value, e.g. long names, and those headers carry no time or pid);
gzip header with mtime 0, no file name, OS 255, and chunk boundaries fixed at 1 MiB of
tar; zstd in multi-threaded framing with a fixed job size, without content size.

Cache keys are content-true: every host file's sha256 (see :mod:`.digests`), never its
path or mtime.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import attrs
import zstandard

from edgekit.errors import BuildError

from .cache import LayerCache
from .compress import GZIP_CHUNK, ZSTD_JOB, open_compressor, resolve_workers
from .digests import DigestStore, FileDigest
from .layout import Descriptor, OCILayout, canonical_json
from .progress import LayerDone, LayerProgress, LayerStarted, ProgressCallback
from .tarstream import Member as _Member
from .tarstream import Verify as _Verify
from .tarstream import stream_tar as _stream_tar
from .tarstream import tar_header as _header  # noqa: F401 (tests compare it with tarfile's)
from .tarstream import tarfile_header as _tarfile_header  # noqa: F401

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

_WH = ".wh."
_OPAQUE = ".wh..wh..opq"
#: Bumped when the tar encoding changes, so old cache entries stop matching.
_FORMAT_VERSION = "edgekit-layer-v3"


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


def _sort_key(name: str) -> str:
    """Orders names as their lists of path components would sort (a directory's members
    right after it, ``a/b`` before ``a-b``), ~5x cheaper to compare than those lists: no
    name contains a NUL (:func:`image_path` and the file system both refuse it), so NUL as
    the separator sorts below every character a component can hold."""
    return name.replace("/", "\0")


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
        add(_Member(target, tarfile.DIRTYPE, stat.S_IMODE(st.st_mode)))
    stack = [(str(root), target)]
    while stack:
        host_dir, image_dir = stack.pop()
        try:
            with os.scandir(host_dir) as it:
                items = list(it)
        except OSError as exc:
            raise BuildError(f"cannot read {host_dir}: {exc.strerror or exc}") from exc
        for item in items:
            # scandir on a str path gives str names (already decoded, surrogateescape).
            name = f"{image_dir}/{item.name}" if image_dir else item.name
            if item.name.startswith(_WH):
                _check_name(name, f"layer source {root}")
            try:
                ist = item.stat(follow_symlinks=False)
            except OSError as exc:
                raise BuildError(f"cannot stat {item.path}: {exc.strerror or exc}") from exc
            mode = stat.S_IMODE(ist.st_mode)
            if stat.S_ISLNK(ist.st_mode):
                link = os.readlink(item.path)
                add(_Member(name, tarfile.SYMTYPE, 0o777, linkname=link))
            elif stat.S_ISDIR(ist.st_mode):
                add(_Member(name, tarfile.DIRTYPE, mode))
                stack.append((item.path, name))
            elif stat.S_ISREG(ist.st_mode):
                add(
                    _Member(
                        name,
                        tarfile.REGTYPE,
                        mode,
                        size=ist.st_size,
                        source=item.path,
                        dev=ist.st_dev,
                        ino=ist.st_ino,
                        mtime_ns=ist.st_mtime_ns,
                        ctime_ns=ist.st_ctime_ns,
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
                    follow=True,
                    dev=st.st_dev,
                    ino=st.st_ino,
                    mtime_ns=st.st_mtime_ns,
                    ctime_ns=st.st_ctime_ns,
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

    # Parents every member needs, so the tar extracts the same way everywhere. Walking up
    # stops at the first existing directory: it is a member too, so its own parents are
    # checked in its turn (trees give every directory, so this is one lookup per member).
    for name in list(members):
        parent = name.rpartition("/")[0]
        while parent:
            existing = members.get(parent)
            if existing is None:
                members[parent] = _Member(parent, tarfile.DIRTYPE, 0o755)
            elif existing.type != tarfile.DIRTYPE:
                raise BuildError(
                    f"layer {spec.name}: /{parent} is not a directory but /{name} is inside it"
                )
            else:
                break
            parent = parent.rpartition("/")[0]
    return [members[k] for k in sorted(members, key=_sort_key)]


# -- cache key -----------------------------------------------------------------------------


def _digest_group(spec: LayerSpec) -> str:
    """Names the layer's host sources, so their recorded digests are kept together."""
    roots = sorted(
        os.path.abspath(e.source) for e in spec.entries if isinstance(e, TreeEntry | FileEntry)
    )
    return "\n".join(roots)


def _file_digests(
    spec: LayerSpec, members: Sequence[_Member], store: DigestStore, workers: int
) -> dict[str, FileDigest]:
    files = [m for m in members if m.source is not None]
    digests = store.digests(_digest_group(spec), [m.to_hash() for m in files], workers=workers)
    return {m.name: d for m, d in zip(files, digests, strict=True)}


def _compressor_version(compression: str) -> str:
    """The library and the framing parameters the compressed bytes depend on."""
    if compression == "gzip":
        return f"zlib {zlib.ZLIB_RUNTIME_VERSION}, chunk {GZIP_CHUNK}"
    return "libzstd " + ".".join(map(str, zstandard.ZSTD_VERSION)) + f", job {ZSTD_JOB}"


def _cache_key(
    spec: LayerSpec, members: Sequence[_Member], mtime: int, digests: dict[str, FileDigest]
) -> str:
    """Hash of everything the layer's bytes depend on: names, modes, link targets and the
    sha256 of every file's content. Host paths and mtimes are not part of it (the tar holds
    neither), so a touched or moved tree still hits and an equal-size, equal-mtime edit misses.
    """
    h = hashlib.sha256()
    h.update(
        canonical_json(
            {
                "format": _FORMAT_VERSION,
                # The compressed bytes also depend on the library and the framing: a cache
                # shared between environments or versions (the tests share one) must not
                # hand one of them a blob another would not produce.
                "library": _compressor_version(spec.compression),
                "compression": spec.compression,
                "level": spec.effective_level,
                "mtime": mtime,
            }
        )
    )
    for m in members:
        if m.content is not None:
            content: str | None = hashlib.sha256(m.content).hexdigest()
        elif m.source is not None:
            content = digests[m.name].hexdigest
        else:
            content = None
        row = [m.name, m.type.decode(), m.mode, m.size, m.linkname, content]
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


# -- writing -------------------------------------------------------------------------------


def _write_blob(
    target: OCILayout,
    spec: LayerSpec,
    members: Sequence[_Member],
    mtime: int,
    progress: ProgressCallback | None,
    workers: int,
    verify: _Verify,
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
            pipe = open_compressor(spec.compression, spec.effective_level, writer, workers)
            try:
                _stream_tar(members, mtime, pipe, on_bytes, verify)
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
    workers: int | None = None,
) -> LayerResult:
    """Build one layer into ``layout`` (through ``cache``, a :class:`LayerCache`, if given).

    With a cache, a layer whose inputs (entries, the content of every host file, modes,
    build options) are unchanged is taken from the cache; ``no_cache=True`` rebuilds it (and
    refreshes the cache entry). ``workers`` threads compress (and hash files for the key):
    default ``$EDGEKIT_LAYER_WORKERS``, else every core; the bytes never depend on it.
    """
    mtime = resolve_source_date_epoch(source_date_epoch)
    n_workers = resolve_workers(workers)
    members = _collect(spec)
    total = sum(m.size for m in members if m.source is not None)
    if progress is not None:
        progress(LayerStarted(spec.name, total))
    if cache is None:
        digest, size, diff_id = _write_blob(
            layout, spec, members, mtime, progress, n_workers, _Verify(None)
        )
        if progress is not None:
            progress(LayerDone(spec.name, digest, size, False))
        return LayerResult(spec.name, Descriptor(spec.media_type, digest, size), diff_id, False)

    file_digests = _file_digests(spec, members, cache.digest_store, n_workers)
    key = _cache_key(spec, members, mtime, file_digests)
    if not no_cache:
        hit = cache.lookup(key)
        if hit is not None:
            layout.import_blob_file(cache.blob_path(hit.digest), hit.digest)
            result = LayerResult(
                spec.name, Descriptor(hit.media_type, hit.digest, hit.size), hit.diff_id, True
            )
            if progress is not None:
                progress(LayerDone(spec.name, hit.digest, hit.size, True))
            return result
    verify = _Verify(file_digests)
    digest, size, diff_id = _write_blob(
        cache.layout, spec, members, mtime, progress, n_workers, verify
    )
    # A file edited between hashing and streaming: the blob is right for what was read,
    # but not for the key, so it is not recorded (the next build hashes again).
    if verify.consistent:
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
