"""OCI image layouts on disk: blobs, manifests, and tags in ``index.json``.

Every write is atomic: blobs are streamed to a temporary file inside the layout, their
digest checked, then renamed; ``index.json`` is rewritten through a temporary file. JSON
documents are stored byte-exact: the bytes hashed are the bytes stored, so a publisher can
push them to a registry unchanged.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from edgekit.errors import BuildError

__all__ = [
    "MEDIA_CONFIG",
    "MEDIA_INDEX",
    "MEDIA_MANIFEST",
    "REF_NAME",
    "BlobWriter",
    "Descriptor",
    "OCILayout",
    "Platform",
    "canonical_json",
    "staged_layout",
]

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# OCI ref.name grammar for tags in a layout (a superset of registry tags, minus path chars).
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_CHUNK = 1 << 20


def canonical_json(obj: Any) -> bytes:
    """The one serialisation edgekit hashes: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _check_digest(digest: str) -> str:
    if not _DIGEST_RE.match(digest):
        raise BuildError(f"invalid digest {digest!r}: expected sha256:<64 hex digits>")
    return digest


@attrs.frozen
class Platform:
    """The platform an image in an index runs on."""

    architecture: str
    os: str = "linux"
    variant: str | None = None

    def to_json(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Platform:
        return cls(str(data["architecture"]), str(data["os"]), data.get("variant"))


@attrs.frozen
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = attrs.field(factory=dict)
    platform: Platform | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Descriptor:
        platform = data.get("platform")
        return cls(
            media_type=str(data["mediaType"]),
            digest=_check_digest(str(data["digest"])),
            size=int(data["size"]),
            annotations=dict(data.get("annotations") or {}),
            platform=Platform.from_json(platform) if platform else None,
        )

    @property
    def ref_name(self) -> str | None:
        """The tag of this descriptor in ``index.json``, if any."""
        return self.annotations.get(REF_NAME)


class BlobWriter:
    """A blob being streamed into a layout; :meth:`commit` checks and renames it into place."""

    def __init__(self, layout: OCILayout) -> None:
        self._layout = layout
        fd, name = tempfile.mkstemp(prefix=".tmp-blob-", dir=layout.path / "blobs")
        self._tmp = Path(name)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self._done = False

    def write(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        self._file.write(data)
        self.size += len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    def commit(self, expected_digest: str | None = None) -> tuple[str, int]:
        """Finish the blob; a digest mismatch raises and leaves nothing behind."""
        self._file.close()
        digest = self.digest
        if expected_digest is not None and expected_digest != digest:
            self.abort()
            raise BuildError(f"blob digest mismatch: expected {expected_digest}, got {digest}")
        final = self._layout.blob_path(digest)
        if final.exists():
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


class OCILayout:
    """An OCI image layout directory (``oci-layout``, ``index.json``, ``blobs/sha256``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> OCILayout:
        """Create a layout at ``path`` (or open it if it is already one)."""
        p = Path(path)
        if (p / "oci-layout").exists():
            return cls.open(p)
        try:
            (p / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
            layout = cls(p)
            layout._write_atomic("oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
            layout._write_index({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": []})
        except OSError as exc:
            raise BuildError(f"cannot create OCI layout at {p}: {exc.strerror or exc}") from exc
        return layout

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> OCILayout:
        """Open an existing layout; a directory that is not one raises BuildError."""
        p = Path(path)
        try:
            marker = json.loads((p / "oci-layout").read_bytes())
        except FileNotFoundError:
            raise BuildError(f"{p} is not an OCI image layout (no oci-layout file)") from None
        except (OSError, ValueError) as exc:
            raise BuildError(f"{p}/oci-layout is unreadable: {exc}") from exc
        if not isinstance(marker, dict) or marker.get("imageLayoutVersion") != "1.0.0":
            raise BuildError(f"{p}/oci-layout: unsupported imageLayoutVersion {marker!r}")
        return cls(p)

    # -- blobs ---------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """Where the blob with ``digest`` lives (whether or not it exists)."""
        return self.path / "blobs" / "sha256" / _check_digest(digest).removeprefix("sha256:")

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def blob_writer(self) -> BlobWriter:
        """Start streaming a blob into the layout."""
        return BlobWriter(self)

    def write_blob(self, data: bytes, expected_digest: str | None = None) -> tuple[str, int]:
        """Store ``data`` as a blob; returns ``(digest, size)``. An existing blob is a no-op."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if expected_digest is not None and digest != expected_digest:
            raise BuildError(f"blob digest mismatch: expected {expected_digest}, got {digest}")
        if self.has_blob(digest):
            return digest, len(data)
        with self.blob_writer() as w:
            w.write(data)
            return w.commit(digest)

    def write_blob_stream(
        self, chunks: Iterable[bytes], expected_digest: str | None = None
    ) -> tuple[str, int]:
        """Stream chunks into a blob, checking the digest if one is expected."""
        if expected_digest is not None and self.has_blob(expected_digest):
            for _ in chunks:  # drain so the producer's side effects still happen
                pass
            return expected_digest, self.blob_path(expected_digest).stat().st_size
        with self.blob_writer() as w:
            for chunk in chunks:
                w.write(chunk)
            return w.commit(expected_digest)

    def import_blob_file(self, source: Path, digest: str) -> None:
        """Bring a verified blob file from elsewhere (a cache) in: hard link, else copy."""
        final = self.blob_path(digest)
        if final.exists():
            return
        fd, name = tempfile.mkstemp(prefix=".tmp-blob-", dir=self.path / "blobs")
        os.close(fd)
        tmp = Path(name)
        try:
            tmp.unlink()
            try:
                os.link(source, tmp)
            except OSError:  # another filesystem, or links not allowed: copy
                shutil.copyfile(source, tmp)
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def copy_blob_from(self, other: OCILayout, digest: str) -> None:
        """Copy a blob from another layout, verifying its digest on the way."""
        if self.has_blob(digest):
            return
        with other.open_blob(digest) as src, self.blob_writer() as w:
            while chunk := src.read(_CHUNK):
                w.write(chunk)
            w.commit(digest)

    def open_blob(self, digest: str) -> BinaryIO:
        """Open a blob for reading; a missing blob raises BuildError."""
        try:
            return self.blob_path(digest).open("rb")
        except FileNotFoundError:
            raise BuildError(f"blob {digest} is missing from layout {self.path}") from None

    def read_blob(self, digest: str) -> bytes:
        """Read a whole (small) blob and verify its digest."""
        with self.open_blob(digest) as f:
            data = f.read()
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise BuildError(f"blob {digest} in {self.path} is corrupt (hashes to {actual})")
        return data

    def write_json(self, obj: Any, media_type: str) -> Descriptor:
        """Serialise ``obj`` canonically, store it, and describe it."""
        data = canonical_json(obj)
        digest, size = self.write_blob(data)
        return Descriptor(media_type, digest, size)

    def read_json(self, digest: str) -> dict[str, Any]:
        data = json.loads(self.read_blob(digest))
        if not isinstance(data, dict):
            raise BuildError(f"blob {digest} in {self.path} is not a JSON object")
        return data

    # -- index and tags ------------------------------------------------------------------

    def index(self) -> dict[str, Any]:
        """The parsed ``index.json``."""
        try:
            data = json.loads((self.path / "index.json").read_bytes())
        except (OSError, ValueError) as exc:
            raise BuildError(f"{self.path}/index.json is unreadable: {exc}") from exc
        if not isinstance(data, dict):
            raise BuildError(f"{self.path}/index.json is not a JSON object")
        return data

    def descriptors(self) -> list[Descriptor]:
        """Every descriptor in ``index.json``, in order."""
        return [Descriptor.from_json(d) for d in self.index().get("manifests", [])]

    def tags(self) -> list[str]:
        """Tags in the layout, sorted."""
        return sorted({d.ref_name for d in self.descriptors() if d.ref_name is not None})

    def resolve(self, ref: str) -> Descriptor:
        """The descriptor for a tag or a ``sha256:`` digest."""
        if ref.startswith("sha256:"):
            _check_digest(ref)
            for d in self.descriptors():
                if d.digest == ref:
                    return d
            if not self.has_blob(ref):
                raise BuildError(f"no manifest {ref} in layout {self.path}")
            doc = self.read_json(ref)
            media = doc.get("mediaType", MEDIA_MANIFEST)
            return Descriptor(str(media), ref, self.blob_path(ref).stat().st_size)
        for d in self.descriptors():
            if d.ref_name == ref:
                return d
        known = ", ".join(self.tags()) or "none"
        raise BuildError(f"no tag {ref!r} in layout {self.path} (tags: {known})")

    def read_manifest(
        self, ref: str, platform: Platform | None = None
    ) -> tuple[Descriptor, dict[str, Any]]:
        """The image manifest a tag/digest names; an index is resolved by ``platform``."""
        desc = self.resolve(ref)
        doc = self.read_json(desc.digest)
        if desc.media_type == MEDIA_INDEX or doc.get("mediaType") == MEDIA_INDEX:
            wanted = platform or Platform("amd64")
            for m in doc.get("manifests", []):
                d = Descriptor.from_json(m)
                if d.platform is not None and (
                    d.platform.architecture == wanted.architecture and d.platform.os == wanted.os
                ):
                    return d, self.read_json(d.digest)
            raise BuildError(f"image {ref} in {self.path} has no manifest for {wanted}")
        return desc, doc

    def read_config(self, ref: str, platform: Platform | None = None) -> dict[str, Any]:
        """The image config of a tag/digest."""
        _, manifest = self.read_manifest(ref, platform)
        return self.read_json(str(manifest["config"]["digest"]))

    def tag(self, descriptor: Descriptor, tag: str) -> None:
        """Point ``tag`` at ``descriptor`` (replacing any previous target), atomically."""
        if not _TAG_RE.match(tag):
            raise BuildError(f"invalid tag {tag!r}: use letters, digits, '.', '_', '-'")
        if not self.has_blob(descriptor.digest):
            raise BuildError(f"cannot tag {tag}: blob {descriptor.digest} is not in the layout")
        with self._locked():
            index = self.index()
            kept = [m for m in index.get("manifests", []) if _ref(m) != tag]
            annotations = {**descriptor.annotations, REF_NAME: tag}
            kept.append(attrs.evolve(descriptor, annotations=annotations).to_json())
            index["manifests"] = kept
            self._write_index(index)

    def untag(self, tag: str) -> None:
        """Remove ``tag``; an unknown tag raises BuildError. Blobs are kept."""
        with self._locked():
            index = self.index()
            kept = [m for m in index.get("manifests", []) if _ref(m) != tag]
            if len(kept) == len(index.get("manifests", [])):
                raise BuildError(f"no tag {tag!r} in layout {self.path}")
            index["manifests"] = kept
            self._write_index(index)

    def referenced(self) -> set[str]:
        """Digests reachable from ``index.json`` (indexes, manifests, configs, layers)."""
        seen: set[str] = set()
        todo = [(d.digest, d.media_type) for d in self.descriptors()]
        while todo:
            digest, media_type = todo.pop()
            if digest in seen:
                continue
            seen.add(digest)
            if media_type not in (MEDIA_MANIFEST, MEDIA_INDEX) or not self.has_blob(digest):
                continue  # configs and layers reference nothing further
            doc = self.read_json(digest)
            for child in [*doc.get("manifests", []), *doc.get("layers", [])]:
                todo.append((str(child["digest"]), str(child.get("mediaType", ""))))
            if isinstance(doc.get("config"), dict):
                seen.add(str(doc["config"]["digest"]))
        return seen

    def gc(self) -> list[str]:
        """Delete blobs no tag reaches; returns their digests. Run it when no build is writing."""
        with self._locked():
            keep = self.referenced()
            removed = []
            for path in (self.path / "blobs" / "sha256").iterdir():
                digest = "sha256:" + path.name
                if digest not in keep:
                    path.unlink()
                    removed.append(digest)
        return sorted(removed)

    # -- internals -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise index.json read-modify-write between processes.

        The lock is a flock on the layout directory itself, so the layout holds no extra
        files that other tools would have to ignore.
        """
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def _write_index(self, index: Mapping[str, Any]) -> None:
        self._write_atomic("index.json", canonical_json(index))

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


def _ref(manifest: Mapping[str, Any]) -> str | None:
    ann = manifest.get("annotations") or {}
    value = ann.get(REF_NAME)
    return str(value) if value is not None else None


@contextlib.contextmanager
def staged_layout(path: str | os.PathLike[str]) -> Iterator[OCILayout]:
    """Yield a layout to build into, so that a failed build leaves nothing at ``path``.

    A new layout is built in a temporary sibling directory and renamed to ``path`` on
    success. An existing layout is written in place: its blobs and index are already
    written atomically, so a failure adds at most unreferenced blobs.
    """
    dest = Path(path)
    if (dest / "oci-layout").exists():
        yield OCILayout.open(dest)
        return
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BuildError(f"{dest} exists and is not an OCI layout; refusing to overwrite it")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    except OSError as exc:
        raise BuildError(f"cannot write OCI layout {dest}: {exc.strerror or exc}") from exc
    try:
        layout = OCILayout.create(tmp)
        yield layout
        if dest.is_dir():
            dest.rmdir()  # only an empty directory gets here
        os.rename(tmp, dest)
        layout.path = dest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
