"""The hub's OpenAPI 3.0 description of exactly what is served.

Name patterns come from the model (:mod:`edgekit.model`), never copied by hand, and field
request bodies are rendered from :mod:`edgekit.hub.schema`, the specs the routes read them
with. The cluster body, checked field by field by :mod:`edgekit.hub.validate`, is written
here with the model's enumerations and patterns.
"""

from __future__ import annotations

import copy
from typing import Any

from edgekit.hub import schema
from edgekit.hub.openapi_clusters import CLUSTER_PATHS, CLUSTER_SCHEMAS
from edgekit.hub.openapi_rollouts import ROLLOUT_PATHS, ROLLOUT_SCHEMAS
from edgekit.hub.views import HOST_VIEW, TOKEN_VIEW, view_schema
from edgekit.model import Arch, TaintEffect, UpdateStrategy

__all__ = ["openapi_document"]

_S = dict[str, Any]


def _values(kind: Any) -> list[str]:
    """The values of one of the model's enumerations."""
    return [member.value for member in kind]


def _token_schema() -> _S:
    token = view_schema(TOKEN_VIEW)
    token["properties"]["spec"]["properties"]["token"] = {
        "type": "string",
        "description": "the secret; only in the creation answer",
    }
    return token


def _str(max_len: int = 255, **extra: Any) -> _S:
    return {"type": "string", "maxLength": max_len, **extra}


_ERROR: _S = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string"},
        "message": {"type": "string"},
        "problems": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}
_TAGS: _S = {"type": "object", "additionalProperties": _str(256), "maxProperties": 64}
_TIME: _S = {"type": "string", "format": "date-time"}

