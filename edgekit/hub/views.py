"""The hub's wire format out: tokens, hosts and clusters as the API shows them (Palette's
names). The request side is :mod:`edgekit.hub.fields`; both are described, from the same
field names and the model's patterns, by :mod:`edgekit.hub.openapi`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from edgekit.hub.store import DEFAULT_UNREACHABLE_AFTER, ClusterRecord, HostRecord, TokenRecord

__all__ = ["cluster_json", "host_json", "parse_ts", "token_json", "ts"]


def ts(t: float | None) -> str | None:
    """A time as RFC 3339 UTC (``...Z``), or None."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_ts(value: str) -> float | None:
    """An RFC 3339 time with a zone as a timestamp, or None."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.timestamp()


def token_json(token: TokenRecord, now: float, secret: str | None = None) -> dict[str, Any]:
    """A token as the API shows it; ``secret`` only in the creation answer."""
    spec: dict[str, Any] = {
        "defaultProjectUid": token.project,
        "expiry": ts(token.expiry),
        "site": token.site,
        "maxHosts": token.max_hosts,
    }
    if secret is not None:
        spec["token"] = secret
    return {
        "metadata": {"uid": token.uid, "name": token.name, "creationTimestamp": ts(token.created)},
        "spec": spec,
        "status": {
            "state": token.state(now),
            "isActive": token.active,
            "registeredHosts": token.host_count,
        },
    }


def host_json(
    host: HostRecord, now: float, unreachable_after: float = DEFAULT_UNREACHABLE_AFTER
) -> dict[str, Any]:
    """A host as the API shows it (never its credential)."""
    return {
        "metadata": {"uid": host.uid, "creationTimestamp": ts(host.registered)},
        "spec": {
            "hostUid": host.uid,
            "hostAddress": host.address,
            "macAddress": host.mac,
            "arch": host.arch,
            "site": host.site,
            "tags": dict(host.tags),
            "agentVersion": host.agent_version,
            "registrationTokenUid": host.token_uid,
        },
        "status": {
            "state": host.effective_state(now, unreachable_after),
            "lastSeen": ts(host.last_seen),
            "clusterUid": host.cluster_uid,
            "applied": dict(host.status) if host.status else None,
        },
    }


def cluster_json(cluster: ClusterRecord) -> dict[str, Any]:
    """A cluster as the API shows it."""
    return {
        "metadata": {
            "uid": cluster.uid,
            "name": cluster.name,
            "creationTimestamp": ts(cluster.created),
        },
        "spec": dict(cluster.spec),
    }
