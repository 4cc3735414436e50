"""Clusters formed from registered edge hosts."""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from typing import Any

import attrs

from edgekit.errors import Problem

from ._base import Check, check_name, doc, duplicates
from .hosts import EdgeHost
from .images import Arch
from .profiles import ClusterProfile, ProfileRef

__all__ = ["Cluster", "Pool", "PoolHost", "Taint", "TaintEffect", "UpdateStrategy"]


class UpdateStrategy(enum.Enum):
    """How a pool is rolled: add a new node first (scale out) or remove one first (scale in)."""

    ROLLING_UPDATE_SCALE_OUT = "RollingUpdateScaleOut"
    ROLLING_UPDATE_SCALE_IN = "RollingUpdateScaleIn"


class TaintEffect(enum.Enum):
    """A Kubernetes taint effect."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


@attrs.frozen
class Taint:
    """A Kubernetes taint put on every node of a pool."""

    key: str = attrs.field(metadata=doc("The taint key."))
    effect: TaintEffect = attrs.field(metadata=doc("NoSchedule, PreferNoSchedule or NoExecute."))
    value: str = attrs.field(default="", metadata=doc("The taint value."))


@attrs.frozen
class PoolHost:
    """A host in a pool, with its optional static address, name and NIC."""

    uid: str = attrs.field(metadata=doc("The host uid."))
    static_ip: str | None = attrs.field(
        default=None, metadata=doc("A static address in CIDR form (10.0.10.21/24).")
    )
    name: str | None = attrs.field(default=None, metadata=doc("The node name to give the host."))
    nic: str | None = attrs.field(default=None, metadata=doc("The NIC the cluster uses."))

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        # Independent rules: one that needs a field that failed to load is skipped alone.
        with c.rule():
            check_name(c, "uid", self.uid)
        with c.rule():
            if self.static_ip is not None:
                if "/" not in self.static_ip:
                    c.fail("static_ip", f"{self.static_ip!r} needs a prefix length (10.0.10.21/24)")
                else:
                    try:
                        ipaddress.ip_interface(self.static_ip)
                    except ValueError:
                        c.fail("static_ip", f"{self.static_ip!r} is not an address in CIDR form")
        c.done()

    @property
    def interface(self) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
        """The static address as an :mod:`ipaddress` interface, if valid and given."""
        try:
            return ipaddress.ip_interface(self.static_ip) if self.static_ip else None
        except ValueError:
            return None


@attrs.frozen
class Pool:
    """A machine pool: hosts that share a role, arch, labels, taints and update strategy."""

    name: str = attrs.field(metadata=doc("The pool name, unique in a cluster."))
    hosts: tuple[PoolHost, ...] = attrs.field(metadata=doc("The hosts in the pool."))
    arch: Arch = attrs.field(default=Arch.AMD64, metadata=doc("The pool's architecture."))
    labels: Mapping[str, str] = attrs.field(factory=dict, metadata=doc("Node labels."))
    taints: tuple[Taint, ...] = attrs.field(default=(), metadata=doc("Node taints."))
    update_strategy: UpdateStrategy = attrs.field(
        default=UpdateStrategy.ROLLING_UPDATE_SCALE_OUT,
        metadata=doc("RollingUpdateScaleOut or RollingUpdateScaleIn."),
    )

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        with c.rule():
            check_name(c, "name", self.name)
        with c.rule():
            if not self.hosts:
                c.fail("hosts", "a pool needs at least one host")
            for dup in duplicates([h.uid for h in self.hosts]):
                c.fail("hosts", f"host {dup!r} is listed more than once")
        c.done()

    @property
    def size(self) -> int:
        """The number of hosts."""
        return len(self.hosts)


@attrs.frozen
class Cluster:
    """An edge-native Kubernetes cluster: a profile, a control-plane pool and worker pools."""

    name: str = attrs.field(metadata=doc("The cluster name (a DNS label)."))
    profile: ProfileRef = attrs.field(metadata=doc("The cluster profile and version."))
    control_plane: Pool = attrs.field(metadata=doc("The control-plane pool."))
    workers: tuple[Pool, ...] = attrs.field(default=(), metadata=doc("Worker pools."))
    pack_overrides: Mapping[str, Mapping[str, Any]] = attrs.field(
        factory=dict, metadata=doc("Pack values overriding the profile's, by pack name.")
    )
    vip: str | None = attrs.field(
        default=None, metadata=doc("The control-plane virtual IP (needed for several nodes).")
    )
    two_node: bool = attrs.field(default=False, metadata=doc("Two-node HA (Postgres+Kine)."))
    overlay_cidr: str | None = attrs.field(
        default=None, metadata=doc("The overlay network CIDR (VxLAN), e.g. 100.64.192.0/23.")
    )
    ssh_keys: tuple[str, ...] = attrs.field(default=(), metadata=doc("SSH public keys."))
    ntp_servers: tuple[str, ...] = attrs.field(default=(), metadata=doc("NTP servers."))

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        from ._base import is_dns_label

        # Independent rules, so that a document with one unloadable field still reports the
        # rules that do not need it.
        with c.rule():
            if not is_dns_label(self.name):
                c.fail("name", f"{self.name!r} is not a DNS label (lowercase, digits, '-', <= 63)")
        with c.rule():
            n = self.control_plane.size
            if n == 2 and not self.two_node:
                c.fail(
                    "control_plane",
                    "2 control-plane hosts need two-node mode (twoNode: true), or use 1, 3, 5...",
                )
            elif self.two_node and n != 2:
                c.fail("two_node", f"two-node mode needs exactly 2 control-plane hosts, found {n}")
            elif n != 2 and n % 2 == 0:
                c.fail("control_plane", f"{n} control-plane hosts: use 1 or an odd number >= 3")
        with c.rule():
            self._check_pools(c)
        with c.rule():
            self._check_vip(c)
        with c.rule():
            if self.overlay_cidr is not None:
                try:
                    ipaddress.ip_network(self.overlay_cidr)
                except ValueError:
                    c.fail("overlay_cidr", f"{self.overlay_cidr!r} is not a network in CIDR form")
        c.done()

    def _check_pools(self, c: Check) -> None:
        pools = self.pools
        for dup in duplicates([p.name for p in pools]):
            c.fail("workers", f"pool name {dup!r} is used more than once")
        owner: dict[str, str] = {}
        for p in pools:
            for h in p.hosts:
                if h.uid in owner and owner[h.uid] != p.name:
                    c.fail(
                        "workers",
                        f"host {h.uid!r} is in pools {owner[h.uid]!r} and {p.name!r}; "
                        "a host may be in one pool only",
                    )
                owner.setdefault(h.uid, p.name)

    def _check_vip(self, c: Check) -> None:
        if self.vip is None:
            n = self.control_plane.size
            if n > 1:
                c.fail("vip", f"required for a control plane of {n} hosts")
            return
        try:
            vip = ipaddress.ip_address(self.vip)
        except ValueError:
            c.fail("vip", f"{self.vip!r} is not an IP address")
            return
        for h in self.control_plane.hosts:
            iface = h.interface
            if iface is not None and vip not in iface.network:
                c.fail("vip", f"{vip} is outside {h.uid}'s subnet {iface.network}")

    @property
    def pools(self) -> tuple[Pool, ...]:
        """The control-plane pool then the worker pools."""
        return (self.control_plane, *self.workers)

    @classmethod
    def single_node(
        cls,
        name: str,
        profile: ClusterProfile | ProfileRef,
        host: EdgeHost | str,
        **kw: Any,
    ) -> Cluster:
        """A one-host cluster: the host is its control plane (and runs workloads)."""
        ref = profile.ref if isinstance(profile, ClusterProfile) else profile
        uid = host.uid if isinstance(host, EdgeHost) else host
        arch = host.arch if isinstance(host, EdgeHost) else Arch.AMD64
        pool = Pool(name="control-plane", hosts=(PoolHost(uid),), arch=arch)
        return cls(name=name, profile=ref, control_plane=pool, **kw)

    def check_hosts(self, hosts: Mapping[str, EdgeHost]) -> list[Problem]:
        """Problems with the hosts this cluster uses: missing, unavailable, or wrong arch."""
        problems: list[Problem] = []
        for pi, pool in enumerate(self.pools):
            ppath = "$.controlPlane" if pi == 0 else f"$.workers[{pi - 1}]"
            arches: set[Arch] = set()
            for hi, ph in enumerate(pool.hosts):
                path = f"{ppath}.hosts[{hi}].uid"
                host = hosts.get(ph.uid)
                if host is None:
                    problems.append(Problem(path, f"host {ph.uid!r} is not registered"))
                    continue
                if not host.state.available:
                    problems.append(
                        Problem(
                            path,
                            f"host {ph.uid!r} is {host.state.value}; it must be registered "
                            "or ready",
                        )
                    )
                arches.add(host.arch)
                if host.arch is not pool.arch:
                    problems.append(
                        Problem(
                            path,
                            f"host {ph.uid!r} is {host.arch.value} but pool {pool.name!r} is "
                            f"{pool.arch.value}; a pool has one architecture",
                        )
                    )
        return problems
