"""Transient HTTP faults (503, connection reset) injected by a proxy in front of a real registry."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from edgekit_oras.client import ConnectionOptions, RetryPolicy
from edgekit_oras.engine import pull_to_layout, push_layout
from edgekit_oras.testing import RegistryServer
from oras_test_helpers import skopeo_digest

from edgekit.errors import PublishError


class FaultProxy:
    """Forwards to *upstream*; answers 503 to the first request of each method listed in
    :attr:`fail_503`, and drops the connection on the first of each in :attr:`reset`."""

    def __init__(self, upstream: str, fail_503: set[str], reset: set[str]) -> None:
        self.upstream = upstream
        self.fail_503, self.reset = set(fail_503), set(reset)
        self.injected: list[str] = []
        self.always_503 = False
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                method = self.command
                if method in owner.reset:
                    owner.reset.discard(method)
                    owner.injected.append(f"reset {method}")
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if owner.always_503 or method in owner.fail_503:
                    owner.fail_503.discard(method)
                    owner.injected.append(f"503 {method}")
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")
                }
                r = requests.request(
                    method,
                    owner.upstream + self.path,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    timeout=30,
                )
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() in ("content-length", "transfer-encoding", "connection"):
                        continue
                    self.send_header(k, v.replace(owner.upstream, owner.url))
                data = r.content if method != "HEAD" else b""
                self.send_header("Content-Length", r.headers.get("Content-Length", str(len(data))))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: object) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.url = f"http://{self.host}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(registry: RegistryServer) -> Iterator[FaultProxy]:
    p = FaultProxy(registry.url, fail_503={"PATCH", "PUT", "GET"}, reset={"HEAD", "POST"})
    yield p
    p.close()


def test_5xx_and_resets_are_retried(
    proxy: FaultProxy, registry: RegistryServer, image: tuple[Path, str], tmp_path: Path
) -> None:
    layout, digest = image
    opts = ConnectionOptions(
        plain_http=True, retry=RetryPolicy(attempts=4, initial_delay=0.05, max_delay=0.2)
    )
    result = push_layout(layout, "v1", f"{proxy.host}/edge/os:v1", options=opts)
    assert result.digest == digest
    assert sorted(proxy.injected) == sorted(
        ["503 PATCH", "503 PUT", "503 GET", "reset HEAD", "reset POST"]
    )
    assert skopeo_digest(f"{registry.host}/edge/os:v1", "--tls-verify=false") == digest
    proxy.fail_503, proxy.reset = {"GET"}, {"GET"}
    pulled = pull_to_layout(f"{proxy.host}/edge/os:v1", tmp_path / "pulled", options=opts)
    assert pulled.digest == digest
    assert proxy.injected[-2:] == ["reset GET", "503 GET"]


def test_persistent_5xx_gives_up_boundedly(proxy: FaultProxy, image: tuple[Path, str]) -> None:
    layout, _ = image
    proxy.always_503 = True
    opts = ConnectionOptions(
        plain_http=True, retry=RetryPolicy(attempts=3, initial_delay=0.05, max_delay=0.1)
    )
    with pytest.raises(PublishError, match=r"gave up after 3 attempts.*503") as info:
        push_layout(layout, "v1", f"{proxy.host}/edge/os:v1", options=opts)
    assert "no tag was written" in str(info.value)
