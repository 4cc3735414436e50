"""A fleet's site ISOs as one index artifact: fast to publish, fetched by site.

One artifact per forge, ``<target>/sites:<forge>``::

    manifest (artifactType application/vnd.edgekit.site-isos.v1)
      config  application/vnd.edgekit.site-index.v1+json
              {"version": 1, "sites": {"store-0042": {"chunk": "sha256:…",
                                                      "offset": 262144, "size": 131072,
                                                      "digest": "sha256:…"}, …}}
      layers  application/vnd.edgekit.site-iso.chunk.v1   site ISOs back to back (≤ 8 MiB)

A device (or a technician's laptop) fetches its ISO by site: the manifest, the index (the
config blob), then ``bytes=offset-(offset+size-1)`` of its chunk with an HTTP ``Range``
request, verified against the ISO's own digest (:func:`pull_site_iso`). Registries that
ignore ``Range`` send the whole chunk, which still works.

Why: a ``docker-registry`` spends milliseconds of CPU on every request, so one artifact
per site (blob upload, manifest: 3-4 requests) cannot reach 1,000 sites in 5 s on two
cores; chunks need ~3 requests per 8 MiB. Publishing is incremental: a site whose ISO
digest is already in the published index sends nothing; changed or new sites go into new
chunks, so unchanged sites keep their chunk and offset (and their recorded state stays
true); a re-publish with nothing changed sends no bytes and writes no manifest.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from edgekit import oci_types as mt
from edgekit.errors import ConfigError, PublishError
from edgekit.oci_ref import LayoutRef, Reference, check_tag, parse_target
from edgekit.plugins.interfaces import PushResult

from .client import ConnectionOptions, NotFound, RegistryClient
from .layout import OciLayout
from .progress import BlobDone, BlobSkipped, BlobStarted

__all__ = [
    "CHUNK_BYTES",
    "INDEX_MEDIA_TYPE",
    "SITE_ISOS",
    "FleetPushResult",
    "pull_site_iso",
    "push_site_isos",
    "read_site_index",
]

# The names this module exported before the vocabulary moved to edgekit.oci_types.
SITE_ISOS = mt.SITE_ISOS
INDEX_MEDIA_TYPE = mt.SITE_ISOS_INDEX
CHUNK_MEDIA_TYPE = mt.SITE_ISOS_CHUNK
ISO_MEDIA_TYPE = mt.ISO_IMAGE
#: Site ISOs per chunk blob are added up to this many bytes (64 ISOs of 128 KiB).
CHUNK_BYTES = 8 << 20
#: The index is read into memory: refuse one larger than this (1,000 sites: ~170 KB).
MAX_INDEX_BYTES = 64 << 20


@attrs.frozen
class FleetPushResult:
    """What a fleet publish did: per-site results and the totals."""

    reference: str
    #: The manifest digest ("" when nothing changed and no manifest was written).
    digest: str
    sites: Mapping[str, PushResult]
    uploaded_bytes: int = 0
    uploaded_chunks: int = 0
    #: Sites whose ISO was already published with the same digest.
    unchanged_sites: int = 0


class _Concat(io.RawIOBase):
    """Several files read back to back as one seekable stream (opened lazily)."""

    def __init__(self, parts: Sequence[tuple[Path, int]]) -> None:
        self._parts = parts
        self._starts: list[int] = []
        total = 0
        for _, size in parts:
            self._starts.append(total)
            total += size
        self._size, self._pos = total, 0
        self._open: tuple[int, io.BufferedReader] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while self._pos < self._size:
            i = bisect.bisect_right(self._starts, self._pos) - 1
            path, size = self._parts[i]
            within = self._pos - self._starts[i]
            if within >= size:  # an empty part
                self._pos = self._starts[i] + size
                continue
            if self._open is None or self._open[0] != i:
                self._close_part()
                self._open = (i, path.open("rb"))
            fh = self._open[1]
            fh.seek(within)
            n: int = fh.readinto(view[: min(len(view), size - within)])
            if not n:
                raise PublishError(f"{path} ended early (changed during the publish?)")
            self._pos += n
            return n
        return 0

    def _close_part(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None

    def close(self) -> None:
        self._close_part()
        super().close()


def _hash_parts(parts: Sequence[tuple[str, Path, str, int]]) -> str:
    """The chunk's digest; every part is checked against its own digest on the way."""
    whole = hashlib.sha256()
    for site, path, digest, size in parts:
        own = hashlib.sha256()
        n = 0
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                own.update(block)
                whole.update(block)
                n += len(block)
        if f"sha256:{own.hexdigest()}" != digest or n != size:
            raise PublishError(
                f"site ISO of {site} ({path}) no longer matches its digest {digest}: it changed "
                "after it was built; build it again. Nothing was published."
            )
    return f"sha256:{whole.hexdigest()}"


