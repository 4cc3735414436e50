"""Fleet-wide routes: the host summary, the event stream, and Palette's host health report.

Events are a long-poll (``GET /v1/events?since=REV&timeout=S``), not server-sent events: each
answer is one ordinary JSON document, so it passes every proxy and load balancer unchanged,
retries like any other GET, needs no connection held per watcher between polls, and the
client resumes from the last revision it saw (``since``) after any disconnect or hub
restart. The revision is the event log's SQLite key (see :mod:`edgekit.hub.sql_clusters`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edgekit.errors import Problem
from edgekit.hub.domain_clusters import ClusterOps
from edgekit.hub.errors import HubError, Refusal
from edgekit.hub.fields import Fields
from edgekit.hub.routes.common import Context, raise_if
from edgekit.hub.schema_clusters import HEALTH, MAX_EVENT_TIMEOUT, MAX_PAGE
from edgekit.hub.store_clusters import GROUP_KEYS, ClusterTables, EventRecord
from edgekit.hub.views import host_json, ts

__all__ = ["EVENT_KINDS", "event_json", "routes"]

#: What an event can be about.
EVENT_KINDS = ("host", "cluster", "profile", "rollout")
#: How often a waiting long-poll looks for new events, in seconds.
POLL_INTERVAL = 0.1


def event_json(event: EventRecord) -> dict[str, Any]:
    """An event as the API shows it."""
    return {
        "revision": event.rev,
        "time": ts(event.time),
        "kind": event.kind,
        "type": event.type,
        "uid": event.uid,
        "data": dict(event.data),
    }


def _int(request: Request, name: str, default: int, maximum: int, problems: list[Problem]) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 18:
        problems.append(Problem(f"?{name}", "must be a non-negative integer"))
        return default
    value = int(raw)
    if value > maximum:
        problems.append(Problem(f"?{name}", f"must be at most {maximum}"))
        return default
    return value


def _group_by(raw: str, problems: list[Problem]) -> list[str]:
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    for key in keys:
        tag = key.startswith("tag:") and 0 < len(key) - 4 <= 128
        if key not in GROUP_KEYS and not tag:
            problems.append(
                Problem("?groupBy", f"{key!r} is not one of {', '.join(GROUP_KEYS)} or tag:KEY")
            )
    if len(set(keys)) != len(keys):
        problems.append(Problem("?groupBy", "names a key twice"))
    if len(keys) > 4:
        problems.append(Problem("?groupBy", "at most 4 keys"))
    return keys


def routes(ctx: Context) -> list[Route]:
    """The summary and event routes over ``ctx``."""
    hub = ctx.hub
    tables = ClusterTables(hub.store)
    ops = ClusterOps(hub)

    async def summary(request: Request) -> Response:
        ctx.admin(request)
        problems: list[Problem] = []
        keys = _group_by(request.query_params.get("groupBy", ""), problems)
        limit = _int(request, "limit", MAX_PAGE, MAX_PAGE, problems)
        offset = _int(request, "offset", 0, 2**31, problems)
        raise_if(problems)
        with ctx.hub.store.snapshot():
            rows, groups, hosts = tables.summary(
                keys, limit=limit, offset=offset, unreachable_after=hub.unreachable_after
            )
        return JSONResponse(
            {
                "groupBy": keys,
                "items": [{"key": dict(r.key), "count": r.count} for r in rows],
                "listmeta": {"count": groups, "offset": offset, "limit": limit},
                "hosts": hosts,
            }
        )

    async def events(request: Request) -> Response:
        ctx.admin(request)
        problems: list[Problem] = []
        since = _int(request, "since", -1, 2**62, problems)
        timeout = _int(request, "timeout", 0, MAX_EVENT_TIMEOUT, problems)
        limit = _int(request, "limit", MAX_PAGE, MAX_PAGE, problems)
        kinds = [k for k in request.query_params.get("kind", "").split(",") if k]
        for kind in kinds:
            if kind not in EVENT_KINDS:
                problems.append(
                    Problem("?kind", f"{kind!r} is not one of {', '.join(EVENT_KINDS)}")
                )
        raise_if(problems)
        oldest, newest = ctx.read(tables.revisions)
        if since < 0:
            since = newest  # no ``since``: from now on
        if 0 < since < oldest - 1:
            raise HubError(
                Refusal.CONFLICT,
                "EventsExpired",
                f"events after revision {since} were pruned; the oldest kept is {oldest}: "
                "list the current state again, then watch from its revision",
            )

        def look() -> tuple[list[EventRecord], int]:
            # One snapshot: an event committed between the two reads would otherwise be
            # counted in the newest revision yet not returned, and the client would resume
            # past it.
            return tables.events_since(since, limit=limit, kinds=kinds), tables.revisions()[1]

        deadline = time.monotonic() + timeout
        while True:
            found, newest = ctx.read(look)
            if found or time.monotonic() >= deadline or await request.is_disconnected():
                break
            await asyncio.sleep(POLL_INTERVAL)
        # The revision to resume from: the last one returned, or the newest one looked at.
        resume = found[-1].rev if found else max(since, newest)
        return JSONResponse({"items": [event_json(e) for e in found], "revision": resume})

    async def health(request: Request) -> Response:
        uid = ctx.uid(request)
        ctx.host(request, uid)
        body = await ctx.body(request)
        problems: list[Problem] = []
        report = HEALTH.read_object(Fields(problems), body)
        raise_if(problems)
        with ctx.transaction():
            ops.health(uid, report["state"], report["message"], report["agentVersion"])
            return JSONResponse(host_json(hub.host(uid), time.time(), hub.unreachable_after))

    return [
        Route("/v1/edgehosts/{uid}/health", health, methods=["PATCH"]),
        Route("/v1/dashboard/edgehosts/summary", summary, methods=["GET"]),
        Route("/v1/events", events, methods=["GET"]),
    ]
