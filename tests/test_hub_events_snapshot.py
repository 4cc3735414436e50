"""``GET /v1/events`` reads the events and the newest revision in one snapshot: an event
committed between the two reads is never skipped by a client resuming from the answer."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hub_asgi import app_with_host, call
from starlette.applications import Starlette

from edgekit.hub.records import HostFields
from edgekit.hub.routes import create_app
from edgekit.hub.security import new_secret
from edgekit.hub.server import ensure_api_key
from edgekit.hub.store import HubStore
from edgekit.hub.store_clusters import ClusterTables
from edgekit.testing import PostgresServer

KEY = new_secret("eka_")
ADMIN = {"ApiKey": KEY}


@pytest.fixture
def app(hub_db: str) -> Iterator[tuple[Starlette, str]]:
    store = HubStore(hub_db)
    yield app_with_host(store, KEY), hub_db
    store.close()


def _events(app: Starlette, since: int) -> Any:
    answer = call(app, "GET", "/v1/events", headers=ADMIN, query=f"since={since}&kind=host")
    assert answer.status == 200, answer.body
    return answer.json()


def test_an_event_committed_while_the_stream_looks_is_not_skipped(
    app: tuple[Starlette, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub, db = app
    since = _events(hub, 0)["revision"]  # every event so far
    writer = HubStore(db)
    real = ClusterTables.events_since
    writes: list[threading.Thread] = []

    def commit_an_event() -> None:  # another replica (or request) changes host "a"
        with writer.transaction():
            writer._db.execute(
                "UPDATE hosts SET desired = ? WHERE uid = ?",
                (json.dumps({"clusterUid": "c", "generation": 7, "action": "update"}), "a"),
            )

    def events_since(self: ClusterTables, *args: Any, **kwargs: Any) -> Any:
        found = real(self, *args, **kwargs)
        if not writes:  # right after the first look: a commit lands before the next read
            writes.append(threading.Thread(target=commit_an_event))
            writes[0].start()
            writes[0].join(1)  # SQLite: waits for this request's snapshot to end
        return found

    try:
        monkeypatch.setattr(ClusterTables, "events_since", events_since)
        first = _events(hub, since)
        monkeypatch.undo()
        writes[0].join(10)
        assert not writes[0].is_alive()
        assert first["items"] == []
        # Resuming from the answer's revision finds the event the first look did not see.
        second = _events(hub, first["revision"])
        assert [(e["type"], e["uid"]) for e in second["items"]] == [("updated", "a")]
    finally:
        writer.close()


def test_a_revision_handed_out_but_not_committed_is_not_resumed_past(
    hub_postgres: PostgresServer,
) -> None:
    url = hub_postgres.database()
    store, writer = HubStore(url), HubStore(url)
    try:
        ensure_api_key(store, KEY)
        app = create_app(store)
        token, _ = writer.create_token("t", expiry=time.time() + 60)
        start = _events(app, 0)["revision"]
        with writer.transaction():  # the first host event: its revision taken, uncommitted
            writer.add_host(
                HostFields(uid="h"), token_uid=token.uid, site=None, credential_hash="h", now=1
            )
            meanwhile = _events(app, start)
        assert meanwhile["items"] == []
        assert meanwhile["revision"] == start  # not the sequence's newest value
        after = _events(app, meanwhile["revision"])
        assert [(e["type"], e["uid"]) for e in after["items"]] == [("created", "h")]
    finally:
        writer.close()
        store.close()
        hub_postgres.drop(url)
