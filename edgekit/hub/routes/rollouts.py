"""Routes of roll-outs (``/v1/rollouts/...``): create, list, get, and the controls a user
has (pause, resume, abort, rollback, approve), and verdicts on a gate's declared checks.
The controller (:mod:`edgekit.hub.controller`)
does the rest, inside the hub process."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edgekit.hub.domain_rollouts import RolloutOps, rollout_json
from edgekit.hub.errors import HubError, Refusal
from edgekit.hub.eta import wave_durations
from edgekit.hub.routes.common import Context
from edgekit.hub.wire import bad_text

__all__ = ["routes"]

log = logging.getLogger("edgekit.hub")

#: The controls, by the last segment of their path.
ACTIONS = ("pause", "resume", "abort", "rollback", "approve")


def routes(ctx: Context) -> list[Route]:
    """The roll-out routes over ``ctx``."""
    ops = RolloutOps(ctx.hub)

    def name(request: Request) -> str:
        value = str(request.path_params["name"])
        if bad_text(value) is not None or len(value) > 128:
            raise HubError(Refusal.NOT_FOUND, "RolloutNotFound", "no such roll-out")
        return value

    def answer(rollout: str, status: int = 200) -> JSONResponse:
        row = ops.rollout(rollout)
        members = ops.tables.clusters(rollout)
        transitions = ops.tables.transitions(rollout, limit=200)
        durations = wave_durations(ops.tables.wave_events(rollout))
        verdicts = ops.tables.check_verdicts(rollout)
        return JSONResponse(
            rollout_json(row, members, transitions, durations=durations, verdicts=verdicts),
            status_code=status,
        )

    async def create(request: Request) -> Response:
        ctx.admin(request)
        body = await ctx.body(request)
        with ctx.transaction():
            row = ops.create(body)
            response = answer(row.name, 201)
        log.info("created roll-out %s", row.name)
        return response

    async def list_rollouts(request: Request) -> Response:
        ctx.admin(request)
        with ctx.hub.store.snapshot():
            items = [
                rollout_json(r, ops.tables.clusters(r.name), clusters=False)
                for r in ops.tables.list_rollouts()
            ]
        return JSONResponse({"items": items})

    async def get(request: Request) -> Response:
        ctx.admin(request)
        with ctx.hub.store.snapshot():
            return answer(name(request))

    def control(action: str) -> object:
        async def endpoint(request: Request) -> Response:
            ctx.admin(request)
            rollout = name(request)
            await ctx.body(request)  # none is needed; a wrong one is still refused (413/415)
            with ctx.transaction():
                getattr(ops, action)(rollout)
                response = answer(rollout)
            log.info("roll-out %s: %s", rollout, action)
            return response

        return endpoint

    async def verdict(request: Request) -> Response:
        ctx.admin(request)
        rollout = name(request)
        body = await ctx.body(request)
        with ctx.transaction():
            ops.verdict(rollout, body)
            response = answer(rollout)
        log.info("roll-out %s: verdict on check %s", rollout, str(body.get("check"))[:63])
        return response

    return [
        Route("/v1/rollouts", create, methods=["POST"]),
        Route("/v1/rollouts/{name}/verdicts", verdict, methods=["POST"]),
        Route("/v1/rollouts", list_rollouts, methods=["GET"]),
        Route("/v1/rollouts/{name}", get, methods=["GET"]),
        *(
            Route(f"/v1/rollouts/{{name}}/{a}", control(a), methods=["POST"])  # type: ignore[arg-type]
            for a in ACTIONS
        ),
    ]
