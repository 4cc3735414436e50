"""Sites: where hosts live, with their network settings; and the CSV site inventory."""

from __future__ import annotations

import csv
import enum
import io
import ipaddress
from collections.abc import Mapping

import attrs

from edgekit.errors import ConfigError, Problem

from ._base import Check, doc, duplicates, is_dns_label

__all__ = [
    "INVENTORY_COLUMNS",
    "Interface",
    "InterfaceType",
    "Network",
    "Site",
    "parse_site_inventory",
    "site_inventory_rows",
]


class InterfaceType(enum.Enum):
    """How an interface gets its address."""

    DHCP = "dhcp"
    STATIC = "static"


def _check_ip(c: Check, path: tuple[str | int, ...], value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        c.fail(path, f"{value!r} is not an IP address")


@attrs.frozen
class Interface:
    """The settings of one network interface."""

    type: InterfaceType = attrs.field(default=InterfaceType.DHCP, metadata=doc("dhcp or static."))
    ip_address: str | None = attrs.field(
        default=None, metadata=doc("The address with its prefix length (CIDR), static only.")
    )
    gateway: str | None = attrs.field(
        default=None, metadata=doc("The default gateway, inside the interface's subnet.")
    )
    nameserver: str | None = attrs.field(default=None, metadata=doc("A DNS server address."))

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        # Independent rules: one that needs a field that failed to load is skipped alone (the
        # gateway's subnet rule then too, as iface stays None).
        iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface | None = None
        with c.rule():
            if self.type is InterfaceType.STATIC and self.ip_address is None:
                c.fail("ip_address", "required for a static interface (e.g. 10.0.10.25/24)")
        with c.rule():
            if self.ip_address is not None:
                if "/" not in self.ip_address:
                    c.fail(
                        "ip_address", f"{self.ip_address!r} needs a prefix length (10.0.10.25/24)"
                    )
                else:
                    try:
                        iface = ipaddress.ip_interface(self.ip_address)
                    except ValueError:
                        c.fail("ip_address", f"{self.ip_address!r} is not an address in CIDR form")
        with c.rule():
            if self.gateway is not None:
                try:
                    gw = ipaddress.ip_address(self.gateway)
                except ValueError:
                    c.fail("gateway", f"{self.gateway!r} is not an IP address")
                else:
                    if iface is not None and gw not in iface.network:
                        c.fail(
                            "gateway",
                            f"{self.gateway} is outside the interface's subnet {iface.network}",
                        )
        with c.rule():
            if self.nameserver is not None:
                _check_ip(c, ("nameserver",), self.nameserver)
        c.done()

    @classmethod
    def dhcp(cls) -> Interface:
        """An interface configured by DHCP."""
        return cls(InterfaceType.DHCP)

    @classmethod
    def static(
        cls, ip_address: str, gateway: str | None = None, nameserver: str | None = None
    ) -> Interface:
        """A static interface; ``ip_address`` in CIDR form."""
        return cls(InterfaceType.STATIC, ip_address, gateway, nameserver)


@attrs.frozen
class Network:
    """Site network settings the device applies at first boot."""

    http_proxy: str | None = attrs.field(default=None, metadata=doc("HTTP proxy URL."))
    https_proxy: str | None = attrs.field(default=None, metadata=doc("HTTPS proxy URL."))
    no_proxy: str | None = attrs.field(default=None, metadata=doc("Comma-separated exceptions."))
    ntp_servers: tuple[str, ...] = attrs.field(default=(), metadata=doc("NTP servers."))
    dns_servers: tuple[str, ...] = attrs.field(default=(), metadata=doc("DNS server addresses."))
    interfaces: Mapping[str, Interface] = attrs.field(
        factory=dict, metadata=doc("Interfaces by name (enp0s3).")
    )

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        # Independent rules: one that needs a field that failed to load is skipped alone.
        for field in ("http_proxy", "https_proxy"):
            with c.rule():
                v = getattr(self, field)
                if v is not None and not v.startswith(("http://", "https://")):
                    c.fail(field, f"{v!r} is not an http(s) URL")
        with c.rule():
            for i, s in enumerate(self.dns_servers):
                _check_ip(c, ("dns_servers", i), s)
        with c.rule():
            for i, s in enumerate(self.ntp_servers):
                if not s or any(ch.isspace() for ch in s):
                    c.fail(("ntp_servers", i), f"{s!r} is not a host name or address")
        c.done()

    @property
    def is_empty(self) -> bool:
        """Whether nothing is set."""
        return self == Network()


@attrs.frozen
class Site:
    """A place hosts are installed at (a store, a plant), with its tags and network."""

    name: str = attrs.field(metadata=doc("The site name: a DNS label (lowercase, digits, '-')."))
    tags: Mapping[str, str] = attrs.field(factory=dict, metadata=doc("Free-form tags."))
    network: Network = attrs.field(factory=Network, metadata=doc("Network settings."))

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        with c.rule():
            if not is_dns_label(self.name):
                c.fail(
                    "name",
                    f"{self.name!r} is not a DNS label: use lowercase letters, digits and '-', "
                    "start and end with a letter or digit, at most 63 characters",
                )
        with c.rule():
            for k in self.tags:
                if not k:
                    c.fail("tags", "a tag name must not be empty")
        c.done()


#: The columns of a site inventory CSV, in a recommended order. Only ``name`` is required.
INVENTORY_COLUMNS: tuple[str, ...] = (
    "name",  # the site name (DNS label)
    "tags",  # k=v;k=v
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "ntp_servers",  # separated by ';'
    "dns_servers",  # separated by ';'
    "interface",  # an interface name, e.g. enp0s3; the next four columns configure it
    "type",  # dhcp (default) or static
    "ip_address",  # CIDR, static only
    "gateway",
    "nameserver",
)


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(";") if v.strip())


