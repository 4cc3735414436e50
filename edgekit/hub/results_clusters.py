"""What the cluster lifecycle's client calls return (:mod:`edgekit.hub.client_clusters`),
and the Palette-shaped body of a model cluster.

Results render as text (``str()``), compact HTML in Jupyter (``_repr_html_``) and pandas
DataFrames (``to_dataframe()``, pandas imported only then).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from edgekit import model
from edgekit.config import structure
from edgekit.hub.plans import UpdatePlan
from edgekit.hub.tables import Table, Tabular

__all__ = [
    "ClusterList",
    "Event",
    "EventPage",
    "HostList",
    "HostSummary",
    "HubCluster",
    "PublishedProfile",
    "cluster_body",
    "pool_json",
]


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def pool_json(
    pool: model.Pool, *, control_plane: bool, cp_as_worker: bool = False
) -> dict[str, Any]:
    """One model :class:`~edgekit.model.Pool` as a ``machinePoolConfig`` entry."""
    hosts = []
    for h in pool.hosts:
        entry = {"hostUid": h.uid}
        for key, value in (("staticIP", h.static_ip), ("hostName", h.name), ("nicName", h.nic)):
            if value is not None:
                entry[key] = value
        hosts.append(entry)
    return {
        "cloudConfig": {"edgeHosts": hosts},
        "poolConfig": {
            "name": pool.name,
            "isControlPlane": control_plane,
            "useControlPlaneAsWorker": cp_as_worker,
            "archType": pool.arch.value,
            "size": pool.size,
            "labels": dict(pool.labels),
            "taints": [
                {"key": t.key, "value": t.value, "effect": t.effect.value} for t in pool.taints
            ],
            "updateStrategy": {"type": pool.update_strategy.value},
        },
    }


def cluster_body(
    cluster: model.Cluster,
    provider_image: str | None = None,
    *,
    labels: Mapping[str, str] | None = None,
    values: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """A model :class:`edgekit.model.Cluster` as Palette's ``edge-native`` create body.

    ``values`` (else the cluster's ``pack_overrides``): per-pack values over the profile's.
    """
    cloud: dict[str, Any] = {"isTwoNodeCluster": cluster.two_node}
    if cluster.vip is not None:
        cloud["controlPlaneEndpoint"] = {"host": cluster.vip, "type": "IP"}
    if cluster.overlay_cidr is not None:
        cloud["overlayNetworkConfiguration"] = {"enable": True, "cidr": cluster.overlay_cidr}
    if cluster.ssh_keys:
        cloud["sshKeys"] = list(cluster.ssh_keys)
    if cluster.ntp_servers:
        cloud["ntpServers"] = list(cluster.ntp_servers)
    pools = [
        pool_json(pool, control_plane=i == 0, cp_as_worker=i == 0 and not cluster.workers)
        for i, pool in enumerate(cluster.pools)
    ]
    spec: dict[str, Any] = {
        "profile": {"name": cluster.profile.name, "version": cluster.profile.version},
        "cloudConfig": cloud,
        "machinePoolConfig": pools,
    }
    overrides = values if values is not None else cluster.pack_overrides
    if overrides:
        spec["values"] = {k: dict(v) for k, v in overrides.items()}
    if provider_image is not None:
        spec["providerImage"] = provider_image
    metadata: dict[str, Any] = {"name": cluster.name}
    if labels:
        metadata["labels"] = dict(labels)
    return {"metadata": metadata, "spec": spec}


# -- results --------------------------------------------------------------------------------
@attrs.frozen
class HubCluster:
    """A cluster the hub formed; ``plan`` is set on what an update returns."""

    uid: str
    name: str
    spec: Mapping[str, Any]
    labels: Mapping[str, str] = attrs.field(factory=dict)
    generation: int = 1
    resource_version: int = 1
    created: datetime | None = None
    plan: UpdatePlan | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any], plan: UpdatePlan | None = None) -> HubCluster:
        """From the API's JSON."""
        meta = data["metadata"]
        return cls(
            uid=meta["uid"],
            name=meta["name"],
            spec=data["spec"],
            labels=dict(meta.get("labels") or {}),
            generation=meta.get("generation", 1),
            resource_version=meta.get("resourceVersion", 1),
            created=_time(meta.get("creationTimestamp")),
            plan=plan,
        )

    @property
    def profile(self) -> model.ProfileRef:
        """The profile version the cluster runs."""
        ref = self.spec["profile"]
        return model.ProfileRef(ref["name"], ref["version"])

    @property
    def pools(self) -> list[tuple[str, bool, list[str]]]:
        """(name, control plane?, host uids) of each pool."""
        return [
            (
                str(p["poolConfig"]["name"]),
                bool(p["poolConfig"].get("isControlPlane")),
                [str(h["hostUid"]) for h in p["cloudConfig"]["edgeHosts"]],
            )
            for p in self.spec.get("machinePoolConfig", [])
        ]

    def _row(self) -> tuple[Any, ...]:
        hosts = sum(len(h) for _, _, h in self.pools)
        labels = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        ref = self.profile
        return (
            self.name,
            f"{ref.name}@{ref.version}",
            self.generation,
            self.resource_version,
            hosts,
            self.spec.get("providerImage"),
            labels,
        )

    def table(self) -> Table:
        """The cluster as a one-row table."""
        return Table("", _CLUSTER_COLUMNS, [self._row()])

    def _repr_html_(self) -> str:
        return self.table().html()

    def to_dataframe(self) -> Any:
        """A one-row pandas DataFrame (pandas is imported only now)."""
        return self.table().dataframe()


_CLUSTER_COLUMNS = ("name", "profile", "generation", "resourceVersion", "hosts", "image", "labels")


class ClusterList(Tabular, list[HubCluster]):
    """Clusters, with ``total``: how many matched (all pages)."""

    total: int = 0

    def table(self) -> Table:
        """One row per cluster."""
        return Table(f"{self.total} cluster(s)", _CLUSTER_COLUMNS, [c._row() for c in self])


class HostList(Tabular, list[Any]):
    """Hosts (``edgekit.hub.Host``), with ``total``: how many matched (all pages)."""

    total: int = 0

    def table(self) -> Table:
        """One row per host."""
        rows = [
            (
                h.uid,
                h.site,
                h.state,
                h.arch,
                h.cluster_uid,
                h.address,
                h.last_seen.isoformat() if h.last_seen else None,
            )
            for h in self
        ]
        columns = ("uid", "site", "state", "arch", "cluster", "address", "lastSeen")
        return Table(f"{self.total} host(s)", columns, rows)


@attrs.frozen
class PublishedProfile:
    """A profile version in the hub: immutable once published."""

    name: str
    version: str
    digest: str
    profile: model.ClusterProfile
    created: datetime | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PublishedProfile:
        """From the API's JSON."""
        meta = data["metadata"]
        return cls(
            meta["name"],
            meta["version"],
            meta["digest"],
            structure(dict(data["spec"]), model.ClusterProfile),
            _time(meta.get("creationTimestamp")),
        )

    @property
    def ref(self) -> model.ProfileRef:
        """A reference to this version."""
        return model.ProfileRef(self.name, self.version)


@attrs.frozen
class HostSummary(Tabular):
    """Host counts per group (``group_by`` keys), and the totals."""

    group_by: tuple[str, ...]
    rows: tuple[tuple[Mapping[str, Any], int], ...]
    groups: int
    hosts: int

    def count(self, **key: Any) -> int:
        """The hosts of the groups whose keys match ``key`` (e.g. ``count(state="ready")``)."""
        return sum(n for k, n in self.rows if all(k.get(a) == v for a, v in key.items()))

    def table(self) -> Table:
        """One row per group."""
        rows = [(*(k.get(g) for g in self.group_by), n) for k, n in self.rows]
        return Table(
            f"{self.hosts} host(s) in {self.groups} group(s)", (*self.group_by, "count"), rows
        )


@attrs.frozen
class Event:
    """A host, cluster or profile change, with its revision (monotone, never reused)."""

    revision: int
    time: datetime | None
    kind: str
    type: str
    uid: str
    data: Mapping[str, Any]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Event:
        """From the API's JSON."""
        return cls(
            d["revision"],
            _time(d.get("time")),
            d["kind"],
            d["type"],
            d["uid"],
            dict(d.get("data") or {}),
        )


@attrs.frozen
class EventPage:
    """Events after a revision, and the revision to ask from next."""

    events: tuple[Event, ...]
    revision: int
