"""The small typed interfaces every backend implements.

A backend is a class with a unique ``name`` within its capability. Plugins register backend
*classes* through the ``edgekit_*`` registration hooks; the manager instantiates a backend
only when a step needs it, so registration stays cheap and side-effect free.

The four capabilities:

=================  ===================================================================
``image-builder``  builds provider images (OS + Kubernetes) into an OCI image layout
``iso-assembler``  assembles the bootable installer ISO and the per-site ISOs
``publisher``      pushes/pulls images and artifacts to an OCI registry or layout
``transport``      carries host registrations to a registration hub
=================  ===================================================================

The annotations are the contract: the manager hands out instances whose interface methods
check each result against the method's annotated return type here
(:mod:`edgekit.plugins.boundary`), so a return type must be importable at run time, not
only under ``TYPE_CHECKING`` (a test keeps it so).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

if TYPE_CHECKING:
    from edgekit.model import ClusterProfile, IsoSpec, ProviderImage

__all__ = [
    "CAPABILITIES",
    "Artifact",
    "Backend",
    "BuildContext",
    "ImageBuildRequest",
    "ImageBuilder",
    "InstallerIsoRequest",
    "IsoAssembler",
    "Progress",
    "Publisher",
    "PushResult",
    "RegistryOptions",
    "SiteIsoRequest",
    "Transport",
]


@attrs.frozen
class Progress:
    """A progress report from a running step: ``done`` of ``total`` units (total may be unknown)."""

    step: str
    done: int
    total: int | None = None
    #: "bytes" or "items"; lets a CLI choose how to render the rate.
    unit: str = "bytes"
    message: str = ""


def _ignore_progress(_: Progress) -> None:
    return None


@attrs.frozen
class BuildContext:
    """What a backend may use besides its request: where things go and how to report."""

    #: Directory that relative paths in the forge file are resolved against.
    base_dir: Path
    #: Directory that outputs go to (``./dist`` by default).
    output_dir: Path
    #: Directory for caches that survive between runs (layers, downloads).
    cache_dir: Path
    #: Ignore caches and rebuild everything.
    no_cache: bool = False
    #: Fixed timestamp for reproducible outputs (``SOURCE_DATE_EPOCH``), when set.
    source_date_epoch: int | None = attrs.field(
        factory=lambda: (
            int(os.environ["SOURCE_DATE_EPOCH"])
            if os.environ.get("SOURCE_DATE_EPOCH", "").isdigit()
            else None
        )
    )
    #: The id of the step this context belongs to (used in progress events).
    step: str = ""
    #: Receives progress events; the CLI turns them into progress bars.
    progress: Callable[[Progress], None] = _ignore_progress
    #: Executor for work a backend may parallelise (site ISOs, layer uploads); may be None.
    executor: Executor | None = None

    def resolve(self, path: str | os.PathLike[str]) -> Path:
        """Resolve a path from the forge file against :attr:`base_dir`."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def report(
        self, done: int, total: int | None = None, *, unit: str = "bytes", message: str = ""
    ) -> None:
        """Report progress of the current step."""
        self.progress(Progress(self.step, done, total, unit, message))

    def for_step(self, step: str) -> BuildContext:
        """A copy of this context for another step."""
        return attrs.evolve(self, step=step)


@attrs.frozen
class Artifact:
    """One output of a step: a file or an OCI layout, with its digest."""

    #: Unique name within a run, ``<kind>/<name>``, e.g. ``installer-iso/installer``.
    name: str
    #: provider-image | installer-iso | site-iso | content-bundle | checksum | ...
    kind: str
    #: A file, or for images the OCI layout directory.
    path: Path
    #: ``sha256:<hex>`` of the file, or of the image manifest/index for images.
    digest: str
    size: int
    media_type: str
    #: For images: the tag in the layout; for pushed artifacts: the full reference.
    reference: str | None = None
    annotations: Mapping[str, str] = attrs.field(factory=dict)


class Backend(ABC):
    """Base of every backend class.

    Subclasses set :attr:`name` (unique within the capability) and implement the
    capability's abstract methods. Constructors take no arguments.
    """

    #: The name users select the backend by (``backends.imageBuilder: oci``).
    name: ClassVar[str]
    #: Set by the capability base class.
    capability: ClassVar[str]
    #: One line shown by ``edgekit plugins``.
    description: ClassVar[str] = ""

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this backend cannot run on this machine (a missing tool), or None."""
        return None


# --- image builders ---------------------------------------------------------------------


@attrs.frozen
class ImageBuildRequest:
    """Build one provider image (one Kubernetes version, one or more arches)."""

    image: ProviderImage
    profile: ClusterProfile
    #: OCI image layout directory to write into (created when missing).
    layout: Path
    #: Tag in the layout (``org.opencontainers.image.ref.name``).
    tag: str
    #: The image's full reference, recorded in labels and the manifest.
    reference: str
    #: Extra files contributed by plugins (the agent), per arch: path in image -> host path.
    extra_files: Mapping[str, Mapping[str, Path]] = attrs.field(factory=dict)
    #: Registries (host[:port]) to pull base images and OCI sources from over plain HTTP.
    insecure_registries: frozenset[str] = frozenset()

    def registry_options(self, reference: str) -> RegistryOptions:
        """How to reach the registry of ``reference`` (a base image or an OCI source)."""
        host = reference.split("/", 1)[0]
        return RegistryOptions(plain_http=host in self.insecure_registries)


class ImageBuilder(Backend):
    """Builds provider images into an OCI image layout.

    Example::

        class MyBuilder(ImageBuilder):
            name = "mine"

            def build_image(self, request, ctx):
                ...  # write request.layout, tag it request.tag
                return Artifact(...)
    """

    capability: ClassVar[str] = "image-builder"

    @abstractmethod
    def build_image(self, request: ImageBuildRequest, ctx: BuildContext) -> Artifact:
        """Build the image into ``request.layout`` under ``request.tag``; return it."""


# --- ISO assemblers ---------------------------------------------------------------------


@attrs.frozen
class InstallerIsoRequest:
    """Assemble the bootable installer ISO."""

    spec: IsoSpec
    #: Rendered ``#cloud-config`` text placed at ``/config.yaml``.
    user_data: str
    #: Kernel and initrd taken from the provider image.
    kernel: Path
    initrd: Path
    #: The provider image to embed (an OCI layout and its tag), for offline installs.
    image_layout: Path | None
    image_tag: str | None
    image_reference: str | None
    #: Where the ISO goes; a ``.sha256`` file is written beside it.
    dest: Path
    #: Content bundles (host paths) to embed under ``/opt/spectrocloud/content/``.
    content_bundles: Sequence[Path] = ()
    #: Extra files for the installer payload (path in initrd -> host path), e.g. the agent.
    payload_files: Mapping[str, Path] = attrs.field(factory=dict)


@attrs.frozen
class SiteIsoRequest:
    """Assemble one small site ISO (label ``cidata``) holding a site's user-data."""

    site: str
    user_data: str
    dest: Path
    meta_data: str | None = None


