"""A local OCI image layout as a content store: verified atomic blob writes, tags in index.json.

The implementation is :class:`edgekit.oci.Layout`, shared with the image builder; this
subclass keeps the publisher's signatures and raises :class:`PublishError` (and
:class:`DigestMismatch` for content that does not match its digest or size).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edgekit.errors import PublishError
from edgekit.oci import Layout

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


class OciLayout(Layout):
    """An OCI image layout directory (``oci-layout``, ``index.json``, ``blobs/sha256``)."""

    error = PublishError
    mismatch_error = DigestMismatch
    missing_tag = "tag {tag!r} not found in layout {path} (tags: {tags})"

    def write_blob(
        self, chunks: Iterable[bytes], digest: str, size: int | None = None
    ) -> tuple[bool, int]:
        """Store *chunks* as blob *digest*, verifying digest and size while streaming.

        Written to a temporary name in the layout, then renamed: a failure leaves nothing.
        Returns ``(written, bytes)``; ``written`` is False if the blob was already present.
        """
        if self.has_blob(digest, size):
            return False, 0
        return True, self.write_stream(chunks, digest, size)[1]

    def write_blob_bytes(self, data: bytes, digest: str | None = None) -> str:
        """Store small *data*; returns its digest (verified against *digest* if given)."""
        return self.write_bytes(data, digest)[0]

    def resolve(self, tag: str | None = None, digest: str | None = None) -> dict[str, Any]:
        """The index.json descriptor for *digest* or *tag* (or the only entry if neither)."""
        return self.lookup(tag, digest)
