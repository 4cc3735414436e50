"""Images: a base (scratch or an image in an OCI layout) plus appended layers, by tag.

The config carries ``architecture``, ``os``, ``rootfs.diff_ids``, ``history``,
``config.Labels`` and a ``created`` time fixed from SOURCE_DATE_EPOCH, so two builds of the
same inputs give the same manifest digest. Several arches give an image index whose
manifests carry a ``platform``.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from edgekit.errors import BuildError

from .cache import LayerCache
from .compress import resolve_workers
from .layers import LayerResult, LayerSpec, build_layer, resolve_source_date_epoch
from .layout import (
    MEDIA_CONFIG,
    MEDIA_INDEX,
    MEDIA_MANIFEST,
    Descriptor,
    OCILayout,
    Platform,
    staged_layout,
)
from .progress import ProgressCallback

__all__ = [
    "BaseImage",
    "BuildResult",
    "ImageResult",
    "ImageSpec",
    "build_image",
    "build_multiarch",
    "provider_labels",
]

ANN_CREATED = "org.opencontainers.image.created"
ANN_BASE_NAME = "org.opencontainers.image.base.name"
ANN_BASE_DIGEST = "org.opencontainers.image.base.digest"
LABEL_PREFIX = "io.edgekit"


@attrs.frozen
class BaseImage:
    """An existing image to build on: ``tag`` (or a digest) in the OCI layout at ``layout``."""

    layout: Path = attrs.field(converter=Path)
    tag: str


def _str_map(value: Mapping[str, str]) -> dict[str, str]:
    out = dict(value)
    for k, v in out.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise BuildError(f"labels and annotations must map strings to strings: {k!r}: {v!r}")
    return out


def _layers(value: Iterable[LayerSpec]) -> tuple[LayerSpec, ...]:
    return tuple(value)


@attrs.frozen
class ImageSpec:
    """One image to build: base, layers on top (in order) and metadata."""

    layers: tuple[LayerSpec, ...] = attrs.field(converter=_layers)
    #: ``None`` builds from scratch.
    base: BaseImage | None = None
    architecture: str = "amd64"
    os: str = "linux"
    variant: str | None = None
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_str_map)
    annotations: Mapping[str, str] = attrs.field(factory=dict, converter=_str_map)

    @property
    def platform(self) -> Platform:
        return Platform(self.architecture, self.os, self.variant)


@attrs.frozen
class ImageResult:
    """One image manifest written to the layout."""

    descriptor: Descriptor
    config_digest: str
    platform: Platform
    #: The layers this build appended (base layers are not listed).
    layers: tuple[LayerResult, ...]


@attrs.frozen
class BuildResult:
    """What a build tagged: an image manifest, or an index over several."""

    layout: Path
    tag: str
    descriptor: Descriptor
    images: tuple[ImageResult, ...]

    @property
    def digest(self) -> str:
        return self.descriptor.digest


def provider_labels(
    *,
    os_name: str,
    os_version: str,
    k8s_distribution: str,
    k8s_version: str,
    edgekit_version: str,
    profile_name: str | None = None,
    profile_version: str | None = None,
) -> dict[str, str]:
    """The ``config.Labels`` of a provider image (OS, Kubernetes, edgekit, profile)."""
    labels = {
        f"{LABEL_PREFIX}.os.name": os_name,
        f"{LABEL_PREFIX}.os.version": os_version,
        f"{LABEL_PREFIX}.kubernetes.distribution": k8s_distribution,
        f"{LABEL_PREFIX}.kubernetes.version": k8s_version,
        f"{LABEL_PREFIX}.version": edgekit_version,
    }
    if profile_name is not None:
        labels[f"{LABEL_PREFIX}.profile.name"] = profile_name
    if profile_version is not None:
        labels[f"{LABEL_PREFIX}.profile.version"] = profile_version
    return labels


def _rfc3339(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _load_base(
    layout: OCILayout, spec: ImageSpec
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, str]]:
    """Base config, base layer descriptors (blobs copied in) and base annotations."""
    if spec.base is None:
        return {}, [], {}
    src = OCILayout.open(spec.base.layout)
    desc, manifest = src.read_manifest(spec.base.tag, spec.platform)
    config = src.read_json(str(manifest["config"]["digest"]))
    arch = config.get("architecture")
    if arch != spec.architecture or config.get("os") != spec.os:
        raise BuildError(
            f"base image {spec.base.tag} in {spec.base.layout} is {config.get('os')}/{arch}, "
            f"not {spec.os}/{spec.architecture}"
        )
    layers = list(manifest.get("layers", []))
    for layer in layers:
        layout.copy_blob_from(src, str(layer["digest"]))
    annotations = {ANN_BASE_NAME: spec.base.tag, ANN_BASE_DIGEST: desc.digest}
    return config, layers, annotations


def _build_one(
    layout: OCILayout,
    spec: ImageSpec,
    *,
    epoch: int,
    cache: LayerCache | None,
    no_cache: bool,
    progress: ProgressCallback | None,
    workers: int | None,
) -> ImageResult:
    base_config, layer_descs, annotations = _load_base(layout, spec)
    created = _rfc3339(epoch)
    results = [
        build_layer(
            layout,
            layer,
            source_date_epoch=epoch,
            cache=cache,
            no_cache=no_cache,
            progress=progress,
            workers=workers,
        )
        for layer in spec.layers
    ]
    inner = dict(base_config.get("config") or {})
    inner["Labels"] = {**(inner.get("Labels") or {}), **spec.labels}
    config: dict[str, Any] = {
        **base_config,
        "created": created,
        "architecture": spec.architecture,
        "os": spec.os,
        "config": inner,
        "rootfs": {
            "type": "layers",
            "diff_ids": [
                *(base_config.get("rootfs") or {}).get("diff_ids", []),
                *(r.diff_id for r in results),
            ],
        },
        "history": [
            *(base_config.get("history") or []),
            *(
                {"created": created, "created_by": f"edgekit layer {r.name}", "comment": r.name}
                for r in results
            ),
        ],
    }
    if spec.variant:
        config["variant"] = spec.variant
    else:
        config.pop("variant", None)
    config_desc = layout.write_json(config, MEDIA_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config_desc.to_json(),
        "layers": [*layer_descs, *(r.descriptor.to_json() for r in results)],
        "annotations": {**annotations, ANN_CREATED: created, **spec.annotations},
    }
    desc = attrs.evolve(layout.write_json(manifest, MEDIA_MANIFEST), platform=spec.platform)
    return ImageResult(desc, config_desc.digest, spec.platform, tuple(results))


def build_image(
    dest: str | os.PathLike[str],
    tag: str,
    spec: ImageSpec,
    *,
    source_date_epoch: int | None = None,
    cache: LayerCache | None = None,
    no_cache: bool = False,
    progress: ProgressCallback | None = None,
    workers: int | None = None,
) -> BuildResult:
    """Build ``spec`` into the OCI layout at ``dest`` (created if missing) and tag it.

    A new layout is staged in a temporary directory and renamed into place on success.
    ``workers`` is the compression thread count (see :func:`~.layers.build_layer`).
    """
    return build_multiarch(
        dest,
        tag,
        [spec],
        source_date_epoch=source_date_epoch,
        cache=cache,
        no_cache=no_cache,
        progress=progress,
        index=False,
        workers=workers,
    )


def build_multiarch(
    dest: str | os.PathLike[str],
    tag: str,
    specs: Sequence[ImageSpec],
    *,
    source_date_epoch: int | None = None,
    cache: LayerCache | None = None,
    no_cache: bool = False,
    progress: ProgressCallback | None = None,
    index: bool = True,
    annotations: Mapping[str, str] | None = None,
    workers: int | None = None,
) -> BuildResult:
    """Build one image per spec and tag an image index over them (``platform`` per entry).

    With ``index=False`` and a single spec, the tag points at the image manifest itself.
    """
    if not specs:
        raise BuildError("nothing to build: no image specs given")
    platforms = [s.platform for s in specs]
    if len(set(platforms)) != len(platforms):
        raise BuildError(f"two image specs for the same platform: {platforms}")
    if not index and len(specs) != 1:
        raise BuildError("several image specs need an index (index=True)")
    epoch = resolve_source_date_epoch(source_date_epoch)
    resolve_workers(workers)  # a bad count fails before anything is staged
    dest_path = Path(dest)
    with staged_layout(dest_path) as layout:
        images = tuple(
            _build_one(
                layout,
                s,
                epoch=epoch,
                cache=cache,
                no_cache=no_cache,
                progress=progress,
                workers=workers,
            )
            for s in specs
        )
        if index:
            doc: dict[str, Any] = {
                "schemaVersion": 2,
                "mediaType": MEDIA_INDEX,
                "manifests": [i.descriptor.to_json() for i in images],
                "annotations": {ANN_CREATED: _rfc3339(epoch), **_str_map(annotations or {})},
            }
            top = layout.write_json(doc, MEDIA_INDEX)
        else:
            top = attrs.evolve(images[0].descriptor, platform=None)
        layout.tag(top, tag)
    return BuildResult(dest_path, tag, top, images)
