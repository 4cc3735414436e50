"""Read-only requests run in a snapshot without the writer lock: on PostgreSQL a replica
answers a device's desired-state GET while another holds the lock, from one consistent
snapshot; a write inside a snapshot fails loudly on both databases."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest
import requests
from pg_replicas import replicas

from edgekit.hub import HubServer
from edgekit.hub.dialects import ReadOnlyTransaction
from edgekit.hub.records import HostFields
from edgekit.hub.store import HubStore
from edgekit.testing import PostgresServer


def _desired(generation: int) -> str:
    return json.dumps({"clusterUid": "c-1", "generation": generation, "action": "update"})


def _set_desired(store: HubStore, uid: str, generation: int) -> None:
    store._db.execute("UPDATE hosts SET desired = ? WHERE uid = ?", (_desired(generation), uid))


def test_a_replica_answers_desired_state_while_another_holds_the_writer_lock(
    hub_postgres: PostgresServer,
) -> None:
    with replicas(hub_postgres, 2) as (url, [a, b]):
        writer = HubStore(url)  # "replica A" mid-request: the writer lock, uncommitted writes
        try:
            a.start()
            b.start()
            token = a.client().tokens.create("t")
            assert token.secret is not None
            with a.host_client("h-1") as agent:
                agent.register(token.secret)
            assert agent.credential is not None
            with a.host_client("h-2") as other:  # a second host, already heard from
                other.register(token.secret)
                other.heartbeat()
            assert other.credential is not None
            with writer.transaction():
                _set_desired(writer, "h-1", 1)
            bearer = {"Authorization": f"Bearer {agent.credential.reveal()}"}
            bearer_2 = {"Authorization": f"Bearer {other.credential.reveal()}"}
            desired_url = f"{b.url}/v1/edgehosts/h-1/desired-state"
            revision = a.client().events.revision()

            with writer.transaction():
                _set_desired(writer, "h-1", 2)  # not committed while B answers
                started = time.monotonic()
                got = requests.get(desired_url, headers=bearer, timeout=10)
                took = time.monotonic() - started
                assert got.status_code == 200, got.text
                assert got.json()["desired"]["generation"] == 1  # the committed state only
                assert took < 5, took  # it used to wait for the writer's commit
                # A heartbeat records no event, so it takes no writer lock either.
                started = time.monotonic()
                beat = requests.post(
                    f"{b.url}/v1/edgehosts/h-2/heartbeat",
                    headers=bearer_2,
                    json={"hostAddress": "10.9.9.9"},
                    timeout=10,
                )
                assert beat.status_code == 200, beat.text
                assert time.monotonic() - started < 5
                # The lock is really held: a write that records an event (a status report)
                # on B waits for it.
                with pytest.raises(requests.Timeout):
                    requests.post(
                        f"{b.url}/v1/edgehosts/h-2/status",
                        headers=bearer_2,
                        json={"state": "applied"},
                        timeout=1.5,
                    )
            got = requests.get(desired_url, headers=bearer, timeout=10)
            assert got.json()["desired"]["generation"] == 2
            assert a.client().hosts.get("h-2").address == "10.9.9.9"
            # The heartbeat is in no event; the desired state and the status report are.
            page = a.client().events.list(revision, kinds=["host"])
            assert sorted(e.uid for e in page.events) == ["h-1", "h-2"]
            assert "Traceback" not in b.log_tail(500)
        finally:
            writer.close()


def test_a_snapshot_sees_a_commit_made_during_it_wholly_or_not_at_all(
    hub_postgres: PostgresServer,
) -> None:
    url = hub_postgres.database()
    reader, writer = HubStore(url), HubStore(url)
    try:
        token, _ = writer.create_token("t", expiry=time.time() + 60)
        for uid in ("h-1", "h-2"):
            writer.add_host(
                HostFields(uid=uid), token_uid=token.uid, site=None, credential_hash=uid, now=1
            )
        with writer.transaction():  # one "cluster update": both members at generation 1
            _set_desired(writer, "h-1", 1)
            _set_desired(writer, "h-2", 1)

        def generations() -> list[int]:
            hosts = [reader.get_host(uid) for uid in ("h-1", "h-2")]
            return [h.desired["generation"] for h in hosts if h is not None and h.desired]

        def update_to_2() -> None:
            with writer.transaction():
                _set_desired(writer, "h-1", 2)
                _set_desired(writer, "h-2", 2)

        with reader.snapshot():
            first = reader.get_host("h-1")
            # The update commits between the snapshot's two reads (another thread, so that
            # a snapshot holding the writer lock would make it wait, and the test fail).
            thread = threading.Thread(target=update_to_2)
            thread.start()
            thread.join(timeout=10)
            assert not thread.is_alive(), "the writer waited for a read-only snapshot"
            assert first is not None
            assert first.desired is not None
            assert first.desired["generation"] == 1
            assert generations() == [1, 1]  # not [1, 2], not [2, 2]: one snapshot
        assert generations() == [2, 2]  # the next snapshot sees the whole update
    finally:
        reader.close()
        writer.close()
        hub_postgres.drop(url)


def test_a_write_inside_a_snapshot_fails_loudly_and_changes_nothing(hub_db: str) -> None:
    store = HubStore(hub_db)
    try:
        with pytest.raises(ReadOnlyTransaction), store.snapshot():
            store.set_setting("k", "v")  # the store's own write methods
        assert store.get_setting("k") is None
        # Any other statement: the database's own refusal (PostgreSQL's READ ONLY,
        # SQLite's query_only).
        with pytest.raises(Exception, match=r"read-?only") as raised, store.snapshot():
            store._db.execute("INSERT INTO settings (key, value) VALUES ('k', 'v')")
        assert not isinstance(raised.value, ReadOnlyTransaction)
        assert store.get_setting("k") is None
        # The store works on after the failed snapshots, reads and writes alike.
        store.set_setting("k", "v")
        with store.snapshot():
            assert store.get_setting("k") == "v"
        with store.transaction(), store.snapshot():  # a snapshot joins an open write
            store.set_setting("k", "w")
        assert store.get_setting("k") == "w"
    finally:
        store.close()


def test_an_ordered_write_inside_an_unordered_one_fails_loudly(hub_db: str) -> None:
    store = HubStore(hub_db)
    try:
        with pytest.raises(ReadOnlyTransaction, match="unordered"), store.unordered():
            store.set_setting("k", "v")  # an ordered write: it would record without the lock
        assert store.get_setting("k") is None  # rolled back whole
        with pytest.raises(ReadOnlyTransaction), store.snapshot(), store.unordered():
            pass
        with store.transaction(), store.unordered():  # joins an open ordered write
            store.set_setting("k", "w")
        assert store.get_setting("k") == "w"
    finally:
        store.close()


def test_sqlite_snapshots_leave_the_connection_writable(tmp_path: object) -> None:
    store = HubStore(f"{tmp_path}/hub.db")
    try:
        with store.snapshot():
            pass
        db = store._db
        assert isinstance(db, sqlite3.Connection)
        assert db.execute("PRAGMA query_only").fetchone()[0] == 0
    finally:
        store.close()


def test_a_read_that_must_end_a_credential_grace_is_redone_under_the_writer_lock(
    hub_db: str,
) -> None:
    # The first use of a rotated credential ends the previous one's grace: a write, which a
    # snapshot cannot make, so the desired-state GET is redone as a write transaction.
    with HubServer(hub_db, access_log=False) as hub:
        token = hub.client().tokens.create("t")
        assert token.secret is not None
        with hub.host_client("h-1") as agent:
            agent.register(token.secret)
            assert agent.credential is not None
            store = HubStore(hub_db)
            try:
                with store.transaction():
                    store._db.execute(
                        "UPDATE hosts SET previous_credential_hash = 'old' WHERE uid = 'h-1'"
                    )
                assert agent.desired_state() is None  # answered: 200, no cluster yet
                secrets = store.host_secrets("h-1")
                assert secrets is not None
                assert secrets.previous_credential_hash is None
            finally:
                store.close()
        assert "Traceback" not in hub.log_tail(500)
