"""OCI image layouts with the standard library only: the one implementation edgekit uses.

:class:`Layout` holds the basics of an image-spec v1.1 layout (``oci-layout``, ``index.json``
with tags in the ``org.opencontainers.image.ref.name`` annotation, ``blobs/sha256/<hex>``):
digest-checked blob paths, streaming blob writes (a temporary file inside the layout, hashed
while written, verified, then renamed into place; an existing blob is a no-op), blob reads,
``index.json`` reads, resolution by tag or digest, and tag changes rewritten atomically under
a lock. The image builder (``edgekit-oci``) and the publisher (``edgekit-oras``) subclass it,
so a fix here fixes both. The pipeline also uses the functions below to take files (the
kernel and initrd) out of a provider image a backend built.

Errors: a layout is used at a plugin's boundary, so the error classes are class attributes
rather than translated afterwards: :attr:`Layout.error` for a missing or malformed layout,
blob or tag, :attr:`Layout.mismatch_error` for content that does not hash to its digest. They
default to :class:`BuildError`; ``edgekit-oras`` sets ``PublishError`` and ``DigestMismatch``.
Only the "no such tag" wording differs per plugin, through :attr:`Layout.missing_tag`.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, BinaryIO, ClassVar, cast

from edgekit.errors import BuildError, EdgekitError
from edgekit.oci_types import INDEX_TYPES, OCI_INDEX, OCI_MANIFEST, REF_NAME, check_digest

__all__ = [
    "MEDIA_INDEX",
    "MEDIA_MANIFEST",
    "REF_NAME",
    "BlobWriter",
    "Layout",
    "blob_path",
    "canonical_json",
    "check_digest",
    "extract_files",
    "find_manifest",
    "read_index",
    "resolve_tag",
]

# The names this module has always exported; the vocabulary itself is edgekit.oci_types'.
MEDIA_MANIFEST = OCI_MANIFEST
MEDIA_INDEX = OCI_INDEX


def canonical_json(obj: Any) -> bytes:
    """The one serialisation edgekit hashes: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _ref(descriptor: Mapping[str, Any]) -> str | None:
    value = (descriptor.get("annotations") or {}).get(REF_NAME)
    return str(value) if value is not None else None


