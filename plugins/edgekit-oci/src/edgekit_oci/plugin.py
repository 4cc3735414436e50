"""The edgekit plugin: the ``oci`` (daemonless) and ``buildah`` provider-image builders.

Both turn one :class:`edgekit.plugins.interfaces.ImageBuildRequest` into the same layers:

1. the base: ``scratch``, an image in an OCI layout, an image pulled from a registry (through
   the ``oras`` publisher), or the sample OS (one layer holding its whole tree);
2. the Kubernetes distribution from the profile's ``k8s`` pack, placed where it expects to
   live, with its configuration rendered from the pack values;
3. files plugins contribute (the edgekit agent and its boot hooks);
4. one layer per overlay, so changing one overlay rebuilds only that layer;
5. whiteouts for ``remove``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from edgekit import __version__ as edgekit_version
from edgekit.errors import BuildError
from edgekit.model import (
    LayoutBase,
    PackSource,
    ProviderImage,
    RefBase,
    SampleOsBase,
    ScratchBase,
)
from edgekit.plugins import BuildContext, ImageBuilder, PullRequest, hookimpl
from edgekit.plugins.interfaces import Artifact, ImageBuildRequest

from .cache import LayerCache
from .image import BaseImage, BuildResult, ImageSpec, build_multiarch, provider_labels
from .layers import Compression, FileEntry, LayerEntry, LayerSpec, TreeEntry, WhiteoutEntry
from .progress import LayerDone, LayerProgress, LayerStarted, ProgressEvent
from .sources import ArtifactFetcher, LocalSource, OciArtifactSource, Source, SourceCache, UrlSource

__all__ = ["BuildahImageBuilder", "OciImageBuilder", "image_specs"]

SAMPLE_OS_MARKER = ".edgekit-sample-os.json"


def _source(src: PackSource, ctx: BuildContext) -> Source:
    if src.url:
        return UrlSource(src.url, src.sha256 or "")
    if src.oci:
        return OciArtifactSource(src.oci)
    assert src.path is not None
    return LocalSource(ctx.resolve(src.path))


def _pull_artifact(request: ImageBuildRequest, ctx: BuildContext) -> ArtifactFetcher:
    def fetch(reference: str, dest: Path) -> Path:
        # Pulled into a directory: the file keeps the artifact's title as its name. The
        # publisher is the one this run selected (backends.publisher), from the run's manager.
        target = dest / "artifact"
        target.mkdir(parents=True, exist_ok=True)
        options = request.registry_options(reference)
        ctx.publisher().pull(PullRequest(reference, target, options), ctx)
        return target

    return fetch


#: What a cached sample OS tree holds; bump it when the assembly adds or changes content
#: (2: the disk tools the installer needs), so trees cached by an older version are rebuilt.
SAMPLE_OS_FORMAT = 2


def _sample_os_tree(release: str, arch: str, ctx: BuildContext) -> Path:
    """The sample OS tree for ``release``/``arch``, assembled once and then reused."""
    from .sampleos import assemble_sample_os

    tree = ctx.cache_dir / "sample-os" / f"{release}-{arch}"
    marker = tree / SAMPLE_OS_MARKER
    if marker.exists() and not ctx.no_cache and _tree_format(marker) == SAMPLE_OS_FORMAT:
        return tree
    if tree.exists():  # assembled by an older edgekit-oci (or --no-cache): start over
        shutil.rmtree(tree)
    info = assemble_sample_os(tree, arch=arch, release=release, cache_dir=ctx.cache_dir / "debs")
    # The marker lives beside the tree's contents but is excluded from the layer.
    marker.write_text(
        json.dumps(
            {"format": SAMPLE_OS_FORMAT, "kernel": info.kernel_version, "packages": info.packages}
        )
    )
    return tree


def _tree_format(marker: Path) -> int | None:
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    value = data.get("format") if isinstance(data, dict) else None
    return value if isinstance(value, int) else None


def _select(fetched: Path, src: PackSource, pack: str) -> Path:
    """For an OCI artifact source: the file ``path`` names, else the artifact's one file."""
    if not src.oci:
        return fetched
    files = sorted(p.name for p in fetched.iterdir())
    if src.path:
        chosen = fetched / src.path
        if not chosen.exists():
            raise BuildError(
                f"pack {pack!r}: {src.oci} has no {src.path!r}; it holds: {', '.join(files)}"
            )
        return chosen
    if len(files) != 1:
        raise BuildError(
            f"pack {pack!r}: {src.oci} holds {len(files)} files ({', '.join(files)}); "
            "say which with source.path"
        )
    return fetched / files[0]


