"""The edgekit plugin: the ``oras`` publisher (registries and local OCI layouts)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import attrs

from edgekit.plugins import (
    BuildContext,
    Publisher,
    PullRequest,
    PullResult,
    PushArtifactRequest,
    PushImageRequest,
    PushResult,
    PushSiteIsosRequest,
    ReferrersRequest,
    ReferrersResult,
    RegistryOptions,
    SiteIsosPushed,
    hookimpl,
)

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

    def push_image(self, request: PushImageRequest, ctx: BuildContext) -> PushResult:
        return engine.push_layout(
            request.layout,
            request.tag,
            request.target,
            options=_connection(request.registry, ctx),
        )

    def push_artifact(self, request: PushArtifactRequest, ctx: BuildContext) -> PushResult:
        return engine.push_artifact(
            request.path,
            request.target,
            artifact_type=request.artifact_type,
            subject=request.subject,
            annotations=dict(request.annotations),
            options=_connection(request.registry, ctx),
        )

    def push_site_isos(self, request: PushSiteIsosRequest, ctx: BuildContext) -> SiteIsosPushed:
        """A fleet's site ISOs as one index artifact (see :mod:`edgekit_oras.fleet`)."""
        done = fleet.push_site_isos(
            request.isos,
            request.target,
            annotations=dict(request.annotations),
            options=_connection(request.registry, ctx),
        )
        return SiteIsosPushed(dict(done.sites))

    def pull(self, request: PullRequest, ctx: BuildContext) -> PullResult:
        conn = _connection(request.registry, ctx)
        if request.tag is not None:
            got = engine.pull_to_layout(request.reference, request.dest, request.tag, options=conn)
        else:
            got = engine.pull(request.reference, request.dest, options=conn)
        return attrs.evolve(got, path=request.dest)

    def referrers(self, request: ReferrersRequest, ctx: BuildContext) -> ReferrersResult:
        found = engine.list_referrers(
            request.reference,
            artifact_type=request.artifact_type,
            options=_connection(request.registry, ctx),
        )
        return ReferrersResult(request.reference, tuple(found))


@hookimpl
def edgekit_publishers() -> list[type[Publisher]]:
    return [OrasPublisher]
