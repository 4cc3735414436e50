"""Provider images: OS + Kubernetes as an OCI image, Kairos style, and how they are built."""

from __future__ import annotations

import enum
import posixpath
import re
from collections.abc import Mapping

import attrs

from ._base import Check, check_name, check_not_blank, check_version, doc
from .packs import is_oci_reference

__all__ = [
    "Arch",
    "BaseImage",
    "Compression",
    "K8sDistribution",
    "KubernetesMatrix",
    "KubernetesSpec",
    "LayoutBase",
    "OsSpec",
    "Overlay",
    "ProviderImage",
    "RefBase",
    "SampleOsBase",
    "ScratchBase",
]

_VERSION = re.compile(r"^v?\d+(\.\d+){1,2}([-+][0-9A-Za-z.+-]+)?$")
SAMPLE_OSES = ("debian-12",)


class Arch(enum.Enum):
    """A CPU architecture, named as OCI and Go name them."""

    AMD64 = "amd64"
    ARM64 = "arm64"


class K8sDistribution(enum.Enum):
    """The Kubernetes distributions CanvOS builds provider images for."""

    K3S = "k3s"
    RKE2 = "rke2"
    KUBEADM = "kubeadm"
    KUBEADM_FIPS = "kubeadm-fips"
    NODEADM = "nodeadm"
    CANONICAL = "canonical"


class Compression(enum.Enum):
    """Layer compression of a built image."""

    GZIP = "gzip"
    ZSTD = "zstd"


@attrs.frozen
class OsSpec:
    """The operating system inside a provider image."""

    distribution: str = attrs.field(metadata=doc("The OS distribution, e.g. ubuntu or debian."))
    version: str = attrs.field(metadata=doc('The OS version, e.g. "22.04" (quote it).'))

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        # Independent rules: one that needs a field that failed to load is skipped alone.
        with c.rule():
            check_name(c, "distribution", self.distribution)
        with c.rule():
            check_version(c, "version", self.version)
        c.done()


def _check_k8s_version(c: Check, path: tuple[str | int, ...], version: str) -> None:
    if not _VERSION.fullmatch(version):
        c.fail(path, f"{version!r} is not a Kubernetes version such as 1.30.4")


@attrs.frozen
class KubernetesSpec:
    """One Kubernetes distribution and version."""

    distribution: K8sDistribution = attrs.field(
        metadata=doc("k3s, rke2, kubeadm, kubeadm-fips, nodeadm or canonical.")
    )
    version: str = attrs.field(metadata=doc('The Kubernetes version, e.g. "1.30.4".'))

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        with c.rule():
            _check_k8s_version(c, ("version",), self.version)
        c.done()


@attrs.frozen
class KubernetesMatrix:
    """A Kubernetes distribution and one (``version``) or several (``versions``) versions."""

    distribution: K8sDistribution = attrs.field(
        metadata=doc("k3s, rke2, kubeadm, kubeadm-fips, nodeadm or canonical.")
    )
    version: str | None = attrs.field(default=None, metadata=doc("One Kubernetes version."))
    versions: tuple[str, ...] = attrs.field(
        default=(), metadata=doc("Several Kubernetes versions: one image each.")
    )

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        with c.rule():
            if (self.version is None) == (not self.versions):
                c.fail("version", "give exactly one of version or versions")
        with c.rule():
            if self.version is not None:
                _check_k8s_version(c, ("version",), self.version)
        with c.rule():
            for i, v in enumerate(self.versions):
                _check_k8s_version(c, ("versions", i), v)
            if len(set(self.versions)) != len(self.versions):
                c.fail("versions", "a version is listed more than once")
        c.done()

    @property
    def all_versions(self) -> tuple[str, ...]:
        """Every version of the matrix, in the order given."""
        return (self.version,) if self.version is not None else self.versions

    def specs(self) -> tuple[KubernetesSpec, ...]:
        """One :class:`KubernetesSpec` per version."""
        return tuple(KubernetesSpec(self.distribution, v) for v in self.all_versions)


@attrs.frozen
class ScratchBase:
    """Build from an empty filesystem (written ``base: scratch``)."""


@attrs.frozen
class LayoutBase:
    """Build on an image in a local OCI layout."""

    layout: str = attrs.field(metadata=doc("The OCI layout directory."))
    tag: str = attrs.field(metadata=doc("The tag inside the layout."))


@attrs.frozen
class RefBase:
    """Build on an image pulled from a registry."""

    ref: str = attrs.field(metadata=doc("An OCI reference, REGISTRY/REPO:TAG."))

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        with c.rule():
            if not is_oci_reference(self.ref):
                c.fail("ref", f"{self.ref!r} is not an OCI reference (registry/repo:tag)")
        c.done()


