"""Call the hub's ASGI application in-process (no httpx here): one request, one answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, MutableMapping
from typing import Any

from starlette.applications import Starlette


class Answer:
    """A status, headers (lower-case names) and a body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    app: Starlette,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    client: str = "192.0.2.1",
    query: str = "",
) -> Answer:
    """Send one request to ``app`` as uvicorn would, from ``client`` (``query``: the part of
    the URL after ``?``)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": (client, 40000),
        "server": ("127.0.0.1", 8080),
    }
    sent: list[MutableMapping[str, Any]] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    try:
        asyncio.run(app(scope, receive, send))
    except Exception:
        # Starlette re-raises a crash after answering 500, for the server to log; uvicorn
        # logs it, and so do we by going on with the answer that was sent.
        if not any(m["type"] == "http.response.start" for m in sent):
            raise
    start = next(m for m in sent if m["type"] == "http.response.start")
    data = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    names = {k.decode(): v.decode() for k, v in start["headers"]}
    return Answer(start["status"], names, data)


def post_json(app: Starlette, path: str, value: Any, **kw: Any) -> Answer:
    """POST ``value`` as an application/json body."""
    headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
    return call(app, "POST", path, headers=headers, body=json.dumps(value).encode(), **kw)


def app_with_host(store: Any, api_key: str, uid: str = "a") -> Starlette:
    """The hub's application over ``store`` (admin key ``api_key``), with one host ``uid``
    registered through it by a new token."""
    from edgekit.hub.routes import create_app
    from edgekit.hub.server import ensure_api_key

    ensure_api_key(store, api_key)
    app = create_app(store)
    admin = {"ApiKey": api_key}
    token = post_json(
        app,
        "/v1/edgehosts/tokens",
        {"metadata": {"name": "t"}, "spec": {"expiry": "2999-01-01T00:00:00Z"}},
        headers=admin,
    ).json()["spec"]["token"]
    registered = post_json(
        app, "/v1/edgehosts/register", {"hostUid": uid}, headers={"EdgeHostToken": token}
    )
    assert registered.status < 300, registered.body
    return app
