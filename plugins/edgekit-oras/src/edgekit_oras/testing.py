"""Test fixtures: a real CNCF distribution registry (Debian's ``docker-registry``) on 127.0.0.1.

``RegistryServer`` starts ``/usr/bin/docker-registry`` with a generated config in one of three
modes (plain HTTP, htpasswd basic auth, TLS with a generated test CA), waits until ``/v2/``
answers, and stops it on exit.  It can be stopped and started again on the same storage and
port, which fault tests use to simulate a registry restart mid-push.

The pytest fixtures ``registry``, ``auth_registry`` and ``tls_registry`` are exposed through the
``pytest11`` entry point ``edgekit_oras``.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Literal

import pytest
import requests

__all__ = [
    "REGISTRY_BINARY",
    "RegistryServer",
    "TokenServer",
    "auth_registry",
    "free_port",
    "registry",
    "tls_registry",
    "token_registry",
]

REGISTRY_BINARY = "/usr/bin/docker-registry"

Mode = Literal["plain", "basic", "tls", "token"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _run(argv: list[str], *, input_: str | None = None) -> str:
    proc = subprocess.run(argv, input=input_, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def make_test_ca(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Path:
    """Write ``ca.pem``, ``server.pem`` and ``server.key`` under *directory*; return the CA path.

    The server certificate is signed by the CA and valid for *hosts* (IP or DNS SANs).
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_pem = directory / "ca.key", directory / "ca.pem"
    key, csr, pem = directory / "server.key", directory / "server.csr", directory / "server.pem"
    _run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=edgekit test CA", "-keyout", str(ca_key), "-out", str(ca_pem),
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ]
    )  # fmt: skip
    _run(
        [
            "openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", str(key), "-out", str(csr),
        ]
    )  # fmt: skip
    sans = ",".join(
        f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}" for h in hosts
    )
    ext = directory / "server.ext"
    ext.write_text(
        f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    _run(
        [
            "openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_pem), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "2", "-out", str(pem), "-extfile", str(ext),
        ]
    )  # fmt: skip
    return ca_pem


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A Docker token-auth server (the protocol distribution's ``auth: token`` speaks).

    ``GET /token?service=...&scope=repository:NAME:ACTIONS`` with Basic credentials returns
    ``{"token": JWT}``: an RS256 JWT signed (with ``openssl dgst``) by a self-signed key whose
    certificate travels in the ``x5c`` header and is the registry's ``rootcertbundle``.
    Grants every requested action to :attr:`username`; refuses other credentials with 401.
    :attr:`requests` records the scopes asked for.
    """

    service = "edgekit-test-registry"
    issuer = "edgekit-test-issuer"

    def __init__(self, workdir: Path, *, username: str = "edgekit", password: str = "t0ken-pa55"):
        self.workdir = workdir
        self.username, self.password = username, password
        self.key, self.cert = workdir / "token.key", workdir / "token.pem"
        workdir.mkdir(parents=True, exist_ok=True)
        _run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", "/CN=edgekit token signer", "-keyout", str(self.key),
                "-out", str(self.cert),
            ]
        )  # fmt: skip
        der = _run_bytes(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"])
        self._x5c = base64.b64encode(der).decode()
        self.requests: list[list[str]] = []
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _issue(self, scopes: list[str]) -> str:
        now = int(time.time())
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {
            "iss": self.issuer, "sub": self.username, "aud": self.service,
            "exp": now + 300, "nbf": now - 10, "iat": now,
            "jti": secrets.token_hex(8), "access": access,
        }  # fmt: skip
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        sig = _run_bytes(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)], input_=signing_input.encode()
        )
        return signing_input + "." + _b64url(sig)

    def start(self) -> None:
        """Serve on a free port of 127.0.0.1 in a daemon thread."""
        owner = self
        expected = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                if url.path != "/token":
                    self.send_error(404)
                    return
                if self.headers.get("Authorization") != expected:
                    self.send_error(401)
                    return
                scopes = [s for v in query.get("scope", []) for s in v.split(" ")]
                owner.requests.append(scopes)
                body = json.dumps({"token": owner._issue(scopes), "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return None

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> TokenServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _run_bytes(argv: list[str], *, input_: bytes | None = None) -> bytes:
    proc = subprocess.run(argv, input=input_, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.decode()}")
    return proc.stdout


class RegistryServer:
    """A ``docker-registry`` (distribution 2.8) process on 127.0.0.1 for tests.

    Use as a context manager.  Attributes useful to tests: :attr:`host` (``127.0.0.1:PORT``),
    :attr:`url`, :attr:`storage`, :attr:`username`/:attr:`password` (mode ``basic``) and
    :attr:`ca_file` (mode ``tls``).
    """

    def __init__(
        self,
        mode: Mode = "plain",
        *,
        workdir: Path | None = None,
        port: int | None = None,
        username: str = "edgekit",
        password: str = "s3cret-pa55",
        token_server: TokenServer | None = None,
    ) -> None:
        if mode not in ("plain", "basic", "tls", "token"):
            raise ValueError(f"unknown registry mode {mode!r}")
        self.mode: Mode = mode
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="edgekit-registry-"))
        self.storage = self.workdir / "storage"
        self.port = port or free_port()
        self.username = username
        self.password = password
        self.ca_file: Path | None = None
        self.token_server = token_server
        if mode == "token" and token_server is None:
            raise ValueError("mode 'token' needs a token_server")
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = self.workdir / "registry.log"
        self._config = self.workdir / "config.yml"
        self._prepare()

    def __repr__(self) -> str:
        return f"RegistryServer(mode={self.mode!r}, host={self.host!r})"

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``: the registry part of a reference."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Base URL, ``http://`` or ``https://``."""
        scheme = "https" if self.mode == "tls" else "http"
        return f"{scheme}://{self.host}"

    @property
    def plain_http(self) -> bool:
        """True when the registry speaks plain HTTP (every mode but ``tls``)."""
        return self.mode != "tls"

    def _prepare(self) -> None:
        self.storage.mkdir(parents=True, exist_ok=True)
        lines = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.storage}",
            "  delete:",
            "    enabled: true",
            "  maintenance:",
            "    uploadpurging:",
            "      enabled: false",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
            "  secret: edgekit-test-secret",
        ]
        if self.mode == "tls":
            self.ca_file = make_test_ca(self.workdir / "pki")
            lines += [
                "  tls:",
                f"    certificate: {self.workdir / 'pki' / 'server.pem'}",
                f"    key: {self.workdir / 'pki' / 'server.key'}",
            ]
        if self.mode == "basic":
            htpasswd = self.workdir / "htpasswd"
            htpasswd.write_text(_run(["htpasswd", "-Bbn", self.username, self.password]))
            lines += [
                "auth:",
                "  htpasswd:",
                "    realm: edgekit-test",
                f"    path: {htpasswd}",
            ]
        if self.mode == "token":
            assert self.token_server is not None
            lines += [
                "auth:",
                "  token:",
                f"    realm: {self.token_server.url}/token",
                f"    service: {self.token_server.service}",
                f"    issuer: {self.token_server.issuer}",
                f"    rootcertbundle: {self.token_server.cert}",
            ]
        self._config.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 15.0) -> None:
        """Start the registry (on the same port and storage as before) and wait for ``/v2/``."""
        if self._proc is not None and self._proc.poll() is None:
            return
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(
                [REGISTRY_BINARY, "serve", str(self._config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        verify: bool | str = str(self.ca_file) if self.ca_file else True
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"docker-registry exited with {self._proc.returncode}: "
                    f"{self._log.read_text(errors='replace')[-2000:]}"
                )
            try:
                r = requests.get(f"{self.url}/v2/", timeout=1, verify=verify)
                if r.status_code in (200, 401):
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"docker-registry did not answer on {self.url} in {timeout}s")
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the registry (SIGTERM, then SIGKILL); storage is kept."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def restart(self) -> None:
        """Stop and start again on the same port and storage."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the registry and remove its working directory if this object created it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RegistryServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _registry_available() -> None:
    if not Path(REGISTRY_BINARY).exists():
        pytest.fail(f"{REGISTRY_BINARY} is missing: apt-get install docker-registry")


@pytest.fixture
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A plain-HTTP registry on 127.0.0.1 with fresh storage."""
    _registry_available()
    with RegistryServer("plain", workdir=tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A plain-HTTP registry requiring htpasswd basic auth (``.username`` / ``.password``)."""
    _registry_available()
    with RegistryServer("basic", workdir=tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A TLS registry with a certificate from a generated test CA (``.ca_file``)."""
    _registry_available()
    with RegistryServer("tls", workdir=tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A plain-HTTP registry using Docker token auth; ``.token_server`` issues the tokens and
    takes ``.token_server.username`` / ``.token_server.password``."""
    _registry_available()
    workdir = tmp_path_factory.mktemp("registry")
    with (
        TokenServer(workdir / "token") as tokens,
        RegistryServer("token", workdir=workdir, token_server=tokens) as server,
    ):
        yield server
