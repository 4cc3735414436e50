"""Helpers for the agent's QEMU tests: the sample OS with the agent, site ISOs, a bounded boot."""

from __future__ import annotations

import http.client
import http.server
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from edgekit_agent import agent_entries

from edgekit.config import render_user_data
from edgekit.cpio import CpioEntry, append_to_initrd
from edgekit.model import Site
from edgekit.model.sites import Network
from edgekit.model.userdata import UserData

CACHE = Path(os.environ.get("EDGEKIT_TEST_CACHE", "/tmp/edgekit-test-cache"))

#: A test-only hook after the agent: shows what the agent left in /var/lib/edgekit.
STATE_HOOK = b"""#!/bin/sh
echo "state-dir: $(ls /var/lib/edgekit 2>/dev/null | tr '\\n' ' ')"
for f in /var/lib/edgekit/credential /var/lib/edgekit/assignment.env; do
    [ -e "$f" ] && echo "mode: $(stat -c '%a' "$f") $f"
done
[ -r /var/lib/edgekit/assignment.env ] && sed 's/^/assignment: /' /var/lib/edgekit/assignment.env
exit 0
"""


def agent_initrd(base: Path, dest: Path) -> Path:
    """``base`` + the agent, its hook and the state-reporting test hook."""
    entries = [
        *agent_entries(),
        CpioEntry.file("etc/edgekit/boot.d/70-test-state", STATE_HOOK, mode=0o755),
    ]
    return append_to_initrd(base, entries, dest)


def site_user_data(
    endpoint: str, token: str, site: str, tags: dict[str, str], *, http_proxy: str | None = None
) -> str:
    """Realistic user-data, rendered the way edgekit renders it for a site ISO."""
    network = Network(http_proxy=http_proxy, no_proxy="10.0.0.0/8,.internal")
    model_site = Site(name=site, tags=tags, network=network if http_proxy else Network())
    return render_user_data(UserData.for_site(model_site, endpoint, token, "edge-sites"))


class Boot:
    """A QEMU (TCG) boot of the sample OS; always killed on :meth:`finish`."""

    def __init__(
        self,
        log: Path,
        *,
        kernel: Path | None = None,
        initrd: Path | None = None,
        append: str = "",
        boot_iso: Path | None = None,
        cdroms: Sequence[Path] = (),
        disks: Sequence[Path] = (),
        uuid: str | None = None,
        network: bool = True,
    ) -> None:
        self.log = log
        argv = [
            "qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-nographic", "-nodefaults",
            "-no-reboot", "-monitor", "none", "-serial", f"file:{log}",
        ]  # fmt: skip
        if network:  # QEMU user networking: the host's 127.0.0.1 is 10.0.2.2
            argv += ["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"]
        if kernel is not None and initrd is not None:
            argv += ["-kernel", str(kernel), "-initrd", str(initrd)]
            argv += ["-append", f"console=ttyS0 panic=-1 {append}"]
        if boot_iso is not None:  # BIOS boot from the installer ISO as the first CD
            argv += ["-drive", f"file={boot_iso},media=cdrom,readonly=on,if=ide,index=0"]
            argv += ["-boot", "d"]
        if uuid is not None:
            argv += ["-uuid", uuid]
        for disk in disks:  # virtio disks, written in place
            argv += ["-drive", f"file={disk},format=raw,if=virtio"]
        for n, cd in enumerate(cdroms):
            argv += ["-drive", f"file={cd},media=cdrom,readonly=on,if=ide,index={1 + n}"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def text(self) -> str:
        """The serial log so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``predicate`` until true; fail with the serial log after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc.poll() is not None and not predicate():
                raise AssertionError(f"QEMU exited before {what}; serial log:\n{self.text()}")
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; log:\n{self.text()}")

    def finish(self, timeout: float) -> str:
        """Wait for power-off (at most ``timeout`` s), kill QEMU if needed; the serial log."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            self.kill()
        return self.text()

    def kill(self) -> None:
        """Kill QEMU if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


class FlakyFront(http.server.ThreadingHTTPServer):
    """A proxy on 127.0.0.1 in front of a hub: answers 503 to the first ``fail_first``
    registrations, then forwards every request to the hub. It also serves as a forward
    proxy (absolute-form requests are counted in ``proxied`` and sent to the hub too)."""

    def __init__(self, hub_port: int, fail_first: int) -> None:
        super().__init__(("127.0.0.1", 0), _FrontHandler)
        self.hub_port = hub_port
        self.fail_first = fail_first
        self.registrations = 0
        self.proxied = 0
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=5)


class _FrontHandler(http.server.BaseHTTPRequestHandler):
    server: FlakyFront

    def log_message(self, format: str, *args: object) -> None:
        return None

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length) if length else None
        path = self.path
        if path.startswith("http://"):  # absolute-form: we are being used as a forward proxy
            self.server.proxied += 1
            parts = urlsplit(path)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
        if path.endswith("/register"):
            self.server.registrations += 1
            if self.server.registrations <= self.server.fail_first:
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        conn = http.client.HTTPConnection("127.0.0.1", self.server.hub_port, timeout=10)
        conn.request(self.command, path, body=body, headers=dict(self.headers.items()))
        answer = conn.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.getheader("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = _forward
    do_POST = _forward
