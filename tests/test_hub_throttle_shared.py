"""The failed-authentication throttle counts across hub replicas on one database: failures
are written to ``auth_failures`` and every replica reads the others' at most once per
second; the table stays bounded; an unreachable database never turns a 401 into a 500."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hub_asgi import call
from pg_replicas import replicas

from edgekit.hub.errors import HubError
from edgekit.hub.routes import create_app
from edgekit.hub.security import new_secret
from edgekit.hub.server import ensure_api_key
from edgekit.hub.store import HubStore
from edgekit.hub.throttle import AuthThrottle, ThrottleLimits
from edgekit.testing import PostgresServer

KEY = new_secret("eka_")


@pytest.fixture
def two_stores(hub_db: str) -> Iterator[tuple[HubStore, HubStore]]:
    """Two connections to one database, as two replicas have (SQLite: one file)."""
    a = HubStore(hub_db)
    b = HubStore(hub_db)
    yield a, b
    a.close()
    b.close()


def _rows(store: HubStore) -> list[tuple[str, float]]:
    rows = store._db.execute("SELECT key, at FROM auth_failures ORDER BY key, at").fetchall()
    return [(str(r[0]), float(r[1])) for r in rows]


def _throttled(throttle: AuthThrottle, source: str, target: str) -> bool:
    try:
        throttle.check(source, target)
    except HubError as exc:
        code = exc.code
    else:
        return False
    assert code == "TooManyFailures"
    return True


def test_failures_on_one_replica_count_on_the_other_after_the_refresh(
    two_stores: tuple[HubStore, HubStore],
) -> None:
    now = [1_000_000.0]
    limits = ThrottleLimits(per_source=3, per_target=1000, window=60)
    a = AuthThrottle(limits, clock=lambda: now[0], store=two_stores[0])
    b = AuthThrottle(limits, clock=lambda: now[0], store=two_stores[1])
    assert not _throttled(b, "198.51.100.7", "admin")  # B has read the (empty) table
    a.failed("198.51.100.7", "admin")
    a.failed("198.51.100.7", "admin")
    b.failed("198.51.100.7", "admin")
    # B counts its own at once, A's only at its next read: no query per check.
    now[0] += 0.5
    assert not _throttled(b, "198.51.100.7", "admin")
    now[0] += 0.6
    assert _throttled(b, "198.51.100.7", "admin")  # 1 own + 2 of A's = the limit
    assert _throttled(a, "198.51.100.7", "admin")  # 2 own + 1 of B's
    assert not _throttled(a, "198.51.100.8", "admin")  # another source
    # The window slides on the shared rows too: 60 s after the first failures, free again.
    now[0] += 60
    assert not _throttled(a, "198.51.100.7", "admin")
    assert not _throttled(b, "198.51.100.7", "admin")


def test_the_shared_rows_are_bounded(two_stores: tuple[HubStore, HubStore]) -> None:
    store = two_stores[0]
    now = [2_000_000.0]
    throttle = AuthThrottle(
        ThrottleLimits(per_source=3, per_target=5, window=30), clock=lambda: now[0], store=store
    )
    for _ in range(8):
        throttle.failed("203.0.113.1", "tokens")
        now[0] += 1
    rows = _rows(store)
    # Each key keeps at most its limit of rows: the newest ones.
    assert [at for key, at in rows if key == "source:203.0.113.1"] == [
        2_000_005.0,
        2_000_006.0,
        2_000_007.0,
    ]
    assert len([1 for key, _ in rows if key == "target:tokens"]) == 5
    # Rows older than the window are deleted when a failure is recorded.
    now[0] += 31
    throttle.failed("203.0.113.2", "host:h1")
    assert {key for key, _ in _rows(store)} == {"source:203.0.113.2", "target:host:h1"}


def test_the_view_of_the_other_replicas_is_bounded(two_stores: tuple[HubStore, HubStore]) -> None:
    limits = ThrottleLimits(per_source=10, per_target=10, window=60, max_keys=20)
    a = AuthThrottle(limits, store=two_stores[0])
    b = AuthThrottle(limits, store=two_stores[1], refresh=0)
    for i in range(50):
        a.failed(f"10.0.0.{i}", f"host:h{i}")
    b.check("10.0.1.1", "admin")
    assert len(b._others) == 20
    assert len(a._failures) == 20


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of the test's own, which it stops."""
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="edgekit-pg-"))).start()
    try:
        yield server
    finally:
        server.close()


