"""The OpenAPI description of the cluster lifecycle routes (merged into
:mod:`edgekit.hub.openapi`'s document): profiles, cluster update/scale/delete/status, search,
the fleet summary and the event stream. Request bodies come from
:mod:`edgekit.hub.schema_clusters`, the specs the routes read them with."""

from __future__ import annotations

from edgekit.hub.openapi_parts import ADMIN as _ADMIN
from edgekit.hub.openapi_parts import INT as _INT
from edgekit.hub.openapi_parts import NINT as _NINT
from edgekit.hub.openapi_parts import NSTR as _NSTR
from edgekit.hub.openapi_parts import STR as _STR
from edgekit.hub.openapi_parts import S as _S
from edgekit.hub.openapi_parts import obj as _obj
from edgekit.hub.openapi_parts import ok as _ok
from edgekit.hub.openapi_parts import ref as _ref
from edgekit.hub.schema_clusters import (
    AGENT_STATUS,
    CLUSTER_SEARCH,
    DIGEST_PATTERN,
    HEALTH,
    MAX_EVENT_TIMEOUT,
    MAX_PAGE,
    PHASES,
    cluster_update_schema,
    group_by_description,
    profile_schema,
)

__all__ = ["CLUSTER_PATHS", "CLUSTER_SCHEMAS"]

_TAGS: _S = {"type": "object", "additionalProperties": _STR}


def _query(name: str, schema: _S, description: str = "") -> _S:
    out: _S = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        out["description"] = description
    return out


_HOST_CHANGE = _obj(
    {
        "hostUid": _STR,
        "action": {"type": "string", "enum": ["join", "update", "release", "none"]},
        "upgrade": {"type": "string", "enum": ["repave", "reboot", "in_place", "none"]},
        "pool": _NSTR,
        "role": _NSTR,
        "reasons": {"type": "array", "items": _STR},
    }
)
_HOST_STATUS = _obj(
    {
        "hostUid": _STR,
        "role": _NSTR,
        "pool": _NSTR,
        "action": _NSTR,
        "upgrade": _NSTR,
        "desiredGeneration": _NINT,
        "observedGeneration": _NINT,
        "phase": {**_NSTR, "enum": [*PHASES, None]},
        "imageDigest": _NSTR,
        "message": _NSTR,
        "state": _STR,
        "lastSeen": _NSTR,
    }
)
_FROM_TO = _obj({"from": _INT, "to": _INT})

CLUSTER_SCHEMAS: _S = {
    "Status": AGENT_STATUS.openapi(),
    "Health": HEALTH.openapi(),
    "Cluster": _obj(
        {
            "metadata": _obj(
                {
                    "uid": _STR,
                    "name": _STR,
                    "labels": _TAGS,
                    "creationTimestamp": _NSTR,
                    "lastModifiedTimestamp": _NSTR,
                    "generation": _INT,
                    "resourceVersion": _INT,
                },
                ["uid", "name", "generation", "resourceVersion"],
            ),
            "spec": {"type": "object"},
        },
        ["metadata", "spec"],
    ),
    "ClusterUpdate": cluster_update_schema(),
    "Plan": _obj(
        {
            "cluster": _STR,
            "dryRun": {"type": "boolean"},
            "generation": _FROM_TO,
            "resourceVersion": _FROM_TO,
            "hosts": {"type": "array", "items": _HOST_CHANGE},
        }
    ),
    "ClusterChange": _obj({"cluster": _ref("Cluster"), "plan": _ref("Plan")}),
    "ClusterDeleted": _obj(
        {"cluster": _ref("Cluster"), "releasedHosts": {"type": "array", "items": _STR}}
    ),
    "ClusterStatus": _obj(
        {
            "cluster": _STR,
            "uid": _STR,
            "generation": _INT,
            "resourceVersion": _INT,
            "conditions": {
                "type": "array",
                "items": _obj(
                    {
                        "type": {"type": "string", "enum": ["Ready", "Updating", "Degraded"]},
                        "status": {"type": "string", "enum": ["True", "False"]},
                        "reason": _STR,
                        "message": _STR,
                    }
                ),
            },
            "hosts": {"type": "array", "items": _HOST_STATUS},
            "releasing": {"type": "array", "items": _HOST_STATUS},
        }
    ),
    "ClusterSearch": CLUSTER_SEARCH.openapi(),
    "ClusterList": _obj(
        {"items": {"type": "array", "items": _ref("Cluster")}, "listmeta": {"type": "object"}}
    ),
    "Profile": profile_schema(),
    "PublishedProfile": _obj(
        {
            "metadata": _obj(
                {
                    "name": _STR,
                    "version": _STR,
                    "digest": {"type": "string", "pattern": DIGEST_PATTERN},
                    "creationTimestamp": _NSTR,
                }
            ),
            "spec": {"type": "object"},
        }
    ),
    "ProfileList": _obj({"items": {"type": "array", "items": _ref("PublishedProfile")}}),
    "HostSummary": _obj(
        {
            "groupBy": {"type": "array", "items": _STR},
            "items": {
                "type": "array",
                "items": _obj({"key": {"type": "object"}, "count": _INT}),
            },
            "listmeta": {"type": "object"},
            "hosts": _INT,
        }
    ),
    "EventList": _obj(
        {
            "items": {
                "type": "array",
                "items": _obj(
                    {
                        "revision": _INT,
                        "time": _NSTR,
                        "kind": {"type": "string", "enum": ["host", "cluster", "profile"]},
                        "type": {"type": "string", "enum": ["created", "updated", "deleted"]},
                        "uid": _STR,
                        "data": {"type": "object"},
                    }
                ),
            },
            "revision": _INT,
        }
    ),
}

