"""What every route shares: reading a body, authenticating, answering, and the mapping of
domain refusals to HTTP statuses."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import attrs
from starlette.requests import Request
from starlette.responses import JSONResponse

from edgekit.errors import Problem
from edgekit.hub.dialects import NeedsWriter
from edgekit.hub.domain import Hub
from edgekit.hub.errors import HubError, Refusal
from edgekit.hub.security import secret_matches
from edgekit.hub.store import HostRecord
from edgekit.hub.throttle import AuthThrottle
from edgekit.hub.wire import bad_text, decode_json

__all__ = ["STATUS", "Context", "error_response", "http_status", "raise_if"]

log = logging.getLogger("edgekit.hub")

T = TypeVar("T")

#: The HTTP status of each domain refusal.
STATUS: dict[Refusal, int] = {
    Refusal.INVALID: 400,
    Refusal.UNAUTHENTICATED: 401,
    Refusal.FORBIDDEN: 403,
    Refusal.NOT_FOUND: 404,
    Refusal.CONFLICT: 409,
    Refusal.TOO_LARGE: 413,
    Refusal.UNSUPPORTED_MEDIA: 415,
    Refusal.THROTTLED: 429,
    Refusal.UNAVAILABLE: 503,
}


def http_status(exc: HubError) -> int:
    """The status code the hub answers ``exc`` with."""
    return STATUS[exc.kind]


def error_response(exc: HubError) -> JSONResponse:
    """``{"code", "message", "problems"}`` with the refusal's status (and ``Retry-After``)."""
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.problems:
        body["problems"] = [{"path": p.path, "message": p.message} for p in exc.problems]
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return JSONResponse(body, status_code=http_status(exc), headers=headers)


def raise_if(problems: Sequence[Problem], message: str = "the request is invalid") -> None:
    """Refuse the request when any problem was found."""
    if problems:
        raise HubError(Refusal.INVALID, "InvalidRequest", message, problems)


def source(request: Request) -> str | None:
    """The peer address a request came from (the TCP peer: a proxy in front counts as one)."""
    return request.client.host if request.client is not None else None


@attrs.define
class Context:
    """The domain, limits and admin key hash every route works with."""

    hub: Hub
    key_hash: str
    throttle: AuthThrottle
    max_body: int

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction per request: every write and the answer's rendering, or nothing."""
        with self.hub.store.transaction():
            yield

    def read(self, answer: Callable[[], T]) -> T:
        """``answer()`` in one read-only snapshot (no writer lock on PostgreSQL: replicas
        answer reads in parallel); redone in a write :meth:`transaction` when a read finds a
        write it must make first (:class:`~edgekit.hub.dialects.NeedsWriter`). Only for
        requests that write nothing else: any other write in it fails loudly (500)."""
        try:
            with self.hub.store.snapshot():
                return answer()
        except NeedsWriter:
            with self.hub.store.transaction():
                return answer()

    async def body(self, request: Request) -> dict[str, Any]:
        """The request body as a JSON object: 415 unless ``application/json``, 413 when over
        ``max_body`` (read with a bound, never parsed then), 400 for bad JSON or text."""
        limit = self.max_body
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HubError(
                Refusal.TOO_LARGE, "PayloadTooLarge", f"request body is larger than {limit} bytes"
            )
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            if chunk and media != "application/json":
                raise HubError(
                    Refusal.UNSUPPORTED_MEDIA,
                    "UnsupportedMediaType",
                    "the request body must be application/json",
                )
            size += len(chunk)
            if size > limit:
                raise HubError(
                    Refusal.TOO_LARGE,
                    "PayloadTooLarge",
                    f"request body is larger than {limit} bytes",
                )
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw.strip():
            return {}
        value = decode_json(raw, limit=limit)
        if not isinstance(value, dict):
            raise HubError(Refusal.INVALID, "InvalidRequest", "request body must be a JSON object")
        return value

    def uid(self, request: Request) -> str:
        """The ``{uid}`` path parameter; a uid no record can have is simply not found."""
        uid = str(request.path_params["uid"])
        if bad_text(uid) is not None or len(uid) > 128:
            raise HubError(Refusal.NOT_FOUND, "NotFound", "no such record")
        return uid

    def admin(self, request: Request) -> None:
        """Refuse the request unless it carries the admin API key (throttled on failures)."""
        key = request.headers.get("apikey")
        if key is None:
            raise HubError(
                Refusal.UNAUTHENTICATED, "Unauthorized", "this call needs the ApiKey header"
            )
        self.throttle.check(source(request), "admin")
        if not secret_matches(key, self.key_hash):
            raise HubError(
                Refusal.UNAUTHENTICATED,
                "Unauthorized",
                "the API key is not valid",
                auth_target="admin",
            )

    def bearer(self, request: Request) -> str | None:
        """The ``Authorization: Bearer`` credential, or None when there is none."""
        auth = request.headers.get("authorization")
        if auth is None:
            return None
        scheme, _, credential = auth.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise HubError(
                Refusal.UNAUTHENTICATED,
                "Unauthorized",
                "this call needs 'Authorization: Bearer <credential>'",
            )
        return credential.strip()

    def host(self, request: Request, uid: str) -> HostRecord:
        """The host ``uid``, authenticated by its own credential (throttled on failures)."""
        credential = self.bearer(request)
        if credential is None:
            raise HubError(
                Refusal.UNAUTHENTICATED,
                "Unauthorized",
                "this call needs 'Authorization: Bearer <credential>'",
            )
        self.throttle.check(source(request), f"host:{uid}")
        return self.hub.authenticate_host(credential, uid)
