"""Replicas that record failed logins at the same moment for the same keys never deadlock
on PostgreSQL while they prune ``auth_failures``, and the table stays bounded.

Each replica is a :class:`HubStore` of its own (its own connection, as a hub process has)
in a thread of its own; psycopg leaves the GIL while it waits for the server, so their
transactions really overlap in PostgreSQL. Before the prunes skipped locked rows, each
race below ended in deadlocks (``StoreUnavailable: deadlock detected``) on most runs.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from edgekit.hub.store import HubStore
from edgekit.hub.store_throttle import FailureLog
from edgekit.testing import PostgresServer

REPLICAS = 8
LIMIT = 3
SOURCES = [f"source:198.51.100.{i}" for i in range(3)]
TARGETS = ["target:admin", "target:tokens"]
KEYS = SOURCES + TARGETS


@pytest.fixture
def logs(hub_postgres: PostgresServer) -> Iterator[list[FailureLog]]:
    """``REPLICAS`` failure logs, each on a store of its own, on one new database."""
    url = hub_postgres.database()
    # PostgreSQL looks for a deadlock only after a lock wait of deadlock_timeout (1 s):
    # sooner, so that a deadlock is found (and fails the test) well within a race.
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(hub_postgres.url(), autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE \"{name}\" SET deadlock_timeout = '50ms'")
    stores: list[HubStore] = []
    try:
        for _ in range(REPLICAS):
            stores.append(HubStore(url))  # the first one migrates the database
        yield [FailureLog(store, f"replica-{i}") for i, store in enumerate(stores)]
    finally:
        for store in stores:
            store.close()
        hub_postgres.drop(url)


def _counts(log: FailureLog) -> dict[str, int]:
    rows = log.store._db.execute("SELECT key, COUNT(*) FROM auth_failures GROUP BY key")
    return {str(r[0]): int(r[1]) for r in rows.fetchall()}


def _newest(log: FailureLog, key: str) -> list[tuple[int, float]]:
    rows = log.store._db.execute(
        "SELECT id, at FROM auth_failures WHERE key = ? ORDER BY at DESC, id DESC", (key,)
    )
    return [(int(r[0]), float(r[1])) for r in rows.fetchall()]


def _race(logs: list[FailureLog], window: float, any_order: bool, seconds: float) -> int:
    """Every log records failures as fast as it can for ``seconds``, each of a random
    source and target (``any_order``: half of them target first; ``record`` takes its keys
    in any order). Asserts none failed; returns how many were recorded."""
    errors: list[str] = []
    made = [0]
    lock = threading.Lock()
    start = threading.Barrier(len(logs))
    end = time.monotonic() + seconds

    def run(log: FailureLog, seed: int) -> None:
        rnd = random.Random(seed)
        start.wait()
        while time.monotonic() < end:
            keys = [(rnd.choice(SOURCES), LIMIT), (rnd.choice(TARGETS), LIMIT)]
            if any_order and rnd.random() < 0.5:
                keys.reverse()
            try:
                log.record(keys, time.time(), window)
            except Exception as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {getattr(exc, 'detail', exc)}")
            else:
                with lock:
                    made[0] += 1

    threads = [
        threading.Thread(target=run, args=(log, i), daemon=True) for i, log in enumerate(logs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        # Bounded: a replica stuck in a lock wait fails the test instead of hanging it.
        thread.join(seconds + 30)
    assert not any(t.is_alive() for t in threads), "a replica is stuck in record()"
    assert errors == [], f"{len(errors)} of {made[0] + len(errors)} failed: {errors[:2]}"
    assert made[0] > 20 * len(logs)  # the replicas really raced
    return made[0]


ORDERS = pytest.mark.parametrize("any_order", [False, True], ids=["source-first", "any-order"])


@ORDERS
def test_racing_prunes_of_the_window_do_not_deadlock(
    logs: list[FailureLog], any_order: bool
) -> None:
    """A window much shorter than the race: rows leave it all the time, so each record's
    window prune deletes rows of the keys the other replicas' per-key prunes delete."""
    window = 0.02
    _race(logs, window, any_order, seconds=3)
    counts = _counts(logs[0])
    assert set(counts) <= set(KEYS)
    # The window bounds the table: only rows of the last moments of the race are left.
    assert sum(counts.values()) <= len(KEYS) * (LIMIT + REPLICAS - 1), counts
    # The next failure, with nobody racing, leaves nothing older than the window.
    now = time.time() + window
    logs[0].record([(KEYS[0], LIMIT)], now, window)
    assert _counts(logs[0]) == {KEYS[0]: 1}
    assert _newest(logs[0], KEYS[0])[0][1] == now


@ORDERS
def test_racing_prunes_of_each_key_do_not_deadlock_and_keep_the_newest(
    logs: list[FailureLog], any_order: bool
) -> None:
    """A window longer than the race: only the per-key prune deletes, on the same few keys
    from every replica."""
    window = 3600.0
    _race(logs, window, any_order, seconds=3)
    counts = _counts(logs[0])
    assert set(counts) == set(KEYS)
    # A concurrent replica's new row is invisible to a prune until it commits, so a key
    # may hold more than its limit for a moment: at most one row per other replica.
    assert all(LIMIT <= n <= LIMIT + REPLICAS - 1 for n in counts.values()), counts
    kept = {key: [row for row, _ in _newest(logs[0], key)[: LIMIT - 1]] for key in KEYS}
    # The next failure of each key, with nobody racing, prunes it to exactly its limit:
    # the new row and the newest ones before it.
    now = time.time() + 1
    for key in KEYS:
        logs[1].record([(key, LIMIT)], now, window)
    for key in KEYS:
        rows = _newest(logs[0], key)
        assert rows[0][1] == now
        assert [row for row, _ in rows[1:]] == kept[key], key
