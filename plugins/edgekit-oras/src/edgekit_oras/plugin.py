"""The edgekit plugin: the ``oras`` publisher (registries and local OCI layouts)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgekit.plugins import BuildContext, Publisher, hookimpl
from edgekit.plugins.interfaces import PushResult, RegistryOptions

from . import engine, fleet
from .client import ConnectionOptions
from .progress import BlobDone, BlobMounted, BlobProgress, BlobSkipped, BlobStarted, ProgressEvent

__all__ = ["OrasPublisher"]


def _progress(ctx: BuildContext) -> Callable[[ProgressEvent], None]:
    """Sum the bytes of every blob in flight into one progress figure for the step."""
    sizes: dict[str, int] = {}
    done: dict[str, int] = {}
    lock = threading.Lock()  # blobs move on several worker threads

    def on_event(event: ProgressEvent) -> None:
        with lock:
            if isinstance(event, BlobStarted):
                sizes[event.digest] = event.size
                done.setdefault(event.digest, 0)
            elif isinstance(event, BlobProgress):
                done[event.digest] = event.done
            elif isinstance(event, BlobDone | BlobSkipped | BlobMounted):
                sizes[event.digest] = event.size
                done[event.digest] = event.size
            total_done, total = sum(done.values()), sum(sizes.values())
        ctx.report(total_done, total or None)

    return on_event


def _connection(options: RegistryOptions, ctx: BuildContext) -> ConnectionOptions:
    return ConnectionOptions.extending(options, progress=_progress(ctx))


class OrasPublisher(Publisher):
    """Streams images and artifacts to any OCI registry, or into a local layout (``oci:``)."""

    name = "oras"
    description = "OCI registries and layouts: byte-exact, chunked, deduplicated, with referrers"

    def push_image(
        self, layout: Path, tag: str, target: str, ctx: BuildContext, options: RegistryOptions
    ) -> PushResult:
        return engine.push_layout(layout, tag, target, options=_connection(options, ctx))

    def push_artifact(
        self,
        path: Path,
        target: str,
        artifact_type: str,
        ctx: BuildContext,
        options: RegistryOptions,
        *,
        annotations: Mapping[str, str] | None = None,
        subject: str | None = None,
    ) -> PushResult:
        return engine.push_artifact(
            path,
            target,
            artifact_type=artifact_type,
            subject=subject,
            annotations=annotations,
            options=_connection(options, ctx),
        )

    def push_site_isos(
        self,
        isos: Sequence[tuple[str, Path, str]],
        target: str,
        ctx: BuildContext,
        options: RegistryOptions,
        *,
        annotations: Mapping[str, str] | None = None,
    ) -> dict[str, PushResult]:
        """A fleet's site ISOs as one index artifact (see :mod:`edgekit_oras.fleet`)."""
        done = fleet.push_site_isos(
            isos, target, annotations=annotations, options=_connection(options, ctx)
        )
        return dict(done.sites)

    def pull(
        self,
        reference: str,
        dest: Path,
        ctx: BuildContext,
        options: RegistryOptions,
        *,
        tag: str | None = None,
    ) -> PushResult:
        conn = _connection(options, ctx)
        if tag is not None:
            got = engine.pull_to_layout(reference, dest, tag, options=conn)
        else:
            got = engine.pull(reference, dest, options=conn)
        return PushResult(
            reference=got.reference,
            digest=got.digest,
            media_type=got.media_type,
            size=got.size,
            uploaded_bytes=got.fetched_bytes,
            skipped_blobs=got.cached_blobs,
        )

    def referrers(
        self,
        reference: str,
        ctx: BuildContext,
        options: RegistryOptions,
        *,
        artifact_type: str | None = None,
    ) -> list[Mapping[str, Any]]:
        found = engine.list_referrers(
            reference, artifact_type=artifact_type, options=_connection(options, ctx)
        )
        return [d.to_json() for d in found]


@hookimpl
def edgekit_publishers() -> list[type[Publisher]]:
    return [OrasPublisher]
