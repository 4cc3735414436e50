"""Fleet summary and the event stream against a real hub (uvicorn, SQLite): counts computed in
one SQL query, events resumable across a disconnect and a hub restart, none lost or twice."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from edgekit import model
from edgekit.errors import RegistrationError
from edgekit.hub import HubClient, HubRequestError, HubServer
from edgekit.hub.client_clusters import Event
from edgekit.hub.store import HubStore
from edgekit.hub.store_clusters import ClusterTables

PROFILE = model.ClusterProfile(
    "retail", "1.0.0", (model.Pack.os("ubuntu", "22.04"), model.Pack.k8s("k3s", "1.30.4"))
)


@pytest.fixture
def hub(hub_db: str) -> Iterator[HubServer]:
    with HubServer(hub_db) as server:
        yield server


def _register(hub: HubServer, admin: HubClient, site: str, n: int) -> list[str]:
    token = admin.tokens.create(site, site=site)
    assert token.secret is not None
    uids = []
    for i in range(n):
        agent = hub.host_client(f"{site}-{i}")
        agent.register(token.secret)
        if i % 2 == 0:
            agent.heartbeat()  # registered -> ready
        uids.append(agent.uid)
    return uids


def test_summary_groups_in_one_query_with_totals(hub: HubServer, tmp_path: Path) -> None:
    admin = hub.client()
    _register(hub, admin, "north", 3)
    _register(hub, admin, "south", 2)
    admin.profiles.publish(PROFILE)
    admin.clusters.create(model.Cluster.single_node("north", PROFILE.ref, "north-0"))
    summary = admin.hosts.summary(group_by=["state", "site"])
    assert summary.hosts == 5
    assert {(k["state"], k["site"]): n for k, n in summary.rows} == {
        ("in_use", "north"): 1,
        ("ready", "north"): 1,
        ("registered", "north"): 1,
        ("ready", "south"): 1,
        ("registered", "south"): 1,
    }
    assert summary.groups == 5
    assert summary.count(site="north") == 3
    assert summary.count(state="ready") == 2
    found = admin.hosts.search(site="north", page_size=2)  # two pages
    assert (len(found), found.total) == (3, 3)
    assert str(found).startswith("3 host(s)")
    assert "north-2" in found._repr_html_()
    by_cluster = admin.hosts.summary(group_by=["cluster"])
    assert {k["cluster"]: n for k, n in by_cluster.rows} == {None: 4, "north": 1}
    text = str(summary)
    assert text.startswith("5 host(s) in 5 group(s)")
    assert "<table" in summary._repr_html_()
    bad = requests.get(
        hub.url + "/v1/dashboard/edgehosts/summary",
        params={"groupBy": "state,colour", "limit": "x"},
        headers={"ApiKey": hub.api_key.reveal()},
        timeout=10,
    )
    assert bad.status_code == 400
    assert {p["path"] for p in bad.json()["problems"]} == {"?groupBy", "?limit"}
    # One SQL statement computes a page of groups and both totals.
    hub.stop()
    store = HubStore(hub.db_url)
    statements: list[str] = []
    db = store._db

    class Traced:
        """The store's connection, recording each statement (on either database)."""

        def execute(self, sql: str, *args: Any) -> Any:
            statements.append(sql)
            return db.execute(sql, *args)

    tables = ClusterTables(store)
    tables._db = Traced()  # type: ignore[assignment]
    rows, groups, hosts = tables.summary(["state", "site"], limit=2)
    store.close()
    assert (len(rows), groups, hosts) == (2, 5, 5)
    assert len(statements) == 1
    assert statements[0].lstrip().upper().startswith("SELECT")


