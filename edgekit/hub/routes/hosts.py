"""Routes of registration and hosts: ``/v1/edgehosts/...`` and the host search."""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edgekit.errors import Problem
from edgekit.hub.domain import host_fields
from edgekit.hub.domain_clusters import ClusterOps
from edgekit.hub.errors import HubError, Refusal
from edgekit.hub.fields import Fields
from edgekit.hub.routes.common import Context, raise_if, source
from edgekit.hub.schema import HEARTBEAT, SEARCH, STATUS_STATES
from edgekit.hub.schema_clusters import agent_status
from edgekit.hub.store import HostRecord
from edgekit.hub.views import host_json, ts

__all__ = ["STATUS_STATES", "routes"]

log = logging.getLogger("edgekit.hub")


def routes(ctx: Context) -> list[Route]:
    """The registration and host routes over ``ctx``."""
    hub = ctx.hub
    cluster_ops = ClusterOps(hub)

    def view(host: HostRecord) -> dict[str, Any]:
        return host_json(host, time.time(), hub.unreachable_after)

    async def register(request: Request) -> Response:
        body = await ctx.body(request)
        problems: list[Problem] = []
        token = request.headers.get("edgehosttoken") or Fields(problems).str_(
            body, "edgeHostToken", "$", max_len=512
        )
        fields = host_fields(body, problems)
        credential = ctx.bearer(request)
        if not token:
            raise HubError(
                Refusal.UNAUTHENTICATED,
                "Unauthorized",
                "registration needs a token (EdgeHostToken or edgeHostToken)",
            )
        raise_if(problems)
        assert fields is not None
        ctx.throttle.check(source(request), "tokens")
        if credential is not None:
            ctx.throttle.check(source(request), f"host:{fields.uid}")
        with ctx.transaction():
            host, issued = hub.register(fields, token_secret=token, credential=credential)
            answer = view(host)
            answer["credential"] = issued
            return JSONResponse(answer, status_code=200)

    async def get_host(request: Request) -> Response:
        uid = ctx.uid(request)
        if "apikey" in request.headers:
            ctx.admin(request)
            return ctx.read(lambda: JSONResponse(view(hub.host(uid))))
        return ctx.read(lambda: JSONResponse(view(ctx.host(request, uid))))

    async def delete_host(request: Request) -> Response:
        ctx.admin(request)
        with ctx.transaction():
            hub.delete_host(ctx.uid(request))
        return Response(status_code=204)

    async def reset_host(request: Request) -> Response:
        ctx.admin(request)
        uid = ctx.uid(request)
        if await ctx.body(request):
            raise HubError(Refusal.INVALID, "InvalidRequest", "a reset takes no fields")
        with ctx.transaction():
            answer = JSONResponse(view(hub.reset_host(uid)))
        log.info("host %s was reset: its credential is revoked until it registers again", uid)
        return answer

    async def heartbeat(request: Request) -> Response:
        uid = ctx.uid(request)
        ctx.host(request, uid)
        body = await ctx.body(request)
        problems: list[Problem] = []
        address = HEARTBEAT.read_object(Fields(problems), body)["hostAddress"]
        raise_if(problems)
        # Its own transactions: usually one without the writer lock (HubStore.unordered).
        return JSONResponse(view(hub.heartbeat(uid, address)))

    async def desired_state(request: Request) -> Response:
        uid = ctx.uid(request)

        def answer() -> Response:
            # Writes nothing (no last_seen, event or phase: that is the heartbeat's and the
            # status report's), so a snapshot without the writer lock answers it.
            host = ctx.host(request, uid)
            return JSONResponse({"hostUid": host.uid, "desired": host.desired})

        return ctx.read(answer)

    async def report_status(request: Request) -> Response:
        uid = ctx.uid(request)
        ctx.host(request, uid)
        body = await ctx.body(request)
        problems: list[Problem] = []
        status = agent_status(body, problems)  # the cluster lifecycle's report
        raise_if(problems)
        status["reported"] = ts(time.time())
        with ctx.transaction():
            cluster_ops.report(uid, status)
            return JSONResponse(view(hub.host(uid)))

    async def search_hosts(request: Request) -> Response:
        ctx.admin(request)
        body = await ctx.body(request)
        problems: list[Problem] = []
        query = SEARCH.read_object(Fields(problems), body)
        raise_if(problems)
        flt = query["filter"]
        states, sites, tags = flt["state"] or [], flt["site"] or [], flt["tags"] or {}
        limit, offset = query["limit"], query["offset"] or 0
        with hub.store.snapshot():
            hosts, total = hub.store.search_hosts(
                states=states,
                sites=sites,
                tags=tags,
                limit=limit,
                offset=offset,
                unreachable_after=hub.unreachable_after,
            )
            return JSONResponse(
                {
                    "items": [view(h) for h in hosts],
                    "listmeta": {"count": total, "offset": offset, "limit": limit},
                }
            )

    return [
        Route("/v1/edgehosts/register", register, methods=["POST"]),
        Route("/v1/edgehosts/{uid}", get_host, methods=["GET"]),
        Route("/v1/edgehosts/{uid}", delete_host, methods=["DELETE"]),
        Route("/v1/edgehosts/{uid}/reset", reset_host, methods=["POST"]),
        Route("/v1/edgehosts/{uid}/heartbeat", heartbeat, methods=["POST"]),
        Route("/v1/edgehosts/{uid}/desired-state", desired_state, methods=["GET"]),
        Route("/v1/edgehosts/{uid}/status", report_status, methods=["POST"]),
        Route("/v1/dashboard/edgehosts/search", search_hosts, methods=["POST"]),
    ]
