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

from edgekit.errors import PluginError, Problem
from edgekit.plugins.records import (
    InspectIsoRequest,
    IsoBootEntry,
    IsoFileEntry,
    IsoInspection,
    PullRequest,
    PullResult,
    PushArtifactRequest,
    PushImageRequest,
    PushResult,
    PushSiteIsosRequest,
    Received,
    ReceiveRequest,
    ReferrersRequest,
    ReferrersResult,
    RegistrationReceipt,
    RegistrationRequest,
    RegistryOptions,
    SiteIsosPushed,
)

if TYPE_CHECKING:
    from edgekit.model import ClusterProfile, IsoSpec, ProviderImage
    from edgekit.plugins.manager import PluginManager

__all__ = [
    "CAPABILITIES",
    "Artifact",
    "Backend",
    "BuildContext",
    "ImageBuildRequest",
    "ImageBuilder",
    "InspectIsoRequest",
    "InstallerIsoRequest",
    "IsoAssembler",
    "IsoBootEntry",
    "IsoFileEntry",
    "IsoInspection",
    "Progress",
    "Publisher",
    "PullRequest",
    "PullResult",
    "PushArtifactRequest",
    "PushImageRequest",
    "PushResult",
    "PushSiteIsosRequest",
    "ReceiveRequest",
    "Received",
    "ReferrersRequest",
    "ReferrersResult",
    "RegistrationReceipt",
    "RegistrationRequest",
    "RegistryOptions",
    "SelectedBackend",
    "SiteIsoRequest",
    "SiteIsosPushed",
    "Transport",
]


@attrs.frozen
class Progress:
    """A progress report from a running step: ``done`` of ``total`` units (total may be unknown)."""

    #: The step id (``site-iso/*``).
    step: str
    #: Units done so far.
    done: int
    #: Units in all, when known.
    total: int | None = None
    #: "bytes" or "items"; lets a CLI choose how to render the rate.
    unit: str = "bytes"
    #: What is happening, in a few words.
    message: str = ""


def _ignore_progress(_: Progress) -> None:
    return None


@attrs.frozen
class SelectedBackend:
    """A backend chosen for a capability (``backends.publisher``) and its options."""

    #: The backend's name.
    name: str
    #: The forge file's ``backends.<capability>.options``, already validated by the backend.
    options: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class BuildContext:
    """What a backend may use besides its request: where things go, how to report, and
    the rest of edgekit (the plugin manager the run was given and the selected backends).

    A backend that needs another capability asks the context (``ctx.publisher()`` to pull
    a base image), never a process-wide manager or a backend name of its own choosing.
    Non-build operations (``edgekit.dist``, registration) get a context too.
    """

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
    #: The plugin manager of this run: what :meth:`backend` and :meth:`publisher` use.
    plugins: PluginManager | None = attrs.field(default=None, repr=False, eq=False)
    #: Capability (``publisher``) -> the backend selected for it and its options.
    selected: Mapping[str, SelectedBackend] = attrs.field(factory=dict)

    def backend(self, capability: str) -> Backend:
        """The backend selected for ``capability`` in this run, from the run's manager."""
        choice = self.selected.get(capability)
        if choice is None:
            raise PluginError(f"no {capability} backend is selected in this context")
        if self.plugins is None:
            raise PluginError(f"this context has no plugin manager to find {choice.name!r}")
        return self.plugins.backend(capability, choice.name)

    def publisher(self) -> Publisher:
        """The publisher selected for this run (``backends.publisher``)."""
        found = self.backend("publisher")
        assert isinstance(found, Publisher)
        return found

    def options_of(self, capability: str, name: str) -> Mapping[str, Any]:
        """The options given to backend ``name`` of ``capability``; empty when another
        backend is selected or none were given."""
        choice = self.selected.get(capability)
        return choice.options if choice is not None and choice.name == name else {}

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
    #: Bytes: of the file, or of the image manifest/index.
    size: int
    #: The file's or manifest's media type (``application/vnd.edgekit.iso.v1``, ...).
    media_type: str
    #: For images: the tag in the layout; for pushed artifacts: the full reference.
    reference: str | None = None
    #: OCI-style annotations carried to the manifest (``dev.edgekit.site``, ...).
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

    @classmethod
    def options_problems(cls, options: Mapping[str, Any]) -> list[Problem]:
        """Check the forge file's ``backends.<capability>.options`` for this backend.

        Return one :class:`~edgekit.errors.Problem` per bad option, its path relative to
        the options (``bucket``, ``retries[0]``): edgekit prefixes
        ``$.backends.<capability>.options.``. Called at plan time; the options are part of
        the cache key of every step that uses this backend. The default accepts no options.
        """
        return [
            Problem(str(key), f"unknown option; the {cls.name!r} backend takes no options")
            for key in sorted(options, key=str)
        ]

    def options(self, ctx: BuildContext) -> Mapping[str, Any]:
        """This backend's options in the run of ``ctx`` (validated by
        :meth:`options_problems`)."""
        return ctx.options_of(self.capability, self.name)


# --- image builders ---------------------------------------------------------------------