def read_site_index(
    client: RegistryClient, ref: Reference
) -> tuple[dict[str, dict[str, Any]], dict[str, int]] | None:
    """``(sites, {chunk digest: size})`` of the index artifact at *ref*, None if there is
    none (or the tag holds something else, which the publish then replaces)."""
    try:
        data, _ = client.get_manifest(ref.repository, ref.reference)
    except NotFound:
        return None
    try:
        doc = json.loads(data)
        if doc.get("artifactType") != SITE_ISOS:
            return None
        cfg = doc["config"]
        layers = {layer["digest"]: int(layer["size"]) for layer in doc.get("layers", [])}
        if int(cfg["size"]) > MAX_INDEX_BYTES:
            raise PublishError(f"{ref}: the site index is {cfg['size']} bytes, too large")
        body = _get_blob(client, ref.repository, cfg["digest"])
        if "sha256:" + hashlib.sha256(body).hexdigest() != cfg["digest"]:
            raise PublishError(f"{ref}: the site index does not match its digest")
        sites = json.loads(body)["sites"]
    except (KeyError, TypeError, ValueError) as e:
        raise PublishError(f"{ref}: malformed site index ({type(e).__name__}: {e})") from None
    return dict(sites), layers


def _get_blob(client: RegistryClient, repository: str, digest: str) -> bytes:
    def get() -> bytes:
        resp = client.open_blob(repository, digest)
        try:
            return resp.content
        finally:
            resp.close()

    return client.retry(f"GET blob {digest}", get)


def _chunks(
    pending: Sequence[tuple[str, Path, str, int]], limit: int
) -> list[list[tuple[str, Path, str, int]]]:
    out: list[list[tuple[str, Path, str, int]]] = []
    size = 0
    for item in pending:
        if not out or (size + item[3] > limit and out[-1]):
            out.append([])
            size = 0
        out[-1].append(item)
        size += item[3]
    return out


class _RegistryStore:
    """A registry repository as the fleet index's store."""

    def __init__(self, ref: Reference, options: ConnectionOptions) -> None:
        self.ref, self.client = ref, RegistryClient(ref.host, options)

    def open(self) -> None:
        self.client.ping(self.ref.repository)

    def index(self) -> tuple[dict[str, dict[str, Any]], dict[str, int]] | None:
        return read_site_index(self.client, self.ref)

    def has_blob(self, digest: str, size: int) -> bool:
        return self.client.blob_exists(self.ref.repository, digest)

    def put_blob(self, digest: str, size: int, opener: Callable[[], BinaryIO]) -> None:
        self.client.upload_blob(self.ref.repository, digest, size, opener)

    def put_manifest(self, data: bytes) -> None:
        assert self.ref.tag is not None
        self.client.put_manifest(self.ref.repository, self.ref.tag, data, mt.OCI_MANIFEST)

    def read_range(self, digest: str, offset: int, size: int) -> bytes:
        def fetch() -> bytes:
            resp = self.client.open_blob(
                self.ref.repository,
                digest,
                headers={"Range": f"bytes={offset}-{offset + size - 1}"},
            )
            try:
                if resp.status_code == 206:
                    return resp.content
                # No range support: read the whole chunk, keep our part.
                return _slice(resp.iter_content(1 << 20), offset, size)
            finally:
                resp.close()

        return self.client.retry(f"GET {offset}+{size} of {digest}", fetch)

    def close(self) -> None:
        self.client.close()


