"""Registration load on the hub: N registrations from C concurrent clients.

The hub runs in a subprocess (uvicorn, one event loop, one store connection: SQLite by
default, or the database ``--db`` names, e.g. ``postgresql://...``); the clients run
in P processes of C/P threads each, every thread on its own keep-alive connection (raw
http.client, so the clients' own CPU cost stays small on a 2-core machine). Afterwards the
database is counted: rows == distinct uids == N, i.e. nothing lost or duplicated.

    python benchmarks/bench_hub.py [--registrations 10000] [--clients 64] [--processes 4]
        [--db sqlite:///PATH | postgresql://USER@HOST:PORT/DB | --postgres] [--replicas N]
        [--poll-seconds S]

``--postgres`` starts a throw-away PostgreSQL (Debian's package, durable commits) for the
run; ``--replicas N`` runs N hub processes on it, the client processes spread over them.
``--poll-seconds S`` then has the registered hosts poll as agents do (a heartbeat and a GET
of the desired state each, closed loop) for S seconds: poll/s and hub CPU per poll request.
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

from agent_load import agent_round, cpu_seconds

from edgekit.hub import HubServer
from edgekit.hub.store import HubStore


def _client_thread(
    port: int,
    token: str,
    uids: list[str],
    latencies: list[float],
    retries: list[int],
    credentials: list[tuple[str, str]],
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
                answer = response.read()
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
            # Sent without a credential of its own, a host gets one in the answer.
            credentials.append((uid, json.loads(answer)["credential"]))
            break
    conn.close()


def _poll_thread(
    port: int, hosts: list[tuple[str, str]], until: float, latencies: list[float]
) -> None:
    """An agent's steady calls, as fast as the hub answers: a heartbeat and a GET of the
    desired state per host in turn (closed loop: the rate is what the hub sustains)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while time.monotonic() < until:
        agent_round(conn, hosts, until, latencies)
    conn.close()


def _client_process(
    port: int, token: str, uids: list[str], threads: int, out: Any, poll: Any, poll_s: float
) -> None:
    latencies: list[float] = []
    retries = [0]
    credentials: list[tuple[str, str]] = []
    shares = [uids[i::threads] for i in range(threads)]
    workers = [
        threading.Thread(
            target=_client_thread, args=(port, token, s, latencies, retries, credentials)
        )
        for s in shares
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put((latencies, retries[0]))
    if poll_s <= 0:
        return
    # The poll phase starts in every process at once, when the parent says so (so that
    # the hub's CPU of the two phases is measured apart).
    poll.wait()
    until = time.monotonic() + poll_s
    polls: list[float] = []
    workers = [
        threading.Thread(target=_poll_thread, args=(port, credentials[i::threads], until, polls))
        for i in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put(polls)


def _postgres_cpu_seconds(data: Path | None) -> float:
    """CPU time of a PostgreSQL server so far: the postmaster, its reaped children (its
    cutime/cstime) and its live ones (the hubs' backends)."""
    if data is None:
        return 0.0
    master = int((data / "postmaster.pid").read_text().split()[0])
    fields = Path(f"/proc/{master}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            f = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(f[1]) == master:
            ticks += int(f[11]) + int(f[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def run(
    registrations: int = 10_000,
    clients: int = 64,
    processes: int = 4,
    db_path: str | Path | None = None,
    replicas: int = 1,
    poll_seconds: float = 0.0,
    postgres_data: Path | None = None,
) -> dict[str, float]:
    """Run the load once; returns rate, latency percentiles and the row counts. With
    ``replicas`` > 1 (PostgreSQL only), client process p sends to replica p mod replicas.
    With ``poll_seconds``, the registered hosts then poll (heartbeat + desired state) for
    that long, and the poll rate and hub CPU per poll request are reported too; with
    ``postgres_data`` (the server's data directory), PostgreSQL's CPU per request too."""
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
        poll = ctx.Event()
        per_proc = clients // processes
        procs = [
            ctx.Process(
                target=_client_process,
                args=(
                    hubs[p % replicas].port,
                    token.reveal(),
                    uids[p::processes],
                    per_proc,
                    out,
                    poll,
                    poll_seconds,
                ),
            )
            for p in range(processes)
        ]
        pids = [h.pid for h in hubs]
        assert None not in pids
        cpu_before = sum(cpu_seconds(pid) for pid in pids if pid is not None)
        db_before = _postgres_cpu_seconds(postgres_data)
        start = time.perf_counter()
        for p in procs:
            p.start()
        results = [out.get(timeout=600) for _ in procs]
        elapsed = time.perf_counter() - start
        server_cpu = sum(cpu_seconds(pid) for pid in pids if pid is not None) - cpu_before
        db_cpu = _postgres_cpu_seconds(postgres_data) - db_before
        polled: dict[str, float] = {}
        if poll_seconds > 0:
            cpu_before = sum(cpu_seconds(pid) for pid in pids if pid is not None)
            db_before = _postgres_cpu_seconds(postgres_data)
            start = time.perf_counter()
            poll.set()
            polls = sorted(x for _ in procs for x in out.get(timeout=poll_seconds + 600))
            poll_elapsed = time.perf_counter() - start
            poll_cpu = sum(cpu_seconds(pid) for pid in pids if pid is not None) - cpu_before
            poll_db_cpu = _postgres_cpu_seconds(postgres_data) - db_before
            pq = statistics.quantiles(polls, n=100)
            polled = {
                "poll_requests": len(polls),
                "poll_rate_per_s": round(len(polls) / poll_elapsed, 1),
                "poll_p50_ms": round(pq[49] * 1000, 2),
                "poll_p99_ms": round(pq[98] * 1000, 2),
                "server_cpu_us_per_poll_request": round(poll_cpu / len(polls) * 1e6, 1),
            }
            if postgres_data is not None:
                polled["postgres_cpu_us_per_poll_request"] = round(
                    poll_db_cpu / len(polls) * 1e6, 1
                )
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
        # PostgreSQL's own CPU (a server --postgres started; not measured otherwise).
        **(
            {"postgres_cpu_us_per_registration": round(db_cpu / registrations * 1e6, 1)}
            if postgres_data is not None
            else {}
        ),
        **polled,
        "load_average_1m_end": round(os.getloadavg()[0], 2),
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
    parser.add_argument(
        "--poll-seconds",
        type=float,
        default=0.0,
        help="then the registered hosts poll (heartbeat + desired state) for this long",
    )
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        db = args.db
        data = None
        if args.postgres:
            from edgekit.testing import PostgresServer

            server = PostgresServer(Path(tempfile.mkdtemp(prefix="edgekit-pg-")), durable=True)
            stack.callback(server.close)
            db = server.start().database()
            data = server.data
        result = run(
            args.registrations,
            args.clients,
            args.processes,
            db,
            args.replicas,
            args.poll_seconds,
            data,
        )
    print(json.dumps(result, indent=2))
    ok = result["rows"] == result["distinct_uids"] == args.registrations
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