class IsoAssembler(Backend):
    """Assembles installer ISOs and site ISOs."""

    capability: ClassVar[str] = "iso-assembler"

    @abstractmethod
    def build_installer(self, request: InstallerIsoRequest, ctx: BuildContext) -> Artifact:
        """Write the installer ISO to ``request.dest``; return it."""

    @abstractmethod
    def build_site_isos(
        self, requests: Sequence[SiteIsoRequest], ctx: BuildContext
    ) -> list[Artifact]:
        """Write every site ISO; may use ``ctx.executor``. Returns them in request order."""

    def inspect_iso(self, path: Path) -> Mapping[str, Any]:
        """Describe an ISO: label, boot entries, partitions, files, embedded user-data.

        Optional: the default says this backend cannot inspect.
        """
        from edgekit.errors import PluginError

        raise PluginError(f"the {self.name!r} ISO assembler cannot inspect ISOs")


# --- publishers -------------------------------------------------------------------------


@attrs.frozen
class RegistryOptions:
    """How to reach a registry: what a forge file's ``registry:`` says.

    A publisher may extend it with its own knobs by subclassing (``edgekit-oras``'s
    ``ConnectionOptions`` adds credentials, retries, timeouts and concurrency), so these three
    fields are spelled once."""

    plain_http: bool = False
    ca_cert: Path | None = None
    #: Docker-style config.json with credentials; None means the default lookup.
    auth_config: Path | None = None


@attrs.frozen
class PushResult:
    """What a push did: the one record every publisher returns (and ``edgekit.dist`` shows)."""

    #: The reference written (``host/repo:tag``, or ``host/repo@sha256:...`` untagged).
    reference: str
    #: Digest of the manifest (or index) pushed; equal to the layout's for images.
    digest: str
    media_type: str
    #: Size of the manifest (or index) in bytes.
    size: int
    uploaded_bytes: int = 0
    #: Blobs the target already had (not sent again).
    skipped_blobs: int = 0
    #: Blobs mounted from another repository of the same registry.
    mounted_blobs: int = 0
    #: Blobs sent.
    uploaded_blobs: int = 0


class Publisher(Backend):
    """Pushes and pulls images and artifacts (a registry reference or ``oci:PATH[:TAG]``)."""

    capability: ClassVar[str] = "publisher"

    @abstractmethod
    def push_image(
        self, layout: Path, tag: str, target: str, ctx: BuildContext, options: RegistryOptions
    ) -> PushResult:
        """Push the image tagged ``tag`` in ``layout`` to ``target``, byte-exact."""

    @abstractmethod
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
        """Push a file as an OCI artifact, optionally referring to ``subject`` (a reference)."""

    @abstractmethod
    def pull(
        self,
        reference: str,
        dest: Path,
        ctx: BuildContext,
        options: RegistryOptions,
        *,
        tag: str | None = None,
    ) -> PushResult:
        """Pull an image into the OCI layout ``dest`` (tagged ``tag``, default the
        reference's tag), or an artifact into the file ``dest``; verify every digest."""

    def referrers(
        self,
        reference: str,
        ctx: BuildContext,
        options: RegistryOptions,
        *,
        artifact_type: str | None = None,
    ) -> list[Mapping[str, Any]]:
        """Descriptors (OCI JSON form) of the artifacts whose subject is ``reference``.

        Optional: the default says this publisher cannot list referrers.
        """
        from edgekit.errors import PluginError

        raise PluginError(f"the {self.name!r} publisher cannot list referrers")


# --- transports -------------------------------------------------------------------------


class Transport(Backend):
    """Carries a host's registration to a hub and brings back its answer."""

    capability: ClassVar[str] = "transport"

    @abstractmethod
    def register(self, endpoint: str, token: str, host: Mapping[str, Any]) -> Mapping[str, Any]:
        """Register ``host`` (Palette's field names) at ``endpoint`` with ``token``."""


#: Capability name -> the base class its backends subclass.
CAPABILITIES: Mapping[str, type[Backend]] = {
    "image-builder": ImageBuilder,
    "iso-assembler": IsoAssembler,
    "publisher": Publisher,
    "transport": Transport,
}