def _pull_base(ref: str, request: ImageBuildRequest, ctx: BuildContext) -> BaseImage:
    """Pull a registry image into a cache layout (blobs already there are not fetched),
    with the publisher this run selected."""
    layout = ctx.cache_dir / "bases"
    tag = "base-" + hashlib.sha256(ref.encode()).hexdigest()[:16]
    options = request.registry_options(ref)
    ctx.publisher().pull(PullRequest(ref, layout, options, tag=tag), ctx)
    return BaseImage(layout, tag)


def _tree_entries(tree: Path, target: str) -> list[LayerEntry]:
    """A directory's entries, leaving out edgekit's own marker file."""
    marker = tree / SAMPLE_OS_MARKER
    if not marker.exists():
        return [TreeEntry(tree, target)]
    return [
        TreeEntry(child, f"{target.rstrip('/')}/{child.name}")
        if child.is_dir() and not child.is_symlink()
        else FileEntry(child, f"{target.rstrip('/')}/{child.name}")
        for child in sorted(tree.iterdir())
        if child.name != SAMPLE_OS_MARKER
    ]


def _path_entry(source: Path, target: str, what: str) -> LayerEntry:
    if not source.exists() and not source.is_symlink():
        raise BuildError(f"{what}: {source} does not exist")
    if source.is_dir() and not source.is_symlink():
        return TreeEntry(source, target)
    return FileEntry(source, target)


def image_specs(request: ImageBuildRequest, ctx: BuildContext) -> list[ImageSpec]:
    """One :class:`ImageSpec` per architecture for ``request`` (shared by both builders)."""
    from .kubernetes import kubernetes_layer

    image: ProviderImage = request.image
    profile = request.profile
    compression: Compression = "zstd" if image.compression.value == "zstd" else "gzip"
    k8s = profile.k8s_pack
    if k8s.source is None:
        raise BuildError(
            f"profile {profile.name!r}: the k8s pack {k8s.name!r} has no source "
            "(a url with sha256, a local path, or an OCI artifact)"
        )
    sources = SourceCache(ctx.cache_dir / "sources", artifact_fetcher=_pull_artifact(request, ctx))
    k8s_path = _select(sources.fetch(_source(k8s.source, ctx)), k8s.source, k8s.name)
    labels = {
        **provider_labels(
            os_name=image.os.distribution,
            os_version=image.os.version,
            k8s_distribution=image.kubernetes.distribution.value,
            k8s_version=image.kubernetes.version,
            edgekit_version=edgekit_version,
            profile_name=profile.name,
            profile_version=profile.version,
        ),
        "org.opencontainers.image.ref.name": request.reference,
        **image.labels,
    }
    specs = []
    for arch in (a.value for a in image.arch):
        base: BaseImage | None = None
        layers: list[LayerSpec] = []
        if isinstance(image.base, SampleOsBase):
            tree = _sample_os_tree(image.base.sample_os, arch, ctx)
            layers.append(
                LayerSpec(
                    f"sample-os-{image.base.sample_os}",
                    _tree_entries(tree, "/"),
                    compression=compression,
                )
            )
        elif isinstance(image.base, LayoutBase):
            base = BaseImage(ctx.resolve(image.base.layout), image.base.tag)
        elif isinstance(image.base, RefBase):
            base = _pull_base(image.base.ref, request, ctx)
        else:
            assert isinstance(image.base, ScratchBase)
        layers.append(
            kubernetes_layer(
                image.kubernetes.distribution.value,
                image.kubernetes.version,
                k8s_path,
                k8s.values_mapping,
                compression=compression,
            )
        )
        extra = request.extra_files.get(arch, {})
        if extra:
            layers.append(
                LayerSpec(
                    "edgekit-agent",
                    [_path_entry(host, path, "agent file") for path, host in sorted(extra.items())],
                    compression=compression,
                )
            )
        for i, overlay in enumerate(image.overlays):
            layers.append(
                LayerSpec(
                    f"overlay-{i}",
                    [
                        _path_entry(
                            ctx.resolve(overlay.source), overlay.target, f"overlays[{i}].source"
                        )
                    ],
                    compression=compression,
                )
            )
        if image.remove:
            layers.append(
                LayerSpec(
                    "remove", [WhiteoutEntry(p) for p in image.remove], compression=compression
                )
            )
        specs.append(ImageSpec(layers, base=base, architecture=arch, labels=labels))
    return specs


