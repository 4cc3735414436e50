"""Push, pull and referrers between OCI layouts, files and registries (or a layout as registry).

Every operation takes a target: a registry reference (``host[:port]/repo[:tag]``) or a local
OCI layout (``oci:PATH[:TAG]``, the embedded default when no registry is configured).

Invariants: blobs are transferred before the manifests that name them, index children before
the index, and the tag last, so no tag ever points at a missing blob; manifests are copied
byte-exact, so digests are preserved; every pulled byte is verified against its digest while
streaming, and files appear under their final name only once complete.

This module pushes and lists referrers; moving blobs is :mod:`.transfer`'s, pulling
:mod:`.pulling`'s (its functions are re-exported here, the API's names since the start).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from edgekit import oci_types as mt
from edgekit.errors import ConfigError, PublishError
from edgekit.oci_ref import (
    LayoutRef,
    Reference,
    Target,
    check_digest,
    check_tag,
    parse_target,
)
from edgekit.oci_types import Descriptor
from edgekit.plugins.interfaces import PushResult

from .client import ConnectionOptions, NotFound, RegistryClient
from .layout import OciLayout, sha256_file
from .pulling import PullResult, is_artifact, pull, pull_artifact, pull_to_layout
from .transfer import (
    _copy_blobs_to_layout,
    _descriptor,
    _fail_report,
    _LayoutSource,
    _options,
    _push_blobs_to_registry,
    _remember,
    _walk,
    resolve,
)

# Descriptor and PushResult are the core's (edgekit.oci_types, edgekit.plugins.interfaces);
# re-exported here because this module's API has always named them.
__all__ = [
    "Descriptor",
    "PullResult",
    "PushResult",
    "build_artifact_manifest",
    "is_artifact",
    "list_referrers",
    "pull",
    "pull_artifact",
    "pull_to_layout",
    "push_artifact",
    "push_layout",
    "resolve",
]


# --- public API ---------------------------------------------------------------------------------


def _ping(client: RegistryClient, dest: Reference) -> None:
    try:
        client.ping(dest.repository)
    except PublishError as e:
        raise type(e)(f"push to {dest}: {e}; nothing was uploaded and no tag was written") from None


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
    if ref.startswith(("sha256:", "sha512:")):
        # A malformed digest would be sent to the registry (and retried on its 500).
        check_digest(ref, field="subject")
    else:
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
    mt.check_media_type(artifact_type, field="artifact_type")  # it is written as given
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
    t = parse_target(target, field="reference")
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
