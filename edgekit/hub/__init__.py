"""The registration hub: tokens, host registration, desired state and clusters.

Gate checks a shell or CI job evaluates: :func:`command_check`.

Server: :func:`serve` (blocking; what ``edgekit hub serve`` calls) and :class:`HubServer`
(a hub in a subprocess on 127.0.0.1). Clients: :func:`connect` -> :class:`HubClient`
(admin) and :class:`HostClient` (what an agent calls). Serving needs the ``hub`` extra
(starlette, uvicorn); the clients only need requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgekit.hub.client import (
    DesiredState,
    Host,
    HostClient,
    HubClient,
    HubCluster,
    HubRequestError,
    Registration,
    Token,
    cluster_body,
    connect,
    parse_duration,
)
from edgekit.hub.client_checks import CheckFn, CommandCheck, command_check
from edgekit.hub.plans import UpdatePlan
from edgekit.hub.results_clusters import (
    ClusterList,
    Event,
    HostList,
    HostSummary,
    PublishedProfile,
)
from edgekit.hub.security import Secret
from edgekit.hub.status import ClusterStatus

if TYPE_CHECKING:  # imported lazily at run time (below): they need starlette and uvicorn
    from edgekit.hub.process import HubServer
    from edgekit.hub.server import TlsFiles, serve

__all__ = [
    "CheckFn",
    "ClusterList",
    "ClusterStatus",
    "CommandCheck",
    "DesiredState",
    "Event",
    "Host",
    "HostClient",
    "HostList",
    "HostSummary",
    "HubClient",
    "HubCluster",
    "HubRequestError",
    "HubServer",
    "PublishedProfile",
    "Registration",
    "Secret",
    "TlsFiles",
    "Token",
    "UpdatePlan",
    "cluster_body",
    "command_check",
    "connect",
    "parse_duration",
    "serve",
]


def __getattr__(name: str) -> object:
    # The server side imports starlette; load it only when asked, so clients stay light.
    if name == "serve":
        from edgekit.hub.server import serve

        return serve
    if name == "TlsFiles":
        from edgekit.hub.server import TlsFiles

        return TlsFiles
    if name == "HubServer":
        from edgekit.hub.process import HubServer

        return HubServer
    raise AttributeError(f"module 'edgekit.hub' has no attribute {name!r}")