def _progress(ctx: BuildContext) -> Callable[[ProgressEvent], None]:
    done: dict[str, int] = {}

    def on_event(event: ProgressEvent) -> None:
        if isinstance(event, LayerStarted):
            done[event.layer] = 0
        elif isinstance(event, LayerProgress):
            done[event.layer] = event.bytes_done
        elif isinstance(event, LayerDone):
            note = " (cached)" if event.cached else ""
            ctx.report(sum(done.values()), None, message=f"layer {event.layer}{note}")
            return
        ctx.report(sum(done.values()), None, message=getattr(event, "layer", ""))

    return on_event


def _artifact(request: ImageBuildRequest, result: BuildResult) -> Artifact:
    return Artifact(
        name=f"provider-image/{request.image.name}",
        kind="provider-image",
        path=request.layout,
        digest=result.digest,
        size=result.descriptor.size,
        media_type=result.descriptor.media_type,
        reference=request.tag,
        annotations={"dev.edgekit.image.reference": request.reference},
    )


class OciImageBuilder(ImageBuilder):
    """Daemonless: streams reproducible layers straight into an OCI image layout."""

    name = "oci"
    description = "daemonless, reproducible OCI layout builds (gzip or zstd layers, cached)"

    def build_image(self, request: ImageBuildRequest, ctx: BuildContext) -> Artifact:
        specs = image_specs(request, ctx)
        result = build_multiarch(
            request.layout,
            request.tag,
            specs,
            source_date_epoch=ctx.source_date_epoch,
            cache=LayerCache(ctx.cache_dir / "layers"),
            no_cache=ctx.no_cache,
            progress=_progress(ctx),
            index=len(specs) > 1,
        )
        return _artifact(request, result)


class BuildahImageBuilder(ImageBuilder):
    """Renders the same layers as a Containerfile and builds it with ``buildah bud``."""

    name = "buildah"
    description = "buildah bud (vfs storage, chroot isolation) from a rendered Containerfile"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if shutil.which("buildah") is None:
            return "the 'buildah' program is not installed (apt-get install buildah)"
        if os.geteuid() != 0:
            return "buildah with vfs storage and chroot isolation needs root here"
        return None

    def build_image(self, request: ImageBuildRequest, ctx: BuildContext) -> Artifact:
        from .containerfile import build_with_buildah

        specs = image_specs(request, ctx)
        if len(specs) != 1:
            raise BuildError(
                "the buildah backend builds one architecture at a time; "
                "use the 'oci' backend for multi-arch images"
            )
        if request.layout.exists():
            shutil.rmtree(request.layout)  # a rebuild replaces the image, as 'oci' does
        built = build_with_buildah(
            request.layout, request.tag, specs[0], source_date_epoch=ctx.source_date_epoch
        )
        return Artifact(
            name=f"provider-image/{request.image.name}",
            kind="provider-image",
            path=request.layout,
            digest=built.descriptor.digest,
            size=built.descriptor.size,
            media_type=built.descriptor.media_type,
            reference=request.tag,
            annotations={"dev.edgekit.image.reference": request.reference},
        )


@hookimpl
def edgekit_image_builders() -> list[type[ImageBuilder]]:
    return [OciImageBuilder, BuildahImageBuilder]
