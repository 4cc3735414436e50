"""The hub's HTTP API (Starlette on uvicorn), shaped after Palette's v1 edge API."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import secrets
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edgekit.errors import ConfigError, EdgekitError, Problem
from edgekit.hub.openapi import openapi_document
from edgekit.hub.security import hash_secret, secret_matches
from edgekit.hub.store import (
    DEFAULT_UNREACHABLE_AFTER,
    HOST_STATES,
    ApiError,
    ClusterRecord,
    HostRecord,
    HubStore,
    PoolAssignment,
    TokenRecord,
)
from edgekit.hub.validate import check_cluster, check_host, check_token, edge_host
from edgekit.model import EdgeHost

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_MAX_BODY",
    "HubServeError",
    "TlsFiles",
    "create_app",
    "ensure_api_key",
    "main",
    "serve",
]

log = logging.getLogger("edgekit.hub")

API_KEY_ENV = "EDGEKIT_HUB_API_KEY"
DEFAULT_MAX_BODY = 64 * 1024
_API_KEY_SETTING = "api_key_sha256"
# Path words that would shadow a host uid in /v1/edgehosts/{uid}.
_RESERVED_UIDS = frozenset({"tokens", "register"})


@attrs.frozen
class TlsFiles:
    """A PEM certificate (chain) and its private key, for serving HTTPS."""

    certfile: Path = attrs.field(converter=Path)
    keyfile: Path = attrs.field(converter=Path)


# -- helpers --------------------------------------------------------------------------------
def _ts(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_ts(value: str) -> float | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.timestamp()


def _error(exc: ApiError) -> JSONResponse:
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.problems:
        body["problems"] = [{"path": p.path, "message": p.message} for p in exc.problems]
    return JSONResponse(body, status_code=exc.status)


async def _json_body(request: Request, limit: int) -> dict[str, Any]:
    """The request body as a JSON object, read with a size bound."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "PayloadTooLarge", f"request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "PayloadTooLarge", f"request body is larger than {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "MalformedJson", f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "InvalidRequest", "request body must be a JSON object")
    return body


