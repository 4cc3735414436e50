"""Moving blobs: the content graph of a manifest or index, its sources (a layout or a
registry session) and the parallel copies into a registry or a layout.

Blobs go before the manifests that name them and index children before the index (the
callers in :mod:`.engine` and :mod:`.pulling` write tags last), and every byte pulled is
verified against its digest while streaming.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, Literal

import attrs
import requests

from edgekit import oci_types as mt
from edgekit.errors import PublishError
from edgekit.oci_ref import LayoutRef, Target, parse_target
from edgekit.oci_types import Descriptor

from .client import ConnectionOptions, RegistryClient, TransientError
from .layout import OciLayout
from .progress import BlobDone, BlobMounted, BlobProgress, BlobSkipped, BlobStarted


def _descriptor(data: Mapping[str, Any]) -> Descriptor:
    """A descriptor read from a layout or registry; malformed ones are a :class:`PublishError`."""
    return Descriptor.from_json(data, error=PublishError)


# Repositories (per registry host) where this process has seen each blob: mount candidates.
_seen_lock = threading.Lock()
_seen: dict[tuple[str, str], list[str]] = {}


def _remember(host: str, repository: str, digests: list[str]) -> None:
    with _seen_lock:
        for d in digests:
            repos = _seen.setdefault((host, d), [])
            if repository not in repos:
                repos.append(repository)


def _mount_candidates(host: str, repository: str, digest: str, extra: tuple[str, ...]) -> list[str]:
    with _seen_lock:
        seen = list(_seen.get((host, digest), []))
    return [r for r in dict.fromkeys([*extra, *seen]) if r != repository]


# --- content graph --------------------------------------------------------------------------


@attrs.frozen
class _Graph:
    """Everything an image needs: blobs and manifests (children before parents)."""

    blobs: dict[str, int]
    manifests: list[tuple[str, str, bytes]]  # (digest, media type, bytes), top last


def _walk(fetch: Callable[[str], tuple[bytes, str]], top: Descriptor) -> _Graph:
    blobs: dict[str, int] = {}
    manifests: list[tuple[str, str, bytes]] = []

    def visit(digest: str, expected_type: str) -> None:
        data, mtype = fetch(digest)
        got = "sha256:" + hashlib.sha256(data).hexdigest()
        if got != digest:
            raise PublishError(f"manifest {digest} hashes to {got} (corrupt or tampered)")
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise PublishError(f"manifest {digest} is not JSON: {e}") from None
        mtype = doc.get("mediaType") or expected_type or mtype
        if mtype in mt.INDEX_TYPES:
            for child in doc.get("manifests", []):
                visit(child["digest"], child.get("mediaType", mt.OCI_MANIFEST))
        else:
            cfg = doc.get("config")
            if cfg:
                blobs[cfg["digest"]] = int(cfg["size"])
            for layer in doc.get("layers", []):
                if layer.get("urls"):
                    continue  # foreign layer: distributed elsewhere by design
                blobs[layer["digest"]] = int(layer["size"])
        if all(m[0] != digest for m in manifests):
            manifests.append((digest, mtype, data))

    try:
        visit(top.digest, top.media_type)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise PublishError(
            f"malformed manifest under {top.digest}: {type(e).__name__} {e}"
        ) from None
    return _Graph(blobs, manifests)


# --- sources and sinks ------------------------------------------------------------------------


class _LayoutSource:
    def __init__(self, layout: OciLayout) -> None:
        self.layout = layout

    def manifest(self, digest: str) -> tuple[bytes, str]:
        data = self.layout.read_blob(digest)
        return data, json.loads(data).get("mediaType", "")

    def manifest_by_ref(self, ref: str) -> tuple[bytes, str]:
        if ref.startswith("sha256:"):
            return self.manifest(ref)
        return self.manifest(self.layout.resolve(ref)["digest"])

    def opener(self, digest: str) -> Callable[[], BinaryIO]:
        return lambda: self.layout.open_blob(digest)

    @contextlib.contextmanager
    def chunks(self, digest: str) -> Iterator[Iterator[bytes]]:
        with self.layout.open_blob(digest) as f:
            yield iter(lambda: f.read(1 << 20), b"")


class _RegistrySource:
    def __init__(self, client: RegistryClient, repository: str) -> None:
        self.client, self.repository = client, repository

    def manifest(self, digest: str) -> tuple[bytes, str]:
        return self.client.get_manifest(self.repository, digest)

    @contextlib.contextmanager
    def chunks(self, digest: str) -> Iterator[Iterator[bytes]]:
        resp = self.client.open_blob(self.repository, digest)

        def body() -> Iterator[bytes]:
            try:
                yield from resp.iter_content(1 << 20)
            except requests.RequestException as e:
                # A reset mid-download: retry the whole blob (the partial file is discarded).
                raise TransientError(
                    f"download of {digest} from {self.client.host} broke off: {type(e).__name__}"
                ) from None

        try:
            yield body()
        finally:
            resp.close()


def _emit(options: ConnectionOptions, event: Any) -> None:
    if options.progress is not None:
        options.progress(event)


class _Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.uploaded: list[str] = []
        self.skipped: list[str] = []
        self.mounted: list[str] = []
        self.failed: dict[str, str] = {}
        self.bytes = 0


def _run_parallel(
    options: ConnectionOptions,
    blobs: dict[str, int],
    one: Callable[[str, int], None],
    tally: _Tally,
) -> None:
    def guarded(item: tuple[str, int]) -> None:
        try:
            one(*item)
        except PublishError as e:
            with tally.lock:
                tally.failed[item[0]] = str(e)
        except OSError as e:
            # Local I/O (disk full, unreadable file) is the user's to fix: report it per blob.
            with tally.lock:
                tally.failed[item[0]] = f"{type(e).__name__}: {e.strerror or e}"

    # Biggest first, so the long transfers overlap with the many small ones.
    items = sorted(blobs.items(), key=lambda kv: -kv[1])
    with ThreadPoolExecutor(max_workers=max(1, options.concurrency)) as pool:
        list(pool.map(guarded, items))


def _push_blobs_to_registry(
    client: RegistryClient,
    repository: str,
    src: _LayoutSource,
    blobs: dict[str, int],
    options: ConnectionOptions,
) -> _Tally:
    tally = _Tally()

    def one(digest: str, size: int) -> None:
        if client.blob_exists(repository, digest):
            with tally.lock:
                tally.skipped.append(digest)
            _emit(options, BlobSkipped(digest, size))
            return
        for source in _mount_candidates(client.host, repository, digest, options.mount_from):
            if client.mount_blob(repository, digest, source):
                with tally.lock:
                    tally.mounted.append(digest)
                _emit(options, BlobMounted(digest, size, source))
                return
        _emit(options, BlobStarted(digest, size))
        done = [0]

        def on_bytes(n: int) -> None:
            done[0] += n
            with tally.lock:
                tally.bytes += n
            _emit(options, BlobProgress(digest, n, done[0], size))

        client.upload_blob(repository, digest, size, src.opener(digest), on_bytes)
        with tally.lock:
            tally.uploaded.append(digest)
        _emit(options, BlobDone(digest, size))

    _run_parallel(options, blobs, one, tally)
    return tally


def _fail_report(what: str, tally: _Tally, blobs: dict[str, int]) -> PublishError:
    present = set(tally.uploaded) | set(tally.skipped) | set(tally.mounted)
    missing = [d for d in blobs if d not in present]
    first = next(iter(tally.failed.values()), "unknown error")
    return PublishError(
        f"{what} failed: {len(tally.failed)} blob(s) could not be transferred; "
        "no tag was written.\n"
        f"  cause: {first}\n"
        f"  transferred or already present ({len(present)}): {', '.join(sorted(present)) or '-'}\n"
        f"  not transferred ({len(missing)}): {', '.join(sorted(missing)) or '-'}"
    )


def _copy_blobs_to_layout(
    dest: OciLayout,
    src: _LayoutSource | _RegistrySource,
    blobs: dict[str, int],
    options: ConnectionOptions,
    direction: Literal["push", "pull"],
) -> _Tally:
    tally = _Tally()

    def one(digest: str, size: int) -> None:
        if dest.has_blob(digest, size):
            with tally.lock:
                tally.skipped.append(digest)
            _emit(options, BlobSkipped(digest, size, direction))
            return
        _emit(options, BlobStarted(digest, size, direction))

        def attempt() -> int:
            with src.chunks(digest) as chunks:
                done = 0

                def counted() -> Iterator[bytes]:
                    nonlocal done
                    for c in chunks:
                        done += len(c)
                        _emit(options, BlobProgress(digest, len(c), done, size, direction))
                        yield c

                return dest.write_blob(counted(), digest, size)[1]

        if isinstance(src, _RegistrySource):
            n = src.client.retry(f"GET blob {digest}", attempt)
        else:
            n = attempt()
        with tally.lock:
            tally.uploaded.append(digest)
            tally.bytes += n
        _emit(options, BlobDone(digest, size, direction))

    _run_parallel(options, blobs, one, tally)
    return tally


def _options(options: ConnectionOptions | None) -> ConnectionOptions:
    return options or ConnectionOptions()


def resolve(target: str | Target, *, options: ConnectionOptions | None = None) -> Descriptor:
    """The descriptor (media type, digest, size) a tag or digest points at."""
    t = parse_target(target)
    if isinstance(t, LayoutRef):
        layout = OciLayout(t.path)
        layout.require()
        return _descriptor(layout.resolve(t.tag, t.digest))
    client = RegistryClient(t.host, _options(options))
    try:
        data, mtype = client.get_manifest(t.repository, t.reference)
    finally:
        client.close()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if t.digest is not None and digest != t.digest:
        raise PublishError(f"{t}: manifest hashes to {digest} (corrupt or tampered)")
    return Descriptor(mtype, digest, len(data))
