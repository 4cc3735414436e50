"""Heartbeats while another replica writes: latency with and without the writer lock.

On PostgreSQL every write that records an event takes the hub's one writer lock
(``pg_advisory_xact_lock``) for its whole transaction. A heartbeat of a known host records
no event and runs without it (``HubStore.unordered()``); before, it joined the lock's queue.
This runs a "replica A" thread that holds the lock in long write transactions (``--hold``
ms each, ``--gap`` ms apart, as a large cluster update or a roll-out tick would) and, on a
second connection ("replica B"), sends heartbeats of other hosts one after another: the
current path, then the old one (the same UPDATE inside ``transaction()``, i.e. under the
lock), interleaved in rounds in the same run. Prints per-path latency percentiles, the ratios of
the means and of the 99th percentiles (new / old), and the peak RSS. The old path's median
stays low (heartbeats sent one after another slip through in A's gaps); its mean and tail
carry the waits for the lock.

    python benchmarks/bench_hub_lock.py [--heartbeats 300] [--hold 50] [--gap 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edgekit.hub.records import HostFields
from edgekit.hub.store import HubStore
from edgekit.testing import PostgresServer

HOSTS = 50


def _writer(url: str, hold: float, gap: float, stop: threading.Event) -> None:
    """Replica A: long write transactions under the writer lock, touching other rows."""
    store = HubStore(url)
    try:
        while not stop.is_set():
            with store.transaction() as db:
                db.execute("UPDATE settings SET value = value WHERE key = 'bench'")
                time.sleep(hold)
            time.sleep(gap)
    finally:
        store.close()


def _old_heartbeat(store: HubStore, uid: str) -> None:
    # What a heartbeat was before: its UPDATE inside an ordered (locked) transaction.
    with store.transaction():
        store.heartbeat(uid, address="10.0.0.1")


def _new_heartbeat(store: HubStore, uid: str) -> None:
    store.heartbeat(uid, address="10.0.0.1")


def _latencies(store: HubStore, beat: Callable[[HubStore, str], None], n: int) -> list[float]:
    out = []
    for i in range(n):
        started = time.perf_counter()
        beat(store, f"h-{i % HOSTS}")
        out.append((time.perf_counter() - started) * 1000)
    return out


def _summary(ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=100)
    return {
        "p50_ms": round(q[49], 2),
        "p99_ms": round(q[98], 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--heartbeats", type=int, default=300, help="per path and round")
    parser.add_argument("--hold", type=float, default=50.0, help="ms replica A holds the lock")
    parser.add_argument("--gap", type=float, default=10.0, help="ms between A's transactions")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="edgekit-pg-"))).start()
    try:
        url = server.database()
        store = HubStore(url)
        token, _ = store.create_token("bench", expiry=time.time() + 3600)
        for i in range(HOSTS):
            uid = f"h-{i}"
            store.add_host(
                HostFields(uid=uid), token_uid=token.uid, site=None, credential_hash=uid, now=1
            )
            store.heartbeat(uid, address="10.0.0.1")  # past 'registered'
        store.set_setting("bench", "x")
        stop = threading.Event()
        writer = threading.Thread(
            target=_writer, args=(url, args.hold / 1000, args.gap / 1000, stop), daemon=True
        )
        writer.start()
        time.sleep(0.5)
        new: list[float] = []
        old: list[float] = []
        for _ in range(args.rounds):
            new += _latencies(store, _new_heartbeat, args.heartbeats)
            old += _latencies(store, _old_heartbeat, args.heartbeats)
        stop.set()
        writer.join(10)
        store.close()
    finally:
        server.close()
    result = {
        "hold_ms": args.hold,
        "gap_ms": args.gap,
        "heartbeats_per_path": len(new),
        "without_lock": _summary(new),
        "under_lock_before": _summary(old),
        "ratio_mean_new_over_old": round(statistics.fmean(new) / statistics.fmean(old), 3),
        "ratio_p99_new_over_old": round(_summary(new)["p99_ms"] / _summary(old)["p99_ms"], 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
