"""One ``clusters`` row, one record: the host store and the lifecycle tables read a cluster
as the same :class:`~edgekit.hub.records.ClusterRecord`, lifecycle columns included."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from edgekit.hub.domain import Hub
from edgekit.hub.records import ClusterRecord
from edgekit.hub.store import HostFields, HubStore, PoolAssignment
from edgekit.hub.store_clusters import ClusterTables


@pytest.fixture
def store(hub_db: str) -> Iterator[HubStore]:
    s = HubStore(hub_db)
    yield s
    s.close()


def _cluster(store: HubStore, name: str, host: str) -> ClusterRecord:
    _, secret = store.create_token(f"t-{name}", expiry=time.time() + 60)
    Hub(store).register(HostFields(uid=host, address="10.0.0.1"), token_secret=secret)
    pools = [PoolAssignment("cp", True, (host,))]
    return store.create_cluster(
        name, vip="10.0.0.9", provider_image="r/i:t", pools=pools, spec={"a": 1}, now=100.0
    )


def test_both_readers_give_the_same_record(store: HubStore) -> None:
    created = _cluster(store, "one", "h1")
    tables = ClusterTables(store)
    assert created == ClusterRecord(
        uid=created.uid,
        name="one",
        vip="10.0.0.9",
        provider_image="r/i:t",
        spec={"a": 1},
        created=100.0,
        generation=1,
        resource_version=1,
        labels={},
        updated=None,
    )
    assert store.get_cluster(created.uid) == created
    assert tables.find_cluster(created.uid) == created
    assert tables.find_cluster("one") == created
    assert store.list_clusters() == [created]
    assert tables.list_clusters() == ([created], 1)


def test_lifecycle_columns_reach_the_host_store_reader(store: HubStore) -> None:
    created = _cluster(store, "two", "h2")
    tables = ClusterTables(store)
    tables.save_cluster(
        created.uid,
        spec={"b": 2},
        vip=None,
        provider_image=None,
        labels={"tier": "big"},
        generation=3,
        resource_version=5,
    )
    seen = store.get_cluster(created.uid)
    assert seen is not None
    assert (seen.spec, seen.vip, seen.labels) == ({"b": 2}, None, {"tier": "big"})
    assert (seen.generation, seen.resource_version) == (3, 5)
    assert seen.updated is not None
    assert seen.updated > created.created
    assert tables.find_cluster(created.uid) == seen