class _LayoutStore:
    """A local OCI layout (``oci:PATH:TAG``) as the fleet index's store."""

    def __init__(self, ref: LayoutRef) -> None:
        self.layout, self.tag = OciLayout(ref.path), ref.tag

    def open(self) -> None:
        self.layout.ensure()

    def index(self) -> tuple[dict[str, dict[str, Any]], dict[str, int]] | None:
        try:
            desc = self.layout.resolve(self.tag)
        except PublishError:
            return None
        doc = self.layout.read_json(desc["digest"])
        if doc.get("artifactType") != SITE_ISOS:
            return None
        try:
            sites = json.loads(self.layout.read_blob(doc["config"]["digest"]))["sites"]
            layers = {x["digest"]: int(x["size"]) for x in doc.get("layers", [])}
        except (KeyError, TypeError, ValueError) as e:
            raise PublishError(f"{self.layout.path}: malformed site index ({e})") from None
        return dict(sites), layers

    def has_blob(self, digest: str, size: int) -> bool:
        return self.layout.has_blob(digest, size)

    def put_blob(self, digest: str, size: int, opener: Callable[[], BinaryIO]) -> None:
        with opener() as f:
            self.layout.write_blob(iter(lambda: f.read(1 << 20), b""), digest, size)

    def put_manifest(self, data: bytes) -> None:
        digest = self.layout.write_blob_bytes(data)
        desc = {"mediaType": mt.OCI_MANIFEST, "digest": digest, "size": len(data)}
        self.layout.add_manifest({**desc, "artifactType": SITE_ISOS}, self.tag)

    def read_range(self, digest: str, offset: int, size: int) -> bytes:
        with self.layout.open_blob(digest) as f:
            f.seek(offset)
            return f.read(size)

    def close(self) -> None:
        return None


def _store(target: str, options: ConnectionOptions) -> _RegistryStore | _LayoutStore:
    dest = parse_target(target)
    if dest.digest or not dest.tag:
        raise ConfigError.single(
            "target", f"{target}: a fleet index needs a tag (host/repository:tag, oci:PATH:tag)"
        )
    check_tag(dest.tag)
    if isinstance(dest, LayoutRef):
        return _LayoutStore(dest)
    return _RegistryStore(dest, options)


def push_site_isos(
    isos: Sequence[tuple[str, Path | str, str]],
    target: str,
    *,
    annotations: Mapping[str, str] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    options: ConnectionOptions | None = None,
) -> FleetPushResult:
    """Publish a fleet's site ISOs, ``(site, path, sha256 digest)``, as one index artifact
    at *target* (``host/repo:tag`` or ``oci:PATH:tag``). Sites not in *isos* leave the index."""
    o = options or ConnectionOptions()
    store = _store(target, o)
    items = sorted((site, Path(p), d, Path(p).stat().st_size) for site, p, d in isos)
    ref = target
    try:
        store.open()
        found = store.index()
        old, old_layers = found if found is not None else ({}, {})
        index: dict[str, dict[str, Any]] = {}
        pending = []
        for site, path, digest, size in items:
            entry = old.get(site)
            if entry and entry.get("digest") == digest and entry.get("chunk") in old_layers:
                index[site] = entry
            else:
                pending.append((site, path, digest, size))
        unchanged = len(items) - len(pending)
        if not pending and found is not None and set(old) == set(index):
            return FleetPushResult(
                ref, "", _results(ref, items, set()), 0, 0, unchanged
            )  # nothing to send: not even a manifest

        sent = [0]

        def upload(parts: list[tuple[str, Path, str, int]]) -> tuple[str, int]:
            digest = _hash_parts(parts)
            size = sum(p[3] for p in parts)
            if store.has_blob(digest, size):
                _emit(o, BlobSkipped(digest, size))
                return digest, size
            _emit(o, BlobStarted(digest, size))
            files = [(p[1], p[3]) for p in parts]
            store.put_blob(digest, size, lambda: _reader(files))
            sent[0] += size
            _emit(o, BlobDone(digest, size))
            return digest, size

        groups = _chunks(pending, chunk_bytes)
        with ThreadPoolExecutor(max_workers=max(1, o.concurrency)) as pool:
            uploaded = list(pool.map(upload, groups))
        for parts, (digest, _size) in zip(groups, uploaded, strict=True):
            offset = 0
            for site, _path, iso_digest, size in parts:
                index[site] = {
                    "chunk": digest,
                    "offset": offset,
                    "size": size,
                    "digest": iso_digest,
                }
                offset += size
        config = json.dumps(
            {"version": 1, "sites": dict(sorted(index.items()))}, separators=(",", ":")
        ).encode()
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        if not store.has_blob(config_digest, len(config)):
            store.put_blob(config_digest, len(config), lambda: io.BytesIO(config))
            sent[0] += len(config)
        sizes = {**old_layers, **dict(uploaded)}
        layers = [
            {"mediaType": CHUNK_MEDIA_TYPE, "digest": d, "size": sizes[d]}
            for d in sorted({e["chunk"] for e in index.values()})
        ]
        manifest = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "artifactType": SITE_ISOS,
            "config": {"mediaType": INDEX_MEDIA_TYPE, "digest": config_digest, "size": len(config)},
            "layers": layers,
            "annotations": dict(
                sorted({**(annotations or {}), "dev.edgekit.sites": str(len(index))}.items())
            ),
        }
        data = json.dumps(manifest, separators=(",", ":")).encode()
        mdigest = "sha256:" + hashlib.sha256(data).hexdigest()
        store.put_manifest(data)
        sent[0] += len(data)
    except PublishError as e:
        # The manifest is written last: until then the published index is the old one.
        raise type(e)(
            f"publishing {len(items)} site ISO(s) to {target} failed: {e}; "
            "the published site index was not changed"
        ) from None
    finally:
        store.close()
    changed = {p[0] for p in pending}
    return FleetPushResult(
        ref, mdigest, _results(ref, items, changed), sent[0], len(groups), unchanged
    )