@attrs.frozen
class SampleOsBase:
    """Build on a small sample OS edgekit makes itself (for tests and the quick start)."""

    sample_os: str = attrs.field(metadata=doc("The sample OS: debian-12."))

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        with c.rule():
            if self.sample_os not in SAMPLE_OSES:
                c.fail("sample_os", f"{self.sample_os!r} is not one of {', '.join(SAMPLE_OSES)}")
        c.done()


#: The base of a provider image: ``scratch``, ``{layout, tag}``, ``{ref}`` or ``{sampleOs}``.
BaseImage = ScratchBase | LayoutBase | RefBase | SampleOsBase


def _is_abs(path: str) -> bool:
    return path.startswith("/") and posixpath.normpath(path) != "/"


@attrs.frozen
class Overlay:
    """A local file or directory copied into the image."""

    source: str = attrs.field(metadata=doc("The local path (relative to the forge file)."))
    target: str = attrs.field(metadata=doc("The absolute path inside the image."))

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        with c.rule():
            check_not_blank(c, "source", self.source)
        with c.rule():
            if not _is_abs(self.target):
                c.fail("target", f"{self.target!r} is not an absolute path inside the image")
        c.done()


def _check_common(c: Check, obj: ProviderImage | ImageSpec) -> None:
    with c.rule():
        check_name(c, "name", obj.name)
    with c.rule():
        # A profile name, or name@version when the forge file has several versions of it.
        name, at, version = obj.profile.partition("@")
        check_name(c, "profile", name if at else obj.profile)
        if at and (not version or version.strip() != version or "@" in version):
            c.fail("profile", f"{obj.profile!r} is not NAME or NAME@VERSION")
    with c.rule():
        if not obj.arch:
            c.fail("arch", "at least one architecture is required")
        if len(set(obj.arch)) != len(obj.arch):
            c.fail("arch", "an architecture is listed more than once")
    with c.rule():
        for i, r in enumerate(obj.remove):
            if not _is_abs(r):
                c.fail(("remove", i), f"{r!r} is not an absolute path inside the image")
    with c.rule():
        if obj.reference is not None and not is_oci_reference(obj.reference):
            c.fail("reference", f"{obj.reference!r} is not an OCI reference (registry/repo:tag)")
    with c.rule():
        if obj.reference is None and not obj.repo:
            c.fail("repo", "required unless reference is given")


def published_reference(target: str, repository: str, tag: str, *, layout_tag: str = "") -> str:
    """Where ``repository:tag`` is published under the registry target ``target``.

    The one rule (``edgekit.oci_ref`` re-exports it for plugins). A registry target
    ``host[:port][/namespace]`` is a prefix: ``<target>/<repository>:<tag>`` (so
    ``registry.example.com/edge`` with ``edge/retail`` gives
    ``registry.example.com/edge/edge/retail:TAG``). An ``oci:PATH`` target is one layout with
    no repositories: ``oci:PATH:<layout_tag or tag>``, where ``layout_tag`` keeps names of
    different repositories apart in that one layout.
    """
    if target.startswith("oci:"):
        return f"{target}:{layout_tag or tag}"
    return f"{target.rstrip('/')}/{repository.strip('/')}:{tag}"


def pe_version(edgekit_version: str) -> str:
    """The ``PE_VERSION`` part of a tag: the version with a leading ``v``."""
    return edgekit_version if edgekit_version.startswith("v") else f"v{edgekit_version}"


