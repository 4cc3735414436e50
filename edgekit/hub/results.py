"""What the hub's clients return: the wire format (:mod:`edgekit.hub.views`) parsed into
records, and the Palette-shaped body of a model cluster."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from edgekit import model
from edgekit.hub.results_clusters import HubCluster, cluster_body
from edgekit.hub.security import Secret
from edgekit.hub.validate import edge_host

__all__ = ["DesiredState", "Host", "HubCluster", "Registration", "Token", "cluster_body"]


def _time(value: Any) -> datetime | None:
    # The wire format's RFC 3339 times (``...Z``), as aware datetimes.
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@attrs.frozen
class Token:
    """A registration token; ``secret`` is set only on what :meth:`TokenApi.create` returns."""

    uid: str
    name: str
    project: str | None
    site: str | None
    expiry: datetime | None
    max_hosts: int | None
    state: str
    registered_hosts: int
    secret: Secret | None = None
    #: The only sites hosts may register into with it (empty: any, or ``site``'s).
    sites: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Token:
        """From the API's JSON."""
        meta, spec, status = data["metadata"], data["spec"], data["status"]
        secret = spec.get("token")
        return cls(
            uid=meta["uid"],
            name=meta["name"],
            project=spec.get("defaultProjectUid"),
            site=spec.get("site"),
            expiry=_time(spec.get("expiry")),
            max_hosts=spec.get("maxHosts"),
            state=status["state"],
            registered_hosts=status["registeredHosts"],
            secret=Secret(secret) if secret else None,
            sites=tuple(spec.get("sites") or ()),
        )


@attrs.frozen
class Host:
    """A registered edge host as the hub sees it."""

    uid: str
    address: str | None
    mac: str | None
    arch: str | None
    site: str | None
    tags: Mapping[str, str]
    agent_version: str | None
    state: str
    last_seen: datetime | None
    cluster_uid: str | None
    applied: Mapping[str, Any] | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Host:
        """From the API's JSON."""
        spec, status = data["spec"], data["status"]
        return cls(
            uid=spec["hostUid"],
            address=spec.get("hostAddress"),
            mac=spec.get("macAddress"),
            arch=spec.get("arch"),
            site=spec.get("site"),
            tags=dict(spec.get("tags") or {}),
            agent_version=spec.get("agentVersion"),
            state=status["state"],
            last_seen=_time(status.get("lastSeen")),
            cluster_uid=status.get("clusterUid"),
            applied=status.get("applied"),
        )

    def to_edge_host(self) -> model.EdgeHost:
        """This host as a model :class:`edgekit.model.EdgeHost` (for ``Cluster.check_hosts``)."""
        return edge_host(
            self.uid,
            site=self.site,
            arch=self.arch,
            mac=self.mac,
            address=self.address,
            tags=self.tags,
            state=self.state,
        )

    def _repr_html_(self) -> str:
        # One host as a one-row table, like a HostList (edgekit.hub.results_clusters).
        from edgekit.hub.results_clusters import HostList

        return HostList([self]).table().html()


@attrs.frozen
class Registration:
    """A host's registration: its record and the credential for its later calls."""

    host: Host
    credential: Secret


@attrs.frozen
class DesiredState:
    """What a host's agent should apply: its cluster, role, pool, provider image and VIP.

    ``action`` is ``join``, ``update`` or ``release`` (leave the cluster, then report
    ``healthy`` for ``generation``; a release has no role, pool or image), and ``upgrade``
    how disruptive an update is (``repave``, ``reboot``, ``in_place``, ``none``).
    """

    cluster_uid: str
    cluster_name: str
    role: str | None
    pool: str | None
    provider_image: str | None
    vip: str | None
    generation: int
    profile: model.ProfileRef | None = None
    action: str = "join"
    upgrade: str = "none"
    values: Mapping[str, Any] = attrs.field(factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DesiredState:
        """From the API's ``desired`` object."""
        return cls(
            cluster_uid=data["clusterUid"],
            cluster_name=data["clusterName"],
            role=data.get("role"),
            pool=data.get("pool"),
            provider_image=data.get("providerImage"),
            vip=data.get("vip"),
            generation=data["generation"],
            profile=model.ProfileRef(**data["profile"]) if data.get("profile") else None,
            action=data.get("action") or "join",
            upgrade=data.get("upgrade") or "none",
            values=dict(data.get("values") or {}),
        )