@attrs.frozen
class ImageBuildRequest:
    """Build one provider image (one Kubernetes version, one or more arches)."""

    #: The provider image to build: OS, Kubernetes, arches, base, overlays.
    image: ProviderImage
    #: Its cluster profile: the packs whose files go into the image.
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

    #: The forge file's ``iso:`` (name, label, arch, boot entries, kernel args).
    spec: IsoSpec
    #: Rendered ``#cloud-config`` text placed at ``/config.yaml``.
    user_data: str
    #: The kernel taken from the provider image (``iso.kernelPath``), a host file.
    kernel: Path
    #: The initrd taken from the provider image (``iso.initrdPath``), a host file.
    initrd: Path
    #: The provider image to embed (an OCI layout and its tag), for offline installs.
    image_layout: Path | None
    #: The image's tag in that layout.
    image_tag: str | None
    #: The image's full reference (what the installed host records).
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

    #: The site's name; the artifact is ``site-iso/<site>``.
    site: str
    #: The site's rendered ``#cloud-config``, written as ``/user-data``.
    user_data: str
    #: Where the ISO goes.
    dest: Path
    #: cloud-init ``meta-data`` (instance id, host name); None writes a default.
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

    def inspect_iso(self, request: InspectIsoRequest, ctx: BuildContext) -> IsoInspection:
        """Describe an ISO: label, boot entries, partitions, files, embedded user-data.

        Optional: the default says this backend cannot inspect.
        """
        raise PluginError(f"the {self.name!r} ISO assembler cannot inspect ISOs")


# --- publishers -------------------------------------------------------------------------


class Publisher(Backend):
    """Pushes and pulls images and artifacts (a registry reference or ``oci:PATH[:TAG]``).

    A publisher owns the ``registry.target`` strings it understands: :meth:`target_problems`
    says what is wrong with one (the default is the built-in grammar, ``oci:PATH`` or
    ``host[:port]/repo``), so a plugin can claim its own scheme (``s3://``, a directory).
    """

    capability: ClassVar[str] = "publisher"

    @classmethod
    def target_problems(cls, target: str, registry: RegistryOptions) -> list[Problem]:
        """What is wrong with ``registry.target`` for this publisher (empty when it is fine).

        Called at plan time with the forge file's ``registry:``; a problem's path is relative
        to it (``target``, ``plainHttp``) and shown under ``$.registry.``. A publisher that
        owns a scheme (``s3://``, a plain directory) overrides this to accept its targets.
        The default is the built-in grammar: ``oci:PATH`` or ``host[:port]/repo`` (and no
        ``plainHttp``/``caCert`` for a layout).
        """
        from edgekit.model import registry_target_problems

        found = registry_target_problems(
            target, plain_http=registry.plain_http, ca_cert=registry.ca_cert
        )
        return [Problem({"plain_http": "plainHttp"}.get(f, f), m) for f, m in found]

    @abstractmethod
    def push_image(self, request: PushImageRequest, ctx: BuildContext) -> PushResult:
        """Push the image tagged ``request.tag`` in ``request.layout`` to ``request.target``,
        byte-exact."""

    @abstractmethod
    def push_artifact(self, request: PushArtifactRequest, ctx: BuildContext) -> PushResult:
        """Push a file as an OCI artifact, optionally referring to ``request.subject``."""

    @abstractmethod
    def pull(self, request: PullRequest, ctx: BuildContext) -> PullResult:
        """Pull an image into the OCI layout ``request.dest`` (tagged ``request.tag``,
        default the reference's tag), or an artifact into ``request.dest``; verify every
        digest."""

    def push_site_isos(self, request: PushSiteIsosRequest, ctx: BuildContext) -> SiteIsosPushed:
        """Publish a fleet's site ISOs in one call (the ``oras`` publisher: one index per
        forge); sites already published with their digest send nothing.

        Optional: a publisher that does not override it gets one :meth:`push_artifact` per
        stale site, tagged ``<target>/sites:<site>``.
        """
        raise PluginError(f"the {self.name!r} publisher publishes site ISOs one by one")

    def referrers(self, request: ReferrersRequest, ctx: BuildContext) -> ReferrersResult:
        """Descriptors of the artifacts whose subject is ``request.reference``.

        Optional: the default says this publisher cannot list referrers.
        """
        raise PluginError(f"the {self.name!r} publisher cannot list referrers")


# --- transports -------------------------------------------------------------------------


class Transport(Backend):
    """Carries a host's registration to a hub and brings back its answer.

    ``register`` is the host's side (``edgekit.hub.HostClient.register`` calls it);
    ``receive`` is the hub's side for store-and-forward transports (``edgekit hub import``
    calls it to collect what was carried), optional for transports the hub hears directly.
    """

    capability: ClassVar[str] = "transport"

    @abstractmethod
    def register(self, request: RegistrationRequest, ctx: BuildContext) -> RegistrationReceipt:
        """Register ``request.host`` at ``request.endpoint`` with ``request.token``."""

    def receive(self, request: ReceiveRequest, ctx: BuildContext) -> Received:
        """Collect the registrations carried to ``request.source``, as bundle files.

        Optional: the default says this transport delivers to the hub directly.
        """
        from edgekit.errors import PluginError

        raise PluginError(
            f"the {self.name!r} transport delivers to the hub directly; nothing to import"
        )


#: Capability name -> the base class its backends subclass.
CAPABILITIES: Mapping[str, type[Backend]] = {
    "image-builder": ImageBuilder,
    "iso-assembler": IsoAssembler,
    "publisher": Publisher,
    "transport": Transport,
}
