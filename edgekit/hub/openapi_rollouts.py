"""The OpenAPI description of the roll-out routes (merged into :mod:`edgekit.hub.openapi`'s
document). The request body is the ``kind: Rollout`` document (see docs/rollouts.md); the
hub checks it with the same converter as ``edgekit validate``."""

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

__all__ = ["ROLLOUT_PATHS", "ROLLOUT_SCHEMAS"]

_COUNTS: _S = {"type": "object", "additionalProperties": _INT}


_WAVE = _obj(
    {
        "name": {"type": "string", "maxLength": 63},
        "clusters": {"type": "array", "items": _STR},
        "percent": {"type": "number"},
        "count": _INT,
    },
    ["name"],
)
_ROLLOUT_DOC = _obj(
    {
        "apiVersion": _STR,
        "kind": {"type": "string", "enum": ["Rollout"]},
        "name": {"type": "string", "maxLength": 63},
        "profile": _obj({"name": _STR, "version": _STR}, ["name", "version"]),
        "clusters": _obj(
            {"tags": {"type": "object", "additionalProperties": _STR}, "profile": _NSTR}
        ),
        "waves": {"type": "array", "items": _WAVE},
        "maxUnavailable": _INT,
        "gate": _obj(
            {
                "soak": _STR,
                "timeout": _STR,
                "unreachableAfter": _STR,
                "maxFailedClusters": _INT,
                "webhook": _NSTR,
                "checks": {
                    "type": "array",
                    "items": _obj({"name": _STR, "timeout": _STR}, ["name"]),
                },
            }
        ),
        "onFailure": {"type": "string", "enum": ["pause", "rollback"]},
        "window": {
            **_obj({"cron": _STR, "duration": _STR, "timezone": _STR}, ["cron", "duration"]),
            "nullable": True,
        },
        "approveEachWave": {"type": "boolean"},
        "providerImage": {**_NSTR, "maxLength": 512},
    },
    ["name", "profile"],
)
#: One declared gate check of a wave as the status shows it.
_CHECK = _obj(
    {
        "name": _STR,
        "state": {
            "type": "string",
            "enum": ["pending", "awaiting", "passed", "failed", "timed-out"],
        },
        "message": _STR,
        "deadline": _NSTR,
    }
)
_CHECKS: _S = {"type": "array", "items": _CHECK}
_VERDICT = {
    **_obj(
        {
            "wave": {"oneOf": [_INT, _STR]},
            "check": _STR,
            "passed": {"type": "boolean"},
            "message": {"type": "string", "maxLength": 4000},
            "attempt": {"type": "number"},
        },
        ["wave", "check", "passed"],
    ),
    "additionalProperties": False,
}
_ROLLOUT_CLUSTER = _obj(
    {
        "name": _STR,
        "uid": _STR,
        "wave": _STR,
        "state": _STR,
        "fromVersion": _NSTR,
        "toVersion": _NSTR,
        "fromImage": _NSTR,
        "toImage": _NSTR,
        "fromGeneration": _NINT,
        "toGeneration": _NINT,
        "rollbackGeneration": _NINT,
        "started": _NSTR,
        "converged": _NSTR,
        "finished": _NSTR,
        "message": _STR,
    }
)
_ROLLOUT = _obj(
    {
        "metadata": _obj(
            {"name": _STR, "creationTimestamp": _NSTR, "lastModifiedTimestamp": _NSTR}
        ),
        "spec": {"type": "object"},
        "status": _obj(
            {
                "state": {
                    "type": "string",
                    "enum": [
                        "running",
                        "paused",
                        "rolling-back",
                        "completed",
                        "rolled-back",
                        "aborted",
                    ],
                },
                "message": _STR,
                "wave": _obj(
                    {
                        "index": _INT,
                        "name": _NSTR,
                        "state": _STR,
                        "started": _NSTR,
                        "soakStarted": _NSTR,
                        "attempt": {"type": "number", "nullable": True},
                        "checks": _CHECKS,
                    }
                ),
                "approvedWave": _INT,
                "finished": _NSTR,
                # When it is expected done (docs/rollouts.md, "ETA"); only GET of one.
                "eta": _obj({"time": _NSTR, "remainingSeconds": _NINT, "basis": _STR}),
                "counts": _COUNTS,
                "waves": {
                    "type": "array",
                    "items": _obj(
                        {
                            "name": _STR,
                            "index": _INT,
                            "state": _STR,
                            "clusters": _INT,
                            "counts": _COUNTS,
                            "checks": _CHECKS,
                        }
                    ),
                },
                "clusters": {"type": "array", "items": _ROLLOUT_CLUSTER},
                "transitions": {
                    "type": "array",
                    "items": _obj(
                        {
                            "time": _NSTR,
                            "type": _STR,
                            "wave": _NINT,
                            "cluster": _NSTR,
                            "data": {"type": "object"},
                        }
                    ),
                },
            }
        ),
    }
)

ROLLOUT_SCHEMAS: _S = {
    "RolloutDocument": _ROLLOUT_DOC,
    "Rollout": _ROLLOUT,
    "RolloutList": _obj({"items": {"type": "array", "items": _ROLLOUT}}),
    "GateCheckVerdict": _VERDICT,
}

_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_EMPTY = {
    "required": False,
    "content": {"application/json": {"schema": {"type": "object"}}},
}

_CONTROLS = {
    "pause": "stop starting anything new (running -> paused)",
    "resume": "go on (paused -> running); a failed wave is evaluated again with a fresh timeout",
    "abort": "stop for good and release every cluster; nothing is put back",
    "rollback": (
        "put every cluster the roll-out changed back to its previous profile version (running,"
        " paused, or completed: 409 ClusterChanged when a cluster was changed since)"
    ),
    "approve": "let the wave waiting for an approval start (approveEachWave)",
}

ROLLOUT_PATHS: _S = {
    "/v1/rollouts": {
        "post": {
            "summary": "create a roll-out (a kind: Rollout document); its clusters are held",
            "security": _ADMIN,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("RolloutDocument")}},
            },
            "responses": _ok("Rollout", "201", "409", "413", "415"),
        },
        "get": {
            "summary": "every roll-out, with counts per wave (no per-cluster rows)",
            "security": _ADMIN,
            "responses": _ok("RolloutList"),
        },
    },
    "/v1/rollouts/{name}": {
        "parameters": [_NAME],
        "get": {
            "summary": "one roll-out: where it is, every cluster's progress, its transitions",
            "security": _ADMIN,
            "responses": _ok("Rollout", "200", "404"),
        },
    },
    "/v1/rollouts/{name}/verdicts": {
        "parameters": [_NAME],
        "post": {
            "summary": (
                "a verdict on a declared gate check of the wave that awaits it (the first"
                " wins; 409 when the wave awaits none, another attempt, or it timed out)"
            ),
            "security": _ADMIN,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("GateCheckVerdict")}},
            },
            "responses": _ok("Rollout", "200", "404", "409", "413", "415"),
        },
    },
    **{
        f"/v1/rollouts/{{name}}/{action}": {
            "parameters": [_NAME],
            "post": {
                "summary": summary,
                "security": _ADMIN,
                "requestBody": _EMPTY,
                "responses": _ok("Rollout", "200", "404", "409", "413", "415"),
            },
        }
        for action, summary in _CONTROLS.items()
    },
}
