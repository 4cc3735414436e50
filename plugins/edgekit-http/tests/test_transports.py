"""The ``http`` and ``file`` transports against a real hub (a subprocess on 127.0.0.1)."""

from __future__ import annotations

import http.client
import http.server
import logging
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from edgekit_http import FileTransport, HttpTransport, normalise_endpoint
from edgekit_http import plugin as http_plugin

from edgekit.errors import RegistrationError
from edgekit.hub import HubServer, TlsFiles
from edgekit.hub.airgap import import_registrations
from edgekit.hub.security import Secret
from edgekit.hub.store import HubStore
from edgekit.plugins import BuildContext, RegistrationReceipt, RegistrationRequest, Transport
from edgekit.plugins.manager import PluginManager

HOST = {
    "hostUid": "edge-0001",
    "hostAddress": "10.0.10.25",
    "macAddress": "52:54:00:12:34:56",
    "arch": "amd64",
    "site": "store-042",
    "tags": {"city": "chicago"},
    "agentVersion": "0.1.0",
}


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with HubServer(access_log=False) as server:
        yield server


@pytest.fixture
def token(hub: HubServer) -> str:
    created = hub.client().tokens.create("store-042", site="store-042")
    assert created.secret is not None
    return created.secret.reveal()


class _Proxy(http.server.ThreadingHTTPServer):
    """A forward HTTP proxy on 127.0.0.1 that can answer 503 to its first requests."""

    fail_first = 0
    seen: list[str]


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: _Proxy

    def log_message(self, format: str, *args: object) -> None:
        return None

    def do_POST(self) -> None:
        self.server.seen.append(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if len(self.server.seen) <= self.server.fail_first:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        target = urlsplit(self.path)  # absolute-form: the client talks to a proxy
        conn = http.client.HTTPConnection(target.hostname or "", target.port, timeout=10)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "proxy-connection"}
        conn.request("POST", target.path, body=body, headers=headers)
        answer = conn.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.getheader("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()


@pytest.fixture
def proxy() -> Iterator[_Proxy]:
    server = _Proxy(("127.0.0.1", 0), _ProxyHandler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def no_env_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "REQUESTS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


pytestmark = pytest.mark.usefixtures("no_env_proxy")


def register(
    transport: Transport, endpoint: str, token: str, host: dict[str, object], **kw: object
) -> RegistrationReceipt:
    """One registration through the transport's contract: a request and a context."""
    ctx = BuildContext(base_dir=Path.cwd(), output_dir=Path.cwd(), cache_dir=Path.cwd())
    credential = host.get("credential")
    fields = {k: v for k, v in host.items() if k != "credential"}
    request = RegistrationRequest(endpoint, token, fields, credential=credential, **kw)  # type: ignore[arg-type]
    return transport.register(request, ctx)


def test_plugin_registers_both_transports() -> None:
    manager = PluginManager(entry_points=False, disabled="")
    manager.register(http_plugin, "http")
    assert isinstance(manager.backend("transport", "http"), HttpTransport)
    assert isinstance(manager.backend("transport", "file"), FileTransport)
    assert all(issubclass(cls, Transport) for cls in (HttpTransport, FileTransport))


def test_endpoint_forms() -> None:
    assert normalise_endpoint("api.example.com") == "https://api.example.com"
    assert normalise_endpoint("http://10.0.2.2:8080/") == "http://10.0.2.2:8080"
    with pytest.raises(RegistrationError, match="not an http"):
        normalise_endpoint("ftp://x")


def test_registers_and_returns_the_credential_as_a_secret(
    hub: HubServer, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    transport = HttpTransport()
    answer = register(transport, hub.url, token, HOST)
    assert answer.record["spec"]["hostUid"] == "edge-0001"
    assert answer.record["spec"]["site"] == "store-042"
    credential = answer.credential
    assert isinstance(credential, Secret)
    host_client = hub.host_client("edge-0001")
    host_client.credential = credential
    assert host_client.heartbeat().state == "ready"
    assert token not in caplog.text
    assert token not in repr(transport)


def test_wrong_and_revoked_tokens_raise_with_the_hubs_message(hub: HubServer, token: str) -> None:
    transport = HttpTransport(sleep=lambda _: None)
    with pytest.raises(RegistrationError) as info:
        register(transport, hub.url, "ekt_wrong-token", HOST)
    assert "401 InvalidToken: the registration token is not known" in str(info.value)
    assert "ekt_wrong-token" not in str(info.value)
    admin = hub.client()
    (t,) = admin.tokens.list()
    admin.tokens.revoke(t.uid)
    with pytest.raises(RegistrationError, match="403 TokenRevoked") as info:
        register(transport, hub.url, token, HOST)
    assert token not in str(info.value)


def test_validation_errors_carry_the_problems(hub: HubServer, token: str) -> None:
    with pytest.raises(RegistrationError, match=r"\$\.hostAddress"):
        register(HttpTransport(), hub.url, token, {**HOST, "hostAddress": "not-an-ip"})


def test_connection_failures_are_retried_a_bounded_number_of_times() -> None:
    import socket

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps: list[float] = []
    transport = HttpTransport(attempts=4, backoff=0.5, max_backoff=1.0, sleep=sleeps.append)
    with pytest.raises(RegistrationError, match="after 4 attempts: ConnectionError") as info:
        register(transport, f"http://127.0.0.1:{port}", "ekt_secret", HOST)
    assert "ekt_secret" not in str(info.value)
    assert len(sleeps) == 3
    # Jittered exponential backoff, capped at max_backoff.
    assert 0.25 <= sleeps[0] <= 0.5
    assert 0.5 <= sleeps[1] <= 1.0
    assert 0.5 <= sleeps[2] <= 1.0


def test_explicit_proxy_and_5xx_retries(hub: HubServer, token: str, proxy: _Proxy) -> None:
    proxy.fail_first = 2
    url = f"http://127.0.0.1:{proxy.server_address[1]}"
    transport = HttpTransport(proxies={"http": url}, sleep=lambda _: None)
    answer = register(transport, hub.url, token, HOST)
    assert answer.record["spec"]["hostUid"] == "edge-0001"
    assert proxy.seen == [hub.url + "/v1/edgehosts/register"] * 3
    proxy.seen.clear()
    proxy.fail_first = 10
    with pytest.raises(RegistrationError, match="unavailable after 2 attempts"):
        register(HttpTransport(proxies={"http": url}, attempts=2, sleep=lambda _: None),
                 hub.url, token, HOST)  # fmt: skip


def test_proxy_from_the_environment(
    hub: HubServer, token: str, proxy: _Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    first = register(HttpTransport(), hub.url, token, HOST)
    assert len(proxy.seen) == 1
    # Explicit proxies replace the environment's: {} means a direct connection. (Registering
    # the same uid again must prove the device: its credential from the first answer.)
    again = {**HOST, "credential": first.credential}
    register(HttpTransport(proxies={}), hub.url, token, again)
    assert len(proxy.seen) == 1


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "hub.pem", d / "hub.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=edgekit hub",
         "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:TRUE"],
        check=True, capture_output=True,
    )  # fmt: skip
    return TlsFiles(cert, key)


def test_custom_ca(tls_files: TlsFiles) -> None:
    with HubServer(tls=tls_files, access_log=False) as hub:
        created = hub.client().tokens.create("tls", site="store-042")
        assert created.secret is not None
        secret = created.secret.reveal()
        with pytest.raises(RegistrationError, match=r"TLS verification of https://127\.0\.0\.1"):
            register(HttpTransport(sleep=lambda _: None), hub.url, secret, HOST)
        answer = register(HttpTransport(ca_cert=tls_files.certfile), hub.url, secret, HOST)
        assert answer.record["spec"]["hostUid"] == "edge-0001"


def test_file_transport_bundle_imports_into_the_hub(
    hub: HubServer, token: str, tmp_path: Path
) -> None:
    media = tmp_path / "usb"
    media.mkdir()
    answer = register(FileTransport(), media.as_uri(), token, HOST)
    bundle = Path(answer.bundle)
    assert answer.state == "pending-import"
    assert bundle.parent == media
    assert token not in bundle.read_text()
    # Import into the running hub's database (SQLite WAL allows the second connection).
    store = HubStore(hub.db_path)
    try:
        (result,) = import_registrations(store, [bundle])
    finally:
        store.close()
    assert result.ok, result.error
    (host,) = hub.client().hosts.search(site="store-042")
    assert host.uid == "edge-0001"
    assert host.tags == {"city": "chicago"}


def test_file_transport_proves_a_registered_host_with_its_credential(
    hub: HubServer, token: str, tmp_path: Path
) -> None:
    first = register(HttpTransport(), hub.url, token, HOST)
    credential = first.credential.reveal()
    media = tmp_path / "usb"
    media.mkdir()
    store = HubStore(hub.db_path)
    try:
        unproven = register(FileTransport(), media.as_uri(), token, HOST)
        (refused,) = import_registrations(store, [Path(unproven.bundle)])
        proven = register(
            FileTransport(), media.as_uri(), token, {**HOST, "credential": credential}
        )
        text = Path(proven.bundle).read_text()
        (accepted,) = import_registrations(store, [Path(proven.bundle)])
    finally:
        store.close()
    assert not refused.ok  # a bundle without proof cannot take over a registered uid
    assert accepted.ok, accepted.error
    assert credential not in text
    assert '"hostProof"' in text


def test_file_transport_rejects_other_urls(tmp_path: Path) -> None:
    with pytest.raises(RegistrationError, match="not a file:///path URL"):
        register(FileTransport(), "http://hub", "t", HOST)
    with pytest.raises(RegistrationError, match="is not a directory"):
        register(FileTransport(), (tmp_path / "missing").as_uri(), "t", HOST)
