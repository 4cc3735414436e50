"""Kairos ``#cloud-config`` user-data with Palette's ``stylus`` section.

Only the keys edgekit reads or writes are modelled; every other key, at every level, is kept
in the object's ``extra`` mapping and written back unchanged, so parsing then rendering a
user-data file loses nothing.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from ._base import Check, ModelValueError, doc
from .hosts import Secret
from .sites import Interface, Site

__all__ = [
    "Install",
    "ManagementMode",
    "RegistryMirror",
    "Stage",
    "Stylus",
    "StylusInterface",
    "StylusNetwork",
    "StylusRegistry",
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
        with c.rule():
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
        with c.rule():
            if self.project_name is not None and self.project_uid is not None:
                c.fail("project_uid", "give projectName or projectUid, not both")
        c.done()


# A registry host as the first part of an image reference (the distribution/reference
# grammar), without the bracketed IPv6 form: the device agent refuses references holding
# '[' or ']', so a mirror for such a host could never be used.
_HOST_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_REGISTRY_HOST = re.compile(
    rf"(?P<name>{_HOST_LABEL}(?:\.{_HOST_LABEL})*)(?::(?P<port>[0-9]{{1,5}}))?"
)
# An endpoint's host: a name (an '_' allowed, as container networks name services), an IPv4
# address or a bracketed IPv6 address (busybox wget reads all three).
_URL_LABEL = r"(?:[a-zA-Z0-9_]|[a-zA-Z0-9_][a-zA-Z0-9_-]*[a-zA-Z0-9_])"
_URL_HOST = re.compile(rf"{_URL_LABEL}(?:\.{_URL_LABEL})*|\[[0-9a-fA-F:.]+\]")
# The path of an endpoint: plain characters only, so that the agent's line-by-line YAML
# reader (registry.sh) sees the value exactly as written, whatever quoting YAML chooses.
_URL_PATH = re.compile(r"(?:/[A-Za-z0-9._~%-]*)*")


def _port_ok(port: str | None) -> bool:
    return port is None or 1 <= int(port) <= 65535


def registry_host_problem(host: str) -> str | None:
    """Why ``host`` is not a registry ``host[:port]`` as an image reference names it, or None.

    A reference's first part is a registry host only with a '.' or a ':' or as
    ``localhost`` (``registry/app:1`` is a Docker Hub repository), and the device agent
    reads it the same way; so a mirror keyed ``registry`` could never match an image.
    """
    if host.startswith("["):
        return (
            f"{host!r}: a bracketed IPv6 address cannot name a mirror: the device agent does "
            "not read image references holding one (give the registry's host name)"
        )
    m = _REGISTRY_HOST.fullmatch(host)
    if m is None or not _port_ok(m["port"]):
        return (
            f"{host!r} is not a registry host[:port] as in an image reference "
            "(registry.example.com, 10.0.0.5:5000, localhost:5000)"
        )
    if "." not in host and ":" not in host and host != "localhost":
        return (
            f"{host!r} is not a registry host: an image reference names one only with a '.' "
            "or a ':' or as 'localhost' (registry.example.com, registry:5000)"
        )
    return None


def mirror_endpoint_problem(host: str, endpoint: str) -> str | None:
    """Why the device agent would refuse or misuse ``endpoint`` as the mirror for ``host``.

    The agent (edgekit-agent's ``registry.sh``) takes ``http://`` or ``https://`` (lowercase)
    followed by a host, an optional port and an optional path, and appends ``/v2/...``; a
    query, a fragment or credentials would be sent to the registry as part of every path.
    """
    netloc, slash, path = endpoint.split("://", 1)[-1].partition("/")
    if "@" in netloc:
        # First, and never quoted: the part before '@' is a user name and password.
        return (
            f"the mirror endpoint for {host} holds credentials (user@host); the agent pulls "
            "anonymously: give the URL without them"
        )
    if not endpoint.startswith(("http://", "https://")):
        # The agent's own words for it.
        return f"the mirror endpoint {endpoint!r} for {host} is not an http:// or https:// URL"
    if any(ch.isspace() for ch in endpoint):
        return f"the mirror endpoint {endpoint!r} must not contain spaces"
    if "?" in endpoint or "#" in endpoint:
        return f"the mirror endpoint {endpoint!r} must not have a query (?) or fragment (#)"
    if netloc.startswith("["):
        hostname, bracket, after = netloc.partition("]")
        hostname += bracket
        port: str | None = after[1:] if after.startswith(":") else None
        if after and port is None:
            hostname = ""  # text after the address that is not a port
    else:
        hostname, colon, rest = netloc.partition(":")
        port = rest if colon else None
    if not hostname or _URL_HOST.fullmatch(hostname) is None:
        return f"the mirror endpoint {endpoint!r} has no valid host (http(s)://HOST[:PORT][/PATH])"
    if port is not None and not (port.isdigit() and len(port) <= 5 and _port_ok(port)):
        return f"the mirror endpoint {endpoint!r} has an invalid port (1-65535)"
    if _URL_PATH.fullmatch(slash + path) is None:
        return (
            f"the mirror endpoint {endpoint!r} has a path with characters other than "
            "letters, digits and . _ ~ % - /"
        )
    return None


def _agent_base(endpoint: str) -> str:
    # The agent strips one trailing '/' before using (and printing) an endpoint.
    return endpoint[:-1] if endpoint.endswith("/") else endpoint


@attrs.frozen
class RegistryMirror:
    """One mirror in ``stylus.registry.mirrors``: where the device agent pulls the images of
    one registry host from instead of ``https://<host>``.

    Its rules (the endpoint's form, ``insecure`` for plain http) need the host it serves,
    so :class:`StylusRegistry` checks them.
    """

    endpoint: str = attrs.field(
        metadata=doc("The mirror's base URL, http(s)://HOST[:PORT][/PATH] (no query or fragment).")
    )
    insecure: bool = attrs.field(
        default=False, metadata=doc("Allow a plain http endpoint (refused without it).")
    )
    extra: Mapping[str, Any] = attrs.field(factory=dict, metadata=EXTRA)


@attrs.frozen
class StylusRegistry:
    """``stylus.registry``: the registry mirrors the device agent pulls provider images from.

    ``mirrors`` is keyed by the registry part of an image reference, spelled exactly as in
    the host's ``providerImage`` (``"127.0.0.1:5000"``). The agent pulls anonymously;
    credentials (Palette's ``stylus.registryCredentials``) are not modelled and are kept,
    like any unmodelled key, as written.
    """

    mirrors: Mapping[str, RegistryMirror] = attrs.field(
        factory=dict, metadata=doc("Mirrors by registry host[:port] (as in an image reference).")
    )
    extra: Mapping[str, Any] = attrs.field(factory=dict, metadata=EXTRA)

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        with c.rule():
            _check_mirrors(c, self.mirrors)
        c.done()

    @classmethod
    def partial_problems(cls, mirrors: Mapping[str, RegistryMirror | None]) -> ModelValueError:
        """The rules' problems for mirrors of which some did not load (given as None).

        The converter reports these with the loading problems, so that one mirror with a
        missing endpoint does not hide another's plain-http endpoint or bad key.
        """
        c = Check(object.__new__(cls))
        _check_mirrors(c, mirrors)
        return ModelValueError(c.problems, cls)


def _check_mirrors(c: Check, mirrors: Mapping[str, RegistryMirror | None]) -> None:
    for host, mirror in mirrors.items():
        why = registry_host_problem(host)
        if why is not None:
            c.fail(("mirrors", host), why)
        if mirror is None:
            continue
        why = mirror_endpoint_problem(host, mirror.endpoint)
        if why is not None:
            c.fail(("mirrors", host, "endpoint"), why)
        elif mirror.endpoint.startswith("http://") and not mirror.insecure:
            # The agent refuses it with these words; a build refuses it first.
            c.fail(
                ("mirrors", host, "endpoint"),
                f"the mirror {_agent_base(mirror.endpoint)} for {host} is plain http; set "
                f'stylus.registry.mirrors."{host}".insecure: true to allow it',
            )


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
    registry: StylusRegistry | None = attrs.field(
        default=None, metadata=doc("Where the device agent pulls provider images from.")
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

    def with_mirror(self, host: str, endpoint: str, *, insecure: bool = False) -> UserData:
        """This document with ``endpoint`` as the mirror of registry ``host`` (replacing any
        mirror it had for that host); every other key is kept."""
        stylus = self.stylus or Stylus()
        registry = stylus.registry or StylusRegistry()
        old = registry.mirrors.get(host)
        mirror = (
            attrs.evolve(old, endpoint=endpoint, insecure=insecure)
            if old is not None
            else RegistryMirror(endpoint, insecure)
        )
        registry = attrs.evolve(registry, mirrors={**registry.mirrors, host: mirror})
        return attrs.evolve(self, stylus=attrs.evolve(stylus, registry=registry))

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
