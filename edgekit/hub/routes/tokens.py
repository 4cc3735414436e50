"""Routes of registration tokens: ``/v1/edgehosts/tokens``."""

from __future__ import annotations

import logging
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edgekit.errors import Problem
from edgekit.hub.fields import Fields
from edgekit.hub.routes.common import Context, raise_if
from edgekit.hub.schema import TOKEN_BATCH, TOKEN_CREATE, TOKEN_STATE, TOKEN_UPDATE
from edgekit.hub.views import parse_ts, token_json

__all__ = ["routes"]

log = logging.getLogger("edgekit.hub")


def _expiry(text: str | None, problems: list[Problem]) -> float | None:
    """``spec.expiry`` as a timestamp (None, with a problem, when it is not RFC 3339)."""
    expiry = parse_ts(text) if text is not None else None
    if text is not None and expiry is None:
        problems.append(Problem("$.spec.expiry", "must be an RFC 3339 time with a zone, e.g. Z"))
    return expiry


def routes(ctx: Context) -> list[Route]:
    """The token routes over ``ctx``."""
    hub = ctx.hub

    async def list_tokens(request: Request) -> Response:
        ctx.admin(request)
        now = time.time()
        with ctx.transaction():
            return JSONResponse({"items": [token_json(t, now) for t in hub.store.list_tokens()]})

    async def create_token(request: Request) -> Response:
        ctx.admin(request)
        body = await ctx.body(request)
        problems: list[Problem] = []
        values = TOKEN_CREATE.read_object(Fields(problems), body)
        name = values["metadata"]["name"]
        spec = values["spec"]
        project, site, max_hosts = spec["defaultProjectUid"], spec["site"], spec["maxHosts"]
        expiry = _expiry(spec["expiry"], problems)
        raise_if(problems)
        assert name is not None
        assert expiry is not None
        now = time.time()
        with ctx.transaction():
            token, secret = hub.create_token(
                name,
                expiry=expiry,
                project=project,
                site=site,
                max_hosts=max_hosts,
                sites=spec["sites"],
                now=now,
            )
            answer = JSONResponse(token_json(token, now, secret), status_code=201)
        log.info("created registration token %s (%s)", token.uid, token.name)
        return answer

    async def create_tokens(request: Request) -> Response:
        ctx.admin(request)
        body = await ctx.body(request)
        problems: list[Problem] = []
        values = TOKEN_BATCH.read_object(Fields(problems), body)
        spec = values["spec"]
        expiry = _expiry(spec["expiry"], problems)
        raise_if(problems)
        assert expiry is not None
        now = time.time()
        with ctx.transaction():
            made = hub.create_site_tokens(
                spec["sites"],
                expiry=expiry,
                name_prefix=values["metadata"]["namePrefix"] or "",
                project=spec["defaultProjectUid"],
                max_hosts=spec["maxHosts"],
                now=now,
            )
            answer = JSONResponse(
                {"items": [token_json(token, now, secret) for token, secret in made]},
                status_code=201,
            )
        log.info("created %d registration tokens, one per site", len(made))
        return answer

    async def get_token(request: Request) -> Response:
        ctx.admin(request)
        with ctx.transaction():
            return JSONResponse(token_json(hub.token(ctx.uid(request)), time.time()))

    async def update_token(request: Request) -> Response:
        ctx.admin(request)
        uid = ctx.uid(request)
        hub.token(uid)
        body = await ctx.body(request)
        problems: list[Problem] = []
        expiry_text = TOKEN_UPDATE.read_object(Fields(problems), body)["spec"]["expiry"]
        expiry = _expiry(expiry_text, problems)
        raise_if(problems)
        assert expiry is not None
        with ctx.transaction():
            return JSONResponse(token_json(hub.set_token_expiry(uid, expiry), time.time()))

    async def delete_token(request: Request) -> Response:
        ctx.admin(request)
        with ctx.transaction():
            hub.delete_token(ctx.uid(request))
        return Response(status_code=204)

    async def token_state(request: Request) -> Response:
        ctx.admin(request)
        uid = ctx.uid(request)
        hub.token(uid)
        body = await ctx.body(request)
        problems: list[Problem] = []
        active = TOKEN_STATE.read_object(Fields(problems), body)["isActive"]
        raise_if(problems)
        assert active is not None
        with ctx.transaction():
            answer = JSONResponse(token_json(hub.set_token_active(uid, active), time.time()))
        log.info("registration token %s is now %s", uid, "active" if active else "revoked")
        return answer

    return [
        Route("/v1/edgehosts/tokens", list_tokens, methods=["GET"]),
        Route("/v1/edgehosts/tokens", create_token, methods=["POST"]),
        # Before /tokens/{uid}: a token uid is hex, so "batch" is never one.
        Route("/v1/edgehosts/tokens/batch", create_tokens, methods=["POST"]),
        Route("/v1/edgehosts/tokens/{uid}", get_token, methods=["GET"]),
        Route("/v1/edgehosts/tokens/{uid}", update_token, methods=["PUT"]),
        Route("/v1/edgehosts/tokens/{uid}", delete_token, methods=["DELETE"]),
        Route("/v1/edgehosts/tokens/{uid}/state", token_state, methods=["PUT"]),
    ]
