"""A held cluster (roll-outs hold theirs) cannot be deleted: through the domain layer, and
over HTTP against a real hub whose database a holder was added to directly, so the rule is
tested apart from the roll-out controller (tests/test_rollouts.py tests it with one)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from edgekit import model
from edgekit.config import unstructure
from edgekit.hub import HubRequestError, HubServer
from edgekit.hub.client import cluster_body
from edgekit.hub.domain import Hub
from edgekit.hub.domain_clusters import ClusterOps
from edgekit.hub.errors import HubError, Refusal
from edgekit.hub.store import HostFields, HubStore

PROFILE = model.ClusterProfile(
    "retail", "1.0.0", (model.Pack.os("ubuntu", "22.04"), model.Pack.k8s("k3s", "1.30.4"))
)


def _single_node(name: str, uid: str) -> model.Cluster:
    return model.Cluster.single_node(name, PROFILE.ref, uid)


@pytest.fixture
def ops(hub_db: str) -> Iterator[ClusterOps]:
    store = HubStore(hub_db)
    hub = Hub(store)
    ops = ClusterOps(hub)
    ops.publish_profile(unstructure(PROFILE))
    _, secret = hub.create_token("t", expiry=time.time() + 3600)
    hub.register(HostFields(uid="h-1", address="10.0.0.1"), token_secret=secret)
    hub.heartbeat("h-1", None)
    ops.create(cluster_body(_single_node("store-1", "h-1"), None))
    yield ops
    store.close()


def test_a_held_cluster_cannot_be_deleted_until_released(ops: ClusterOps) -> None:
    ops.hold("store-1", "rollout/r-42", reason="retail 1.0.0 -> 1.1.0, wave 2 of 5")
    ops.hold("store-1", "rollout/r-43")
    assert [h.holder for h in ops.holders("store-1")] == ["rollout/r-42", "rollout/r-43"]
    with pytest.raises(HubError) as held:
        ops.delete("store-1")
    assert held.value.kind is Refusal.CONFLICT
    assert held.value.code == "ClusterHeld"
    assert held.value.message == (
        "cluster 'store-1' is held by rollout/r-42 (retail 1.0.0 -> 1.1.0, wave 2 of 5), "
        "rollout/r-43: it cannot be deleted until that is finished or cancelled"
    )
    # Nothing changed: the host is still a member with its desired state.
    host = ops.hub.host("h-1")
    assert host.cluster_uid == ops.cluster("store-1").uid
    assert host.desired is not None
    assert host.desired["action"] == "join"

    assert ops.release_hold("store-1", "rollout/r-42") is True
    assert ops.release_hold("store-1", "rollout/r-42") is False  # not held by it any more
    with pytest.raises(HubError, match="held by rollout/r-43:"):
        ops.delete("store-1")
    ops.release_hold("store-1", "rollout/r-43")
    ops.delete("store-1")
    assert ops.hub.host("h-1").desired["action"] == "release"  # type: ignore[index]


def test_holding_again_is_a_no_op_and_bad_holders_are_refused(ops: ClusterOps) -> None:
    ops.hold("store-1", "rollout/r-1", reason="first")
    ops.hold("store-1", "rollout/r-1", reason="second")
    [holder] = ops.holders("store-1")
    assert (holder.holder, holder.reason) == ("rollout/r-1", "second")
    with pytest.raises(HubError) as bad:
        ops.hold("store-1", "", reason="x\n")
    assert [p.path for p in bad.value.problems] == ["holder", "reason"]
    with pytest.raises(HubError) as missing:
        ops.hold("no-such-cluster", "rollout/r-2")
    assert missing.value.kind is Refusal.NOT_FOUND


def test_over_http_a_held_delete_is_a_409_naming_the_holder(hub_db: str) -> None:
    db = hub_db
    with HubServer(db) as server:
        admin = server.client()
        admin.profiles.publish(PROFILE)
        token = admin.tokens.create("t")
        assert token.secret is not None
        with server.host_client("h-1") as agent:
            agent.register(token.secret, address="10.0.0.1")
            agent.heartbeat()
        admin.clusters.create(_single_node("store-1", "h-1"))
        # A roll-out would hold it; here the domain does, on the hub's own database file.
        store = HubStore(db)
        try:
            ClusterOps(Hub(store)).hold("store-1", "rollout/r-7", reason="wave 1")
        finally:
            store.close()
        with pytest.raises(HubRequestError) as held:
            admin.clusters.delete("store-1")
        assert (held.value.status, held.value.code) == (409, "ClusterHeld")
        assert "rollout/r-7 (wave 1)" in str(held.value)
        assert admin.clusters.get("store-1").name == "store-1"
        store = HubStore(db)
        try:
            ClusterOps(Hub(store)).release_hold("store-1", "rollout/r-7")
        finally:
            store.close()
        admin.clusters.delete("store-1")
        with pytest.raises(HubRequestError) as gone:
            admin.clusters.get("store-1")
        assert gone.value.status == 404
