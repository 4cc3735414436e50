"""An update of many clusters: how long until every host's desired state has it.

N single-node clusters on a hub subprocess (uvicorn, one SQLite writer); then every
cluster's profile version is updated (a PATCH each, from C threads on keep-alive
connections). A host's desired state is written in the same transaction as its cluster's
update, so the roll-out has reached every host when the last PATCH is answered; the
benchmark then checks it from the agents' side (each host's GET /desired-state shows the new
generation) and in the database.

    python benchmarks/bench_clusters.py [--clusters 2000] [--clients 8]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sqlite3
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit import model
from edgekit.hub import HubServer
from edgekit.hub.client_clusters import cluster_body

PACKS = (model.Pack.os("ubuntu", "22.04"),)
V1 = model.ClusterProfile("retail", "1.0.0", (*PACKS, model.Pack.k8s("k3s", "1.30.4")))
V2 = model.ClusterProfile("retail", "1.1.0", (*PACKS, model.Pack.k8s("k3s", "1.31.0")))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _parallel(
    port: int,
    items: list[Any],
    clients: int,
    send: Callable[[http.client.HTTPConnection, Any], None],
) -> list[float]:
    """``send`` every item from ``clients`` threads; the latency of each."""
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(chunk: list[Any]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        for item in chunk:
            start = time.perf_counter()
            send(conn, item)
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(items[i::clients],)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def _request(
    conn: http.client.HTTPConnection, method: str, path: str, headers: dict[str, str], body: Any
) -> Any:
    data = None if body is None else json.dumps(body)
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **headers})
    response = conn.getresponse()
    payload = response.read()
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: {response.status} {payload[:300]!r}")
    return json.loads(payload) if payload else None


def run(clusters: int, clients: int, db: Path) -> dict[str, float]:
    with HubServer(db, access_log=False) as hub:
        admin = hub.client()
        key = {"ApiKey": hub.api_key.reveal()}
        token = admin.tokens.create("bench", expires_in="1d")
        assert token.secret is not None
        for profile in (V1, V2):
            admin.profiles.publish(profile)
        uids = [f"bench-{i:05d}" for i in range(clusters)]
        credentials: dict[str, str] = {}

        def register(conn: http.client.HTTPConnection, uid: str) -> None:
            answer = _request(
                conn,
                "POST",
                "/v1/edgehosts/register",
                {"EdgeHostToken": token.secret.reveal()},  # type: ignore[union-attr]
                {"hostUid": uid},
            )
            credentials[uid] = answer["credential"]

        _parallel(hub.port, uids, clients, register)

        def create(conn: http.client.HTTPConnection, uid: str) -> None:
            cluster = model.Cluster.single_node(f"c-{uid[6:]}", V1.ref, uid)
            _request(conn, "POST", "/v1/spectroclusters/edge-native", key, cluster_body(cluster))

        _parallel(hub.port, uids, clients, create)
        assert hub.pid is not None
        cpu0, t0 = _cpu_seconds(hub.pid), time.perf_counter()

        def update(conn: http.client.HTTPConnection, uid: str) -> None:
            body = {"spec": {"profile": {"name": V2.name, "version": V2.version}}}
            _request(conn, "PATCH", f"/v1/spectroclusters/c-{uid[6:]}", key, body)

        latencies = _parallel(hub.port, uids, clients, update)
        elapsed, cpu = time.perf_counter() - t0, _cpu_seconds(hub.pid) - cpu0

        def poll(conn: http.client.HTTPConnection, uid: str) -> None:
            auth = {"Authorization": f"Bearer {credentials[uid]}"}
            desired = _request(conn, "GET", f"/v1/edgehosts/{uid}/desired-state", auth, None)
            assert desired["desired"]["generation"] == 2, desired

        t1 = time.perf_counter()
        _parallel(hub.port, uids, clients, poll)
        polled = time.perf_counter() - t1
    con = sqlite3.connect(db)
    (at_two,) = con.execute(
        "SELECT count(*) FROM hosts WHERE json_extract(desired, '$.generation') = 2"
    ).fetchone()
    con.close()
    assert at_two == clusters, (at_two, clusters)
    latencies.sort()
    return {
        "clusters": clusters,
        "update_seconds": elapsed,
        "updates_per_second": clusters / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "hub_cpu_us_per_update": cpu / clusters * 1e6,
        "agents_poll_seconds": polled,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--db", type=Path, default=None)
    args = parser.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.clusters, args.clients, args.db or Path(tmp) / "hub.db")
    json.dump(result, sys.stdout, indent=2)
    print(f"\nload average: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
