"""What the hub benchmarks share: the calls an agent makes on its schedule, and a process's
CPU time. Imported by the scripts beside it (``python benchmarks/bench_x.py`` puts this
folder first on ``sys.path``)."""

from __future__ import annotations

import http.client
import os
import time
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def agent_round(
    conn: http.client.HTTPConnection,
    hosts: list[tuple[str, str]],
    until: float,
    latencies: list[float],
) -> None:
    """One turn of each of ``hosts`` (uid, credential) in order, as its agent polls: a
    heartbeat, then a GET of its desired state, each answer's latency appended to
    ``latencies``. Stops after the host at which ``time.monotonic()`` reaches ``until``."""
    for uid, credential in hosts:
        auth = {"Authorization": f"Bearer {credential}", "Content-Type": "application/json"}
        for method, suffix, body in (
            ("POST", "/heartbeat", "{}"),
            ("GET", "/desired-state", None),
        ):
            start = time.perf_counter()
            conn.request(method, f"/v1/edgehosts/{uid}{suffix}", body=body, headers=auth)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{method} {uid}{suffix}: {response.status}")
            latencies.append(time.perf_counter() - start)
        if time.monotonic() >= until:
            return