@attrs.frozen
class ProviderImage:
    """One concrete provider image: an OS and one Kubernetes version, for one or more arches."""

    name: str = attrs.field(metadata=doc("The image name, unique in a forge file."))
    profile: str = attrs.field(
        metadata=doc("A profile of the forge file: its name, or name@version (several versions).")
    )
    os: OsSpec = attrs.field(metadata=doc("The operating system."))
    kubernetes: KubernetesSpec = attrs.field(metadata=doc("The Kubernetes distribution."))
    arch: tuple[Arch, ...] = attrs.field(
        default=(Arch.AMD64,), metadata=doc("The architectures (a single string is accepted).")
    )
    base: BaseImage = attrs.field(
        factory=ScratchBase,
        metadata=doc("scratch, {layout: PATH, tag: TAG}, {ref: REF} or {sampleOs: debian-12}."),
    )
    overlays: tuple[Overlay, ...] = attrs.field(default=(), metadata=doc("Files copied in."))
    remove: tuple[str, ...] = attrs.field(
        default=(), metadata=doc("Absolute paths removed from the base (as whiteouts).")
    )
    registry: str = attrs.field(default="localhost", metadata=doc("The image registry host."))
    repo: str = attrs.field(default="", metadata=doc("The image repository."))
    custom_tag: str = attrs.field(default="", metadata=doc("The custom last part of the tag."))
    reference: str | None = attrs.field(
        default=None, metadata=doc("A full reference overriding the CanvOS tag scheme.")
    )
    compression: Compression = attrs.field(
        default=Compression.GZIP, metadata=doc("Layer compression: gzip or zstd.")
    )
    labels: Mapping[str, str] = attrs.field(factory=dict, metadata=doc("OCI image labels."))

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        _check_common(c, self)
        c.done()

    def tag_for(self, edgekit_version: str) -> str:
        """The CanvOS tag ``{k8sdistro}-{k8sversion}-{peversion}[-{customtag}]``."""
        # '+' (rke2r1 builds) is not allowed in OCI tags; CanvOS writes '_' instead.
        parts = [
            self.kubernetes.distribution.value,
            self.kubernetes.version.replace("+", "_"),
            pe_version(edgekit_version),
        ]
        if self.custom_tag:
            parts.append(self.custom_tag)
        return "-".join(parts)

    def reference_for(self, edgekit_version: str) -> str:
        """The image reference: :attr:`reference`, or ``{registry}/{repo}:{tag}`` (CanvOS)."""
        if self.reference is not None:
            return self.reference
        return f"{self.registry}/{self.repo}:{self.tag_for(edgekit_version)}"

    def published_reference(
        self, target: str, edgekit_version: str, *, tag: str | None = None
    ) -> str:
        """Where a forge with ``registry.target: target`` publishes this image (or ``tag`` in
        its repository): :func:`published_reference` of :attr:`repo` (else the repository of
        :attr:`reference`) and the tag. The :attr:`registry` field is not used: ``target``
        names the registry. Pure: no I/O."""
        repository = self.repo
        if not repository and self.reference is not None:
            # A valid reference is host[:port]/path[:tag][@digest]: the path is the repository.
            path = self.reference.partition("@")[0].partition("/")[2]
            repository = path.rpartition(":")[0] if ":" in path else path
        return published_reference(target, repository, tag or self.tag_for(edgekit_version))


@attrs.frozen
class ImageSpec:
    """A provider-image matrix entry of a forge file: several Kubernetes versions and arches."""

    name: str = attrs.field(metadata=doc("The entry name, unique in a forge file."))
    profile: str = attrs.field(
        metadata=doc("A profile of the forge file: its name, or name@version (several versions).")
    )
    os: OsSpec = attrs.field(metadata=doc("The operating system."))
    kubernetes: KubernetesMatrix = attrs.field(
        metadata=doc("The Kubernetes distribution and its version or versions.")
    )
    arch: tuple[Arch, ...] = attrs.field(
        default=(Arch.AMD64,), metadata=doc("The architectures (a single string is accepted).")
    )
    base: BaseImage = attrs.field(
        factory=ScratchBase,
        metadata=doc("scratch, {layout: PATH, tag: TAG}, {ref: REF} or {sampleOs: debian-12}."),
    )
    overlays: tuple[Overlay, ...] = attrs.field(default=(), metadata=doc("Files copied in."))
    remove: tuple[str, ...] = attrs.field(
        default=(), metadata=doc("Absolute paths removed from the base (as whiteouts).")
    )
    registry: str = attrs.field(default="localhost", metadata=doc("The image registry host."))
    repo: str = attrs.field(default="", metadata=doc("The image repository."))
    custom_tag: str = attrs.field(default="", metadata=doc("The custom last part of the tag."))
    reference: str | None = attrs.field(
        default=None, metadata=doc("A full reference overriding the CanvOS tag scheme.")
    )
    compression: Compression = attrs.field(
        default=Compression.GZIP, metadata=doc("Layer compression: gzip or zstd.")
    )
    labels: Mapping[str, str] = attrs.field(factory=dict, metadata=doc("OCI image labels."))

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        _check_common(c, self)
        with c.rule():
            if self.reference is not None and len(self.kubernetes.all_versions) > 1:
                c.fail(
                    "reference", "cannot be given with several Kubernetes versions (one tag each)"
                )
        c.done()

    def expand(self) -> tuple[ProviderImage, ...]:
        """One :class:`ProviderImage` per Kubernetes version (named ``NAME-VERSION`` if many)."""
        specs = self.kubernetes.specs()
        out = []
        for spec in specs:
            name = self.name if len(specs) == 1 else f"{self.name}-{spec.version.replace('+', '_')}"
            out.append(
                ProviderImage(
                    name=name,
                    profile=self.profile,
                    os=self.os,
                    kubernetes=spec,
                    arch=self.arch,
                    base=self.base,
                    overlays=self.overlays,
                    remove=self.remove,
                    registry=self.registry,
                    repo=self.repo,
                    custom_tag=self.custom_tag,
                    reference=self.reference,
                    compression=self.compression,
                    labels=self.labels,
                )
            )
        return tuple(out)


__all__ += ["SAMPLE_OSES", "ImageSpec", "pe_version", "published_reference"]