class BlobWriter:
    """A blob being streamed into a layout; :meth:`commit` checks and renames it into place.

    ``digest`` and ``size``, when known, are checked: writing more than ``size`` bytes raises
    at once (a registry sending too much is not read to the end), the digest on commit.
    """

    def __init__(self, layout: Layout, digest: str | None = None, size: int | None = None) -> None:
        self._layout = layout
        self._expected_digest = digest
        self._expected_size = size
        # In blobs/, not blobs/sha256/: nothing there but finished blobs (gc walks it).
        fd, name = tempfile.mkstemp(prefix=".tmp-blob-", dir=layout.path / "blobs")
        self._tmp = Path(name)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self._done = False

    def write(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if self._expected_size is not None and self.size > self._expected_size:
            name = self._expected_digest or "being written"
            raise self._layout.mismatch_error(
                f"blob {name}: more than the expected {self._expected_size} bytes"
            )
        self._hash.update(data)
        self._file.write(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    def commit(self, expected_digest: str | None = None) -> tuple[str, int]:
        """Finish the blob, returning ``(digest, size)``; a mismatch raises, leaving nothing."""
        self._file.close()
        digest = self.digest
        expected_digest = expected_digest or self._expected_digest
        error = self._layout.mismatch_error
        if expected_digest is not None and expected_digest != digest:
            self.abort()
            raise error(
                f"blob digest mismatch: expected {expected_digest}, content hashes to {digest}"
                " (corrupt or tampered)"
            )
        if self._expected_size is not None and self.size != self._expected_size:
            self.abort()
            raise error(f"blob {digest}: got {self.size} bytes, expected {self._expected_size}")
        final = self._layout.blob_path(digest)
        if self._layout.has_blob(digest, self.size):
            self._tmp.unlink()  # content-addressed: an existing blob is the same bytes
        else:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._tmp, final)
        self._done = True
        return digest, self.size

    def abort(self) -> None:
        """Drop the temporary file."""
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()
        self._done = True

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if not self._done:
            self.abort()


class Layout:
    """An OCI image layout directory (``oci-layout``, ``index.json``, ``blobs/sha256``)."""

    #: Raised for a missing or malformed layout, blob, index or tag.
    error: ClassVar[type[EdgekitError]] = BuildError
    #: Raised for content that does not hash to (or is not the size of) its descriptor.
    mismatch_error: ClassVar[type[EdgekitError]] = BuildError
    #: Message for an unknown tag; ``{tags}`` lists the layout's tags.
    missing_tag: ClassVar[str] = "no image tagged {tag!r} in {path} (tags: {tags})"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    # -- structure -----------------------------------------------------------------------

    def exists(self) -> bool:
        """True if the directory holds an ``oci-layout`` file."""
        return (self.path / "oci-layout").is_file()

    def ensure(self) -> None:
        """Create an empty layout here unless there is one (each file written atomically)."""
        try:
            (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
            if not (self.path / "oci-layout").exists():
                self._write_atomic("oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
            if not (self.path / "index.json").exists():
                empty = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": []}
                self._write_atomic("index.json", canonical_json(empty))
        except OSError as exc:
            raise self.error(
                f"cannot create OCI layout at {self.path}: {exc.strerror or exc}"
            ) from exc

    def require(self) -> None:
        """Raise :attr:`error` unless this is an image layout of version 1.0.0."""
        try:
            marker = json.loads((self.path / "oci-layout").read_bytes())
        except FileNotFoundError:
            raise self.error(
                f"{self.path} is not an OCI image layout (no oci-layout file)"
            ) from None
        except (OSError, ValueError) as exc:
            raise self.error(f"{self.path}/oci-layout is unreadable: {exc}") from exc
        if not isinstance(marker, dict) or marker.get("imageLayoutVersion") != "1.0.0":
            raise self.error(f"{self.path}/oci-layout: unsupported imageLayoutVersion {marker!r}")

    # -- blobs ---------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """Where the blob with ``digest`` lives (whether or not it exists)."""
        return self.path / "blobs" / "sha256" / check_digest(digest, self.error)[7:]

    def has_blob(self, digest: str, size: int | None = None) -> bool:
        """True if the blob is present (and has ``size`` bytes, when given)."""
        try:
            st = self.blob_path(digest).stat()
        except (FileNotFoundError, NotADirectoryError):
            return False
        return stat.S_ISREG(st.st_mode) and (size is None or st.st_size == size)

    def blob_writer(self, digest: str | None = None, size: int | None = None) -> BlobWriter:
        """Start streaming a blob (with this ``digest`` and ``size``, if known) into the layout."""
        return BlobWriter(self, digest, size)

    def write_stream(
        self, chunks: Iterable[bytes], digest: str | None = None, size: int | None = None
    ) -> tuple[str, int]:
        """Stream ``chunks`` into a blob, verified against ``digest``/``size`` if given."""
        with self.blob_writer(digest, size) as writer:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit()

    def write_bytes(self, data: bytes, digest: str | None = None) -> tuple[str, int]:
        """Store small ``data``; returns ``(digest, size)``. An existing blob is a no-op."""
        actual = _sha256(data)
        if digest is not None and digest != actual:
            raise self.mismatch_error(
                f"blob digest mismatch: expected {digest}, content hashes to {actual}"
                " (corrupt or tampered)"
            )
        if self.has_blob(actual, len(data)):
            return actual, len(data)
        return self.write_stream([data], actual, len(data))

    def open_blob(self, digest: str) -> BinaryIO:
        """Open a blob for reading; a missing blob raises :attr:`error`."""
        try:
            return self.blob_path(digest).open("rb")
        except FileNotFoundError:
            raise self.error(f"blob {digest} is missing from layout {self.path}") from None

    def read_blob(self, digest: str) -> bytes:
        """Read a whole (small) blob and verify its digest."""
        with self.open_blob(digest) as f:
            data = f.read()
        actual = _sha256(data)
        if actual != digest:
            raise self.mismatch_error(
                f"blob {digest} in {self.path} is corrupt (hashes to {actual})"
            )
        return data

    def read_json(self, digest: str) -> dict[str, Any]:
        """A JSON object blob (a manifest, index or config)."""
        try:
            data = json.loads(self.read_blob(digest))
        except ValueError as exc:
            raise self.error(f"blob {digest} in {self.path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise self.error(f"blob {digest} in {self.path} is not a JSON object")
        return data

    # -- index and tags ------------------------------------------------------------------

    def read_index(self) -> dict[str, Any]:
        """The parsed ``index.json``."""
        path = self.path / "index.json"
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise self.error(f"{self.path} is not an OCI image layout (no index.json)") from None
        except OSError as exc:
            raise self.error(f"{path} is unreadable: {exc.strerror or exc}") from exc
        except ValueError as exc:
            raise self.error(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise self.error(f"{path} is not a JSON object")
        return data

    def tags(self) -> list[str]:
        """The tags in ``index.json``, sorted."""
        return sorted({t for d in self.read_index().get("manifests", []) if (t := _ref(d))})

    def lookup(self, tag: str | None = None, digest: str | None = None) -> dict[str, Any]:
        """The descriptor for ``digest`` or ``tag`` (or the only one in the index, if neither).

        A digest may name any manifest blob of the layout (e.g. an index's child).
        """
        manifests: list[dict[str, Any]] = self.read_index().get("manifests", [])
        if digest is not None:
            for d in manifests:
                if d.get("digest") == digest:
                    return d
            if not self.has_blob(digest):
                raise self.error(f"no manifest {digest} in layout {self.path}")
            media_type = self.read_json(digest).get("mediaType", MEDIA_MANIFEST)
            return {"mediaType": media_type, "digest": digest, "size": self.blob_size(digest)}
        if tag is None:
            if len(manifests) == 1:
                return manifests[0]
            raise self.error(f"layout {self.path} holds {len(manifests)} images: name a tag")
        for d in manifests:
            if _ref(d) == tag:
                return d
        known = ", ".join(self.tags()) or "none"
        raise self.error(self.missing_tag.format(tag=tag, path=self.path, tags=known))

    def blob_size(self, digest: str) -> int:
        """The size of a blob that is present."""
        return self.blob_path(digest).stat().st_size

    def add_manifest(self, descriptor: Mapping[str, Any], tag: str | None = None) -> None:
        """Record ``descriptor`` in index.json, tagged ``tag`` (moving the tag if it existed).

        Untagged descriptors are kept once per digest (artifacts found by referrer listing).
        The index is rewritten atomically under a lock so concurrent writers lose no tags.
        """
        self.ensure()
        with self._locked():
            index = self.read_index()
            entries: list[dict[str, Any]] = index.setdefault("manifests", [])
            entry = dict(descriptor)
            annotations = dict(entry.get("annotations") or {})
            annotations.pop(REF_NAME, None)
            if tag is not None:
                annotations[REF_NAME] = tag
                entries[:] = [e for e in entries if _ref(e) != tag]
            elif any(e.get("digest") == entry["digest"] and _ref(e) is None for e in entries):
                return
            if annotations:
                entry["annotations"] = annotations
            else:
                entry.pop("annotations", None)
            entries.append(entry)
            self._write_atomic("index.json", canonical_json(index))

    def untag(self, tag: str) -> None:
        """Remove ``tag`` from index.json; an unknown tag raises. Blobs are kept."""
        with self._locked():
            index = self.read_index()
            manifests = index.get("manifests", [])
            kept = [m for m in manifests if _ref(m) != tag]
            if len(kept) == len(manifests):
                raise self.error(f"no tag {tag!r} in layout {self.path}")
            index["manifests"] = kept
            self._write_atomic("index.json", canonical_json(index))

    # -- internals -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise index.json read-modify-write between processes and threads.

        The lock is a flock on the layout directory itself: index.json is replaced by rename
        so it cannot carry a lock, and a lock file would add a stray entry to the layout.
        """
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def _write_atomic(self, name: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{name}-", dir=self.path)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.path / name)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


# -- reading images (the pipeline's use) ---------------------------------------------------


def blob_path(layout: Path, digest: str) -> Path:
    """Path of a blob in a layout, from its ``sha256:<hex>`` digest."""
    return Layout(layout).blob_path(digest)


def read_index(layout: Path) -> dict[str, Any]:
    """The layout's ``index.json``."""
    return Layout(layout).read_index()


def resolve_tag(layout: Path, tag: str) -> dict[str, Any]:
    """The descriptor tagged ``tag`` in the layout's index."""
    return Layout(layout).lookup(tag=tag)


def find_manifest(layout: Path, tag: str, arch: str = "amd64") -> dict[str, Any]:
    """The image manifest for ``arch`` under ``tag`` (descending into an image index)."""
    lay = Layout(layout)
    desc = lay.lookup(tag=tag)
    doc = lay.read_json(desc["digest"])
    if doc.get("mediaType", desc.get("mediaType")) in INDEX_TYPES:
        for child in doc.get("manifests", []):
            if child.get("platform", {}).get("architecture") == arch:
                return lay.read_json(child["digest"])
        raise BuildError(f"image {tag!r} in {layout} has no {arch} variant")
    return doc


def _open_layer(path: Path, media_type: str) -> IO[bytes]:
    raw = path.open("rb")
    if media_type.endswith(("+gzip", ".tar.gzip")):
        return cast("IO[bytes]", gzip.GzipFile(fileobj=raw))
    if media_type.endswith("+zstd"):
        try:
            import zstandard
        except ImportError:
            raw.close()
            raise BuildError("reading zstd layers needs the 'zstandard' package") from None
        return cast("IO[bytes]", zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
    return raw


def _norm(name: str) -> str:
    return "/" + posixpath.normpath("/" + name).lstrip("/")


def extract_files(
    layout: Path, tag: str, paths: Iterable[str], dest: Path, arch: str = "amd64"
) -> Mapping[str, Path]:
    """Copy files out of an image's merged filesystem into ``dest``.

    Layers are read top-down, so the newest version of each file wins and whiteouts hide
    older ones; symlinks inside the image are followed (within the image). Returns
    image path -> extracted host path; raises :class:`BuildError` naming the paths not found.
    """
    manifest = find_manifest(layout, tag, arch)
    requested = [_norm(p) for p in paths]
    wanted = set(requested)
    found: dict[str, Path] = {}
    hidden: set[str] = set()
    aliases: dict[str, str] = {}  # symlink in the image -> what it points at
    dest.mkdir(parents=True, exist_ok=True)
    for _ in range(8):  # at most this many symlink hops
        links: dict[str, str] = {}
        for layer in reversed(manifest.get("layers", [])):
            if not wanted - found.keys() - hidden:
                break
            with _open_layer(blob_path(layout, layer["digest"]), layer["mediaType"]) as fh:
                _scan_layer(fh, wanted, found, hidden, links, dest)
        if not links:
            break
        for link, target in links.items():
            resolved = _norm(posixpath.join(posixpath.dirname(link), target))
            aliases[link] = resolved
            wanted.add(resolved)
    result: dict[str, Path] = {}
    missing: list[str] = []
    for path in requested:
        current = path
        for _ in range(9):
            if current in found or current not in aliases:
                break
            current = aliases[current]
        if current in found:
            result[path] = found[current]
        else:
            missing.append(path)
    if missing:
        raise BuildError(f"image {tag!r} ({arch}) in {layout} has no {', '.join(missing)}")
    return result


def _scan_layer(
    fh: IO[bytes],
    wanted: set[str],
    found: dict[str, Path],
    hidden: set[str],
    links: dict[str, str],
    dest: Path,
) -> None:
    layer_hidden: set[str] = set()
    with tarfile.open(fileobj=fh, mode="r|") as tar:
        for member in tar:
            name = _norm(member.name)
            base = posixpath.basename(name)
            if base.startswith(".wh."):
                parent = posixpath.dirname(name)
                target = parent if base == ".wh..wh..opq" else posixpath.join(parent, base[4:])
                for w in wanted:
                    if (w == target or w.startswith(target.rstrip("/") + "/")) and w not in found:
                        layer_hidden.add(w)
                continue
            if name not in wanted or name in found or name in hidden:
                continue
            if member.issym():
                links[name] = member.linkname
                hidden.add(name)
                continue
            if not member.isfile():
                continue
            src = tar.extractfile(member)
            assert src is not None
            fd, tmp = tempfile.mkstemp(dir=dest, prefix=".extract-")
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            target_path = dest / hashlib.sha256(name.encode()).hexdigest()[:16]
            target_path = target_path.with_name(posixpath.basename(name) + "-" + target_path.name)
            os.replace(tmp, target_path)
            found[name] = target_path
    hidden |= layer_hidden
