"""The store on PostgreSQL next to SQLite: one schema, URLs, old SQLite files, and a
PostgreSQL restart under a running hub (503 with Retry-After, never a 500, no lost write)."""

from __future__ import annotations

import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from edgekit.hub import HubServer
from edgekit.hub.migrations import MIGRATIONS, SCHEMA_VERSION, parse_url, redact
from edgekit.hub.sql_clusters import statements
from edgekit.hub.sql_rollouts import STAGING_MIGRATION
from edgekit.hub.store import HostFields, HubStore, StoreError
from edgekit.testing import PostgresServer


def _schema(url: str) -> dict[str, Any]:
    """Tables -> columns (name, nullable, type family), primary key and index names."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        out: dict[str, Any] = {}
        for table in sorted(inspector.get_table_names()):
            if table == "alembic_version":
                continue
            columns = []
            pk = inspector.get_pk_constraint(table)["constrained_columns"]
            for c in inspector.get_columns(table):
                family = type(c["type"]).__name__.upper()
                family = {"BIGINT": "INTEGER", "DOUBLE_PRECISION": "REAL", "DOUBLE": "REAL"}.get(
                    family, family
                )
                # SQLite lets a non-INTEGER primary key hold NULL unless declared NOT NULL;
                # the hub never stores one, and PostgreSQL's keys are NOT NULL by definition.
                columns.append((c["name"], bool(c["nullable"]) and c["name"] not in pk, family))
            out[table] = {
                "columns": sorted(columns),
                "pk": pk,
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]))
                    for i in inspector.get_indexes(table)
                    if "duplicates_constraint" not in i  # PostgreSQL's UNIQUE's own index
                ),
                "unique": sorted(
                    tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)
                ),
                "foreign": sorted(
                    (tuple(f["constrained_columns"]), f["referred_table"])
                    for f in inspector.get_foreign_keys(table)
                ),
            }
        return out
    finally:
        engine.dispose()


def test_both_databases_have_one_schema(tmp_path: Path, hub_postgres: PostgresServer) -> None:
    HubStore(tmp_path / "hub.db").close()
    url = hub_postgres.database()
    try:
        HubStore(url).close()
        on_sqlite = _schema(f"sqlite:///{tmp_path / 'hub.db'}")
        on_postgres = _schema(parse_url(url)[1])
    finally:
        hub_postgres.drop(url)
    assert "rollout_transitions" in on_sqlite
    assert on_postgres == on_sqlite


def test_urls_select_the_backend_and_hide_passwords(tmp_path: Path) -> None:
    assert parse_url(tmp_path / "a.db") == ("sqlite", str(tmp_path / "a.db"))
    assert parse_url(f"sqlite:///{tmp_path}/a.db") == ("sqlite", f"{tmp_path}/a.db")
    assert parse_url("postgresql://u@h/db") == ("postgresql", "postgresql+psycopg://u@h/db")
    store = HubStore(f"sqlite:///{tmp_path}/b.db")
    store.close()
    assert (tmp_path / "b.db").exists()
    with pytest.raises(StoreError) as bad:
        HubStore("mysql://root:hunter2@h/db")
    assert "unknown scheme 'mysql'" in str(bad.value)
    assert "hunter2" not in str(bad.value)
    assert redact("postgresql://u:pw@h:5/db") == "postgresql://u:***@h:5/db"
    # A URL that went through pathlib lost its "//": refused, not created as a file.
    with pytest.raises(StoreError) as mangled:
        HubStore(Path("postgresql://u:pw@h/db"))
    assert "looks like a URL" in str(mangled.value)
    assert "pw" not in str(mangled.value)


def test_an_unreachable_postgresql_is_one_error_without_the_password() -> None:
    with pytest.raises(StoreError) as refused:
        HubStore("postgresql://edge:s3cret@127.0.0.1:1/hub")
    assert "cannot be opened" in str(refused.value)
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize("version", [6, 7])
def test_an_sqlite_file_of_an_edgekit_before_alembic_opens_and_keeps_its_data(
    tmp_path: Path, version: int
) -> None:
    # What an earlier edgekit made: the migration chain (7: with the staging table) and
    # its user_version, no Alembic table.
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS + ((STAGING_MIGRATION,) if version == 7 else ()):
        for statement in statements(script):
            db.execute(statement)
    db.execute(f"PRAGMA user_version={version}")
    db.execute("INSERT INTO settings (key, value) VALUES ('k', 'v')")
    db.close()
    store = HubStore(path)
    try:
        assert store.schema_version == SCHEMA_VERSION
        assert store.get_setting("k") == "v"
        token, _ = store.create_token("t", expiry=time.time() + 60)
        assert store.get_token(token.uid) == token
    finally:
        store.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT version_num FROM alembic_version").fetchone() == (
        f"{SCHEMA_VERSION:04d}",
    )
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert db.execute("SELECT count(*) FROM staged_desired").fetchone() == (0,)
    db.close()


def test_a_newer_postgresql_schema_is_refused(hub_postgres: PostgresServer) -> None:
    # (SQLite's case: test_hub_store.test_newer_schema_is_refused)
    hub_db = hub_postgres.database()
    HubStore(hub_db).close()
    engine = sa.create_engine(parse_url(hub_db)[1])
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    engine.dispose()
    with pytest.raises(StoreError) as newer:
        HubStore(hub_db)
    assert "schema version 99" in str(newer.value)
    assert "upgrade edgekit" in str(newer.value)


def test_secrets_are_stored_hashed_only_on_postgresql(hub_db: str) -> None:
    store = HubStore(hub_db)
    try:
        _, secret = store.create_token("t", expiry=time.time() + 60)
        rows = store._db.execute("SELECT * FROM tokens").fetchall()
    finally:
        store.close()
    assert secret not in repr([list(r) for r in rows])


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of the test's own, which it crashes and starts (durable commits)."""
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="edgekit-pg-")), durable=True).start()
    try:
        yield server
    finally:
        server.close()


