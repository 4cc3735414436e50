"""A roll-out over a simulated fleet, against the obvious alternative, in one run.

N simulated hosts (edgekit.simulator: real HTTP, register, heartbeat, poll, report phases)
in C clusters of N/C hosts (one control plane, the rest workers) on a hub subprocess
(uvicorn, one SQLite writer, its roll-out controller). Two upgrades of every cluster follow,
measured alike:

1. **script**: 1.0.0 -> 1.1.0 as plain ``hub.clusters.update`` calls from this script, one
   after another, as a notebook without roll-outs would;
2. **rollout**: 1.1.0 -> 1.2.0 as a roll-out (canary 1 cluster, 10 %, rest; gate without
   soak; ``--max-unavailable``, by default every host of a cluster at once, as the script
   does).

For each: wall time to every host's new desired state (script: the last update answered,
since desired states are written with the update; roll-out: per wave, from its
``wave-started`` to the last host's desired-state event), to every host reporting it
healthy, hub CPU seconds, requests/s the hub served, the hub's peak RSS during the phase.
The controller's overhead per cluster is the roll-out's hub CPU minus the script's, each
less what its requests cost at the idle fleet's CPU per request (heartbeats and polls,
measured first; the roll-out lasts longer, so its fleet sends more of them), divided by C.
Ratios roll-out / script are printed last.

    python benchmarks/bench_rollouts.py [--hosts 10000] [--clusters 2000] [--poll 15]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from edgekit import model
from edgekit.hub import HubServer
from edgekit.model.selectors import Selector
from edgekit.simulator import Durations, FleetSimulator, SimulatedHost

OS = model.Pack.os("ubuntu", "22.04")
PROFILES = [
    model.ClusterProfile("retail", v, (OS, model.Pack.k8s("k3s", k)))
    for v, k in (("1.0.0", "1.30.4"), ("1.1.0", "1.31.0"), ("1.2.0", "1.31.2"))
]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Rss:
    """The hub's peak resident set during a phase (VmRSS sampled every 0.2 s)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.peak = max(self.peak, int(line.split()[1]))

    def __enter__(self) -> _Rss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _wave_desired_seconds(db: Path, rollout: str, generation: int) -> list[float]:
    """Per wave: from its wave-started to the last of its hosts' desired-state events."""
    con = sqlite3.connect(db, timeout=30)
    try:
        starts = dict(
            con.execute(
                "SELECT wave, max(time) FROM rollout_transitions WHERE rollout = ?"
                " AND type = 'wave-started' GROUP BY wave",
                (rollout,),
            ).fetchall()
        )
        last = dict(
            con.execute(
                # Each host's first event at the new generation is when it got it.
                "SELECT rc.wave, max(first) FROM (SELECT e.uid, min(e.time) AS first"
                "  FROM events e WHERE e.kind = 'host'"
                "  AND json_extract(e.data, '$.desiredGeneration') = ? GROUP BY e.uid) f"
                " JOIN hosts h ON h.uid = f.uid"
                " JOIN rollout_clusters rc ON rc.cluster_uid = h.cluster_uid AND rc.rollout = ?"
                " GROUP BY rc.wave",
                (generation, rollout),
            ).fetchall()
        )
    finally:
        con.close()
    return [round(last[w] - starts[w], 2) for w in sorted(starts) if w in last]


