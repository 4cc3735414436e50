"""A fleet's steady load on one hub: N hosts, each sending a heartbeat and polling its desired
state every I seconds (as the agent does), for D seconds.

The hosts are registered in-process first (the registration rate is bench_hub.py's
subject); then a hub subprocess serves P client processes of T threads, each thread on its
own keep-alive connection driving its share of the hosts on the agents' schedule. It
reports the sustained request rate against the rate the schedule asks for, latency
percentiles, and the hub's CPU per request.

    python benchmarks/bench_fleet.py [--hosts 10000] [--interval 5] [--seconds 30]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agent_load import agent_round, cpu_seconds

from edgekit.hub import HubServer
from edgekit.hub.domain import Hub
from edgekit.hub.records import HostFields
from edgekit.hub.security import new_secret
from edgekit.hub.server import ensure_api_key
from edgekit.hub.store import HubStore


def _thread(
    port: int, hosts: list[tuple[str, str]], interval: float, until: float, out: list[float]
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    next_cycle = time.monotonic()
    while time.monotonic() < until:
        agent_round(conn, hosts, until, out)
        if time.monotonic() >= until:
            return
        next_cycle += interval
        time.sleep(max(0.0, next_cycle - time.monotonic()))


def _process(
    port: int,
    hosts: list[tuple[str, str]],
    threads: int,
    interval: float,
    seconds: float,
    queue: Any,
) -> None:
    until = time.monotonic() + seconds
    latencies: list[float] = []
    workers = [
        threading.Thread(target=_thread, args=(port, hosts[i::threads], interval, until, latencies))
        for i in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    queue.put(latencies)


def run(
    hosts: int, interval: float, seconds: float, processes: int, threads: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "hub.db"
        key = new_secret("eka_")
        store = HubStore(db)
        ensure_api_key(store, key)
        hub = Hub(store)
        _, token = hub.create_token("bench", expiry=time.time() + 3600)
        fleet = []
        for i in range(hosts):
            credential = new_secret("ekh_")
            hub.register(
                HostFields(uid=f"fleet-{i:05d}"), token_secret=token, credential=credential
            )
            fleet.append((f"fleet-{i:05d}", credential))
        store.close()
        with HubServer(db, api_key=key, access_log=False) as server:
            ctx = multiprocessing.get_context("fork")
            queue = ctx.Queue()
            procs = [
                ctx.Process(
                    target=_process,
                    args=(server.port, fleet[p::processes], threads, interval, seconds, queue),
                )
                for p in range(processes)
            ]
            assert server.pid is not None
            cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
            for p in procs:
                p.start()
            results = [queue.get(timeout=seconds + 600) for _ in procs]
            elapsed = time.perf_counter() - t0
            cpu = cpu_seconds(server.pid) - cpu0
            for p in procs:
                p.join(timeout=30)
    latencies = sorted(x for r in results for x in r)
    q = statistics.quantiles(latencies, n=100)
    return {
        "hosts": hosts,
        "interval_s": interval,
        "seconds": round(elapsed, 1),
        "asked_rate_per_s": round(2 * hosts / interval, 1),
        "sustained_rate_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(q[49] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
        "hub_cpu_us_per_request": round(cpu / len(latencies) * 1e6, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args(argv)
    result = run(args.hosts, args.interval, args.seconds, args.processes, args.threads)
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