def _collect(
    admin: HubClient, since: int, out: list[Event], stop: threading.Event
) -> threading.Thread:
    def run() -> None:
        for event in admin.events.watch(since, poll=2, until=60):
            out.append(event)
            # The last change: "last" is formed, then its host gets its desired state.
            if stop.is_set() and event.uid == "west-0" and event.data.get("action") == "join":
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_watch_resumes_across_a_restart_without_loss_or_duplicates(hub: HubServer) -> None:
    admin = hub.client(retry_for=30)
    admin.profiles.publish(PROFILE)
    start = admin.events.revision()
    seen: list[Event] = []
    stop = threading.Event()
    watcher = _collect(admin, start, seen, stop)
    before = _register(hub, admin, "east", 2)
    admin.clusters.create(model.Cluster.single_node("first", PROFILE.ref, before[0]))
    deadline = time.monotonic() + 20
    while not any(e.kind == "cluster" for e in seen) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert any(e.kind == "cluster" for e in seen)
    # The hub dies mid-watch and comes back on the same database.
    hub.kill()
    time.sleep(0.5)
    hub.start()
    after = _register(hub, admin, "west", 2)
    stop.set()
    admin.clusters.create(model.Cluster.single_node("last", PROFILE.ref, after[0]))
    watcher.join(timeout=60)
    assert not watcher.is_alive()
    revisions = [e.revision for e in seen]
    assert revisions == sorted(set(revisions)), "in order, none twice"
    # Everything the log holds after ``start``, exactly: nothing lost.
    page = admin.events.list(start, limit=1000)
    assert [e.revision for e in page.events] == revisions
    kinds = [(e.kind, e.type, e.uid) for e in seen]
    for uid in (*before, *after):
        assert ("host", "created", uid) in kinds
    assert [e.data["name"] for e in seen if e.kind == "cluster"] == ["first", "last"]
    # A host joining a cluster is a host event too, with its desired generation.
    joined = [e for e in seen if e.uid == after[0] and e.data.get("clusterUid")]
    assert joined
    assert joined[-1].data["desiredGeneration"] == 1


def test_events_long_poll_waits_and_expired_revisions_are_refused(hub: HubServer) -> None:
    admin = hub.client()
    rev = admin.events.revision()
    t0 = time.monotonic()
    empty = admin.events.list(rev, timeout=1)
    assert time.monotonic() - t0 >= 0.9
    assert (empty.events, empty.revision) == ((), rev)
    timer = threading.Timer(0.5, lambda: admin.profiles.publish(PROFILE))
    timer.start()
    woke = admin.events.list(rev, timeout=10)
    timer.join()
    assert [(e.kind, e.uid) for e in woke.events] == [("profile", "retail@1.0.0")]
    assert woke.revision == rev + 1
    bad = requests.get(
        hub.url + "/v1/events",
        params={"since": "-1", "timeout": "999", "kind": "weather"},
        headers={"ApiKey": hub.api_key.reveal()},
        timeout=10,
    )
    assert bad.status_code == 400
    assert {p["path"] for p in bad.json()["problems"]} == {"?since", "?timeout", "?kind"}
    _register(hub, admin, "gone", 3)
    newest = admin.events.revision()
    # Pruned events (the hub keeps the newest 100,000): resuming before them is a 409.
    hub.stop()
    store = HubStore(hub.db_url)
    with store.transaction() as db:
        db.execute("DELETE FROM events WHERE rev < ?", (newest,))
    store.close()
    hub.start()
    with pytest.raises(HubRequestError) as expired:
        admin.events.list(1)
    assert expired.value.code == "EventsExpired"
    assert admin.events.list(newest - 1).events[0].revision == newest
    assert admin.events.revision() == newest  # the revision survives pruning and restarts


class _Proxy:
    """A TCP forwarder in front of the hub: stopping it refuses connections (as a hub that
    is down does; HubServer itself keeps its socket listening across restarts)."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._open: list[socket.socket] = []
        self.start()

    def start(self) -> None:
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(16)
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def stop(self) -> None:
        # shutdown() wakes the thread blocked in accept(); close() alone would not.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for conn in self._open:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            self._open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def test_watch_reconnects_by_itself_when_the_hub_is_unreachable(hub: HubServer) -> None:
    proxy = _Proxy(hub.port)
    # retry_for=0.3: each poll gives up quickly, so watch() itself must reconnect.
    admin = HubClient(f"http://127.0.0.1:{proxy.port}", api_key=hub.api_key, retry_for=0.3)
    start = admin.events.revision()
    seen: list[Event] = []

    def run() -> None:
        for event in admin.events.watch(start, poll=1, until=40):
            seen.append(event)
            if event.kind == "profile":
                return

    watcher = threading.Thread(target=run, daemon=True)
    watcher.start()
    time.sleep(0.5)
    proxy.stop()  # refused for ~3 s, ten times the client's retry budget
    with pytest.raises(RegistrationError, match="cannot reach the hub"):
        admin.events.list(start)
    hub.client().profiles.publish(PROFILE)  # happens while the watcher cannot see the hub
    time.sleep(3)
    proxy.start()
    watcher.join(timeout=40)
    proxy.stop()
    assert not watcher.is_alive()
    assert [(e.kind, e.uid) for e in seen] == [("profile", "retail@1.0.0")]