def run(args: argparse.Namespace, db: Path) -> dict[str, Any]:
    per = args.hosts // args.clusters
    if per < 1:
        raise SystemExit("--hosts must be at least --clusters")
    with HubServer(db, access_log=False, rollout_interval=args.interval) as hub:
        assert hub.pid is not None
        pid = hub.pid
        admin = hub.client(retry_for=60)
        for p in PROFILES:
            admin.profiles.publish(p)
        token = admin.tokens.create("bench", expires_in="1d")
        assert token.secret is not None
        names = [f"store-{c:05d}" for c in range(args.clusters)]
        hosts = [SimulatedHost(f"{n}-h{j}", n) for n in names for j in range(per)]
        scale = 0.01
        with FleetSimulator(
            hub.url,
            token.secret,
            hosts,
            durations=Durations(download=1, apply=1, reboot=1),
            poll_interval=args.poll / scale,
            time_scale=scale,
            workers=args.workers,
            seed=1,
        ) as sim:
            t = time.perf_counter()
            sim.wait_registered(timeout=3600)
            for n in names:
                cp, *workers = (model.PoolHost(f"{n}-h{j}") for j in range(per))
                admin.clusters.create(
                    model.Cluster(
                        n,
                        PROFILES[0].ref,
                        control_plane=model.Pool("cp", (cp,)),
                        workers=(model.Pool("workers", tuple(workers)),) if workers else (),
                    ),
                    labels={"fleet": "bench"},
                )
            sim.wait(lambda s: s.at_generation(s.hosts, 1), timeout=3600, what="every join")
            setup = time.perf_counter() - t

            cpu0, req0, t0 = _cpu_seconds(pid), sim.requests, time.perf_counter()
            time.sleep(args.idle)
            idle_rate = (_cpu_seconds(pid) - cpu0) / (time.perf_counter() - t0)
            # What one agent request costs the hub (heartbeats and polls of an idle fleet).
            per_request = (_cpu_seconds(pid) - cpu0) / max(1, sim.requests - req0)

            def phase(name: str, act: Any, generation: int) -> dict[str, Any]:
                with _Rss(pid) as rss:
                    cpu0, req0, t0 = _cpu_seconds(pid), sim.requests, time.perf_counter()
                    out = act()
                    sim.wait(
                        lambda s: s.at_generation(s.hosts, generation),
                        timeout=3600,
                        what=f"{name}: every host at {generation}",
                    )
                    wall = time.perf_counter() - t0
                    cpu = _cpu_seconds(pid) - cpu0
                    served = sim.requests - req0 + out.pop("client_requests")
                return {
                    **out,
                    "seconds_to_every_host_healthy": round(wall, 2),
                    "hub_cpu_seconds": round(cpu, 2),
                    # Less what its requests cost at the idle fleet's rate per request: what
                    # the updates themselves (and the controller) cost.
                    "hub_cpu_seconds_beyond_requests": round(cpu - per_request * served, 2),
                    "requests_per_second": round(served / wall, 1),
                    "hub_peak_rss_mib": round(rss.peak / 1024, 1),
                }

            def script() -> dict[str, Any]:
                t = time.perf_counter()
                for n in names:
                    admin.clusters.update(n, profile=PROFILES[1].ref)
                return {
                    "seconds_to_every_desired_state": round(time.perf_counter() - t, 2),
                    "client_requests": len(names),
                }

            def rollout() -> dict[str, Any]:
                handle = admin.rollouts.create(
                    model.Rollout(
                        "bench",
                        PROFILES[2].ref,
                        Selector(tags={"fleet": "bench"}),
                        waves=(
                            model.Wave("canary", count=1),
                            model.Wave("ten-percent", percent=10),
                            model.Wave("rest"),
                        ),
                        max_unavailable=args.max_unavailable or per,
                        gate=model.HealthGate(soak="0s", timeout="2h", unreachable_after="1h"),
                    )
                )
                polls = 0
                while True:
                    status = handle.status()
                    polls += 1
                    if status.settled:
                        break
                    time.sleep(1.0)
                if status.state != "completed":
                    raise SystemExit(f"the roll-out did not complete: {status}")
                waves = _wave_desired_seconds(db, "bench", 3)
                return {
                    "wave_start_to_every_desired_state_seconds": waves,
                    "seconds_to_every_desired_state": round(sum(waves), 2),
                    "client_requests": polls + 1,
                }

            a = phase("script", script, 2)
            b = phase("rollout", rollout, 3)
    overhead = (
        b["hub_cpu_seconds_beyond_requests"] - a["hub_cpu_seconds_beyond_requests"]
    ) / args.clusters
    ratio = {
        k: round(b[k] / a[k], 2) if a[k] else None
        for k in (
            "seconds_to_every_desired_state",
            "seconds_to_every_host_healthy",
            "hub_cpu_seconds",
            "requests_per_second",
            "hub_peak_rss_mib",
        )
    }
    return {
        "hosts": per * args.clusters,
        "clusters": args.clusters,
        "hosts_per_cluster": per,
        "max_unavailable": args.max_unavailable or per,
        "agent_poll_seconds": args.poll,
        "setup_seconds": round(setup, 1),
        "idle_hub_cpu_per_second": round(idle_rate, 3),
        "idle_hub_cpu_ms_per_request": round(per_request * 1000, 3),
        "script": a,
        "rollout": b,
        "controller_overhead_cpu_ms_per_cluster": round(overhead * 1000, 2),
        "ratio_rollout_to_script": ratio,
        "load_average": round(os.getloadavg()[0], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10000)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--poll", type=float, default=15.0, help="agents' poll, seconds")
    parser.add_argument("--max-unavailable", type=int, default=0, help="0: a cluster's hosts")
    parser.add_argument("--interval", type=float, default=1.0, help="controller tick, s")
    parser.add_argument("--idle", type=float, default=10.0, help="idle baseline, seconds")
    parser.add_argument("--workers", type=int, default=16, help="simulator threads")
    parser.add_argument("--db", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args, args.db or Path(tmp) / "hub.db")
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
