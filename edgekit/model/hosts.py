"""Edge hosts and the tokens they register with."""

from __future__ import annotations

import enum
import hmac
import ipaddress
import re
from collections.abc import Mapping
from datetime import datetime

import attrs

from ._base import Check, check_name, doc, is_dns_label
from .images import Arch

__all__ = ["EdgeHost", "HostState", "RegistrationToken", "Secret", "TokenState", "normalise_mac"]

_MAC = re.compile(r"^[0-9a-f]{2}([:-]?)[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")


def normalise_mac(value: str) -> str:
    """``value`` as lower-case colon-separated MAC; ValueError if it is not a MAC address."""
    v = value.strip().lower()
    if not _MAC.fullmatch(v):
        raise ValueError(f"{value!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    hexdigits = v.replace(":", "").replace("-", "")
    return ":".join(hexdigits[i : i + 2] for i in range(0, 12, 2))


def _mac_converter(value: str | None) -> str | None:
    # Normalise when valid; leave invalid values for the validator to report with the field.
    if value is None:
        return None
    try:
        return normalise_mac(value)
    except (ValueError, AttributeError):
        return value


@attrs.frozen(repr=False)
class Secret:
    """A string that never shows itself: ``repr``/``str`` are ``'***'``; use :meth:`reveal`."""

    _value: str = attrs.field(alias="value", eq=False, hash=False)

    def reveal(self) -> str:
        """The secret value. Do not log it."""
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(
            self._value.encode("utf-8", "surrogatepass"),
            other._value.encode("utf-8", "surrogatepass"),
        )

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)


class HostState(enum.Enum):
    """The life cycle of an edge host.

    registered  -> the agent registered with a valid token; not yet checked healthy
    ready       -> healthy and free to join a cluster
    in_use      -> part of a cluster
    unhealthy   -> reporting, but failing health checks
    unreachable -> stopped reporting
    """

    REGISTERED = "registered"
    READY = "ready"
    IN_USE = "in_use"
    UNHEALTHY = "unhealthy"
    UNREACHABLE = "unreachable"

    @property
    def available(self) -> bool:
        """Whether a host in this state may be put in a new cluster."""
        return self in (HostState.REGISTERED, HostState.READY)


@attrs.frozen
class EdgeHost:
    """A device that registered with the hub."""

    uid: str = attrs.field(metadata=doc("The host's unique id (machine id)."))
    name: str = attrs.field(default="", metadata=doc("The host name, if known."))
    site: str | None = attrs.field(default=None, metadata=doc("The site the host is at."))
    arch: Arch = attrs.field(default=Arch.AMD64, metadata=doc("The CPU architecture."))
    mac: str | None = attrs.field(
        default=None,
        converter=_mac_converter,
        metadata=doc("The primary MAC address, normalised to aa:bb:cc:dd:ee:ff."),
    )
    address: str | None = attrs.field(default=None, metadata=doc("The host's IP address."))
    labels: Mapping[str, str] = attrs.field(factory=dict, metadata=doc("Free-form labels."))
    state: HostState = attrs.field(default=HostState.REGISTERED, metadata=doc("The host state."))

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        # Independent rules: one that needs a field that failed to load is skipped alone.
        with c.rule():
            check_name(c, "uid", self.uid)
        with c.rule():
            if self.site is not None and not is_dns_label(self.site):
                c.fail("site", f"{self.site!r} is not a site name (a DNS label)")
        with c.rule():
            if self.mac is not None:
                try:
                    normalise_mac(self.mac)
                except ValueError as e:
                    c.fail("mac", str(e))
        with c.rule():
            if self.address is not None:
                try:
                    ipaddress.ip_address(self.address)
                except ValueError:
                    c.fail("address", f"{self.address!r} is not an IP address")
        c.done()


class TokenState(enum.Enum):
    """Whether a registration token accepts new hosts."""

    ACTIVE = "active"
    INACTIVE = "inactive"


@attrs.frozen
class RegistrationToken:
    """A token hosts present to register; its value is a :class:`Secret`."""

    name: str = attrs.field(metadata=doc("The token name."))
    value: Secret = attrs.field(metadata=doc("The secret token value."))
    project: str = attrs.field(default="default", metadata=doc("The project hosts join."))
    site: str | None = attrs.field(default=None, metadata=doc("The site the token is for."))
    expires_at: datetime | None = attrs.field(
        default=None, metadata=doc("When the token expires (ISO 8601), or never.")
    )
    max_hosts: int | None = attrs.field(
        default=None, metadata=doc("How many hosts may use the token, or unlimited.")
    )
    state: TokenState = attrs.field(default=TokenState.ACTIVE, metadata=doc("active or inactive."))

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        with c.rule():
            check_name(c, "name", self.name)
        with c.rule():
            if not self.value:
                c.fail("value", "must not be empty")
        with c.rule():
            if self.site is not None and not is_dns_label(self.site):
                c.fail("site", f"{self.site!r} is not a site name (a DNS label)")
        with c.rule():
            if self.max_hosts is not None and self.max_hosts < 1:
                c.fail("max_hosts", f"{self.max_hosts} must be at least 1")
        with c.rule():
            if self.expires_at is not None and self.expires_at.tzinfo is None:
                c.fail("expires_at", f"{self.expires_at.isoformat()} needs a time zone (add Z)")
        c.done()

    def is_valid_at(self, when: datetime) -> bool:
        """Whether the token is active and not expired at ``when``."""
        if self.state is not TokenState.ACTIVE:
            return False
        return self.expires_at is None or when < self.expires_at