def test_an_unreachable_database_keeps_a_wrong_key_a_401(own_postgres: PostgresServer) -> None:
    url = own_postgres.database()
    store = HubStore(url)
    try:
        ensure_api_key(store, KEY)
        app = create_app(
            store,
            throttle=ThrottleLimits(per_source=2, per_target=1000, window=60),
            rollout_interval=0,
        )
        own_postgres.stop("immediate")
        wrong = {"ApiKey": "eka_wrong"}
        # The failure cannot be shared, yet it is refused as a failure and still counts here.
        assert [
            call(app, "GET", "/v1/edgehosts/tokens", headers=wrong).status for _ in range(3)
        ] == [
            401,
            401,
            429,
        ]
        own_postgres.start()
    finally:
        store.close()


def _tokens(base: str, key: str) -> int:
    return requests.get(
        base + "/v1/edgehosts/tokens", headers={"ApiKey": key}, timeout=10
    ).status_code


def test_failures_spread_over_two_replicas_are_throttled_by_both(
    hub_postgres: PostgresServer,
) -> None:
    limits = ThrottleLimits(per_source=4, per_target=1000, window=60)
    with replicas(hub_postgres, 2, throttle=limits, rollout_interval=0) as (_, [a, b]):
        a.start()
        b.start()
        # Two guesses on each: each replica alone is under its limit of 4.
        for hub in (a, b, a, b):
            assert _tokens(hub.url, "eka_wrong") == 401
        time.sleep(1.2)  # the refresh: each has read the other's failures
        for hub in (a, b):
            answer = requests.get(
                hub.url + "/v1/edgehosts/tokens", headers={"ApiKey": a.api_key.reveal()}, timeout=10
            )
            assert answer.status_code == 429, hub
            assert answer.json()["code"] == "TooManyFailures"
            assert 1 <= int(answer.headers["Retry-After"]) <= 60
        assert "Traceback" not in a.log_tail(200) + b.log_tail(200)


def test_checks_cost_one_query_a_second_not_one_a_request(tmp_path: Path) -> None:
    store = HubStore(tmp_path / "hub.db")
    try:
        statements: list[str] = []
        store._sqlite.set_trace_callback(statements.append)
        now = [3_000_000.0]
        throttle = AuthThrottle(ThrottleLimits(), clock=lambda: now[0], store=store)
        for _ in range(1000):  # a poll storm within one second
            throttle.check("192.0.2.10", "host:h1")
            now[0] += 0.0005
        assert len([s for s in statements if "auth_failures" in s]) == 1
        now[0] += 1
        throttle.check("192.0.2.10", "host:h1")
        assert len([s for s in statements if "auth_failures" in s]) == 2
    finally:
        store.close()


def test_a_store_error_while_sharing_keeps_a_wrong_key_a_401(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = HubStore(tmp_path / "hub.db")
    try:
        ensure_api_key(store, KEY)
        app = create_app(store, throttle=ThrottleLimits(per_source=2, per_target=1000))
        store._db.execute("DROP TABLE auth_failures")  # every read and write of it fails
        assert call(app, "GET", "/v1/edgehosts/tokens", headers={"ApiKey": KEY}).status == 200
        wrong = {"ApiKey": "eka_wrong"}
        statuses = [call(app, "GET", "/v1/edgehosts/tokens", headers=wrong).status for _ in "abc"]
        assert statuses == [401, 401, 429]  # counted here all the same
        assert "a failed authentication was not shared: OperationalError" in caplog.text
        assert "eka_wrong" not in caplog.text
        assert KEY not in caplog.text
    finally:
        store.close()
