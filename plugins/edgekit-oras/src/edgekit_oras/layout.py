"""A local OCI image layout as a content store: verified atomic blob writes, tags in index.json."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from edgekit.errors import PublishError

from . import mediatypes as mt

__all__ = ["CHUNK", "DigestMismatch", "OciLayout", "sha256_file"]

#: Read/write unit for streaming blobs.
CHUNK = 1 << 20


class DigestMismatch(PublishError):
    """Content did not hash to the digest it was fetched or stored under."""


def sha256_file(path: Path) -> tuple[str, int]:
    """``(sha256:<hex>, size)`` of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def _check_digest(digest: str) -> tuple[str, str]:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
        raise PublishError(f"unsupported or malformed digest {digest!r} (only sha256 is supported)")
    return algo, hexpart


class OciLayout:
    """An OCI image layout directory (``oci-layout``, ``index.json``, ``blobs/sha256``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"OciLayout({str(self.path)!r})"

    # --- structure ------------------------------------------------------------------------
    def exists(self) -> bool:
        """True if *path* holds an ``oci-layout`` file."""
        return (self.path / "oci-layout").is_file()

    def ensure(self) -> None:
        """Create an empty layout if none exists."""
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        if not (self.path / "oci-layout").exists():
            self._atomic_write(self.path / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        if not (self.path / "index.json").exists():
            empty = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
            self._atomic_write(self.path / "index.json", json.dumps(empty).encode())

    def require(self) -> None:
        """Raise :class:`PublishError` unless *path* is an OCI layout."""
        if not self.exists():
            raise PublishError(f"{self.path} is not an OCI image layout (no oci-layout file)")

    # --- blobs ----------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        """Where the blob *digest* lives (whether or not it exists)."""
        algo, hexpart = _check_digest(digest)
        return self.path / "blobs" / algo / hexpart

    def has_blob(self, digest: str, size: int | None = None) -> bool:
        """True if the blob is present (and has *size* bytes, when given)."""
        p = self.blob_path(digest)
        try:
            st = p.stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def read_blob(self, digest: str) -> bytes:
        """A small blob's bytes (manifests, configs); raises PublishError if missing."""
        p = self.blob_path(digest)
        try:
            return p.read_bytes()
        except FileNotFoundError:
            raise PublishError(f"blob {digest} is missing from layout {self.path}") from None

    def write_blob(
        self, chunks: Iterable[bytes], digest: str, size: int | None = None
    ) -> tuple[bool, int]:
        """Store *chunks* as blob *digest*, verifying digest and size while streaming.

        Written to a temporary name beside the target, then renamed: a failure leaves nothing.
        Returns ``(written, bytes)``; ``written`` is False if the blob was already present.
        """
        target = self.blob_path(digest)
        if self.has_blob(digest, size):
            return False, 0
        target.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        n = 0
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    h.update(chunk)
                    n += len(chunk)
                    if size is not None and n > size:
                        raise DigestMismatch(f"blob {digest}: more than the expected {size} bytes")
                    f.write(chunk)
            got = "sha256:" + h.hexdigest()
            if got != digest:
                raise DigestMismatch(
                    f"blob {digest}: content hashes to {got} (corrupt or tampered)"
                )
            if size is not None and n != size:
                raise DigestMismatch(f"blob {digest}: got {n} bytes, expected {size}")
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return True, n

    def write_blob_bytes(self, data: bytes, digest: str | None = None) -> str:
        """Store small *data*; returns its digest (verified against *digest* if given)."""
        d = digest or "sha256:" + hashlib.sha256(data).hexdigest()
        self.write_blob([data], d, len(data))
        return d

    def open_blob(self, digest: str) -> BinaryIO:
        """Open a blob for reading; raises PublishError naming the blob if it is missing."""
        try:
            return self.blob_path(digest).open("rb")
        except FileNotFoundError:
            raise PublishError(f"blob {digest} is missing from layout {self.path}") from None

    # --- index ----------------------------------------------------------------------------
    def read_index(self) -> dict[str, Any]:
        """The parsed ``index.json``."""
        try:
            data: dict[str, Any] = json.loads((self.path / "index.json").read_text())
        except FileNotFoundError:
            raise PublishError(f"{self.path} is not an OCI image layout (no index.json)") from None
        except json.JSONDecodeError as e:
            raise PublishError(f"{self.path}/index.json is not valid JSON: {e}") from None
        return data

    def resolve(self, tag: str | None = None, digest: str | None = None) -> dict[str, Any]:
        """The index.json descriptor for *digest* or *tag* (or the only entry if neither)."""
        manifests: list[dict[str, Any]] = self.read_index().get("manifests", [])
        if digest is not None:
            for d in manifests:
                if d.get("digest") == digest:
                    return d
            # Any manifest blob of the layout (e.g. an index child) can be addressed by digest.
            if self.has_blob(digest):
                data = self.read_blob(digest)
                mtype = json.loads(data).get("mediaType", mt.OCI_MANIFEST)
                return {"mediaType": mtype, "digest": digest, "size": len(data)}
            raise PublishError(f"{digest} is not in layout {self.path}")
        if tag is None:
            if len(manifests) == 1:
                return manifests[0]
            raise PublishError(f"layout {self.path} holds {len(manifests)} images: name a tag")
        for d in manifests:
            if d.get("annotations", {}).get(mt.REF_NAME) == tag:
                return d
        tags = sorted(
            t for d in manifests if (t := d.get("annotations", {}).get(mt.REF_NAME)) is not None
        )
        raise PublishError(
            f"tag {tag!r} not found in layout {self.path} (tags: {', '.join(tags) or 'none'})"
        )

    def tags(self) -> list[str]:
        """Every tag in index.json."""
        return [
            t
            for d in self.read_index().get("manifests", [])
            if (t := d.get("annotations", {}).get(mt.REF_NAME)) is not None
        ]

    def add_manifest(self, descriptor: Mapping[str, Any], tag: str | None = None) -> None:
        """Record *descriptor* in index.json, tagged *tag* (moving the tag if it existed).

        Untagged descriptors are kept once per digest (artifacts found by referrer listing).
        The index is rewritten atomically under a lock so concurrent writers do not lose tags.
        """
        self.ensure()
        with self._locked():
            index = self.read_index()
            entries: list[dict[str, Any]] = index.setdefault("manifests", [])
            entry = dict(descriptor)
            annotations = dict(entry.get("annotations") or {})
            annotations.pop(mt.REF_NAME, None)
            if tag is not None:
                annotations[mt.REF_NAME] = tag
                entries[:] = [
                    e for e in entries if e.get("annotations", {}).get(mt.REF_NAME) != tag
                ]
            elif any(
                e.get("digest") == entry["digest"] and mt.REF_NAME not in e.get("annotations", {})
                for e in entries
            ):
                return
            if annotations:
                entry["annotations"] = annotations
            else:
                entry.pop("annotations", None)
            entries.append(entry)
            self._atomic_write(self.path / "index.json", json.dumps(index, indent=2).encode())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Lock the directory itself: index.json is replaced by rename, so it cannot carry a lock,
        # and a lock file would add a stray entry to the layout.
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @staticmethod
    def _atomic_write(path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
