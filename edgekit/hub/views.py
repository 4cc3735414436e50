"""The hub's wire format out: tokens, hosts and clusters as the API shows them (Palette's
names). The request side is :mod:`edgekit.hub.fields`; both are described, from the same
field names and the model's patterns, by :mod:`edgekit.hub.openapi`."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs

from edgekit.hub.records import (
    DEFAULT_UNREACHABLE_AFTER,
    HOST_STATES,
    ClusterRecord,
    HostRecord,
    TokenRecord,
)

__all__ = [
    "HOST_VIEW",
    "TOKEN_VIEW",
    "cluster_json",
    "host_json",
    "parse_ts",
    "token_json",
    "ts",
    "view_schema",
]


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


#: A field of a view: its JSON Schema and how it is read from the record (and context).
Field = tuple[dict[str, Any], Callable[[Any, Any], Any]]

_STR: dict[str, Any] = {"type": "string"}
_NSTR: dict[str, Any] = {"type": "string", "nullable": True}
_TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
_NTIME: dict[str, Any] = {**_TIME, "nullable": True}
_INT: dict[str, Any] = {"type": "integer"}
_NINT: dict[str, Any] = {"type": "integer", "nullable": True}
_TAGS: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}


@attrs.frozen
class _Now:
    """What a view needs besides the record: the time, and when a host is unreachable."""

    now: float
    unreachable_after: float = DEFAULT_UNREACHABLE_AFTER


#: A token as the API shows it: section -> wire name -> (schema, value). The renderer below
#: and the OpenAPI document's ``Token`` schema are both made from this table.
TOKEN_VIEW: dict[str, dict[str, Field]] = {
    "metadata": {
        "uid": (_STR, lambda t, c: t.uid),
        "name": (_STR, lambda t, c: t.name),
        "creationTimestamp": (_TIME, lambda t, c: ts(t.created)),
    },
    "spec": {
        "defaultProjectUid": (_NSTR, lambda t, c: t.project),
        "expiry": (_TIME, lambda t, c: ts(t.expiry)),
        "site": (_NSTR, lambda t, c: t.site),
        "maxHosts": (_NINT, lambda t, c: t.max_hosts),
        "sites": (
            {
                "type": "array",
                "items": {"type": "string"},
                "description": "the only sites hosts may register into (empty: any)",
            },
            lambda t, c: list(t.sites),
        ),
    },
    "status": {
        "state": (
            {"type": "string", "enum": ["active", "revoked", "expired"]},
            lambda t, c: t.state(c.now),
        ),
        "isActive": ({"type": "boolean"}, lambda t, c: t.active),
        "registeredHosts": (_INT, lambda t, c: t.host_count),
    },
}

#: A host as the API shows it (never its credential), in the same form as TOKEN_VIEW.
HOST_VIEW: dict[str, dict[str, Field]] = {
    "metadata": {
        "uid": (_STR, lambda h, c: h.uid),
        "creationTimestamp": (_TIME, lambda h, c: ts(h.registered)),
    },
    "spec": {
        "hostUid": (_STR, lambda h, c: h.uid),
        "hostAddress": (_NSTR, lambda h, c: h.address),
        "macAddress": (_NSTR, lambda h, c: h.mac),
        "arch": (_NSTR, lambda h, c: h.arch),
        "site": (_NSTR, lambda h, c: h.site),
        "tags": (_TAGS, lambda h, c: dict(h.tags)),
        "agentVersion": (_NSTR, lambda h, c: h.agent_version),
        "registrationTokenUid": (_STR, lambda h, c: h.token_uid),
    },
    "status": {
        "state": (
            {"type": "string", "enum": list(HOST_STATES)},
            lambda h, c: h.effective_state(c.now, c.unreachable_after),
        ),
        "lastSeen": (_NTIME, lambda h, c: ts(h.last_seen)),
        "clusterUid": (_NSTR, lambda h, c: h.cluster_uid),
        "applied": (
            {"type": "object", "nullable": True},
            lambda h, c: dict(h.status) if h.status else None,
        ),
    },
}


def _render(view: Mapping[str, Mapping[str, Field]], record: Any, ctx: _Now) -> dict[str, Any]:
    return {
        section: {name: value(record, ctx) for name, (_, value) in fields.items()}
        for section, fields in view.items()
    }


def view_schema(view: Mapping[str, Mapping[str, Field]]) -> dict[str, Any]:
    """The JSON Schema of a view table (what :mod:`edgekit.hub.openapi` publishes)."""
    return {
        "type": "object",
        "required": list(view),
        "properties": {
            section: {
                "type": "object",
                "required": list(fields),
                "properties": {name: copy.deepcopy(schema) for name, (schema, _) in fields.items()},
            }
            for section, fields in view.items()
        },
    }


def token_json(token: TokenRecord, now: float, secret: str | None = None) -> dict[str, Any]:
    """A token as the API shows it; ``secret`` only in the creation answer."""
    data = _render(TOKEN_VIEW, token, _Now(now))
    if secret is not None:
        data["spec"]["token"] = secret
    return data


def host_json(
    host: HostRecord, now: float, unreachable_after: float = DEFAULT_UNREACHABLE_AFTER
) -> dict[str, Any]:
    """A host as the API shows it (never its credential)."""
    return _render(HOST_VIEW, host, _Now(now, unreachable_after))


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
