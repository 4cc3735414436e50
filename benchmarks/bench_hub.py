"""Registration load on the hub: N registrations from C concurrent clients.

The hub runs in a subprocess (uvicorn, one event loop, one store connection: SQLite by
default, or the database ``--db`` names, e.g. ``postgresql://...``); the clients run
in P processes of C/P threads each, every thread on its own keep-alive connection (raw
http.client, so the clients' own CPU cost stays small on a 2-core machine). Afterwards the
database is counted: rows == distinct uids == N, i.e. nothing lost or duplicated.

    python benchmarks/bench_hub.py [--registrations 10000] [--clients 64] [--processes 4]
        [--db sqlite:///PATH | postgresql://USER@HOST:PORT/DB | --postgres] [--replicas N]

``--postgres`` starts a throw-away PostgreSQL (Debian's package, durable commits) for the
run; ``--replicas N`` runs N hub processes on it, the client processes spread over them.
"""

from __future__ import annotations

import argparse
import contextlib
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

from edgekit.hub import HubServer
from edgekit.hub.store import HubStore


def _client_thread(
    port: int, token: str, uids: list[str], latencies: list[float], retries: list[int]
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json", "EdgeHostToken": token}
    for uid in uids:
        body = json.dumps(
            {"hostUid": uid, "arch": "amd64", "hostAddress": "10.1.0.1", "tags": {"b": "1"}}
        )
        while True:
            start = time.perf_counter()
            try:
                conn.request("POST", "/v1/edgehosts/register", body, headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                # Registration is idempotent by uid: retrying after a lost answer is safe.
                retries[0] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                time.sleep(0.01)
                continue
            if response.status != 200:
                raise RuntimeError(f"registration of {uid} answered {response.status}")
            latencies.append(time.perf_counter() - start)
            break
    conn.close()


def _client_process(port: int, token: str, uids: list[str], threads: int, out: Any) -> None:
    latencies: list[float] = []
    retries = [0]
    shares = [uids[i::threads] for i in range(threads)]
    workers = [
        threading.Thread(target=_client_thread, args=(port, token, s, latencies, retries))
        for s in shares
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put((latencies, retries[0]))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(
    registrations: int = 10_000,
    clients: int = 64,
    processes: int = 4,
    db_path: str | Path | None = None,
    replicas: int = 1,
) -> dict[str, float]:
    """Run the load once; returns rate, latency percentiles and the row counts. With
    ``replicas`` > 1 (PostgreSQL only), client process p sends to replica p mod replicas."""
    if replicas > 1 and (db_path is None or not str(db_path).startswith("postgres")):
        raise SystemExit("--replicas needs a PostgreSQL --db (or --postgres)")
    with contextlib.ExitStack() as stack:
        hubs = [stack.enter_context(HubServer(db_path, access_log=False))]
        for _ in range(replicas - 1):
            hubs.append(
                stack.enter_context(HubServer(db_path, access_log=False, api_key=hubs[0].api_key))
            )
        hub = hubs[0]
        token = hub.client().tokens.create("bench", site="bench", expires_in="1h").secret
        assert token is not None
        uids = [f"bench-{i:06d}" for i in range(registrations)]
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()
        per_proc = clients // processes
        procs = [
            ctx.Process(
                target=_client_process,
                args=(hubs[p % replicas].port, token.reveal(), uids[p::processes], per_proc, out),
            )
            for p in range(processes)
        ]
        pids = [h.pid for h in hubs]
        assert None not in pids
        cpu_before = sum(_cpu_seconds(pid) for pid in pids if pid is not None)
        start = time.perf_counter()
        for p in procs:
            p.start()
        results = [out.get(timeout=600) for _ in procs]
        elapsed = time.perf_counter() - start
        server_cpu = sum(_cpu_seconds(pid) for pid in pids if pid is not None) - cpu_before
        for p in procs:
            p.join(timeout=30)
        for h in hubs:
            h.stop()
        store = HubStore(hub.db_url)
        rows, distinct = store.count_hosts()
        store.close()
    latencies = sorted(x for lat, _ in results for x in lat)
    q = statistics.quantiles(latencies, n=100)
    return {
        "registrations": registrations,
        "clients": clients,
        "replicas": replicas,
        "seconds": round(elapsed, 3),
        "rate_per_s": round(registrations / elapsed, 1),
        "p50_ms": round(q[49] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
        # Hub CPU per registration (all replicas; PostgreSQL's own is not counted): the
        # figure that does not depend on what else the shared machine is running.
        "server_cpu_us_per_registration": round(server_cpu / registrations * 1e6, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "retries": sum(r for _, r in results),
        "rows": rows,
        "distinct_uids": distinct,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--registrations", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--db", default=None, help="the store (default: a temporary SQLite)")
    parser.add_argument(
        "--postgres", action="store_true", help="start a throw-away PostgreSQL and use it"
    )
    parser.add_argument("--replicas", type=int, default=1, help="hub processes (PostgreSQL)")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        db = args.db
        if args.postgres:
            from edgekit.testing import PostgresServer

            server = PostgresServer(Path(tempfile.mkdtemp(prefix="edgekit-pg-")), durable=True)
            stack.callback(server.close)
            db = server.start().database()
        result = run(args.registrations, args.clients, args.processes, db, args.replicas)
    print(json.dumps(result, indent=2))
    ok = result["rows"] == result["distinct_uids"] == args.registrations
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
