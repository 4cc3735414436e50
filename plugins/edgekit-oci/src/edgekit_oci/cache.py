"""The layer cache: built layer blobs kept by the hash of their inputs.

The cache directory is itself an OCI layout (its blobs are the cached layers) plus
``layers/<key>.json`` records holding each layer's digest, diff_id, size and media type, and
``digests/`` holding host files' content digests with the stat data that vouches for them.
Records are written atomically and only after their blob is in place, so a crashed build
never leaves a record pointing at nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path

import attrs

from edgekit.errors import BuildError

from .digests import DigestStore
from .layout import OCILayout, canonical_json

__all__ = ["CachedLayer", "LayerCache"]

_KEY_RE = re.compile(r"^[0-9a-f]{64}$")


@attrs.frozen
class CachedLayer:
    """One cache record."""

    digest: str
    diff_id: str
    size: int
    media_type: str


class LayerCache:
    """Layer blobs by content key under ``path`` (created on first use)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.layout = OCILayout.create(self.path)
        try:
            (self.path / "layers").mkdir(exist_ok=True)
        except OSError as exc:
            raise BuildError(f"cannot use layer cache {self.path}: {exc.strerror or exc}") from exc
        #: Host files' content digests, for cache keys (see :mod:`edgekit_oci.digests`).
        self.digest_store = DigestStore(self.path / "digests")

    def _record(self, key: str) -> Path:
        if not _KEY_RE.match(key):
            raise BuildError(f"invalid layer cache key {key!r}")
        return self.path / "layers" / f"{key}.json"

    def blob_path(self, digest: str) -> Path:
        return self.layout.blob_path(digest)

    def lookup(self, key: str) -> CachedLayer | None:
        """The record for ``key`` if it and its blob (of the recorded size) exist."""
        try:
            data = json.loads(self._record(key).read_bytes())
            hit = CachedLayer(
                digest=str(data["digest"]),
                diff_id=str(data["diff_id"]),
                size=int(data["size"]),
                media_type=str(data["media_type"]),
            )
            if self.blob_path(hit.digest).stat().st_size != hit.size:
                return None
            os.utime(self._record(key))  # recency for prune()
        except (OSError, ValueError, KeyError, TypeError, BuildError):
            return None  # a missing or damaged record is a miss; the rebuild rewrites it
        return hit

    def store(self, key: str, *, digest: str, diff_id: str, size: int, media_type: str) -> None:
        """Record a layer whose blob is already in :attr:`layout`."""
        record = attrs.asdict(CachedLayer(digest, diff_id, size, media_type))
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.path / "layers")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(canonical_json(record))
            os.replace(tmp, self._record(key))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def keys(self) -> list[str]:
        """Keys with a record, sorted."""
        return sorted(p.stem for p in (self.path / "layers").glob("*.json"))

    def prune(self, max_bytes: int) -> list[str]:
        """Drop least recently used records until the blobs total at most ``max_bytes``.

        A blob is deleted once no remaining record uses it. Returns the dropped keys.
        """
        records: list[tuple[float, str, str, int]] = []
        for path in (self.path / "layers").glob("*.json"):
            try:
                data = json.loads(path.read_bytes())
                records.append(
                    (path.stat().st_mtime, path.stem, str(data["digest"]), int(data["size"]))
                )
            except (OSError, ValueError, KeyError, TypeError):
                path.unlink(missing_ok=True)  # damaged: useless anyway
        records.sort()
        users: dict[str, int] = {}
        sizes: dict[str, int] = {}
        for _, _, digest, size in records:
            users[digest] = users.get(digest, 0) + 1
            sizes[digest] = size
        total = sum(sizes.values())
        dropped = []
        for _, key, digest, _ in records:
            if total <= max_bytes:
                break
            self._record(key).unlink(missing_ok=True)
            dropped.append(key)
            users[digest] -= 1
            if users[digest] == 0:
                self.blob_path(digest).unlink(missing_ok=True)
                total -= sizes[digest]
        return dropped
