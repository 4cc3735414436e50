"""Run a hub in a subprocess on 127.0.0.1: for tests, notebooks and benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import requests

from edgekit.errors import RegistrationError
from edgekit.hub.client import HostClient, HubClient
from edgekit.hub.migrations import parse_url, redact
from edgekit.hub.security import Secret, new_secret
from edgekit.hub.server import API_KEY_ENV, DEFAULT_MAX_BODY, TlsFiles
from edgekit.hub.store import DEFAULT_UNREACHABLE_AFTER
from edgekit.hub.throttle import DEFAULT_THROTTLE, ThrottleLimits

__all__ = ["HubServer"]


class HubServer:
    """A hub in a child process, listening on 127.0.0.1; use it as a context manager.

    The parent owns the listening socket and hands it to the child, so the port stays the
    same (and connections queue in its backlog) across :meth:`kill` and :meth:`start`.
    """

    def __init__(
        self,
        db_path: str | Path | None = None,
        *,
        api_key: str | Secret | None = None,
        tls: TlsFiles | None = None,
        port: int = 0,
        access_log: bool = True,
        max_body: int = DEFAULT_MAX_BODY,
        synchronous: str = "NORMAL",
        unreachable_after: float = DEFAULT_UNREACHABLE_AFTER,
        throttle: ThrottleLimits = DEFAULT_THROTTLE,
        start_timeout: float = 30.0,
        rollout_interval: float = 1.0,
    ) -> None:
        self._tmp: str | None = None
        kind, _ = parse_url(db_path if db_path is not None else "")
        if db_path is None or kind != "sqlite":
            self._tmp = tempfile.mkdtemp(prefix="edgekit-hub-")
        if db_path is None:
            db_path = Path(self._tmp or "") / "hub.db"
        #: The store's URL or SQLite path, as given (``postgresql://...`` or a path).
        self.db_url = str(db_path)
        #: The SQLite file (a PostgreSQL hub: a file in a temporary directory that stays
        #: absent, next to which the log is written).
        self.db_path = Path(db_path) if kind == "sqlite" else Path(self._tmp or "") / "hub.db"
        if isinstance(api_key, str):
            api_key = Secret(api_key)
        self.api_key: Secret = api_key or Secret(new_secret("eka_"))
        self.tls = tls
        self.access_log = access_log
        self.max_body = max_body
        self.synchronous = synchronous
        self.unreachable_after = unreachable_after
        self.throttle = throttle
        self.start_timeout = start_timeout
        self.rollout_interval = rollout_interval  # seconds between roll-out controller ticks
        self.log_path = self.db_path.with_name(self.db_path.name + ".log")
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(2048)
        self._sock.set_inheritable(True)
        self.port: int = self._sock.getsockname()[1]
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The hub's base URL."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> HubServer:
        """Start the child (again) and wait until it answers."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        cmd = [
            sys.executable,
            "-m",
            "edgekit.hub.server",
            "--db",
            self.db_url,
            "--fd",
            str(self._sock.fileno()),
            "--max-body",
            str(self.max_body),
            "--synchronous",
            self.synchronous,
            "--unreachable-after",
            str(self.unreachable_after),
            "--auth-failures-per-source",
            str(self.throttle.per_source),
            "--auth-failures-per-target",
            str(self.throttle.per_target),
            "--auth-window",
            str(self.throttle.window),
            "--rollout-interval",
            str(self.rollout_interval),
        ]
        if not self.access_log:
            cmd.append("--no-access-log")
        if self.tls is not None:
            cmd += ["--certfile", str(self.tls.certfile), "--keyfile", str(self.tls.keyfile)]
        # The key travels in the environment, not argv, which other users can read in ps.
        env = {**os.environ, API_KEY_ENV: self.api_key.reveal()}
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, pass_fds=[self._sock.fileno()]
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        verify: str | bool = str(self.tls.certfile) if self.tls else True
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RegistrationError(
                    f"the hub exited with code {self._proc.returncode} while starting; "
                    f"see {self.log_path}:\n{self.log_tail()}"
                )
            try:
                if requests.get(self.url + "/healthz", timeout=1, verify=verify).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.kill()
        raise RegistrationError(f"the hub did not answer within {self.start_timeout} s")

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the child wrote."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL the child (the socket stays open, so it can be started again)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the child gracefully (SIGTERM), killing it after ``timeout`` seconds."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def close(self) -> None:
        """Stop the child, close the socket and remove a temporary database."""
        self.stop()
        self._sock.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def client(self, *, retry_for: float = 10.0) -> HubClient:
        """An admin client for this hub."""
        ca = self.tls.certfile if self.tls else None
        return HubClient(self.url, api_key=self.api_key, ca_cert=ca, retry_for=retry_for)

    def host_client(self, uid: str, *, retry_for: float = 60.0) -> HostClient:
        """A host-side client for ``uid`` against this hub."""
        ca = self.tls.certfile if self.tls else None
        return HostClient(self.url, uid, ca_cert=ca, retry_for=retry_for)

    def __enter__(self) -> HubServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HubServer({self.url!r}, db={redact(self.db_url)!r})"
