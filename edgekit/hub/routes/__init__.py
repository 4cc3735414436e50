"""The hub's HTTP layer: one module of routes per resource, over :mod:`edgekit.hub.domain`.

:func:`create_app` assembles them, with the error handlers that turn domain refusals into
``{"code", "message", "problems"}`` answers and count failed authentications.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edgekit.errors import ConfigError
from edgekit.hub.controller import DEFAULT_INTERVAL
from edgekit.hub.domain import API_KEY_SETTING, Hub
from edgekit.hub.errors import HubError
from edgekit.hub.leader import LeaderController
from edgekit.hub.openapi import openapi_document
from edgekit.hub.routes import clusters, fleet, hosts, rollouts, tokens
from edgekit.hub.routes.common import Context, error_response, http_status, source
from edgekit.hub.store import DEFAULT_UNREACHABLE_AFTER, HubStore
from edgekit.hub.throttle import DEFAULT_THROTTLE, AuthThrottle, ThrottleLimits
from edgekit.hub.wire import DEFAULT_MAX_BODY

__all__ = ["API_KEY_SETTING", "DEFAULT_MAX_BODY", "create_app", "http_status"]

log = logging.getLogger("edgekit.hub")


def create_app(
    store: HubStore,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    unreachable_after: float = DEFAULT_UNREACHABLE_AFTER,
    throttle: ThrottleLimits = DEFAULT_THROTTLE,
    rollout_interval: float = DEFAULT_INTERVAL,
) -> Starlette:
    """The hub's ASGI application over ``store`` (whose API key must be set).

    ``unreachable_after``: seconds without a heartbeat after which a host shows (and is
    searched) as ``unreachable`` and cannot join a cluster. ``throttle``: how many failed
    authentications a source address and a target may have per window.
    ``rollout_interval``: seconds between two ticks of the roll-out controller, which runs
    on the app's event loop from startup to shutdown (0 or less: no controller).
    """
    key_hash = store.get_setting(API_KEY_SETTING)
    if key_hash is None:
        raise ConfigError.single("api_key", "the hub has no API key; call ensure_api_key first")
    limiter = AuthThrottle(throttle, store=store)
    ctx = Context(
        hub=Hub(store, unreachable_after=unreachable_after),
        key_hash=key_hash,
        throttle=limiter,
        max_body=max_body,
    )

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "schemaVersion": store.schema_version})

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def on_hub_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HubError)
        if exc.auth_target is not None:
            limiter.failed(source(request), exc.auth_target)
        return error_response(exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HttpError")
        return JSONResponse({"code": code, "message": str(exc.detail)}, exc.status_code)

    async def on_crash(request: Request, exc: Exception) -> Response:
        # Only the exception's type: a message could quote a request's secret.
        log.error("internal error in %s %s: %s", request.method, request.url.path, type(exc))
        return JSONResponse({"code": "InternalError", "message": "internal error"}, 500)

    routes = [
        Route("/healthz", health, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *tokens.routes(ctx),
        *hosts.routes(ctx),
        *clusters.routes(ctx),
        *fleet.routes(ctx),
        *rollouts.routes(ctx),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = None
        if rollout_interval > 0:
            # On PostgreSQL, only the replica holding the leader lock steps (leader.py).
            controller = LeaderController(ctx.hub, interval=rollout_interval)
            task = asyncio.create_task(controller.run())
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            HubError: on_hub_error,
            HTTPException: on_http_error,
            Exception: on_crash,
        },
    )
