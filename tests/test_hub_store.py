"""The hub's SQLite store, used directly: schema, hashing, idempotence, limits."""

from __future__ import annotations

import socket
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit.hub.domain import Hub
from edgekit.hub.errors import HubError
from edgekit.hub.routes import http_status
from edgekit.hub.security import Secret, hash_secret, new_secret, secret_matches
from edgekit.hub.server import HubServeError, serve
from edgekit.hub.store import (
    SCHEMA_VERSION,
    HostFields,
    HostRecord,
    HubStore,
    PoolAssignment,
    StoreError,
)

ApiError = HubError


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[HubStore]:
    """For what only SQLite has: a file, its journal mode."""
    s = HubStore(tmp_path / "hub.db")
    yield s
    s.close()


@pytest.fixture
def store(hub_db: str) -> Iterator[HubStore]:
    s = HubStore(hub_db)
    yield s
    s.close()


def _register(
    store: HubStore,
    secret: str | None,
    uid: str,
    *,
    token_hash: str | None = None,
    credential: str | None = None,
    now: float | None = None,
    **kw: object,
) -> tuple[HostRecord, str]:
    """Register through the domain layer (the rules), which persists through the store."""
    fields: dict[str, object] = {"address": "10.0.0.1", "arch": "amd64", "agent_version": "1.0"}
    fields.update(kw)
    host = HostFields(uid=uid, **fields)  # type: ignore[arg-type]
    return Hub(store).register(
        host, token_secret=secret, token_hash=token_hash, credential=credential, now=now
    )


def test_schema_is_versioned_and_wal(sqlite_store: HubStore, tmp_path: Path) -> None:
    store = sqlite_store
    assert store.schema_version == SCHEMA_VERSION
    db = sqlite3.connect(tmp_path / "hub.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
    # Opening again runs no migration and keeps the data.
    store.set_setting("k", "v")
    again = HubStore(tmp_path / "hub.db")
    assert again.get_setting("k") == "v"
    again.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "hub.db")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="upgrade edgekit"):
        HubStore(tmp_path / "hub.db")


def test_token_secret_is_stored_hashed_only(sqlite_store: HubStore, tmp_path: Path) -> None:
    store = sqlite_store  # the bytes of the file: SQLite's (PostgreSQL's hashes: test_hub_postgres)
    _token, secret = store.create_token("t", expiry=time.time() + 60, site="s1")
    assert len(secret) > 40
    assert secret.startswith("ekt_")
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("hub.db"))
    assert secret.encode() not in raw
    assert hash_secret(secret).encode() in raw
    assert secret_matches(secret, hash_secret(secret))
    assert not secret_matches(secret + "x", hash_secret(secret))


def test_registration_is_idempotent_and_rotates_credential(store: HubStore) -> None:
    _, secret = store.create_token("t", expiry=time.time() + 60, site="s1", max_hosts=1)
    _host1, cred1 = _register(store, secret, "h1", address="10.0.0.1")
    # Again, proving it is the same host with its credential.
    _host2, cred2 = _register(store, secret, "h1", address="10.0.0.2", credential=cred1)
    assert store.count_hosts() == (1, 1)
    assert cred1 != cred2
    found = store.host_for_credential(cred2)
    assert found is not None
    assert found.address == "10.0.0.2"
    assert found.site == "s1"
    token = store.list_tokens()[0]
    assert token.host_count == 1  # re-registration does not use a slot
    # Once the new credential is used, the old one is gone for good.
    assert store.host_for_credential(cred1) is None


def test_max_hosts_and_site_conflict(store: HubStore) -> None:
    _, s1 = store.create_token("a", expiry=time.time() + 60, site="s1", max_hosts=2)
    _, s2 = store.create_token("b", expiry=time.time() + 60, site="s2")
    _register(store, s1, "h1")
    _register(store, s1, "h2")
    with pytest.raises(ApiError) as full:
        _register(store, s1, "h3")
    assert (http_status(full.value), full.value.code) == (403, "TokenExhausted")
    with pytest.raises(ApiError) as moved:
        _register(store, s2, "h1")
    assert (http_status(moved.value), moved.value.code) == (409, "HostSiteConflict")
    # Deleting a host frees its slot.
    assert store.delete_host("h2")
    _register(store, s1, "h3")
    assert store.count_hosts() == (2, 2)


def test_revoked_expired_and_unknown_tokens(store: HubStore) -> None:
    tok, secret = store.create_token("t", expiry=time.time() + 60)
    with pytest.raises(ApiError) as unknown:
        _register(store, "ekt_nope", "h1")
    assert http_status(unknown.value) == 401
    store.set_token_active(tok.uid, False)
    with pytest.raises(ApiError) as revoked:
        _register(store, secret, "h1")
    assert revoked.value.code == "TokenRevoked"
    store.set_token_active(tok.uid, True)
    store.set_token_expiry(tok.uid, time.time() - 1)
    with pytest.raises(ApiError) as expired:
        _register(store, secret, "h1")
    assert expired.value.code == "TokenExpired"
    assert store.count_hosts() == (0, 0)


def test_cluster_is_all_or_nothing(store: HubStore) -> None:
    _, secret = store.create_token("t", expiry=time.time() + 60)
    _register(store, secret, "h1")
    bad = [PoolAssignment("cp", True, ("h1", "ghost"))]
    with pytest.raises(ApiError) as err:
        store.create_cluster("c", vip="10.0.0.9", provider_image=None, pools=bad, spec={})
    assert [p.message for p in err.value.problems] == ["host 'ghost' is not registered"]
    assert store.list_clusters() == []
    host = store.get_host("h1")
    assert host is not None
    assert host.cluster_uid is None
    good = [PoolAssignment("cp", True, ("h1",))]
    cluster = store.create_cluster("c", vip="10.0.0.9", provider_image="r/i:t", pools=good, spec={})
    host = store.get_host("h1")
    assert host is not None
    assert host.desired is not None
    assert host.desired["clusterUid"] == cluster.uid
    assert host.desired["role"] == "control-plane"
    with pytest.raises(ApiError, match="belongs to cluster"):
        store.delete_host("h1")


