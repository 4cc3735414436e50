"""The hub's records: what a registering host reports, and the tokens, hosts and clusters
the store keeps (never with a secret). Used by every layer; they know nothing of SQL or
HTTP."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import attrs

from edgekit.model.hosts import HostState
from edgekit.model.profiles import ClusterProfile

__all__ = [
    "DEFAULT_UNREACHABLE_AFTER",
    "HOST_STATES",
    "ClusterRecord",
    "HostFields",
    "HostRecord",
    "HostSecrets",
    "PoolAssignment",
    "TokenRecord",
    "profile_digest",
]

#: The host states of :class:`edgekit.model.HostState`. ``unreachable`` is never stored: it
#: is computed from ``last_seen`` when a host is read.
HOST_STATES: tuple[str, ...] = tuple(s.value for s in HostState)
#: Seconds without a heartbeat after which a host counts as unreachable.
DEFAULT_UNREACHABLE_AFTER = 600.0


@attrs.frozen
class HostFields:
    """What a host reports about itself when it registers (checked by the domain layer)."""

    uid: str
    address: str | None = None
    mac: str | None = None
    arch: str = "amd64"
    site: str | None = None
    tags: Mapping[str, str] = attrs.field(factory=dict)
    agent_version: str | None = None


@attrs.frozen
class HostSecrets:
    """The hashes that prove a registered host's identity, and whether an admin reset it."""

    credential_hash: str
    previous_credential_hash: str | None
    reset_pending: bool
    bundle_digest: str | None


@attrs.frozen
class TokenRecord:
    """A registration token as stored (never with its secret)."""

    uid: str
    name: str
    project: str | None
    site: str | None
    expiry: float
    max_hosts: int | None
    active: bool
    host_count: int
    created: float
    #: The only sites hosts may register into with this token (empty: any site).
    sites: tuple[str, ...] = ()

    def state(self, now: float) -> str:
        """``active``, ``revoked`` or ``expired`` at time ``now``."""
        if not self.active:
            return "revoked"
        return "expired" if self.expiry <= now else "active"


@attrs.frozen
class HostRecord:
    """A registered edge host as stored (never with its credential)."""

    uid: str
    token_uid: str
    site: str | None
    address: str | None
    mac: str | None
    arch: str | None
    tags: Mapping[str, str]
    agent_version: str | None
    state: str
    registered: float
    last_seen: float
    cluster_uid: str | None
    desired: Mapping[str, Any] | None
    status: Mapping[str, Any] | None

    def effective_state(self, now: float, unreachable_after: float) -> str:
        """The stored state, or ``unreachable`` when the host has been silent too long."""
        if now - self.last_seen > unreachable_after:
            return HostState.UNREACHABLE.value
        return self.state


@attrs.frozen
class ClusterRecord:
    """A cluster formed from registered hosts: one ``clusters`` row, lifecycle columns
    included (the one record every layer reads a cluster as)."""

    uid: str
    name: str
    vip: str | None
    provider_image: str | None
    spec: Mapping[str, Any]
    created: float
    # The defaults are the table's column defaults: what a just-inserted row holds.
    generation: int = 1
    resource_version: int = 1
    labels: Mapping[str, str] = attrs.field(factory=dict)
    updated: float | None = None


@attrs.frozen
class PoolAssignment:
    """One machine pool of a new cluster: its hosts and their role."""

    name: str
    control_plane: bool
    host_uids: tuple[str, ...]


def profile_digest(profile: ClusterProfile | Mapping[str, Any]) -> str:
    """``sha256:`` of a profile's canonical JSON (its file form, keys sorted, no spaces):
    what the hub compares to tell one content of a version from another."""
    from edgekit.config import unstructure

    content = unstructure(profile) if isinstance(profile, ClusterProfile) else profile
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