def parse_site_inventory(text: str, source: str = "inventory.csv") -> tuple[Site, ...]:
    """Sites from a CSV inventory (header row, :data:`INVENTORY_COLUMNS`), one site a row.

    Raises :class:`ConfigError` listing every bad row, with ``inventory.csv:LINE`` paths.
    """
    return tuple(site for site, _ in site_inventory_rows(text, source))


def site_inventory_rows(text: str, source: str = "inventory.csv") -> tuple[tuple[Site, int], ...]:
    """Like :func:`parse_site_inventory`, each site with the line it is on.

    Strict: a row with more cells than the header, a column named twice, an unknown column
    or a NUL byte is an error (nothing is dropped silently); a UTF-8 byte order mark is
    ignored.
    """
    from edgekit.model._base import ModelValueError

    problems: list[Problem] = []
    text = text.removeprefix("\ufeff")  # spreadsheets write one; it is not part of 'name'
    reader = csv.DictReader(io.StringIO(text))

    def bad(line: int, message: str) -> None:
        problems.append(Problem(f"{source}:{line}", message, line, source))

    try:
        header = reader.fieldnames or []
    except csv.Error as e:
        bad(1, f"not valid CSV: {e}")
        raise ConfigError(problems) from None
    if "name" not in header:
        bad(1, "the header row has no 'name' column")
        raise ConfigError(problems)
    for col in header:
        if col not in INVENTORY_COLUMNS:
            bad(1, f"unknown column {col!r}; known columns: {', '.join(INVENTORY_COLUMNS)}")
    for col in duplicates(list(header)):
        bad(1, f"column {col!r} appears more than once in the header")
    sites: list[tuple[Site, int]] = []
    seen: dict[str, int] = {}
    rows = iter(reader)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as e:
            bad(reader.line_num, f"not valid CSV: {e}")
            break
        line = reader.line_num
        if None in row:  # DictReader's key for cells beyond the header
            extra = row.pop(None)
            bad(
                line,
                f"the row has {len(header) + len(extra)} cells, the header {len(header)} "
                "columns (quote a value that holds a comma)",
            )
            continue
        get = {k: (v or "").strip() for k, v in row.items() if k in INVENTORY_COLUMNS}
        name = get.get("name", "")
        tags: dict[str, str] = {}
        for item in _split(get.get("tags", "")):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                bad(line, f"tags: {item!r} is not k=v (tags are written k=v;k=v)")
                continue
            tags[key.strip()] = value.strip()
        # Each part is built on its own so that one bad cell does not hide the others.
        ok = True
        interfaces: dict[str, Interface] = {}
        try:
            if get.get("interface"):
                try:
                    itype = InterfaceType(get.get("type") or "dhcp")
                except ValueError:
                    bad(line, f"type: {get.get('type')!r} is not dhcp or static")
                    raise ModelValueError([]) from None
                interfaces[get["interface"]] = Interface(
                    itype,
                    get.get("ip_address") or None,
                    get.get("gateway") or None,
                    get.get("nameserver") or None,
                )
            elif any(get.get(k) for k in ("type", "ip_address", "gateway", "nameserver")):
                bad(line, "interface: an interface name is required with type/ip_address/gateway")
                ok = False
        except ModelValueError as e:
            ok = False
            for _, message in e.problems:
                bad(line, message)
        network = Network()
        try:
            network = Network(
                http_proxy=get.get("http_proxy") or None,
                https_proxy=get.get("https_proxy") or None,
                no_proxy=get.get("no_proxy") or None,
                ntp_servers=_split(get.get("ntp_servers", "")),
                dns_servers=_split(get.get("dns_servers", "")),
                interfaces=interfaces,
            )
        except ModelValueError as e:
            ok = False
            for _, message in e.problems:
                bad(line, message)
        try:
            site = Site(name, tags, network)
        except ModelValueError as e:
            for _, message in e.problems:
                bad(line, message)
            continue
        if not ok:
            continue
        if name in seen:
            bad(line, f"site {name!r} already defined on line {seen[name]}")
            continue
        seen[name] = line
        sites.append((site, line))
    if problems:
        raise ConfigError(problems)
    return tuple(sites)
