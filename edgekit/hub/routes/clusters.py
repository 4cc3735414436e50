"""Routes of clusters: ``/v1/spectroclusters/...``."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edgekit.hub.routes.common import Context
from edgekit.hub.views import cluster_json

__all__ = ["routes"]

log = logging.getLogger("edgekit.hub")


def routes(ctx: Context) -> list[Route]:
    """The cluster routes over ``ctx``."""
    hub = ctx.hub

    async def create_cluster(request: Request) -> Response:
        ctx.admin(request)
        body = await ctx.body(request)
        with ctx.transaction():
            cluster = hub.create_cluster(body)
            answer = JSONResponse(cluster_json(cluster), status_code=201)
        log.info("created cluster %s (%s)", cluster.uid, cluster.name)
        return answer

    async def get_cluster(request: Request) -> Response:
        ctx.admin(request)
        with ctx.transaction():
            return JSONResponse(cluster_json(hub.cluster(ctx.uid(request))))

    return [
        Route("/v1/spectroclusters/edge-native", create_cluster, methods=["POST"]),
        Route("/v1/spectroclusters/{uid}", get_cluster, methods=["GET"]),
    ]
