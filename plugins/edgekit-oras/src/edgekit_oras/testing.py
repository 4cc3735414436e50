"""Test fixtures: a real CNCF distribution registry (Debian's ``docker-registry``) on 127.0.0.1.

``RegistryServer`` starts ``/usr/bin/docker-registry`` with a generated config in one of three
modes (plain HTTP, htpasswd basic auth, TLS with a generated test CA), waits until ``/v2/``
answers, and stops it on exit.  It can be stopped and started again on the same storage and
port, which fault tests use to simulate a registry restart mid-push.

The pytest fixtures ``registry``, ``auth_registry`` and ``tls_registry`` are exposed through the
``pytest11`` entry point ``edgekit_oras``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Literal

import pytest
import requests

__all__ = [
    "REGISTRY_BINARY",
    "RegistryServer",
    "auth_registry",
    "free_port",
    "registry",
    "tls_registry",
]

REGISTRY_BINARY = "/usr/bin/docker-registry"

Mode = Literal["plain", "basic", "tls"]


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
    ) -> None:
        if mode not in ("plain", "basic", "tls"):
            raise ValueError(f"unknown registry mode {mode!r}")
        self.mode: Mode = mode
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="edgekit-registry-"))
        self.storage = self.workdir / "storage"
        self.port = port or free_port()
        self.username = username
        self.password = password
        self.ca_file: Path | None = None
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
        """True when the registry speaks plain HTTP (modes ``plain`` and ``basic``)."""
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
