"""Push, pull and referrers between OCI layouts, files and registries (or a layout as registry).

Every operation takes a target: a registry reference (``host[:port]/repo[:tag]``) or a local
OCI layout (``oci:PATH[:TAG]``, the embedded default when no registry is configured).

Invariants: blobs are transferred before the manifests that name them, index children before
the index, and the tag last, so no tag ever points at a missing blob; manifests are copied
byte-exact, so digests are preserved; every pulled byte is verified against its digest while
streaming, and files appear under their final name only once complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

import attrs
import requests

from edgekit import oci_types as mt
from edgekit.errors import ConfigError, PublishError
from edgekit.oci_ref import LayoutRef, Reference, Target, check_tag, parse_target
from edgekit.oci_types import Descriptor
from edgekit.plugins.interfaces import PushResult

from .client import ConnectionOptions, NotFound, RegistryClient, TransientError
from .layout import OciLayout, sha256_file
from .progress import BlobDone, BlobMounted, BlobProgress, BlobSkipped, BlobStarted

# Descriptor and PushResult are the core's (edgekit.oci_types, edgekit.plugins.interfaces);
# re-exported here because this module's API has always named them.
__all__ = [
    "Descriptor",
    "PullResult",
    "PushResult",
    "build_artifact_manifest",
    "list_referrers",
    "pull",
    "pull_artifact",
    "pull_to_layout",
    "push_artifact",
    "push_layout",
    "resolve",
]


@attrs.frozen
class PullResult:
    """What a pull did."""

    reference: str
    digest: str
    media_type: str
    size: int
    path: Path
    fetched_bytes: int = 0
    fetched_blobs: int = 0
    cached_blobs: int = 0


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


# --- public API ---------------------------------------------------------------------------------


def _ping(client: RegistryClient, dest: Reference) -> None:
    try:
        client.ping(dest.repository)
    except PublishError as e:
        raise type(e)(f"push to {dest}: {e}; nothing was uploaded and no tag was written") from None


def _options(options: ConnectionOptions | None) -> ConnectionOptions:
    return options or ConnectionOptions()


def push_layout(
    layout_dir: Path | str,
    tag: str,
    target: str | Target,
    *,
    options: ConnectionOptions | None = None,
) -> PushResult:
    """Push the image tagged *tag* in an OCI layout to *target*, byte-exact.

    A single-arch manifest or a multi-arch index is pushed as stored, so the digest at the
    target equals the digest in the layout.  The target's tag defaults to *tag*.
    """
    o = _options(options)
    dest = parse_target(target)
    layout = OciLayout(Path(layout_dir))
    layout.require()
    top = _descriptor(layout.resolve(tag))
    src = _LayoutSource(layout)
    graph = _walk(src.manifest, top)
    missing = [d for d, size in graph.blobs.items() if not layout.has_blob(d, size)]
    if missing:
        raise PublishError(
            f"layout {layout.path} is incomplete: blob(s) {', '.join(missing)} missing or of the "
            "wrong size; nothing was pushed"
        )
    out_tag = check_tag(dest.tag or tag)
    if isinstance(dest, LayoutRef):
        dl = OciLayout(dest.path)
        dl.ensure()
        tally = _copy_blobs_to_layout(dl, src, graph.blobs, o, "push")
        if tally.failed:
            raise _fail_report(f"push to {dest}", tally, graph.blobs)
        for digest, _mtype, data in graph.manifests:
            dl.write_blob_bytes(data, digest)
        dl.add_manifest(top.to_json(), out_tag)
        return PushResult(
            str(dest.with_tag(out_tag)), top.digest, top.media_type, top.size,
            tally.bytes, len(tally.skipped), 0, len(tally.uploaded),
        )  # fmt: skip
    client = RegistryClient(dest.host, o)
    try:
        _ping(client, dest)
        tally = _push_blobs_to_registry(client, dest.repository, src, graph.blobs, o)
        if tally.failed:
            raise _fail_report(f"push to {dest}", tally, graph.blobs)
        try:
            for digest, mtype, data in graph.manifests:
                client.put_manifest(dest.repository, digest, data, mtype)
            client.put_manifest(dest.repository, out_tag, graph.manifests[-1][2], top.media_type)
        except PublishError as e:
            raise PublishError(
                f"push to {dest}: all {len(graph.blobs)} blobs are in the registry, but writing "
                f"manifests failed ({e}); the tag {out_tag!r} was not written"
            ) from None
        _remember(dest.host, dest.repository, list(graph.blobs))
    finally:
        client.close()
    return PushResult(
        str(dest.with_tag(out_tag).with_digest(top.digest)), top.digest, top.media_type, top.size,
        tally.bytes, len(tally.skipped), len(tally.mounted), len(tally.uploaded),
    )  # fmt: skip


def _created(created: datetime | None) -> str:
    if created is None:
        sde = os.environ.get("SOURCE_DATE_EPOCH")
        if sde is not None:
            try:
                created = datetime.fromtimestamp(int(sde), UTC)
            except ValueError:
                raise ConfigError.single(
                    "SOURCE_DATE_EPOCH", f"must be an integer number of seconds, not {sde!r}"
                ) from None
        else:
            created = datetime.now(UTC)
    return created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_artifact_manifest(
    file_descriptor: Descriptor,
    artifact_type: str,
    *,
    annotations: Mapping[str, str] | None = None,
    subject: Descriptor | None = None,
) -> bytes:
    """The bytes of an OCI 1.1 artifact manifest (empty config, one layer)."""
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": mt.OCI_EMPTY, "digest": mt.EMPTY_DIGEST, "size": 2, "data": "e30="},
        "layers": [file_descriptor.to_json()],
    }
    if subject is not None:
        manifest["subject"] = {
            "mediaType": subject.media_type,
            "digest": subject.digest,
            "size": subject.size,
        }
    if annotations:
        manifest["annotations"] = dict(sorted(annotations.items()))
    return json.dumps(manifest, separators=(",", ":")).encode()


def _resolve_subject(
    subject: str | Descriptor, dest: Target, fetch: Callable[[str], tuple[bytes, str]]
) -> Descriptor:
    if isinstance(subject, Descriptor):
        return subject
    ref = subject
    if not ref.startswith("sha256:"):
        parsed = parse_target(subject, field="subject")
        same = (
            isinstance(parsed, Reference)
            and isinstance(dest, Reference)
            and (parsed.host, parsed.repository) == (dest.host, dest.repository)
        ) or (
            isinstance(parsed, LayoutRef)
            and isinstance(dest, LayoutRef)
            and parsed.path.resolve() == dest.path.resolve()
        )
        if not same:
            raise ConfigError.single(
                "subject", f"{subject} must be in the same repository as the artifact ({dest})"
            )
        got = parsed.digest or parsed.tag
        if got is None:
            raise ConfigError.single("subject", f"{subject} has neither tag nor digest")
        ref = got
    data, mtype = fetch(ref)
    return Descriptor(mtype, "sha256:" + hashlib.sha256(data).hexdigest(), len(data))


def _fallback_tag(digest: str) -> str:
    return digest.replace(":", "-")


def push_artifact(
    path: Path | str,
    target: str | Target,
    *,
    artifact_type: str,
    media_type: str | None = None,
    subject: str | Descriptor | None = None,
    annotations: Mapping[str, str] | None = None,
    profile: str | None = None,
    site: str | None = None,
    image_digest: str | None = None,
    created: datetime | None = None,
    options: ConnectionOptions | None = None,
) -> PushResult:
    """Push a file as an OCI artifact (``artifactType``, empty config, one layer).

    *subject* (a reference in the same repository, a digest, or a descriptor) makes the
    artifact a referrer of that manifest; on a registry without the referrers API the
    ``sha256-<hex>`` fallback tag index is updated.  The target's tag is optional.
    """
    o = _options(options)
    dest = parse_target(target)
    file = Path(path)
    if not file.is_file():
        raise PublishError(f"artifact file {file} does not exist")
    digest, size = sha256_file(file)
    layer = Descriptor(
        media_type or mt.LAYER_TYPES.get(artifact_type, "application/octet-stream"),
        digest,
        size,
        annotations={mt.TITLE: file.name},
    )
    notes = {mt.CREATED: _created(created)}
    for key, value in ((mt.PROFILE, profile), (mt.SITE, site), (mt.IMAGE_DIGEST, image_digest)):
        if value is not None:
            notes[key] = value
    notes.update(annotations or {})
    blobs = {digest: size, mt.EMPTY_DIGEST: 2}

    with tempfile.TemporaryDirectory(prefix="edgekit-artifact-") as tmp:
        # A throwaway layout holding the empty config, so both blobs stream from files.
        staging = OciLayout(Path(tmp))
        staging.ensure()
        staging.write_blob_bytes(mt.EMPTY_JSON, mt.EMPTY_DIGEST)

        class _Src(_LayoutSource):
            def opener(self, d: str) -> Callable[[], BinaryIO]:
                return (lambda: file.open("rb")) if d == digest else super().opener(d)

            @contextlib.contextmanager
            def chunks(self, d: str) -> Iterator[Iterator[bytes]]:
                if d != digest:
                    with super().chunks(d) as c:
                        yield c
                    return
                with file.open("rb") as f:
                    yield iter(lambda: f.read(1 << 20), b"")

        src = _Src(staging)
        if isinstance(dest, LayoutRef):
            dl = OciLayout(dest.path)
            dl.ensure()
            subj = None
            if subject is not None:
                subj = _resolve_subject(subject, dest, _LayoutSource(dl).manifest_by_ref)
            data = build_artifact_manifest(layer, artifact_type, annotations=notes, subject=subj)
            tally = _copy_blobs_to_layout(dl, src, blobs, o, "push")
            if tally.failed:
                raise _fail_report(f"push to {dest}", tally, blobs)
            mdigest = dl.write_blob_bytes(data)
            desc = Descriptor(mt.OCI_MANIFEST, mdigest, len(data), artifact_type, notes)
            # Untagged artifacts are still listed in index.json, so referrers can be found.
            dl.add_manifest(desc.to_json(), dest.tag)
            return PushResult(
                str(dest.with_digest(mdigest)), mdigest, mt.OCI_MANIFEST, len(data),
                tally.bytes, len(tally.skipped), 0, len(tally.uploaded),
            )  # fmt: skip
        client = RegistryClient(dest.host, o)
        try:
            _ping(client, dest)
            subj = None
            if subject is not None:
                subj = _resolve_subject(
                    subject, dest, lambda r: client.get_manifest(dest.repository, r)
                )
            data = build_artifact_manifest(layer, artifact_type, annotations=notes, subject=subj)
            mdigest = "sha256:" + hashlib.sha256(data).hexdigest()
            tally = _push_blobs_to_registry(client, dest.repository, src, blobs, o)
            if tally.failed:
                raise _fail_report(f"push to {dest}", tally, blobs)
            headers = client.put_manifest(dest.repository, mdigest, data, mt.OCI_MANIFEST)
            if subj is not None and "OCI-Subject" not in headers:
                _attach_fallback(
                    client,
                    dest.repository,
                    subj.digest,
                    Descriptor(mt.OCI_MANIFEST, mdigest, len(data), artifact_type, notes),
                )
            if dest.tag:
                client.put_manifest(dest.repository, dest.tag, data, mt.OCI_MANIFEST)
            _remember(dest.host, dest.repository, list(blobs))
        finally:
            client.close()
    return PushResult(
        str(dest.with_digest(mdigest)), mdigest, mt.OCI_MANIFEST, len(data),
        tally.bytes, len(tally.skipped), len(tally.mounted), len(tally.uploaded),
    )  # fmt: skip


def _attach_fallback(
    client: RegistryClient, repository: str, subject_digest: str, referrer: Descriptor
) -> None:
    """Add *referrer* to the ``sha256-<hex>`` referrers tag index (OCI 1.1 fallback)."""
    tag = _fallback_tag(subject_digest)
    try:
        data, _ = client.get_manifest(repository, tag)
        index: dict[str, Any] = json.loads(data)
    except NotFound:
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
    entries: list[dict[str, Any]] = index.setdefault("manifests", [])
    if any(e.get("digest") == referrer.digest for e in entries):
        return
    entries.append(referrer.to_json())
    body = json.dumps(index, separators=(",", ":")).encode()
    client.put_manifest(repository, tag, body, mt.OCI_INDEX)


def list_referrers(
    target: str | Target,
    *,
    artifact_type: str | None = None,
    options: ConnectionOptions | None = None,
) -> list[Descriptor]:
    """Descriptors of the manifests whose ``subject`` is *target* (by tag or digest).

    Uses the referrers API when the registry has it, else the ``sha256-<hex>`` tag fallback;
    in a layout, scans the manifests listed in index.json.
    """
    o = _options(options)
    t = parse_target(target)
    found: list[Descriptor]
    if isinstance(t, LayoutRef):
        layout = OciLayout(t.path)
        layout.require()
        top = _descriptor(layout.resolve(t.tag, t.digest))
        found = []
        for entry in layout.read_index().get("manifests", []):
            if entry.get("mediaType") != mt.OCI_MANIFEST:
                continue
            doc = json.loads(layout.read_blob(entry["digest"]))
            if (doc.get("subject") or {}).get("digest") == top.digest:
                d = _descriptor(entry)
                notes = {k: v for k, v in d.annotations.items() if k != mt.REF_NAME}
                found.append(
                    attrs.evolve(d, artifact_type=doc.get("artifactType"), annotations=notes)
                )
        found = list({d.digest: d for d in found}.values())
    else:
        client = RegistryClient(t.host, o)
        try:
            if t.digest is not None:
                digest = t.digest
            else:
                data, _ = client.get_manifest(t.repository, t.reference)
                digest = "sha256:" + hashlib.sha256(data).hexdigest()
            index = client.referrers(t.repository, digest)
            if index is None:
                try:
                    data, _ = client.get_manifest(t.repository, _fallback_tag(digest))
                    index = json.loads(data)
                except NotFound:
                    index = {"manifests": []}
            found = [_descriptor(d) for d in index.get("manifests", [])]
        finally:
            client.close()
    if artifact_type is not None:
        found = [d for d in found if d.artifact_type == artifact_type]
    return found


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


@contextlib.contextmanager
def _cleanup_new_dir(path: Path) -> Iterator[None]:
    """Remove *path* on failure if this operation created it."""
    existed = path.exists()
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(path, ignore_errors=True)
        raise


@contextlib.contextmanager
def _open_source(
    ref: Target, o: ConnectionOptions
) -> Iterator[tuple[_LayoutSource | _RegistrySource, Descriptor, RegistryClient | None]]:
    """What *ref* names: its content source (a layout or a registry session), its top
    descriptor, and the registry client (None for a layout), closed on exit."""
    if isinstance(ref, LayoutRef):
        layout = OciLayout(ref.path)
        layout.require()
        yield _LayoutSource(layout), _descriptor(layout.resolve(ref.tag, ref.digest)), None
        return
    client = RegistryClient(ref.host, o)
    try:
        top = resolve(ref, options=o)
        yield _RegistrySource(client, ref.repository), top, client
    finally:
        client.close()


def pull_to_layout(
    ref: str | Target,
    layout_dir: Path | str,
    tag: str | None = None,
    *,
    options: ConnectionOptions | None = None,
) -> PullResult:
    """Pull an image (manifest or index with all children and blobs) into an OCI layout.

    Blobs already in the layout are not fetched again (the layout is a cache by digest).
    The local tag defaults to the reference's tag; it is written only after everything is in.
    """
    o = _options(options)
    src_ref = parse_target(ref, field="reference")
    out = Path(layout_dir)
    local_tag = check_tag(tag or src_ref.tag or "latest")
    dest = OciLayout(out)
    with _cleanup_new_dir(out):
        dest.ensure()
        with _open_source(src_ref, o) as (src, top, _client):
            graph = _walk(src.manifest, top)
            tally = _copy_blobs_to_layout(dest, src, graph.blobs, o, "pull")
            if tally.failed:
                raise _fail_report(f"pull of {src_ref}", tally, graph.blobs)
            for digest, _mtype, data in graph.manifests:
                dest.write_blob_bytes(data, digest)
            dest.add_manifest(top.to_json(), local_tag)
    return PullResult(
        str(src_ref), top.digest, top.media_type, top.size, out,
        tally.bytes, len(tally.uploaded), len(tally.skipped),
    )  # fmt: skip


def pull_artifact(
    ref: str | Target,
    dest: Path | str,
    *,
    options: ConnectionOptions | None = None,
) -> PullResult:
    """Pull an artifact's file: into *dest* if it is a directory (named by its title), else to
    the path *dest*.  Written to a temporary name and renamed once its digest is verified.
    """
    o = _options(options)
    src_ref = parse_target(ref, field="reference")
    with _open_source(src_ref, o) as (src, top, client):
        data, _ = src.manifest(top.digest)
        doc = json.loads(data)
        layers = doc.get("layers", [])
        if doc.get("mediaType", top.media_type) != mt.OCI_MANIFEST or len(layers) != 1:
            raise PublishError(
                f"{src_ref} is not a single-file artifact ({len(layers)} layers); "
                "use pull_to_layout for images"
            )
        layer = _descriptor(layers[0])
        out = Path(dest)
        if out.is_dir():
            title = os.path.basename(layer.annotations.get(mt.TITLE, "")) or layer.digest[7:]
            if title in (".", ".."):
                title = layer.digest[7:]
            out = out / title
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
        os.close(fd)
        try:

            def attempt() -> int:
                h = hashlib.sha256()
                n = 0
                with src.chunks(layer.digest) as chunks, open(tmp, "wb") as f:
                    for c in chunks:
                        h.update(c)
                        n += len(c)
                        f.write(c)
                        _emit(o, BlobProgress(layer.digest, len(c), n, layer.size, "pull"))
                got = "sha256:" + h.hexdigest()
                if got != layer.digest or n != layer.size:
                    raise PublishError(
                        f"{src_ref}: file content hashes to {got} ({n} bytes), expected "
                        f"{layer.digest} ({layer.size} bytes)"
                    )
                return n

            _emit(o, BlobStarted(layer.digest, layer.size, "pull"))
            n = client.retry(f"GET blob {layer.digest}", attempt) if client else attempt()
            os.replace(tmp, out)
            _emit(o, BlobDone(layer.digest, layer.size, "pull"))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    return PullResult(str(src_ref), top.digest, top.media_type, top.size, out, n, 1, 0)


def is_artifact(manifest: Mapping[str, Any]) -> bool:
    """True for a single-file artifact manifest (``artifactType`` or an empty config)."""
    if manifest.get("mediaType", mt.OCI_MANIFEST) != mt.OCI_MANIFEST:
        return False
    config = manifest.get("config") or {}
    return len(manifest.get("layers", [])) == 1 and (
        bool(manifest.get("artifactType")) or config.get("mediaType") == mt.OCI_EMPTY
    )


def pull(
    ref: str | Target, dest: Path | str, *, options: ConnectionOptions | None = None
) -> PullResult:
    """Pull whatever *ref* names: an artifact to a file (see :func:`pull_artifact`), an image
    (manifest or index) into the OCI layout *dest* (see :func:`pull_to_layout`)."""
    o = _options(options)
    t = parse_target(ref, field="reference")
    if isinstance(t, LayoutRef):
        layout = OciLayout(t.path)
        layout.require()
        data = layout.read_blob(layout.resolve(t.tag, t.digest)["digest"])
    else:
        client = RegistryClient(t.host, o)
        try:
            data, _ = client.get_manifest(t.repository, t.reference)
        finally:
            client.close()
    try:
        doc = json.loads(data)
    except ValueError:
        raise PublishError(f"{t}: manifest is not JSON") from None
    if isinstance(doc, dict) and is_artifact(doc):
        return pull_artifact(t, dest, options=o)
    return pull_to_layout(t, dest, options=o)