class _Fields:
    """Reads typed fields out of a JSON object, collecting every problem with its path."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems

    def obj(self, data: Any, key: str, path: str, *, required: bool = False) -> dict[str, Any]:
        value = data.get(key) if isinstance(data, dict) else None
        if value is None:
            if required:
                self.problems.append(Problem(f"{path}.{key}", "is required"))
            return {}
        if not isinstance(value, dict):
            self.problems.append(Problem(f"{path}.{key}", "must be an object"))
            return {}
        return value

    def str_(
        self,
        data: Any,
        key: str,
        path: str,
        *,
        required: bool = False,
        max_len: int = 255,
        pattern: re.Pattern[str] | None = None,
        what: str = "",
    ) -> str | None:
        value = data.get(key) if isinstance(data, dict) else None
        where = f"{path}.{key}"
        if value is None:
            if required:
                self.problems.append(Problem(where, "is required"))
            return None
        if not isinstance(value, str):
            self.problems.append(Problem(where, "must be a string"))
            return None
        if required and not value:
            self.problems.append(Problem(where, "must not be empty"))
            return None
        if len(value) > max_len:
            self.problems.append(Problem(where, f"must be at most {max_len} characters"))
            return None
        if pattern is not None and not pattern.match(value):
            self.problems.append(Problem(where, f"must be {what or pattern.pattern}"))
            return None
        return value

    def int_(
        self, data: Any, key: str, path: str, *, required: bool = False, minimum: int = 0
    ) -> int | None:
        value = data.get(key) if isinstance(data, dict) else None
        where = f"{path}.{key}"
        if value is None:
            if required:
                self.problems.append(Problem(where, "is required"))
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.problems.append(Problem(where, "must be an integer"))
            return None
        if value < minimum or value > 2**31:
            self.problems.append(Problem(where, f"must be between {minimum} and {2**31}"))
            return None
        return value

    def bool_(self, data: Any, key: str, path: str, *, required: bool = False) -> bool | None:
        value = data.get(key) if isinstance(data, dict) else None
        if value is None:
            if required:
                self.problems.append(Problem(f"{path}.{key}", "is required"))
            return None
        if not isinstance(value, bool):
            self.problems.append(Problem(f"{path}.{key}", "must be true or false"))
            return None
        return value

    def tags(self, data: Any, key: str, path: str) -> dict[str, str]:
        value = data.get(key) if isinstance(data, dict) else None
        where = f"{path}.{key}"
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problems.append(Problem(where, "must be an object of strings"))
            return {}
        if len(value) > 64:
            self.problems.append(Problem(where, "must have at most 64 tags"))
            return {}
        out: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(v, str) or len(k) > 128 or len(v) > 256:
                self.problems.append(
                    Problem(f"{where}.{k}", "must be a string of at most 256 characters")
                )
            else:
                out[k] = v
        return out

    def str_list(self, data: Any, key: str, path: str) -> list[str]:
        value = data.get(key) if isinstance(data, dict) else None
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problems.append(Problem(f"{path}.{key}", "must be a string or list of strings"))
            return []
        return list(value)


def _raise_if(problems: Sequence[Problem], message: str = "the request is invalid") -> None:
    if problems:
        raise ApiError(400, "InvalidRequest", message, problems)


# -- JSON views -----------------------------------------------------------------------------
def token_json(token: TokenRecord, now: float, secret: str | None = None) -> dict[str, Any]:
    """A token as the API shows it; ``secret`` only in the creation answer."""
    spec: dict[str, Any] = {
        "defaultProjectUid": token.project,
        "expiry": _ts(token.expiry),
        "site": token.site,
        "maxHosts": token.max_hosts,
    }
    if secret is not None:
        spec["token"] = secret
    return {
        "metadata": {"uid": token.uid, "name": token.name, "creationTimestamp": _ts(token.created)},
        "spec": spec,
        "status": {
            "state": token.state(now),
            "isActive": token.active,
            "registeredHosts": token.host_count,
        },
    }


def host_json(
    host: HostRecord, now: float, unreachable_after: float = DEFAULT_UNREACHABLE_AFTER
) -> dict[str, Any]:
    """A host as the API shows it (never its credential)."""
    return {
        "metadata": {"uid": host.uid, "creationTimestamp": _ts(host.registered)},
        "spec": {
            "hostUid": host.uid,
            "hostAddress": host.address,
            "macAddress": host.mac,
            "arch": host.arch,
            "site": host.site,
            "tags": dict(host.tags),
            "agentVersion": host.agent_version,
            "registrationTokenUid": host.token_uid,
        },
        "status": {
            "state": host.effective_state(now, unreachable_after),
            "lastSeen": _ts(host.last_seen),
            "clusterUid": host.cluster_uid,
            "applied": dict(host.status) if host.status else None,
        },
    }


def cluster_json(cluster: ClusterRecord) -> dict[str, Any]:
    """A cluster as the API shows it."""
    return {
        "metadata": {
            "uid": cluster.uid,
            "name": cluster.name,
            "creationTimestamp": _ts(cluster.created),
        },
        "spec": dict(cluster.spec),
    }


# -- the application ------------------------------------------------------------------------
Handler = Callable[[Request], Awaitable[Response]]


def ensure_api_key(store: HubStore, api_key: str | None) -> str | None:
    """Make the store hold the admin key's hash; returns a newly generated key, else None.

    An explicit key (argument or ``EDGEKIT_HUB_API_KEY``) replaces the stored one; with
    neither, a stored key is kept, and only a fresh database gets a generated key.
    """
    key = api_key or os.environ.get(API_KEY_ENV) or None
    if key is not None:
        if store.get_setting(_API_KEY_SETTING) != hash_secret(key):
            store.set_setting(_API_KEY_SETTING, hash_secret(key))
        return None
    if store.get_setting(_API_KEY_SETTING) is not None:
        return None
    generated = "eka_" + secrets.token_urlsafe(32)
    store.set_setting(_API_KEY_SETTING, hash_secret(generated))
    return generated


def create_app(
    store: HubStore,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    unreachable_after: float = DEFAULT_UNREACHABLE_AFTER,
) -> Starlette:
    """The hub's ASGI application over ``store`` (whose API key must be set).

    ``unreachable_after``: seconds without a heartbeat after which a host shows (and is
    searched) as ``unreachable`` and cannot join a cluster.
    """
    key_hash = store.get_setting(_API_KEY_SETTING)
    if key_hash is None:
        raise ConfigError.single("api_key", "the hub has no API key; call ensure_api_key first")

    def admin(request: Request) -> None:
        key = request.headers.get("apikey")
        if key is None:
            raise ApiError(401, "Unauthorized", "this call needs the ApiKey header")
        if not secret_matches(key, key_hash):
            raise ApiError(401, "Unauthorized", "the API key is not valid")

    def host_auth(request: Request, uid: str) -> HostRecord:
        auth = request.headers.get("authorization", "")
        scheme, _, credential = auth.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise ApiError(
                401, "Unauthorized", "this call needs 'Authorization: Bearer <credential>'"
            )
        host = store.host_for_credential(credential.strip())
        if host is None:
            raise ApiError(401, "Unauthorized", "the host credential is not valid")
        if host.uid != uid:
            raise ApiError(403, "Forbidden", "a host may only use its own record")
        return host

    def view(host: HostRecord) -> dict[str, Any]:
        return host_json(host, time.time(), unreachable_after)

    def model_host(uid: str, now: float) -> EdgeHost | None:
        record = store.get_host(uid)
        if record is None:
            return None
        return edge_host(
            record.uid,
            site=record.site,
            arch=record.arch,
            mac=record.mac,
            address=record.address,
            tags=record.tags,
            state=record.effective_state(now, unreachable_after),
        )

    def token_or_404(uid: str) -> TokenRecord:
        token = store.get_token(uid)
        if token is None:
            raise ApiError(404, "TokenNotFound", f"no registration token {uid!r}")
        return token

    # -- tokens ----------------------------------------------------------------------------
    async def list_tokens(request: Request) -> Response:
        admin(request)
        now = time.time()
        return JSONResponse({"items": [token_json(t, now) for t in store.list_tokens()]})

    async def create_token(request: Request) -> Response:
        admin(request)
        body = await _json_body(request, max_body)
        problems: list[Problem] = []
        f = _Fields(problems)
        metadata = f.obj(body, "metadata", "$", required=True)
        spec = f.obj(body, "spec", "$", required=True)
        name = f.str_(metadata, "name", "$.metadata", required=True, max_len=128)
        project = f.str_(spec, "defaultProjectUid", "$.spec", max_len=128)
        site = f.str_(spec, "site", "$.spec", max_len=128)
        max_hosts = f.int_(spec, "maxHosts", "$.spec", minimum=1)
        expiry_text = f.str_(spec, "expiry", "$.spec", required=bool(spec) or not problems)
        now = time.time()
        expiry: float | None = None
        if expiry_text is not None:
            expiry = _parse_ts(expiry_text)
            if expiry is None:
                problems.append(
                    Problem("$.spec.expiry", "must be an RFC 3339 time with a zone, e.g. Z")
                )
            elif expiry <= now:
                problems.append(Problem("$.spec.expiry", "must be in the future"))
        if not problems:
            assert name is not None
            assert expiry is not None
            problems += check_token(
                name=name,
                project=project,
                site=site,
                expires_at=datetime.fromtimestamp(expiry, UTC),
                max_hosts=max_hosts,
            )
        _raise_if(problems)
        assert name is not None
        assert expiry is not None
        token, secret = store.create_token(
            name, expiry=expiry, project=project, site=site, max_hosts=max_hosts, now=now
        )
        log.info("created registration token %s (%s)", token.uid, token.name)
        return JSONResponse(token_json(token, now, secret), status_code=201)

    async def get_token(request: Request) -> Response:
        admin(request)
        return JSONResponse(token_json(token_or_404(request.path_params["uid"]), time.time()))

    async def update_token(request: Request) -> Response:
        admin(request)
        uid = request.path_params["uid"]
        token_or_404(uid)
        body = await _json_body(request, max_body)
        problems: list[Problem] = []
        f = _Fields(problems)
        spec = f.obj(body, "spec", "$", required=True)
        expiry_text = f.str_(spec, "expiry", "$.spec", required=not problems)
        expiry = _parse_ts(expiry_text) if expiry_text is not None else None
        if expiry_text is not None and expiry is None:
            problems.append(Problem("$.spec.expiry", "must be an RFC 3339 time with a zone"))
        _raise_if(problems)
        assert expiry is not None
        token = store.set_token_expiry(uid, expiry)
        assert token is not None
        return JSONResponse(token_json(token, time.time()))

    async def delete_token(request: Request) -> Response:
        admin(request)
        uid = request.path_params["uid"]
        if not store.delete_token(uid):
            raise ApiError(404, "TokenNotFound", f"no registration token {uid!r}")
        return Response(status_code=204)

    async def token_state(request: Request) -> Response:
        admin(request)
        uid = request.path_params["uid"]
        token_or_404(uid)
        body = await _json_body(request, max_body)
        problems: list[Problem] = []
        active = _Fields(problems).bool_(body, "isActive", "$", required=True)
        _raise_if(problems)
        assert active is not None
        token = store.set_token_active(uid, active)
        assert token is not None
        log.info("registration token %s is now %s", uid, "active" if active else "revoked")
        return JSONResponse(token_json(token, time.time()))

    # -- registration and hosts ------------------------------------------------------------
    async def register(request: Request) -> Response:
        body = await _json_body(request, max_body)
        problems: list[Problem] = []
        f = _Fields(problems)
        token = request.headers.get("edgehosttoken") or f.str_(
            body, "edgeHostToken", "$", max_len=512
        )
        uid = f.str_(body, "hostUid", "$", required=True, max_len=128)
        if uid in _RESERVED_UIDS:
            problems.append(Problem("$.hostUid", f"{uid!r} is reserved"))
        address = f.str_(body, "hostAddress", "$")
        mac = f.str_(body, "macAddress", "$")
        # Without a reported arch a host is amd64, as the model's EdgeHost assumes.
        arch = f.str_(body, "arch", "$") or "amd64"
        site = f.str_(body, "site", "$", max_len=128)
        tags = f.tags(body, "tags", "$")
        agent_version = f.str_(body, "agentVersion", "$", max_len=64)
        if not token:
            raise ApiError(
                401, "Unauthorized", "registration needs a token (EdgeHostToken or edgeHostToken)"
            )
        model_host = None
        if uid is not None:
            model_host, more = check_host(
                uid=uid, site=site, arch=arch, mac=mac, address=address, tags=tags
            )
            # A field with a type problem was already reported; skip the model's echo of it.
            problems += [p for p in more if p.path not in {q.path for q in problems}]
        _raise_if(problems)
        assert uid is not None
        assert model_host is not None
        host, credential = store.register(
            token,
            host_uid=uid,
            address=address,
            mac=model_host.mac,
            arch=arch,
            site=site,
            tags=tags,
            agent_version=agent_version,
        )
        answer = view(host)
        answer["credential"] = credential
        return JSONResponse(answer, status_code=200)

    async def get_host(request: Request) -> Response:
        uid = request.path_params["uid"]
        if "apikey" in request.headers:
            admin(request)
            host = store.get_host(uid)
            if host is None:
                raise ApiError(404, "HostNotFound", f"host {uid!r} is not registered")
        else:
            host = host_auth(request, uid)
        return JSONResponse(view(host))

    async def delete_host(request: Request) -> Response:
        admin(request)
        uid = request.path_params["uid"]
        if not store.delete_host(uid):
            raise ApiError(404, "HostNotFound", f"host {uid!r} is not registered")
        return Response(status_code=204)

    async def heartbeat(request: Request) -> Response:
        uid = request.path_params["uid"]
        host_auth(request, uid)
        body = await _json_body(request, max_body)
        problems: list[Problem] = []
        address = _Fields(problems).str_(body, "hostAddress", "$")
        _raise_if(problems)
        host = store.heartbeat(uid, address=address)
        return JSONResponse(view(host))

    async def desired_state(request: Request) -> Response:
        uid = request.path_params["uid"]
        host = host_auth(request, uid)
        return JSONResponse({"hostUid": host.uid, "desired": host.desired})

    async def report_status(request: Request) -> Response:
        uid = request.path_params["uid"]
        host_auth(request, uid)
        body = await _json_body(request, max_body)
        problems: list[Problem] = []
        f = _Fields(problems)
        state = f.str_(body, "state", "$", required=True)
        if state is not None and state not in ("applying", "applied", "failed"):
            problems.append(Problem("$.state", "must be one of applying, applied, failed"))
        generation = f.int_(body, "generation", "$")
        message = f.str_(body, "message", "$", max_len=4096)
        provider_image = f.str_(body, "providerImage", "$", max_len=1024)
        _raise_if(problems)
        status = {
            "state": state,
            "generation": generation,
            "message": message,
            "providerImage": provider_image,
            "reported": _ts(time.time()),
        }
        host = store.report_status(uid, status)
        return JSONResponse(view(host))

    async def search_hosts(request: Request) -> Response:
        admin(request)
        body = await _json_body(request, max_body)
        problems: list[Problem] = []
        f = _Fields(problems)
        flt = f.obj(body, "filter", "$")
        states = f.str_list(flt, "state", "$.filter")
        for i, s in enumerate(states):
            if s not in HOST_STATES:
                problems.append(
                    Problem(f"$.filter.state[{i}]", f"must be one of {', '.join(HOST_STATES)}")
                )
        sites = f.str_list(flt, "site", "$.filter")
        tags = f.tags(flt, "tags", "$.filter")
        limit = f.int_(body, "limit", "$", minimum=1)
        offset = f.int_(body, "offset", "$") or 0
        _raise_if(problems)
        hosts, total = store.search_hosts(
            states=states,
            sites=sites,
            tags=tags,
            limit=limit,
            offset=offset,
            unreachable_after=unreachable_after,
        )
        return JSONResponse(
            {
                "items": [view(h) for h in hosts],
                "listmeta": {"count": total, "offset": offset, "limit": limit},
            }
        )

    # -- clusters --------------------------------------------------------------------------
    async def create_cluster(request: Request) -> Response:
        admin(request)
        body = await _json_body(request, max_body)
        problems: list[Problem] = []
        provider_image = _Fields(problems).str_(body.get("spec"), "providerImage", "$.spec")
        now = time.time()
        plan, more = check_cluster(body, lambda uid: model_host(uid, now))
        problems += more
        if problems:
            raise ApiError(400, "InvalidCluster", "the cluster is invalid", problems)
        assert plan is not None
        model = plan.cluster
        pools = [
            PoolAssignment(pool.name, i == 0, tuple(h.uid for h in pool.hosts))
            for i, pool in enumerate(model.pools)
        ]
        cluster = store.create_cluster(
            model.name,
            vip=model.vip,
            provider_image=provider_image,
            pools=pools,
            spec=body["spec"],
            profile={"name": model.profile.name, "version": model.profile.version},
        )
        log.info("created cluster %s (%s)", cluster.uid, cluster.name)
        return JSONResponse(cluster_json(cluster), status_code=201)

    async def get_cluster(request: Request) -> Response:
        admin(request)
        uid = request.path_params["uid"]
        cluster = store.get_cluster(uid)
        if cluster is None:
            raise ApiError(404, "ClusterNotFound", f"no cluster {uid!r}")
        return JSONResponse(cluster_json(cluster))

    # -- misc ------------------------------------------------------------------------------
    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "schemaVersion": store.schema_version})

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error(exc)

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
        Route("/v1/edgehosts/tokens", list_tokens, methods=["GET"]),
        Route("/v1/edgehosts/tokens", create_token, methods=["POST"]),
        Route("/v1/edgehosts/tokens/{uid}", get_token, methods=["GET"]),
        Route("/v1/edgehosts/tokens/{uid}", update_token, methods=["PUT"]),
        Route("/v1/edgehosts/tokens/{uid}", delete_token, methods=["DELETE"]),
        Route("/v1/edgehosts/tokens/{uid}/state", token_state, methods=["PUT"]),
        Route("/v1/edgehosts/register", register, methods=["POST"]),
        Route("/v1/edgehosts/{uid}", get_host, methods=["GET"]),
        Route("/v1/edgehosts/{uid}", delete_host, methods=["DELETE"]),
        Route("/v1/edgehosts/{uid}/heartbeat", heartbeat, methods=["POST"]),
        Route("/v1/edgehosts/{uid}/desired-state", desired_state, methods=["GET"]),
        Route("/v1/edgehosts/{uid}/status", report_status, methods=["POST"]),
        Route("/v1/dashboard/edgehosts/search", search_hosts, methods=["POST"]),
        Route("/v1/spectroclusters/edge-native", create_cluster, methods=["POST"]),
        Route("/v1/spectroclusters/{uid}", get_cluster, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={
            ApiError: on_api_error,
            HTTPException: on_http_error,
            Exception: on_crash,
        },
    )


# -- running --------------------------------------------------------------------------------
class HubServeError(EdgekitError):
    """The hub cannot start serving (port in use, address not available)."""


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise HubServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def serve(
    host: str,
    port: int,
    db_path: str | Path,
    api_key: str | None = None,
    tls: TlsFiles | None = None,
    *,
    fd: int | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    access_log: bool = True,
    synchronous: str = "NORMAL",
    unreachable_after: float = DEFAULT_UNREACHABLE_AFTER,
) -> None:
    """Run the hub until interrupted (blocking); the function the CLI calls.

    The admin API key comes from ``api_key``, else ``EDGEKIT_HUB_API_KEY``, else the one
    stored in the database; a fresh database without either gets a generated key that is
    printed once, to stdout, never to the log.
    """
    import uvicorn  # imported here: only serving needs the server extra

    if not log.handlers:
        # uvicorn configures only its own loggers; show the hub's next to them on stderr.
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    if synchronous not in ("NORMAL", "FULL"):
        raise ConfigError.single("synchronous", "must be NORMAL or FULL")
    store = HubStore(db_path, synchronous="FULL" if synchronous == "FULL" else "NORMAL")
    try:
        generated = ensure_api_key(store, api_key)
        if generated is not None:
            print(f"edgekit hub: generated admin API key (shown once): {generated}", flush=True)
        app = create_app(store, max_body=max_body, unreachable_after=unreachable_after)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            access_log=access_log,
            log_level="info",
            ssl_certfile=str(tls.certfile) if tls else None,
            ssl_keyfile=str(tls.keyfile) if tls else None,
            timeout_graceful_shutdown=5,
        )
        # An inherited listening socket is handed over as a socket object (uvicorn's own
        # ``fd`` option assumes a Unix socket); otherwise we bind here, so that a busy port
        # is an error that names it instead of uvicorn's exit.
        sock = socket.socket(fileno=fd) if fd is not None else _listen(host, port)
        # uvicorn does not announce sockets it is given; say where we listen ourselves.
        bound = sock.getsockname()
        scheme = "https" if tls else "http"
        log.info("edgekit hub listening on %s://%s:%s", scheme, bound[0], bound[1])
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        store.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edgekit.hub.server``: what :class:`HubServer` runs in its subprocess."""
    parser = argparse.ArgumentParser(prog="python -m edgekit.hub.server")
    parser.add_argument("--db", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--fd", type=int, default=None, help="serve on this listening socket")
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    parser.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY)
    parser.add_argument("--no-access-log", action="store_true")
    parser.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL")
    parser.add_argument("--unreachable-after", type=float, default=DEFAULT_UNREACHABLE_AFTER)
    args = parser.parse_args(argv)
    tls = TlsFiles(args.certfile, args.keyfile) if args.certfile and args.keyfile else None
    try:
        _serve_main(args, tls)
    except EdgekitError as exc:
        print(f"edgekit hub: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def _serve_main(args: argparse.Namespace, tls: TlsFiles | None) -> None:
    serve(
        args.host,
        args.port,
        args.db,
        tls=tls,
        fd=args.fd,
        max_body=args.max_body,
        access_log=not args.no_access_log,
        synchronous=args.synchronous,
        unreachable_after=args.unreachable_after,
    )


if __name__ == "__main__":
    sys.exit(main())
