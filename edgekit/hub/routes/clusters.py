"""Routes of clusters (``/v1/spectroclusters/...``) and cluster profiles (``/v1/clusterprofiles``).

A cluster is addressed by uid or by name. Every answer carrying one cluster has an ``ETag``
(its ``resourceVersion``); ``PATCH`` and ``DELETE`` honour ``If-Match`` (409 when stale).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edgekit.errors import Problem
from edgekit.hub.domain_clusters import ClusterOps
from edgekit.hub.errors import HubError, Refusal
from edgekit.hub.fields import Fields
from edgekit.hub.records import ClusterRecord
from edgekit.hub.routes.common import Context, raise_if
from edgekit.hub.schema_clusters import CLUSTER_SEARCH, MAX_PAGE
from edgekit.hub.store_clusters import ProfileRecord
from edgekit.hub.views import ts

__all__ = ["cluster_row_json", "if_match", "routes"]

log = logging.getLogger("edgekit.hub")


def cluster_row_json(row: ClusterRecord) -> dict[str, Any]:
    """A cluster as the API shows it."""
    return {
        "metadata": {
            "uid": row.uid,
            "name": row.name,
            "labels": dict(row.labels),
            "creationTimestamp": ts(row.created),
            "lastModifiedTimestamp": ts(row.updated),
            "generation": row.generation,
            "resourceVersion": row.resource_version,
        },
        "spec": dict(row.spec),
    }


def profile_json(record: ProfileRecord) -> dict[str, Any]:
    """A published profile version as the API shows it."""
    return {
        "metadata": {
            "name": record.name,
            "version": record.version,
            "digest": record.digest,
            "creationTimestamp": ts(record.created),
        },
        "spec": dict(record.content),
    }


def if_match(request: Request) -> int | None:
    """The resourceVersion ``If-Match`` names (``"3"``, ``W/"3"`` or ``3``); None for none or
    ``*``."""
    raw = request.headers.get("if-match")
    if raw is None or raw.strip() == "*":
        return None
    text = raw.strip().removeprefix("W/").strip('"')
    if not text.isdigit() or len(text) > 18:
        raise HubError(
            Refusal.INVALID,
            "InvalidRequest",
            "the request is invalid",
            [Problem("If-Match", 'must be a resourceVersion such as "3"')],
        )
    return int(text)


def _flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "false").lower()
    if value not in ("true", "false", "all"):
        raise HubError(
            Refusal.INVALID,
            "InvalidRequest",
            "the request is invalid",
            [Problem(f"?{name}", "must be true or false")],
        )
    return value != "false"


def _with_etag(data: Any, row: ClusterRecord, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers={"ETag": f'"{row.resource_version}"'})


def routes(ctx: Context) -> list[Route]:
    """The cluster and profile routes over ``ctx``."""
    ops = ClusterOps(ctx.hub)

    async def create_cluster(request: Request) -> Response:
        ctx.admin(request)
        body = await ctx.body(request)
        with ctx.transaction():
            row = ops.create(body)
            answer = _with_etag(cluster_row_json(row), row, 201)
        log.info("created cluster %s (%s)", row.uid, row.name)
        return answer

    async def get_cluster(request: Request) -> Response:
        ctx.admin(request)
        with ctx.hub.store.snapshot():
            row = ops.cluster(ctx.uid(request))
            return _with_etag(cluster_row_json(row), row)

    async def update_cluster(request: Request) -> Response:
        ctx.admin(request)
        body = await ctx.body(request)
        dry_run = _flag(request, "dryRun")
        expected = if_match(request)
        with ctx.transaction():
            row, plan = ops.update(ctx.uid(request), body, if_match=expected, dry_run=dry_run)
            answer = _with_etag({"cluster": cluster_row_json(row), "plan": plan.to_json()}, row)
        if plan.changed and not dry_run:
            log.info("cluster %s is at generation %s", row.name, plan.generation_to)
        return answer

    async def delete_cluster(request: Request) -> Response:
        ctx.admin(request)
        expected = if_match(request)
        with ctx.transaction():
            row = ops.delete(ctx.uid(request), if_match=expected)
            released = ops.tables.releasing_uids(row.uid)
        log.info("deleted cluster %s; released %d host(s)", row.name, len(released))
        return JSONResponse({"cluster": cluster_row_json(row), "releasedHosts": released})

    async def cluster_status(request: Request) -> Response:
        ctx.admin(request)
        with ctx.hub.store.snapshot():
            return JSONResponse(ops.status(ctx.uid(request)).to_json())

    async def search_clusters(request: Request) -> Response:
        ctx.admin(request)
        body = await ctx.body(request)
        problems: list[Problem] = []
        query = CLUSTER_SEARCH.read_object(Fields(problems), body)
        limit = query["limit"]
        if limit is not None and limit > MAX_PAGE:
            problems.append(Problem("$.limit", f"must be at most {MAX_PAGE}"))
        raise_if(problems)
        flt = query["filter"]
        with ctx.hub.store.snapshot():
            rows, total = ops.tables.list_clusters(
                labels=flt["labels"] or {},
                profile=flt["profile"],
                limit=limit,
                offset=query["offset"] or 0,
            )
            return JSONResponse(
                {
                    "items": [cluster_row_json(r) for r in rows],
                    "listmeta": {"count": total, "offset": query["offset"] or 0, "limit": limit},
                }
            )

    async def publish_profile(request: Request) -> Response:
        ctx.admin(request)
        body = await ctx.body(request)
        with ctx.transaction():
            record, created = ops.publish_profile(body)
            answer = JSONResponse(profile_json(record), status_code=201 if created else 200)
        if created:
            log.info("published profile %s@%s", record.name, record.version)
        return answer

    async def list_profiles(request: Request) -> Response:
        ctx.admin(request)
        name = request.query_params.get("name")
        with ctx.hub.store.snapshot():
            records = ops.tables.list_profiles(name)
            return JSONResponse({"items": [profile_json(r) for r in records]})

    async def get_profile(request: Request) -> Response:
        ctx.admin(request)
        name, version = str(request.path_params["name"]), str(request.path_params["version"])
        with ctx.hub.store.snapshot():
            return JSONResponse(profile_json(ops.profile(name, version)))

    return [
        Route("/v1/spectroclusters/edge-native", create_cluster, methods=["POST"]),
        Route("/v1/dashboard/spectroclusters/search", search_clusters, methods=["POST"]),
        Route("/v1/spectroclusters/{uid}", get_cluster, methods=["GET"]),
        Route("/v1/spectroclusters/{uid}", update_cluster, methods=["PATCH"]),
        Route("/v1/spectroclusters/{uid}", delete_cluster, methods=["DELETE"]),
        Route("/v1/spectroclusters/{uid}/status", cluster_status, methods=["GET"]),
        Route("/v1/clusterprofiles", publish_profile, methods=["POST"]),
        Route("/v1/clusterprofiles", list_profiles, methods=["GET"]),
        Route("/v1/clusterprofiles/{name}/{version}", get_profile, methods=["GET"]),
    ]
