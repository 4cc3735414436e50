"""What a cluster change does to each host: the plan an update (or its dry run) returns.

Pure data and rules, no I/O: the hub computes the plan, the client rebuilds it from JSON.
The upgrade kind of a profile change is :meth:`ClusterProfile.diff`'s; a new provider image
is a ``repave``; a new VIP a ``reboot``; other cloud settings and pool labels ``in_place``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from edgekit.hub.tables import Table, Tabular
from edgekit.model import ClusterProfile, UpgradeKind

__all__ = ["HostChange", "UpdatePlan", "host_changes"]


@attrs.frozen
class HostChange:
    """One host's part of a plan: ``action`` (join, update, release, none), the upgrade
    kind (repave, reboot, in_place, none), its pool and role after, and why."""

    host: str
    action: str
    upgrade: str
    pool: str | None = None
    role: str | None = None
    reasons: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """As the API shows it."""
        return {
            "hostUid": self.host,
            "action": self.action,
            "upgrade": self.upgrade,
            "pool": self.pool,
            "role": self.role,
            "reasons": list(self.reasons),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HostChange:
        """From the API's JSON."""
        return cls(
            data["hostUid"],
            data["action"],
            data["upgrade"],
            data.get("pool"),
            data.get("role"),
            tuple(data.get("reasons") or ()),
        )


