"""The requests and results of the publisher, ISO-inspection and transport capabilities.

Every backend method has one shape, ``method(request, ctx) -> result``: the request is an
immutable record of what to do, ``ctx`` (:class:`~edgekit.plugins.interfaces.BuildContext`)
is what the backend may use of the rest, and the result is a typed record the manager
checks at the boundary (:mod:`edgekit.plugins.boundary`). Adding a field to a request with
a default is how the contract grows without breaking a backend.

The image-builder and ISO-assembler requests live in :mod:`edgekit.plugins.interfaces`
with their capabilities; these are the others, kept apart so each module stays readable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import attrs

from edgekit.oci_types import Descriptor

__all__ = [
    "InspectIsoRequest",
    "IsoBootEntry",
    "IsoFileEntry",
    "IsoInspection",
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
    "SiteIsosPushed",
]


# --- publishers -------------------------------------------------------------------------


@attrs.frozen
class RegistryOptions:
    """How to reach a registry: what a forge file's ``registry:`` says.

    A publisher may extend it with its own knobs by subclassing (``edgekit-oras``'s
    ``ConnectionOptions`` adds credentials, retries, timeouts and concurrency), so these three
    fields are spelled once. A publisher's *own* configuration comes from the forge file's
    ``backends.publisher.options`` instead (:meth:`~edgekit.plugins.interfaces.Backend.options`)."""

    #: Talk http, not https (a test or insecure registry).
    plain_http: bool = False
    #: A PEM bundle to trust for the registry's TLS certificate.
    ca_cert: Path | None = None
    #: Docker-style config.json with credentials; None means the default lookup.
    auth_config: Path | None = None


@attrs.frozen
class PushImageRequest:
    """Push the image tagged :attr:`tag` in the OCI layout :attr:`layout` to :attr:`target`."""

    #: The OCI image layout holding the image.
    layout: Path
    #: The image's tag in that layout.
    tag: str
    #: Where it goes: ``host/repo:tag``, ``oci:PATH:TAG`` or a scheme the publisher claims.
    target: str
    #: How to reach the target.
    registry: RegistryOptions = attrs.field(factory=RegistryOptions)


@attrs.frozen
class PushArtifactRequest:
    """Push the file :attr:`path` to :attr:`target` as an OCI artifact."""

    #: The file to push (one layer, titled with its name).
    path: Path
    #: Where it goes: ``host/repo:tag``, ``oci:PATH:TAG`` or a scheme the publisher claims.
    target: str
    #: The artifact's type (``application/vnd.edgekit.iso.v1``, ...).
    artifact_type: str
    #: How to reach the target.
    registry: RegistryOptions = attrs.field(factory=RegistryOptions)
    #: Annotations for the artifact's manifest.
    annotations: Mapping[str, str] = attrs.field(factory=dict)
    #: A digest or reference the artifact refers to (the referrers API), or None.
    subject: str | None = None


@attrs.frozen
class PushResult:
    """What a push did: the one record every push returns (and ``edgekit.dist`` shows)."""

    #: The reference written (``host/repo:tag``, or ``host/repo@sha256:...`` untagged).
    reference: str
    #: Digest of the manifest (or index) pushed; equal to the layout's for images.
    digest: str
    #: Media type of that manifest (or index).
    media_type: str
    #: Size of the manifest (or index) in bytes.
    size: int
    #: Bytes sent.
    uploaded_bytes: int = 0
    #: Blobs the target already had (not sent again).
    skipped_blobs: int = 0
    #: Blobs mounted from another repository of the same registry.
    mounted_blobs: int = 0
    #: Blobs sent.
    uploaded_blobs: int = 0


@attrs.frozen
class PushSiteIsosRequest:
    """Publish a fleet's site ISOs in one call (an optional publisher method)."""

    #: Every ``(site, path, digest)`` of the fleet, sorted by site.
    isos: Sequence[tuple[str, Path, str]]
    #: ``host/repo:tag`` (or ``oci:PATH:TAG``) of the fleet's index.
    target: str
    #: How to reach the target.
    registry: RegistryOptions = attrs.field(factory=RegistryOptions)
    #: Annotations for the fleet's index (``dev.edgekit.forge``).
    annotations: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class SiteIsosPushed:
    """Each site's result: the reference a device fetches and the ISO's digest."""

    #: Site name -> what was published for it.
    sites: Mapping[str, PushResult]