_SCHEMAS: _S = {
    "Error": _ERROR,
    "TokenCreate": schema.TOKEN_CREATE.openapi(),
    "TokenBatch": schema.TOKEN_BATCH.openapi(),
    "TokenUpdate": schema.TOKEN_UPDATE.openapi(),
    "TokenState": schema.TOKEN_STATE.openapi(),
    "Token": _token_schema(),
    "TokenList": {
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Token"}}},
    },
    "Registration": schema.REGISTRATION.openapi(),
    "Host": view_schema(HOST_VIEW),
    "HostRegistered": {
        "allOf": [
            {"$ref": "#/components/schemas/Host"},
            {
                "type": "object",
                "properties": {
                    "credential": {"type": "string", "description": "Bearer credential"}
                },
            },
        ]
    },
    "Reset": {"type": "object", "properties": {}, "additionalProperties": False},
    "Heartbeat": schema.HEARTBEAT.openapi(),
    "Status": schema.STATUS.openapi(),
    "DesiredState": {
        "type": "object",
        "properties": {
            "hostUid": {"type": "string"},
            "desired": {
                "type": "object",
                "nullable": True,
                "properties": {
                    "clusterUid": {"type": "string"},
                    "clusterName": {"type": "string"},
                    "role": {"type": "string", "enum": ["control-plane", "worker"]},
                    "pool": {"type": "string"},
                    "providerImage": {"type": "string", "nullable": True},
                    "vip": {"type": "string", "nullable": True},
                    "profile": {"type": "object", "nullable": True},
                    "generation": {"type": "integer"},
                },
            },
        },
    },
    "Search": schema.SEARCH.openapi(),
    "HostList": {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/Host"}},
            "listmeta": {"type": "object"},
        },
    },
    "ClusterCreate": {
        "type": "object",
        "required": ["metadata", "spec"],
        "properties": {
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": _str(63, pattern=schema.dns_label_pattern())},
            },
            "spec": {
                "type": "object",
                "required": ["profile", "machinePoolConfig"],
                "properties": {
                    "providerImage": _str(1024, description="edgekit: the provider image"),
                    "profile": {
                        "type": "object",
                        "description": "edgekit: the cluster profile and its version",
                        "required": ["name", "version"],
                        "properties": {"name": _str(128), "version": _str(64)},
                    },
                    "cloudConfig": {
                        "type": "object",
                        "properties": {
                            "controlPlaneEndpoint": {
                                "type": "object",
                                "required": ["host"],
                                "properties": {
                                    "host": {"type": "string", "description": "the VIP"},
                                    "type": {"type": "string", "enum": ["IP"]},
                                },
                            },
                            "isTwoNodeCluster": {"type": "boolean"},
                            "overlayNetworkConfiguration": {
                                "type": "object",
                                "properties": {
                                    "enable": {"type": "boolean"},
                                    "cidr": {"type": "string"},
                                },
                            },
                            "sshKeys": {"type": "array", "items": {"type": "string"}},
                            "ntpServers": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                    "machinePoolConfig": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["cloudConfig", "poolConfig"],
                            "properties": {
                                "cloudConfig": {
                                    "type": "object",
                                    "required": ["edgeHosts"],
                                    "properties": {
                                        "edgeHosts": {
                                            "type": "array",
                                            "minItems": 1,
                                            "items": {
                                                "type": "object",
                                                "required": ["hostUid"],
                                                "properties": {
                                                    "hostUid": _str(
                                                        128, pattern=schema.name_pattern()
                                                    ),
                                                    "staticIP": _str(64),
                                                    "hostName": _str(128),
                                                    "nicName": _str(64),
                                                },
                                            },
                                        }
                                    },
                                },
                                "poolConfig": {
                                    "type": "object",
                                    "required": ["name"],
                                    "properties": {
                                        "name": _str(63),
                                        "isControlPlane": {"type": "boolean"},
                                        "size": {"type": "integer", "minimum": 1},
                                        "archType": {"type": "string", "enum": _values(Arch)},
                                        "useControlPlaneAsWorker": {"type": "boolean"},
                                        "labels": _TAGS,
                                        "taints": {
                                            "type": "array",
                                            "items": {
                                                "type": "object",
                                                "required": ["key", "effect"],
                                                "properties": {
                                                    "key": _str(),
                                                    "value": _str(),
                                                    "effect": {
                                                        "type": "string",
                                                        "enum": _values(TaintEffect),
                                                    },
                                                },
                                            },
                                        },
                                        "updateStrategy": {
                                            "type": "object",
                                            "properties": {
                                                "type": {
                                                    "type": "string",
                                                    "enum": _values(UpdateStrategy),
                                                }
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    "Cluster": {
        "type": "object",
        "properties": {"metadata": {"type": "object"}, "spec": {"type": "object"}},
    },
}


def _ref(name: str) -> _S:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(name: str, required: bool = True) -> _S:
    return {"required": required, "content": {"application/json": {"schema": _ref(name)}}}


def _ok(name: str | None, status: str = "200", *errors: str) -> _S:
    answers: _S = {}
    if name is None:
        answers[status] = {"description": "done"}
    else:
        answers[status] = {
            "description": "done",
            "content": {"application/json": {"schema": _ref(name)}},
        }
    for code in ("400", "401", "429", *errors):
        answers[code] = {
            "description": "refused",
            "content": {"application/json": {"schema": _ref("Error")}},
        }
    return answers


_UID: _S = {"name": "uid", "in": "path", "required": True, "schema": {"type": "string"}}
_ADMIN: list[_S] = [{"apiKey": []}]
_HOST: list[_S] = [{"hostCredential": []}]

_PATHS: _S = {
    "/healthz": {
        "get": {
            "summary": "liveness",
            "security": [],
            "responses": {"200": {"description": "the hub is up"}},
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "this description",
            "security": [],
            "responses": {"200": {"description": "an OpenAPI 3.0 document"}},
        }
    },
    "/v1/edgehosts/tokens": {
        "get": {
            "summary": "list registration tokens",
            "security": _ADMIN,
            "responses": _ok("TokenList"),
        },
        "post": {
            "summary": "create a registration token (its secret is shown once)",
            "security": _ADMIN,
            "requestBody": _body("TokenCreate"),
            "responses": _ok("Token", "201", "413", "415"),
        },
    },
    "/v1/edgehosts/tokens/batch": {
        "post": {
            "summary": "create one token per site, each bound to it, all or none",
            "security": _ADMIN,
            "requestBody": _body("TokenBatch"),
            "responses": _ok("TokenList", "201", "413", "415"),
        },
    },
    "/v1/edgehosts/tokens/{uid}": {
        "parameters": [_UID],
        "get": {"summary": "a token", "security": _ADMIN, "responses": _ok("Token", "200", "404")},
        "put": {
            "summary": "change a token's expiry (a past time expires it)",
            "security": _ADMIN,
            "requestBody": _body("TokenUpdate"),
            "responses": _ok("Token", "200", "404", "413", "415"),
        },
        "delete": {
            "summary": "delete a token",
            "security": _ADMIN,
            "responses": _ok(None, "204", "404"),
        },
    },
    "/v1/edgehosts/tokens/{uid}/state": {
        "parameters": [_UID],
        "put": {
            "summary": "revoke (isActive false) or re-enable a token",
            "security": _ADMIN,
            "requestBody": _body("TokenState"),
            "responses": _ok("Token", "200", "404", "413", "415"),
        },
    },
    "/v1/edgehosts/register": {
        "post": {
            "summary": "register a host with a token (idempotent by hostUid)",
            "security": [{"edgeHostToken": []}, {}],
            "requestBody": _body("Registration"),
            "responses": _ok("HostRegistered", "200", "403", "409", "413", "415"),
        }
    },
    "/v1/edgehosts/{uid}": {
        "parameters": [_UID],
        "get": {
            "summary": "a host (admin, or the host itself)",
            "security": [*_ADMIN, *_HOST],
            "responses": _ok("Host", "200", "403", "404"),
        },
        "delete": {
            "summary": "delete a host that is in no cluster",
            "security": _ADMIN,
            "responses": _ok(None, "204", "404", "409"),
        },
    },
    "/v1/edgehosts/{uid}/reset": {
        "parameters": [_UID],
        "post": {
            "summary": "revoke a host's credential; its next registration needs none",
            "security": _ADMIN,
            "requestBody": _body("Reset", required=False),
            "responses": _ok("Host", "200", "404", "413", "415"),
        },
    },
    "/v1/edgehosts/{uid}/heartbeat": {
        "parameters": [_UID],
        "post": {
            "summary": "the host is alive (and at this address)",
            "security": _HOST,
            "requestBody": _body("Heartbeat", required=False),
            "responses": _ok("Host", "200", "403", "413", "415"),
        },
    },
    "/v1/edgehosts/{uid}/desired-state": {
        "parameters": [_UID],
        "get": {
            "summary": "what the host's agent should apply",
            "security": _HOST,
            "responses": _ok("DesiredState", "200", "403"),
        },
    },
    "/v1/edgehosts/{uid}/status": {
        "parameters": [_UID],
        "post": {
            "summary": "what the host's agent applied",
            "security": _HOST,
            "requestBody": _body("Status"),
            "responses": _ok("Host", "200", "403", "413", "415"),
        },
    },
    "/v1/dashboard/edgehosts/search": {
        "post": {
            "summary": "search hosts by state, site and tags",
            "security": _ADMIN,
            "requestBody": _body("Search", required=False),
            "responses": _ok("HostList", "200", "413", "415"),
        }
    },
    "/v1/spectroclusters/edge-native": {
        "post": {
            "summary": "form a cluster from registered hosts",
            "security": _ADMIN,
            "requestBody": _body("ClusterCreate"),
            "responses": _ok("Cluster", "201", "409", "413", "415"),
        }
    },
    "/v1/spectroclusters/{uid}": {
        "parameters": [_UID],
        "get": {
            "summary": "a cluster",
            "security": _ADMIN,
            "responses": _ok("Cluster", "200", "404"),
        },
    },
}

_DOCUMENT: _S = {
    "openapi": "3.0.3",
    "info": {
        "title": "edgekit registration hub",
        "version": "1",
        "description": "Tokens, host registration, desired state and clusters; "
        "paths follow Palette's v1 edge API.",
    },
    "paths": _PATHS,
    "components": {
        "schemas": _SCHEMAS,
        "securitySchemes": {
            "apiKey": {"type": "apiKey", "in": "header", "name": "ApiKey"},
            "hostCredential": {"type": "http", "scheme": "bearer"},
            "edgeHostToken": {"type": "apiKey", "in": "header", "name": "EdgeHostToken"},
        },
    },
    "security": _ADMIN,
}


# The cluster lifecycle's routes and schemas (edgekit.hub.openapi_clusters) replace the
# older entries of the same names: they describe what is served now.
_PATHS.update(CLUSTER_PATHS)
_SCHEMAS.update(CLUSTER_SCHEMAS)
_PATHS.update(ROLLOUT_PATHS)
_SCHEMAS.update(ROLLOUT_SCHEMAS)


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the OpenAPI document."""
    return copy.deepcopy(_DOCUMENT)