_UID: _S = {
    "name": "uid",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "the cluster's uid or name",
}
_IF_MATCH: _S = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "maxLength": 20},
    "description": 'the resourceVersion the change is based on ("3"); stale: 409',
}
_PAGE = [
    _query("limit", {"type": "integer", "minimum": 0, "maximum": MAX_PAGE}),
    _query("offset", {"type": "integer", "minimum": 0, "maximum": 2**31}),
]

CLUSTER_PATHS: _S = {
    "/v1/spectroclusters/edge-native": {
        "post": {
            "summary": "form a cluster from registered hosts and a published profile version",
            "security": _ADMIN,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("ClusterCreate")}},
            },
            "responses": _ok("Cluster", "201", "409", "413", "415"),
        }
    },
    "/v1/spectroclusters/{uid}": {
        "parameters": [_UID],
        "get": {
            "summary": "a cluster (ETag: its resourceVersion)",
            "security": _ADMIN,
            "responses": _ok("Cluster", "200", "404"),
        },
        "patch": {
            "summary": "change a cluster's profile, values, provider image, pools or labels",
            "security": _ADMIN,
            "parameters": [
                _IF_MATCH,
                _query(
                    "dryRun",
                    {"type": "string", "enum": ["true", "false"]},
                    "return the plan and store nothing",
                ),
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("ClusterUpdate")}},
            },
            "responses": _ok("ClusterChange", "200", "404", "409", "413", "415"),
        },
        "delete": {
            "summary": "delete a cluster; each host gets a desired state that releases it",
            "security": _ADMIN,
            "parameters": [_IF_MATCH],
            "responses": _ok("ClusterDeleted", "200", "404", "409"),
        },
    },
    "/v1/spectroclusters/{uid}/status": {
        "parameters": [_UID],
        "get": {
            "summary": "desired against observed per host; Ready, Updating and Degraded",
            "security": _ADMIN,
            "responses": _ok("ClusterStatus", "200", "404"),
        },
    },
    "/v1/dashboard/spectroclusters/search": {
        "post": {
            "summary": "clusters by labels and profile name",
            "security": _ADMIN,
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": _ref("ClusterSearch")}},
            },
            "responses": _ok("ClusterList", "200", "413", "415"),
        }
    },
    "/v1/clusterprofiles": {
        "post": {
            "summary": "publish a profile version (immutable; the same content again is a no-op)",
            "security": _ADMIN,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("Profile")}},
            },
            "responses": {
                **_ok("PublishedProfile", "201", "409", "413", "415"),
                "200": {
                    "description": "already published with this content",
                    "content": {"application/json": {"schema": _ref("PublishedProfile")}},
                },
            },
        },
        "get": {
            "summary": "published profile versions",
            "security": _ADMIN,
            "parameters": [_query("name", {"type": "string", "maxLength": 128})],
            "responses": _ok("ProfileList"),
        },
    },
    "/v1/clusterprofiles/{name}/{version}": {
        "parameters": [
            {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
            {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}},
        ],
        "get": {
            "summary": "one published profile version",
            "security": _ADMIN,
            "responses": _ok("PublishedProfile", "200", "404"),
        },
    },
    "/v1/edgehosts/{uid}/health": {
        "parameters": [
            {"name": "uid", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "patch": {
            "summary": "the host's health (Palette's shape); counts as a heartbeat",
            "security": [{"hostCredential": []}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("Health")}},
            },
            "responses": _ok("Host", "200", "403", "413", "415"),
        },
    },
    "/v1/dashboard/edgehosts/summary": {
        "get": {
            "summary": "host counts per group, computed in one query",
            "security": _ADMIN,
            "parameters": [
                _query("groupBy", {"type": "string", "maxLength": 256}, group_by_description()),
                *_PAGE,
            ],
            "responses": _ok("HostSummary"),
        }
    },
    "/v1/events": {
        "get": {
            "summary": "host, cluster, profile and roll-out changes after a revision (long-poll)",
            "security": _ADMIN,
            "parameters": [
                _query(
                    "since",
                    {"type": "integer", "minimum": 0, "maximum": 2**62},
                    "the last revision seen; absent: from now",
                ),
                _query(
                    "timeout",
                    {"type": "integer", "minimum": 0, "maximum": MAX_EVENT_TIMEOUT},
                    "seconds to wait for an event",
                ),
                _query("limit", {"type": "integer", "minimum": 0, "maximum": MAX_PAGE}),
                _query(
                    "kind",
                    {"type": "string", "maxLength": 64},
                    "comma-separated: host, cluster, profile, rollout",
                ),
            ],
            "responses": _ok("EventList", "200", "409"),
        }
    },
}