@attrs.frozen
class PullRequest:
    """Pull :attr:`reference`: an image into the OCI layout :attr:`dest` (tagged :attr:`tag`,
    default the reference's tag), or an artifact into the directory or file :attr:`dest`."""

    #: What to pull: a reference, ``oci:PATH:TAG``, or what the publisher's push returned.
    reference: str
    #: An OCI layout directory (images) or a directory or file (artifacts).
    dest: Path
    #: How to reach the reference.
    registry: RegistryOptions = attrs.field(factory=RegistryOptions)
    #: Pull an image into a layout under this tag; None pulls as the reference says.
    tag: str | None = None


@attrs.frozen
class PullResult:
    """What a pull fetched (every digest verified) and where it is."""

    #: The reference pulled.
    reference: str
    #: Digest of the manifest (or index) pulled.
    digest: str
    #: Its media type.
    media_type: str
    #: Its size in bytes.
    size: int
    #: The OCI layout (images) or file (artifacts) written.
    path: Path
    #: Bytes fetched.
    fetched_bytes: int = 0
    #: Blobs fetched (layers, configs; manifests not counted).
    fetched_blobs: int = 0
    #: Blobs already present at the destination (not fetched again).
    cached_blobs: int = 0


@attrs.frozen
class ReferrersRequest:
    """List the artifacts whose subject is :attr:`reference`."""

    #: The image (a reference or ``oci:PATH:TAG``) whose referrers to list.
    reference: str
    #: How to reach it.
    registry: RegistryOptions = attrs.field(factory=RegistryOptions)
    #: Only artifacts of this type, when set.
    artifact_type: str | None = None


@attrs.frozen
class ReferrersResult:
    """The referrers' OCI descriptors (``Descriptor.to_json()`` is the API's JSON form)."""

    #: The image asked about.
    reference: str
    #: One descriptor per referring artifact (its ``artifact_type`` and annotations).
    descriptors: tuple[Descriptor, ...] = ()


# --- ISO inspection ---------------------------------------------------------------------


@attrs.frozen
class InspectIsoRequest:
    """Describe the ISO at :attr:`path`."""

    #: The ISO file.
    path: Path


@attrs.frozen
class IsoBootEntry:
    """One El Torito boot entry of an ISO."""

    #: ``bios``, ``efi``, ... as the ISO assembler names it.
    platform: str
    #: The boot image's path in the ISO, or ``sector N`` when no file holds it.
    image: str
    #: ``no emulation``, ``hard disk``, ... as El Torito says.
    emulation: str = ""
    #: Sectors the firmware loads (512-byte units), when known.
    load_size: int | None = None


@attrs.frozen
class IsoFileEntry:
    """A regular file in an ISO."""

    #: The file's path in the ISO (``/user-data``).
    path: str
    #: Its size in bytes, when known.
    size: int | None = None