@attrs.frozen
class UpdatePlan(Tabular):
    """What a change of cluster ``cluster`` does (``dry_run``: what it would do)."""

    cluster: str
    generation_from: int
    generation_to: int
    resource_version_from: int
    resource_version_to: int
    hosts: tuple[HostChange, ...]
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        """Whether the change does anything."""
        return self.resource_version_to != self.resource_version_from

    def to_json(self) -> dict[str, Any]:
        """As the API shows it."""
        return {
            "cluster": self.cluster,
            "dryRun": self.dry_run,
            "generation": {"from": self.generation_from, "to": self.generation_to},
            "resourceVersion": {"from": self.resource_version_from, "to": self.resource_version_to},
            "hosts": [h.to_json() for h in self.hosts],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UpdatePlan:
        """From the API's JSON."""
        return cls(
            data["cluster"],
            data["generation"]["from"],
            data["generation"]["to"],
            data["resourceVersion"]["from"],
            data["resourceVersion"]["to"],
            tuple(HostChange.from_json(h) for h in data["hosts"]),
            bool(data.get("dryRun")),
        )

    def table(self) -> Table:
        """The plan as a table, one row per host."""
        title = (
            f"{'dry run: ' if self.dry_run else ''}cluster {self.cluster} generation "
            f"{self.generation_from} -> {self.generation_to}"
        )
        rows = [
            (h.host, h.action, h.upgrade, h.pool or "", h.role or "", "; ".join(h.reasons))
            for h in self.hosts
        ]
        return Table(title, ("host", "action", "upgrade", "pool", "role", "why"), rows)


def _pools(spec: Mapping[str, Any]) -> dict[str, tuple[str, bool, str]]:
    """uid -> (pool name, control plane?, the pool's settings as canonical JSON)."""
    out: dict[str, tuple[str, bool, str]] = {}
    for pool in spec.get("machinePoolConfig") or []:
        cfg = dict(pool.get("poolConfig") or {})
        settings = json.dumps(
            {k: cfg.get(k) for k in ("labels", "taints", "archType", "updateStrategy")},
            sort_keys=True,
        )
        for h in (pool.get("cloudConfig") or {}).get("edgeHosts") or []:
            out[str(h.get("hostUid"))] = (
                str(cfg.get("name")),
                bool(cfg.get("isControlPlane")),
                settings,
            )
    return out


def _worst(kinds: Sequence[UpgradeKind]) -> UpgradeKind:
    return max(kinds, key=lambda k: k.rank, default=UpgradeKind.NONE)


def _cluster_wide(
    old_spec: Mapping[str, Any],
    new_spec: Mapping[str, Any],
    old_profile: ClusterProfile | None,
    new_profile: ClusterProfile | None,
) -> tuple[UpgradeKind, list[str]]:
    kinds: list[UpgradeKind] = []
    why: list[str] = []
    old_ref, new_ref = old_spec.get("profile") or {}, new_spec.get("profile") or {}
    same_ref = old_ref == new_ref
    if not same_ref or old_spec.get("values") != new_spec.get("values"):
        if old_profile is not None and new_profile is not None:
            diff = old_profile.diff(new_profile)
            kinds.append(diff.upgrade)
            for c in diff:
                text = f"{c.pack} {c.kind.value}"
                if c.old is not None or c.new is not None:
                    text += f" {c.old} -> {c.new}"
                if c.keys:
                    text += f" ({', '.join(c.keys)})"
                why.append(text)
        else:
            # A profile published before the hub kept profiles: its packs are unknown.
            kinds.append(UpgradeKind.REPAVE if not same_ref else UpgradeKind.IN_PLACE)
            why.append("profile content unknown")
        if not same_ref:
            why.insert(
                0,
                f"profile {old_ref.get('name')}@{old_ref.get('version')} -> "
                f"{new_ref.get('name')}@{new_ref.get('version')}",
            )
    if old_spec.get("providerImage") != new_spec.get("providerImage"):
        kinds.append(UpgradeKind.REPAVE)
        why.append(
            f"provider image {old_spec.get('providerImage')} -> {new_spec.get('providerImage')}"
        )
    old_cloud = dict(old_spec.get("cloudConfig") or {})
    new_cloud = dict(new_spec.get("cloudConfig") or {})
    if old_cloud.get("controlPlaneEndpoint") != new_cloud.get("controlPlaneEndpoint"):
        kinds.append(UpgradeKind.REBOOT)
        why.append("control-plane endpoint changed")
    old_cloud.pop("controlPlaneEndpoint", None)
    new_cloud.pop("controlPlaneEndpoint", None)
    if old_cloud != new_cloud:
        kinds.append(UpgradeKind.IN_PLACE)
        why.append("cloud settings changed")
    return _worst(kinds), why


def host_changes(
    *,
    old_spec: Mapping[str, Any],
    new_spec: Mapping[str, Any],
    old_profile: ClusterProfile | None,
    new_profile: ClusterProfile | None,
    members: Sequence[str],
) -> list[HostChange]:
    """Per host (members, then joining hosts, by uid): what the change does to it."""
    base, why = _cluster_wide(old_spec, new_spec, old_profile, new_profile)
    old, new = _pools(old_spec), _pools(new_spec)
    out: list[HostChange] = []
    for uid in sorted(set(members) | set(old) | set(new)):
        if uid not in new:
            out.append(
                HostChange(
                    uid, "release", UpgradeKind.NONE.value, reasons=("removed from the cluster",)
                )
            )
            continue
        pool, control, settings = new[uid]
        role = "control-plane" if control else "worker"
        if uid not in old:
            out.append(
                HostChange(
                    uid, "join", UpgradeKind.NONE.value, pool, role, ("added to the cluster",)
                )
            )
            continue
        kinds, reasons = [base], list(why)
        old_pool, old_control, old_settings = old[uid]
        if old_control != control:
            kinds.append(UpgradeKind.REPAVE)
            reasons.append(f"role {'control-plane' if old_control else 'worker'} -> {role}")
        elif old_pool != pool or old_settings != settings:
            kinds.append(UpgradeKind.IN_PLACE)
            reasons.append(
                f"pool {pool} settings changed"
                if old_pool == pool
                else f"pool {old_pool} -> {pool}"
            )
        kind = _worst(kinds)
        action = "none" if kind is UpgradeKind.NONE else "update"
        out.append(
            HostChange(
                uid, action, kind.value, pool, role, tuple(reasons) if action != "none" else ()
            )
        )
    return out
