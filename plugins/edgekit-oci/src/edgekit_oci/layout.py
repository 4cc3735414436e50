"""OCI image layouts on disk: blobs, manifests, and tags in ``index.json``.

The basics (blob paths, verified atomic blob writes, index reads, tagging under a lock) are
:class:`edgekit.oci.Layout`'s, shared with the publisher; errors are :class:`BuildError`.
Every write is atomic: blobs are streamed to a temporary file inside the layout, their
digest checked, then renamed; ``index.json`` is rewritten through a temporary file. JSON
documents are stored byte-exact: the bytes hashed are the bytes stored, so a publisher can
push them to a registry unchanged.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from edgekit.errors import BuildError
from edgekit.oci import (
    MEDIA_INDEX,
    MEDIA_MANIFEST,
    REF_NAME,
    BlobWriter,
    Layout,
    canonical_json,
)
from edgekit.oci_types import OCI_CONFIG, Descriptor, Platform

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

MEDIA_CONFIG = OCI_CONFIG
# OCI ref.name grammar for tags in a layout (a superset of registry tags, minus path chars).
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_CHUNK = 1 << 20


class OCILayout(Layout):
    """An OCI image layout directory (``oci-layout``, ``index.json``, ``blobs/sha256``).

    The blob, index and tag basics are :class:`edgekit.oci.Layout`'s; this adds typed
    descriptors, tag validation, manifest/config reading, cache imports and garbage collection.
    """

    missing_tag = "no tag {tag!r} in layout {path} (tags: {tags})"

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> OCILayout:
        """Create a layout at ``path`` (or open it if it is already one)."""
        layout = cls(path)
        if layout.exists():
            layout.require()
        else:
            layout.ensure()
        return layout

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> OCILayout:
        """Open an existing layout; a directory that is not one raises BuildError."""
        layout = cls(path)
        layout.require()
        return layout

    # -- blobs ---------------------------------------------------------------------------

    def write_blob(self, data: bytes, expected_digest: str | None = None) -> tuple[str, int]:
        """Store ``data`` as a blob; returns ``(digest, size)``. An existing blob is a no-op."""
        return self.write_bytes(data, expected_digest)

    def write_blob_stream(
        self, chunks: Iterable[bytes], expected_digest: str | None = None
    ) -> tuple[str, int]:
        """Stream chunks into a blob, checking the digest if one is expected."""
        if expected_digest is not None and self.has_blob(expected_digest):
            for _ in chunks:  # drain so the producer's side effects still happen
                pass
            return expected_digest, self.blob_size(expected_digest)
        return self.write_stream(chunks, expected_digest)

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
        with other.open_blob(digest) as src:
            self.write_stream(iter(lambda: src.read(_CHUNK), b""), digest)

    def write_json(self, obj: Any, media_type: str) -> Descriptor:
        """Serialise ``obj`` canonically, store it, and describe it."""
        digest, size = self.write_bytes(canonical_json(obj))
        return Descriptor(media_type, digest, size)

    # -- index and tags ------------------------------------------------------------------

    def index(self) -> dict[str, Any]:
        """The parsed ``index.json``."""
        return self.read_index()

    def descriptors(self) -> list[Descriptor]:
        """Every descriptor in ``index.json``, in order."""
        return [Descriptor.from_json(d) for d in self.read_index().get("manifests", [])]

    def resolve(self, ref: str) -> Descriptor:
        """The descriptor for a tag or a ``sha256:`` digest."""
        if ref.startswith("sha256:"):
            return Descriptor.from_json(self.lookup(digest=ref))
        return Descriptor.from_json(self.lookup(tag=ref))

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
        self.add_manifest(descriptor.to_json(), tag)

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
