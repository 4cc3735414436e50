"""A cluster's status: desired against observed per host, and the conditions derived from it.

Conditions (``True``/``False`` with a reason), from each member's desired generation, the
agent's last report and the host's heartbeat:

- ``Degraded``: a member is unreachable (no heartbeat for ``unreachable_after``) or
  unhealthy, or its agent reported ``failed`` or ``rolled-back``;
- ``Updating``: a member has not yet reported its desired generation (and is not degraded);
- ``Ready``: every member reported its desired generation as ``healthy`` and is reachable.

Pure data and rules: the hub computes it, the client rebuilds it from JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from edgekit.hub.tables import Table, Tabular

__all__ = ["ClusterStatus", "Condition", "HostStatus", "conditions"]

_BAD_PHASES = ("failed", "rolled-back")


@attrs.frozen
class HostStatus:
    """One host of a cluster: what it should run and what its agent last reported."""

    host: str
    role: str | None
    pool: str | None
    action: str | None
    upgrade: str | None
    desired_generation: int | None
    observed_generation: int | None
    phase: str | None
    image_digest: str | None
    message: str | None
    state: str
    last_seen: str | None

    @property
    def degraded(self) -> bool:
        """Unreachable, unhealthy, or a failed or rolled-back upgrade."""
        return self.state in ("unreachable", "unhealthy") or self.phase in _BAD_PHASES

    @property
    def up_to_date(self) -> bool:
        """Its agent reported the desired generation."""
        return (self.observed_generation or 0) >= (self.desired_generation or 0)

    def to_json(self) -> dict[str, Any]:
        """As the API shows it."""
        return {
            "hostUid": self.host,
            "role": self.role,
            "pool": self.pool,
            "action": self.action,
            "upgrade": self.upgrade,
            "desiredGeneration": self.desired_generation,
            "observedGeneration": self.observed_generation,
            "phase": self.phase,
            "imageDigest": self.image_digest,
            "message": self.message,
            "state": self.state,
            "lastSeen": self.last_seen,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> HostStatus:
        """From the API's JSON."""
        return cls(
            d["hostUid"],
            d.get("role"),
            d.get("pool"),
            d.get("action"),
            d.get("upgrade"),
            d.get("desiredGeneration"),
            d.get("observedGeneration"),
            d.get("phase"),
            d.get("imageDigest"),
            d.get("message"),
            d["state"],
            d.get("lastSeen"),
        )


@attrs.frozen
class Condition:
    """``Ready``, ``Updating`` or ``Degraded``: whether it holds, and why."""

    type: str
    status: bool
    reason: str
    message: str

    def to_json(self) -> dict[str, Any]:
        """As the API shows it (Kubernetes' ``"True"``/``"False"``)."""
        return {
            "type": self.type,
            "status": "True" if self.status else "False",
            "reason": self.reason,
            "message": self.message,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Condition:
        """From the API's JSON."""
        return cls(d["type"], d["status"] == "True", d["reason"], d["message"])


def _names(hosts: Iterable[HostStatus]) -> str:
    return ", ".join(h.host for h in hosts)


def conditions(hosts: Iterable[HostStatus]) -> tuple[Condition, ...]:
    """The three conditions of a cluster whose members are ``hosts``."""
    members = list(hosts)
    bad = [h for h in members if h.degraded]
    behind = [h for h in members if not h.up_to_date and not h.degraded]
    ready = [h for h in members if h.up_to_date and h.phase == "healthy" and not h.degraded]
    degraded = Condition(
        "Degraded",
        bool(bad),
        "HostsDegraded" if bad else "AllHealthy",
        f"{len(bad)} host(s) degraded: {_names(bad)}" if bad else "no host is degraded",
    )
    updating = Condition(
        "Updating",
        bool(behind),
        "GenerationPending" if behind else "UpToDate",
        f"{len(behind)} host(s) not yet at their desired generation: {_names(behind)}"
        if behind
        else "every host reported its desired generation",
    )
    all_ready = bool(members) and len(ready) == len(members)
    not_ready = [h for h in members if h not in ready]
    ready_c = Condition(
        "Ready",
        all_ready,
        "AllHostsReady" if all_ready else "HostsNotReady",
        f"{len(ready)}/{len(members)} host(s) healthy at their desired generation"
        + ("" if all_ready else f"; waiting for {_names(not_ready)}"),
    )
    return ready_c, updating, degraded


@attrs.frozen
class ClusterStatus(Tabular):
    """Desired against observed for every host of a cluster, and its conditions."""

    cluster: str
    uid: str
    generation: int
    resource_version: int
    conditions: tuple[Condition, ...]
    hosts: tuple[HostStatus, ...]
    releasing: tuple[HostStatus, ...] = ()

    def condition(self, type: str) -> Condition:
        """The condition ``Ready``, ``Updating`` or ``Degraded``."""
        return next(c for c in self.conditions if c.type == type)

    @property
    def ready(self) -> bool:
        """Whether the ``Ready`` condition holds."""
        return self.condition("Ready").status

    def to_json(self) -> dict[str, Any]:
        """As the API shows it."""
        return {
            "cluster": self.cluster,
            "uid": self.uid,
            "generation": self.generation,
            "resourceVersion": self.resource_version,
            "conditions": [c.to_json() for c in self.conditions],
            "hosts": [h.to_json() for h in self.hosts],
            "releasing": [h.to_json() for h in self.releasing],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ClusterStatus:
        """From the API's JSON."""
        return cls(
            d["cluster"],
            d["uid"],
            d["generation"],
            d["resourceVersion"],
            tuple(Condition.from_json(c) for c in d["conditions"]),
            tuple(HostStatus.from_json(h) for h in d["hosts"]),
            tuple(HostStatus.from_json(h) for h in d.get("releasing") or ()),
        )

    def table(self) -> Table:
        """Per host, desired against observed."""
        held = ", ".join(f"{c.type}={'True' if c.status else 'False'}" for c in self.conditions)
        rows = [
            (
                h.host,
                h.role,
                h.desired_generation,
                h.observed_generation,
                h.phase,
                h.upgrade,
                h.state,
                h.message,
            )
            for h in (*self.hosts, *self.releasing)
        ]
        return Table(
            f"cluster {self.cluster} generation {self.generation}: {held}",
            ("host", "role", "desired", "observed", "phase", "upgrade", "state", "message"),
            rows,
        )