def _reader(files: Sequence[tuple[Path, int]]) -> BinaryIO:
    return io.BufferedReader(_Concat(files), buffer_size=1 << 20)


def _results(
    ref: str, items: Sequence[tuple[str, Path, str, int]], changed: set[str]
) -> dict[str, PushResult]:
    return {
        site: PushResult(
            ref,
            digest,
            ISO_MEDIA_TYPE,
            size,
            size if site in changed else 0,
            0,
            0,
            int(site in changed),
        )
        for site, _path, digest, size in items
    }


def _emit(options: ConnectionOptions, event: Any) -> None:
    if options.progress is not None:
        options.progress(event)


def pull_site_iso(
    target: str,
    site: str,
    dest: Path | str,
    *,
    options: ConnectionOptions | None = None,
) -> Path:
    """Fetch *site*'s ISO from the fleet index at *target* (``host/repo:tag`` or
    ``oci:PATH:tag``) into *dest* (a directory, existing or named with a trailing ``/``:
    ``<site>.iso`` in it; else the file), verified against its digest."""
    store = _store(target, options or ConnectionOptions())
    out = Path(dest)
    # Path("out/") drops the slash: without this check a new "out/" became a file "out".
    if out.is_dir() or str(dest).endswith(("/", os.sep)):
        out = out / f"{site}.iso"
    try:
        found = store.index()
        if found is None:
            raise PublishError(f"{target} is not a site ISO index")
        entry = found[0].get(site)
        if entry is None:
            raise PublishError(f"{target} has no site {site!r} ({len(found[0])} sites)")
        size = int(entry["size"])
        data = store.read_range(entry["chunk"], int(entry["offset"]), size)
    finally:
        store.close()
    if "sha256:" + hashlib.sha256(data).hexdigest() != entry["digest"] or len(data) != size:
        raise PublishError(f"{target}: {site}'s ISO does not match its digest {entry['digest']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return out


def _slice(chunks: Iterator[bytes], offset: int, size: int) -> bytes:
    buf = bytearray()
    pos = 0
    for c in chunks:
        lo, hi = max(offset - pos, 0), min(offset + size - pos, len(c))
        if lo < hi:
            buf += c[lo:hi]
        pos += len(c)
        if pos >= offset + size:
            break
    return bytes(buf)
