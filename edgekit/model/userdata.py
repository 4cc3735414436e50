"""Kairos ``#cloud-config`` user-data with Palette's ``stylus`` section.

Only the keys edgekit reads or writes are modelled; every other key, at every level, is kept
in the object's ``extra`` mapping and written back unchanged, so parsing then rendering a
user-data file loses nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from ._base import Check, doc
from .hosts import Secret
from .sites import Interface, Site

__all__ = [
    "Install",
    "ManagementMode",
    "Stage",
    "Stylus",
    "StylusInterface",
    "StylusNetwork",
    "StylusSite",
    "User",
    "UserData",
]

#: Metadata marking the mapping that receives unmodelled keys.
EXTRA = doc("Unmodelled keys, carried through untouched.", open=True)


def _secret_or_none(value: Secret | str | None) -> Secret | None:
    # User(passwd="...") keeps working; the value is held as a Secret.
    return Secret(value) if isinstance(value, str) else value


@attrs.frozen
class User:
    """A user account (Kairos ``users``); ``name`` is the key when under a stage."""

    name: str | None = attrs.field(default=None, metadata=doc("The user name (top-level list)."))
    passwd: Secret | None = attrs.field(
        default=None,
        converter=_secret_or_none,
        metadata=doc("The password or its hash (secret: never printed in errors or dumps)."),
    )
    groups: tuple[str, ...] = attrs.field(default=(), metadata=doc("Groups to join."))
    ssh_authorized_keys: tuple[str, ...] = attrs.field(
        default=(), metadata=doc("SSH keys (or github:USER).", key="ssh_authorized_keys")
    )
    extra: Mapping[str, Any] = attrs.field(factory=dict, metadata=EXTRA)


@attrs.frozen
class Stage:
    """One step of a Kairos stage (``stages.initramfs[0]``)."""

    name: str | None = attrs.field(default=None, metadata=doc("The step name."))
    users: Mapping[str, User] = attrs.field(factory=dict, metadata=doc("Users by name."))
    commands: tuple[str, ...] = attrs.field(default=(), metadata=doc("Shell commands."))
    files: tuple[Mapping[str, Any], ...] = attrs.field(
        default=(), metadata=doc("Files to write ({path, content, permissions}).")
    )
    extra: Mapping[str, Any] = attrs.field(factory=dict, metadata=EXTRA)


@attrs.frozen
class Install:
    """The Kairos ``install`` section."""

    device: str | None = attrs.field(default=None, metadata=doc("The disk, or auto."))
    reboot: bool | None = attrs.field(default=None, metadata=doc("Reboot after installing."))
    poweroff: bool | None = attrs.field(default=None, metadata=doc("Power off after installing."))
    partitions: Mapping[str, Any] = attrs.field(factory=dict, metadata=doc("Partition sizes."))
    extra_partitions: tuple[Mapping[str, Any], ...] = attrs.field(
        default=(), metadata=doc("Extra partitions.", key="extra-partitions")
    )
    grub_options: Mapping[str, str] = attrs.field(
        factory=dict, metadata=doc("GRUB environment options.", key="grub_options")
    )
    extra: Mapping[str, Any] = attrs.field(factory=dict, metadata=EXTRA)

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        if self.reboot and self.poweroff:
            c.fail("reboot", "reboot and poweroff cannot both be true")
        c.done()


@attrs.frozen
class StylusInterface(Interface):
    """An interface in ``stylus.site.network.interfaces``: a site :class:`Interface` whose
    unmodelled keys are kept."""

    extra: Mapping[str, Any] = attrs.field(factory=dict, metadata=EXTRA)

    @classmethod
    def from_interface(cls, iface: Interface) -> StylusInterface:
        """The same settings as ``iface``."""
        if isinstance(iface, StylusInterface):
            return iface
        return cls(iface.type, iface.ip_address, iface.gateway, iface.nameserver)


@attrs.frozen
class StylusNetwork:
    """``stylus.site.network``: proxies and interfaces the agent applies."""

    http_proxy: str | None = attrs.field(default=None, metadata=doc("HTTP proxy URL."))
    https_proxy: str | None = attrs.field(default=None, metadata=doc("HTTPS proxy URL."))
    no_proxy: str | None = attrs.field(default=None, metadata=doc("Proxy exceptions."))
    interfaces: Mapping[str, StylusInterface] = attrs.field(
        factory=dict, metadata=doc("Interfaces by name.")
    )
    extra: Mapping[str, Any] = attrs.field(factory=dict, metadata=EXTRA)


@attrs.frozen
class StylusSite:
    """``stylus.site``: how the agent registers and what site it belongs to."""

    palette_endpoint: str | None = attrs.field(
        default=None, metadata=doc("The registration hub (Palette) endpoint.")
    )
    edge_host_token: Secret | None = attrs.field(
        default=None, metadata=doc("The registration token (secret).")
    )
    project_name: str | None = attrs.field(default=None, metadata=doc("The project name."))
    project_uid: str | None = attrs.field(default=None, metadata=doc("The project uid."))
    name: str | None = attrs.field(default=None, metadata=doc("The site/host name ($random ok)."))
    host_name: str | None = attrs.field(default=None, metadata=doc("The host name to set."))
    prefix: str | None = attrs.field(default=None, metadata=doc("A prefix for generated names."))
    registration_url: str | None = attrs.field(
        default=None, metadata=doc("QR-code registration URL.", key="registrationURL")
    )
    disable_auto_register: bool | None = attrs.field(
        default=None, metadata=doc("Do not register automatically.")
    )
    insecure_skip_verify: bool | None = attrs.field(
        default=None, metadata=doc("Skip TLS verification of the endpoint.")
    )
    ca_certs: tuple[str, ...] = attrs.field(default=(), metadata=doc("Extra CA certificates."))
    ntp_servers: tuple[str, ...] = attrs.field(default=(), metadata=doc("NTP servers."))
    tags: Mapping[str, str] = attrs.field(factory=dict, metadata=doc("Site tags."))
    network: StylusNetwork | None = attrs.field(default=None, metadata=doc("Network settings."))
    extra: Mapping[str, Any] = attrs.field(factory=dict, metadata=EXTRA)

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        if self.project_name is not None and self.project_uid is not None:
            c.fail("project_uid", "give projectName or projectUid, not both")
        c.done()


class ManagementMode(enum.Enum):
    """Whether the host is managed by the hub (central) or locally (local UI)."""

    CENTRAL = "central"
    LOCAL = "local"


@attrs.frozen
class Stylus:
    """The ``stylus`` section read by the Palette agent."""

    site: StylusSite | None = attrs.field(default=None, metadata=doc("Registration and site."))
    management_mode: ManagementMode | None = attrs.field(
        default=None, metadata=doc("central or local.")
    )
    extra: Mapping[str, Any] = attrs.field(factory=dict, metadata=EXTRA)


@attrs.frozen
class UserData:
    """A Kairos ``#cloud-config`` document for an installer."""

    stylus: Stylus | None = attrs.field(default=None, metadata=doc("The Palette agent section."))
    install: Install | None = attrs.field(default=None, metadata=doc("The install section."))
    users: tuple[User, ...] = attrs.field(default=(), metadata=doc("Top-level users."))
    stages: Mapping[str, tuple[Stage, ...]] = attrs.field(
        factory=dict, metadata=doc("Stages by name (initramfs, boot, after-install...).")
    )
    extra: Mapping[str, Any] = attrs.field(factory=dict, metadata=EXTRA)

    HEADER: ClassVar[str] = "#cloud-config\n"

    @classmethod
    def for_site(
        cls,
        site: Site | None,
        endpoint: str | None,
        token: Secret | str | None,
        project: str | None,
        base: UserData | None = None,
    ) -> UserData:
        """User-data registering a host of ``site`` with ``endpoint``; other keys from ``base``.

        An argument that is None leaves that part of ``base`` as it is (a generic installer
        has no site; a token may be supplied later on a site ISO).
        """
        base = base or cls()
        stylus = base.stylus or Stylus()
        old = stylus.site or StylusSite()
        changes: dict[str, Any] = {}
        if endpoint is not None:
            changes["palette_endpoint"] = endpoint
        if token is not None:
            changes["edge_host_token"] = token if isinstance(token, Secret) else Secret(token)
        if project is not None:
            changes["project_name"] = project
            changes["project_uid"] = None
        if site is not None:
            net = site.network
            network = old.network
            if not net.is_empty or network is not None:
                network = attrs.evolve(
                    network or StylusNetwork(),
                    http_proxy=net.http_proxy,
                    https_proxy=net.https_proxy,
                    no_proxy=net.no_proxy,
                    interfaces={
                        name: StylusInterface.from_interface(i)
                        for name, i in net.interfaces.items()
                    },
                )
            changes.update(
                name=site.name,
                tags=dict(site.tags),
                ntp_servers=net.ntp_servers or old.ntp_servers,
                network=network,
            )
        if not changes:
            return base
        return attrs.evolve(base, stylus=attrs.evolve(stylus, site=attrs.evolve(old, **changes)))