@attrs.frozen
class IsoInspection:
    """What an ISO assembler found in an ISO (``IsoAssembler.inspect_iso``)."""

    #: The ISO inspected.
    path: Path
    #: The primary volume descriptor's label (``COS_LIVE``, ``cidata``).
    volume_label: str
    #: The El Torito boot entries, in catalog order.
    boot_entries: tuple[IsoBootEntry, ...]
    #: Bootable from a disk (USB stick) too: a boot signature and an MBR or GPT.
    hybrid: bool
    #: ``MBR with 1 partition(s)``, ``GPT with 2 partition(s), CRCs valid``; empty if not hybrid.
    partition_tables: tuple[str, ...]
    #: False when a GPT is there and one of its CRCs does not match its bytes.
    gpt_valid: bool
    #: Every regular file.
    files: tuple[IsoFileEntry, ...]
    #: The embedded user-data (``/config.yaml`` of an installer, ``/user-data`` of a site ISO).
    user_data: str | None
    #: Everything the ISO assembler reported, in its JSON form (``--json`` prints this).
    details: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @property
    def bootable(self) -> bool:
        """True when the ISO has an El Torito boot catalog with entries."""
        return bool(self.boot_entries)

    @classmethod
    def from_details(cls, path: Path, info: Mapping[str, Any]) -> Self:
        """Read a description in the JSON form ``edgekit iso inspect --json`` prints
        (``volume_label``, ``boot_entries``, ``hybrid``, ``files``, ``user_data``)."""
        entries = tuple(
            IsoBootEntry(
                platform=str(e.get("platform")),
                image=str(e.get("image_path") or f"sector {e.get('load_rba')}"),
                emulation=str(e.get("emulation", "")),
                load_size=e.get("load_size"),
            )
            for e in info.get("boot_entries", ())
        )
        hybrid = info.get("hybrid") or {}
        tables: list[str] = []
        gpt_valid = True
        if hybrid.get("is_hybrid"):
            tables.append(f"MBR with {len(hybrid.get('mbr_partitions', []))} partition(s)")
            gpt = hybrid.get("gpt") or {}
            if gpt:
                checks = ("header_crc_valid", "entries_crc_valid", "backup_valid")
                gpt_valid = all(gpt.get(c) for c in checks)
                tables.append(
                    f"GPT with {len(gpt.get('partitions', []))} partition(s), "
                    + ("CRCs valid" if gpt_valid else "CRCs INVALID")
                )
        return cls(
            path=path,
            volume_label=str(info.get("volume_label", "")),
            boot_entries=entries,
            hybrid=bool(hybrid.get("is_hybrid")),
            partition_tables=tuple(tables),
            gpt_valid=gpt_valid,
            files=tuple(
                IsoFileEntry(str(f.get("path")), f.get("size")) for f in info.get("files", ())
            ),
            user_data=info.get("user_data"),
            details=dict(info),
        )


# --- transports -------------------------------------------------------------------------


@attrs.frozen(repr=False)
class RegistrationRequest:
    """Register :attr:`host` with the hub at :attr:`endpoint` using :attr:`token`.

    The token and the credential are secrets: this record's repr shows neither.
    """

    #: ``https://hub.example.com`` for ``http``; ``file:///media/usb`` for ``file``.
    endpoint: str
    #: The registration token (a str or an :class:`~edgekit.hub.security.Secret`).
    token: Any
    #: The host's fields, Palette's names (``hostUid``, ``site``, ``tags``, ...).
    host: Mapping[str, Any]
    #: The host's credential: its current one (a re-registration), or one made for this
    #: registration, sent with every attempt so a retry after a lost answer proves the same
    #: device. A str or a Secret; None lets the transport make one.
    credential: Any = None
    #: A PEM bundle to trust for TLS, when the hub's CA is private.
    ca_cert: Path | None = None
    #: Seconds per attempt.
    timeout: float = 10.0
    #: Keep retrying transient failures (unreachable hub, 5xx) for this many seconds.
    retry_for: float = 60.0

    def __repr__(self) -> str:
        return f"RegistrationRequest({self.endpoint!r}, host={self.host.get('hostUid')!r})"


@attrs.frozen(repr=False)
class RegistrationReceipt:
    """The transport's answer: registered now (``http``), or carried for later (``file``)."""

    #: The host registered (``hostUid``).
    host_uid: str
    #: ``registered`` (the hub answered) or ``pending-import`` (a bundle awaits import).
    state: str
    #: The hub's host record (Palette's field names) when it answered, else empty.
    record: Mapping[str, Any] = attrs.field(factory=dict)
    #: The credential the hub issued (a Secret), when it answered.
    credential: Any = None
    #: The bundle written, for store-and-forward transports.
    bundle: Path | None = None

    def __repr__(self) -> str:
        return f"RegistrationReceipt({self.host_uid!r}, state={self.state!r})"


@attrs.frozen
class ReceiveRequest:
    """Collect registrations carried to the hub's side from :attr:`source` (the hub's
    ``edgekit hub import``): a path or directory for ``file``, a queue for others."""

    #: Where to collect: a bundle file, a directory of them, a ``file:///`` URL, or what
    #: the transport understands.
    source: str


@attrs.frozen
class Received:
    """The registration bundles collected, as local files the hub imports in this order."""

    #: The bundle files collected, in order.
    bundles: tuple[Path, ...]