def test_secret_redacts() -> None:
    s = Secret("hunter2")
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s)
    assert repr(s) == "'***'"
    assert s.reveal() == "hunter2"
    assert s == Secret("hunter2")


def test_states_follow_the_model(store: HubStore) -> None:
    """registered -> ready (first heartbeat) -> in_use (cluster) -> unhealthy (failed);
    a silent host is unreachable when read, and searchable as such."""
    t0 = time.time()
    _, secret = store.create_token("t", expiry=t0 + 3600)
    _register(store, secret, "h1", address=None, agent_version=None, now=t0)
    assert store.get_host("h1").state == "registered"  # type: ignore[union-attr]
    assert store.heartbeat("h1", address="10.0.0.3", now=t0 + 1).state == "ready"
    cluster = [PoolAssignment("cp", True, ("h1",))]
    store.create_cluster("c", vip=None, provider_image=None, pools=cluster, spec={}, now=t0)
    assert store.report_status("h1", {"state": "applying"}, now=t0 + 2).state == "in_use"
    assert store.report_status("h1", {"state": "failed"}, now=t0 + 3).state == "unhealthy"
    host = store.get_host("h1")
    assert host is not None
    assert host.effective_state(t0 + 10, 600) == "unhealthy"
    assert host.effective_state(t0 + 700, 600) == "unreachable"
    found, total = store.search_hosts(states=["unreachable"], now=t0 + 700, unreachable_after=600)
    assert ([h.uid for h in found], total) == (["h1"], 1)
    assert store.search_hosts(states=["unhealthy"], now=t0 + 700, unreachable_after=600)[1] == 0


def test_open_and_serve_errors_name_their_cause(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no-such-dir"):
        HubStore(tmp_path / "no-such-dir" / "hub.db")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(HubServeError, match=f"127.0.0.1:{port}"):
            serve("127.0.0.1", port, tmp_path / "hub.db", api_key=new_secret("eka_"))


def test_register_by_token_hash(store: HubStore) -> None:
    tok, secret = store.create_token("t", expiry=time.time() + 60, site="s1")
    assert store.token_hashes() == [(tok.uid, hash_secret(secret))]
    host, _ = _register(store, None, "h1", token_hash=hash_secret(secret), address=None)
    assert (host.uid, host.site, host.token_uid) == ("h1", "s1", tok.uid)
    with pytest.raises(ApiError) as unknown:
        _register(store, None, "h2", token_hash="0" * 64)
    assert unknown.value.code == "InvalidToken"
    with pytest.raises(TypeError):
        _register(store, secret, "h3", token_hash=hash_secret(secret))


@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["register", "delete", "revoke"]),
            st.integers(0, 2),  # token
            st.integers(0, 5),  # host
        ),
        max_size=40,
    )
)
@settings(max_examples=60, deadline=None)
def test_store_invariants_under_any_sequence(ops: list[tuple[str, int, int]]) -> None:
    """Whatever happens: one row per uid, each token's count equals its hosts, never above
    max_hosts, and a host stays in the site it first registered in."""
    with tempfile.TemporaryDirectory() as tmp:
        store = HubStore(Path(tmp) / "hub.db")
        try:
            now = time.time()
            tokens = [
                store.create_token(f"t{i}", expiry=now + 60, site=f"s{i % 2}", max_hosts=2)
                for i in range(3)
            ]
            first_site: dict[str, str | None] = {}
            refusals: set[str] = set()
            for op, t, h in ops:
                uid = f"h{h}"
                if op == "register":
                    try:
                        host, _ = _register(store, tokens[t][1], uid)
                        first_site.setdefault(uid, host.site)
                    except ApiError as exc:
                        refusals.add(exc.code)
                elif op == "delete":
                    if store.delete_host(uid):
                        first_site.pop(uid, None)
                else:
                    store.set_token_active(tokens[t][0].uid, False)
                rows, distinct = store.count_hosts()
                assert rows == distinct
                hosts, _ = store.search_hosts()
                for token in store.list_tokens():
                    owned = [x for x in hosts if x.token_uid == token.uid]
                    assert token.host_count == len(owned) <= 2
                for x in hosts:
                    assert x.site == first_site[x.uid]
            # Registering a registered uid again without its credential is a refusal now.
            allowed = {"TokenExhausted", "HostSiteConflict", "TokenRevoked"}
            assert refusals <= allowed | {"HostAlreadyRegistered"}
        finally:
            store.close()


def test_search_filters_and_pages_in_sql(store: HubStore) -> None:
    _, secret = store.create_token("t", expiry=time.time() + 60)
    odd_key = 'rack."a.b"[0]'
    for i in range(25):
        tags = {odd_key: "yes" if i % 5 == 0 else "no", "zone": f"z{i % 2}"}
        _register(store, secret, f"h{i:02d}", tags=tags)
    found, total = store.search_hosts(tags={odd_key: "yes"})
    assert ([h.uid for h in found], total) == (["h00", "h05", "h10", "h15", "h20"], 5)
    found, total = store.search_hosts(tags={odd_key: "yes", "zone": "z0"})
    assert [h.uid for h in found] == ["h00", "h10", "h20"]
    page, total = store.search_hosts(tags={"zone": "z1"}, limit=5, offset=10)
    assert total == 12
    assert [h.uid for h in page] == ["h21", "h23"]
    assert store.search_hosts(states=["registered"], sites=["nowhere"]) == ([], 0)