def test_a_postgresql_restart_is_503_with_retry_after_then_nothing_is_lost(
    own_postgres: PostgresServer,
) -> None:
    url = own_postgres.database()
    with HubServer(url, access_log=False) as hub:
        admin = hub.client()
        token = admin.tokens.create("t")
        assert token.secret is not None
        statuses: list[int] = []
        acked: list[str] = []
        stop = threading.Event()

        def load() -> None:
            n = 0
            session = requests.Session()
            while not stop.is_set():
                uid = f"h-{n}"
                try:
                    answer = session.post(
                        hub.url + "/v1/edgehosts/register",
                        json={"hostUid": uid, "arch": "amd64"},
                        headers={"EdgeHostToken": token.secret.reveal()},
                        timeout=10,
                    )
                except requests.RequestException:
                    continue
                statuses.append(answer.status_code)
                if answer.status_code == 503:
                    assert answer.headers.get("Retry-After") == "1"
                    continue  # the same uid again: registration is idempotent
                if answer.ok:
                    acked.append(uid)
                    n += 1

        worker = threading.Thread(target=load)
        worker.start()
        try:
            deadline = time.monotonic() + 30
            while len(acked) < 20:
                assert time.monotonic() < deadline, statuses[-5:]
                time.sleep(0.01)
            own_postgres.stop("immediate")  # a crash, not a clean shutdown
            time.sleep(1.0)
            down = len(statuses)
            own_postgres.start()
            time.sleep(1.5)
        finally:
            stop.set()
            worker.join(timeout=30)
        assert 503 in statuses[:down] or 503 in statuses
        assert not [s for s in statuses if s >= 500 and s != 503], statuses
        assert statuses[-1] == 200  # it reconnected by itself
        assert hub.log_tail(200).count("Traceback") == 0
    store = HubStore(url)
    try:
        stored = {h.uid for h in store.search_hosts()[0]}
        assert set(acked) <= stored
        assert store.count_hosts()[0] == len(stored)
    finally:
        store.close()


def test_schema_version_is_the_newest_alembic_revision() -> None:
    from alembic.script import ScriptDirectory

    from edgekit.hub.migrations import _config

    assert ScriptDirectory.from_config(_config()).get_current_head() == f"{SCHEMA_VERSION:04d}"


def _fields(uid: str) -> HostFields:
    return HostFields(uid=uid)


def test_two_processes_write_one_at_a_time_and_revisions_follow_commits(
    hub_postgres: PostgresServer,
) -> None:
    from edgekit.hub.store_clusters import ClusterTables

    url = hub_postgres.database()
    first, second, reader = HubStore(url), HubStore(url), HubStore(url)
    token, _ = first.create_token("t", expiry=time.time() + 60)
    done = threading.Event()

    def other() -> None:
        second.add_host(_fields("h-2"), token_uid=token.uid, site=None, credential_hash="b", now=1)
        done.set()

    try:
        with first.transaction():
            first.add_host(
                _fields("h-1"), token_uid=token.uid, site=None, credential_hash="a", now=1
            )
            thread = threading.Thread(target=other)
            thread.start()
            time.sleep(0.5)
            # The second writer waits for the first one's commit (the writer lock).
            assert not done.is_set()
            assert reader.get_host("h-1") is None  # not committed yet
        thread.join(timeout=30)
        assert done.is_set()
        events = ClusterTables(reader).events_since(0, limit=10, kinds=("host",))
        assert [e.uid for e in events] == ["h-1", "h-2"]  # revision order is commit order
        assert events[0].rev < events[1].rev
        assert ClusterTables(reader).revisions()[1] == events[1].rev
    finally:
        for store in (first, second, reader):
            store.close()
        hub_postgres.drop(url)


def test_text_no_database_can_hold_is_a_4xx_on_both(hub_db: str) -> None:
    # A NUL or a lone surrogate in a query parameter (bodies are refused before the store)
    # cannot reach PostgreSQL: 400 InvalidText there, no row on SQLite; never a 500.
    with HubServer(hub_db, access_log=False) as hub:
        key = {"ApiKey": hub.api_key.reveal()}
        for raw in ("a%00b", "a%ED%A0%80b", "%C0%80"):
            listed = requests.get(
                f"{hub.url}/v1/clusterprofiles?name={raw}", headers=key, timeout=10
            )
            assert listed.status_code in (200, 400), (raw, listed.text)
            for path in (f"/v1/clusterprofiles/{raw}/1.0.0", f"/v1/spectroclusters/{raw}"):
                one = requests.get(hub.url + path, headers=key, timeout=10)
                assert one.status_code in (400, 404), (path, one.text)
        assert "Traceback" not in hub.log_tail(500)
