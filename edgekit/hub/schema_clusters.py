"""Request bodies and query parameters of the cluster lifecycle routes, declared once with
:mod:`edgekit.hub.schema`'s specs: the routes read them and the OpenAPI document renders them.
"""

from __future__ import annotations

import re
from typing import Any

from edgekit.errors import Problem
from edgekit.hub.domain_clusters import PHASES
from edgekit.hub.fields import Fields
from edgekit.hub.schema import STATUS_STATES, Int, Obj, Str, Tags
from edgekit.hub.store_clusters import GROUP_KEYS

__all__ = [
    "AGENT_STATUS",
    "CLUSTER_SEARCH",
    "DIGEST_PATTERN",
    "HEALTH",
    "MAX_EVENT_TIMEOUT",
    "MAX_PAGE",
    "PHASES",
    "agent_status",
    "cluster_update_schema",
    "profile_schema",
]

DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
#: The longest an events long-poll waits, in seconds.
MAX_EVENT_TIMEOUT = 60
#: The largest page of events, clusters or summary groups.
MAX_PAGE = 1000

#: What an agent reports: ``phase`` (or, from older agents, ``state``), the generation it
#: applied, the provider image digest it runs, and a message.
AGENT_STATUS = Obj(
    {
        "state": Str(enum=STATUS_STATES, description="older agents; phase supersedes it"),
        "phase": Str(enum=PHASES),
        "generation": Int(),
        "observedGeneration": Int(),
        "imageDigest": Str(71, pattern=DIGEST_PATTERN),
        "message": Str(4096),
        "providerImage": Str(1024),
    }
)
#: Palette's ``PATCH /v1/edgehosts/{uid}/health`` body.
HEALTH = Obj(
    {
        "state": Str(required=True, enum=("healthy", "unhealthy")),
        "message": Str(4096),
        "agentVersion": Str(64),
    }
)
CLUSTER_SEARCH = Obj(
    {
        "filter": Obj({"labels": Tags(), "profile": Str(128)}),
        "limit": Int(minimum=1),
        "offset": Int(),
    }
)


def profile_schema() -> dict[str, Any]:
    """A cluster profile document (the model's rules are checked on publication)."""
    return {
        "type": "object",
        "required": ["name", "version", "packs"],
        "properties": {
            "name": {"type": "string", "maxLength": 128},
            "version": {"type": "string", "maxLength": 64},
            "description": {"type": "string", "maxLength": 4096},
            "packs": {"type": "array", "maxItems": 64, "items": {"type": "object"}},
        },
    }


def cluster_update_schema() -> dict[str, Any]:
    """A change of a cluster: each given ``spec`` key replaces the cluster's."""
    return {
        "type": "object",
        "properties": {
            "metadata": {"type": "object", "properties": {"labels": Tags().openapi()}},
            "spec": {
                "type": "object",
                "properties": {
                    "profile": {
                        "type": "object",
                        "required": ["name", "version"],
                        "properties": {
                            "name": {"type": "string", "maxLength": 128},
                            "version": {"type": "string", "maxLength": 64},
                        },
                    },
                    "values": {
                        "type": "object",
                        "description": "pack name -> values merged over the profile's",
                        "additionalProperties": {"type": "object"},
                    },
                    "providerImage": {"type": "string", "maxLength": 1024},
                    "machinePoolConfig": {"type": "array", "items": {"type": "object"}},
                    "cloudConfig": {"type": "object"},
                },
            },
        },
    }


def group_by_description() -> str:
    """What ``groupBy`` accepts."""
    return "comma-separated: " + ", ".join(GROUP_KEYS) + ", or tag:KEY"


def agent_status(body: Any, problems: list[Problem]) -> dict[str, Any]:
    """An agent's report read from ``body`` (problems appended): ``phase`` or ``state``
    (mapped to each other, so old and new agents and readers agree), ``observedGeneration``
    or ``generation`` (likewise), image digest, message and provider image."""
    f = Fields(problems)
    status = AGENT_STATUS.read_object(f, body)
    phase, state = status["phase"], status["state"]
    if (
        phase is None
        and state is None
        and not any(p.path in ("$.phase", "$.state") for p in problems)
    ):
        problems.append(Problem("$.phase", "is required (or, from older agents, $.state)"))
    if phase is None and state is not None:
        phase = _PHASE_OF_STATE[state]
    if state is None and phase is not None:
        state = _STATE_OF_PHASE.get(phase, "applying")
    observed = status["observedGeneration"]
    if observed is None:
        observed = status["generation"]
    digest = status["imageDigest"]
    if digest is not None and not re.fullmatch(DIGEST_PATTERN, digest):
        problems.append(Problem("$.imageDigest", "must be sha256: and 64 lowercase hex digits"))
    return {
        "state": state,
        "phase": phase,
        "generation": observed,
        "observedGeneration": observed,
        "imageDigest": digest,
        "message": status["message"],
        "providerImage": status["providerImage"],
    }


_PHASE_OF_STATE = {"applying": "applying", "applied": "healthy", "failed": "failed"}
_STATE_OF_PHASE = {"healthy": "applied", "failed": "failed", "rolled-back": "failed"}
