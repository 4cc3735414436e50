"""Pulling: an image into an OCI layout, an artifact into a file, verified by digest.

Files and tags appear only once complete: a failed pull leaves no partial file and no tag,
and removes a layout directory it created.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from edgekit import limits
from edgekit import oci_types as mt
from edgekit.errors import ConfigError, PublishError
from edgekit.oci_ref import LayoutRef, Target, check_tag, parse_target
from edgekit.oci_types import Descriptor
from edgekit.plugins.records import PullResult

from .client import ConnectionOptions, RegistryClient
from .layout import OciLayout
from .progress import BlobDone, BlobProgress, BlobStarted
from .transfer import (
    _copy_blobs_to_layout,
    _descriptor,
    _emit,
    _fail_report,
    _LayoutSource,
    _options,
    _RegistrySource,
    _walk,
    resolve,
)

__all__ = ["PullResult", "is_artifact", "pull", "pull_artifact", "pull_to_layout"]


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
        reference=str(src_ref),
        digest=top.digest,
        media_type=top.media_type,
        size=top.size,
        path=out,
        fetched_bytes=tally.bytes,
        fetched_blobs=len(tally.uploaded),
        cached_blobs=len(tally.skipped),
    )


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
        _refuse_special(out)
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
    return PullResult(
        reference=str(src_ref),
        digest=top.digest,
        media_type=top.media_type,
        size=top.size,
        path=out,
        fetched_bytes=n,
        fetched_blobs=1,
    )


def _refuse_special(out: Path) -> None:
    """A FIFO, device or socket at *out* stays: the rename below would replace it (as root,
    ``/dev/null`` itself). A regular file is overwritten, a symlink replaced, as before."""
    with contextlib.suppress(FileNotFoundError):
        mode = os.lstat(out).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            why = f"{out}: it is {limits.kind_name(mode)}, not a regular file"
            raise ConfigError.single("dest", why)


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
