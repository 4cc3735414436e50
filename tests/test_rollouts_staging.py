"""Per-host ``maxUnavailable`` and the generation a failure is about, in process on a real
SQLite store: the roll-out controller hands a cluster's hosts their new desired state a few
at a time (control plane first), stops at a failure, and a crash in between neither repeats
nor skips a host; a failure about an older generation does not count against a later wave,
and a rollback's own failure is seen at once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from rollout_fleet import LOCAL_V1 as V1
from rollout_fleet import LOCAL_V2 as V2
from rollout_fleet import add_cluster, join, local_hub, pooled

from edgekit import model
from edgekit.config import unstructure
from edgekit.hub.controller import RolloutController
from edgekit.hub.domain import Hub
from edgekit.hub.domain_clusters import ClusterOps
from edgekit.hub.domain_rollouts import RolloutOps
from edgekit.model.rollouts import GateState, HealthGate, HostObservation, evaluate_gate
from edgekit.model.selectors import Selector

# Sorted by uid the workers come first: the control plane must still go first.
CP, WORKERS = "z-cp", ("a-w1", "a-w2", "a-w3")


@pytest.fixture
def hub(hub_db: str) -> Iterator[Hub]:
    with local_hub(hub_db) as (hub, secret):  # on SQLite and on PostgreSQL (edgekit.testing)
        for i, uid in enumerate((CP, *WORKERS, "solo")):
            join(hub, secret, uid, f"10.0.0.{i + 1}")
        add_cluster(hub, pooled("big", V1.ref, (CP, *WORKERS)))
        add_cluster(hub, model.Cluster.single_node("solo", V1.ref, "solo"))
        ops = ClusterOps(hub)
        for uid in (CP, *WORKERS, "solo"):
            ops.report(uid, {"phase": "healthy", "observedGeneration": 1})
        yield hub


def _create(hub: Hub, **kw: Any) -> None:
    kw.setdefault("gate", HealthGate(soak="0s"))
    doc = model.Rollout("r", V2.ref, Selector(tags={"batch": "b"}), **kw)
    RolloutOps(hub).create(unstructure(doc))


def _generations(hub: Hub) -> dict[str, int]:
    return {u: int((hub.host(u).desired or {})["generation"]) for u in (CP, *WORKERS)}


def _report(hub: Hub, uid: str, phase: str, generation: int, message: str = "") -> None:
    ClusterOps(hub).report(
        uid, {"phase": phase, "observedGeneration": generation, "message": message}
    )


def _settle(controller: RolloutController) -> None:
    """Tick until the controller has nothing left to do on what the hosts reported."""
    for _ in range(6):
        controller.tick()


def _transitions(controller: RolloutController, kind: str) -> list[Any]:
    return [t for t in controller.tables.transitions("r") if t.type == kind]


def test_hosts_of_a_cluster_get_their_desired_state_one_at_a_time(hub: Hub) -> None:
    _create(hub, max_unavailable=1)
    controller = RolloutController(hub)
    _settle(controller)
    # The control plane first, although the workers' uids sort before it.
    assert _generations(hub) == {CP: 2, "a-w1": 1, "a-w2": 1, "a-w3": 1}
    [updated] = [t for t in _transitions(controller, "cluster-updated") if t.cluster == "big"]
    assert updated.data["heldBack"] == 3
    _report(hub, CP, "applying", 1)
    _settle(controller)
    assert _generations(hub)[CP] == 2
    assert _generations(hub)["a-w1"] == 1
    _report(hub, CP, "healthy", 2)
    _settle(controller)
    assert _generations(hub) == {CP: 2, "a-w1": 2, "a-w2": 1, "a-w3": 1}
    given = _transitions(controller, "hosts-updated")
    assert [(t.cluster, t.data["hosts"], t.data["heldBack"]) for t in given] == [
        ("big", ["a-w1"], 2)
    ]
    # A failure of the host in flight stops the cluster and fails the wave.
    _report(hub, "a-w1", "failed", 1, "disk full")
    _report(hub, "solo", "healthy", 2)
    _settle(controller)
    assert _generations(hub) == {CP: 2, "a-w1": 2, "a-w2": 1, "a-w3": 1}
    row = controller.tables.get("r")
    assert row is not None
    assert row.state == "paused"
    assert "big" in row.message
    assert "a-w1: failed: disk full" in next(
        m.message for m in controller.tables.clusters("r") if m.cluster_name == "big"
    )
    # Resumed and repaired, the cluster goes on where it stopped.
    RolloutOps(hub).resume("r")
    _report(hub, "a-w1", "healthy", 2)
    _settle(controller)
    assert _generations(hub) == {CP: 2, "a-w1": 2, "a-w2": 2, "a-w3": 1}
    _report(hub, "a-w2", "healthy", 2)
    _settle(controller)
    _report(hub, "a-w3", "healthy", 2)
    _settle(controller)
    row = controller.tables.get("r")
    assert row is not None
    assert row.state == "completed"
    given = _transitions(controller, "hosts-updated")
    assert [h for t in given for h in t.data["hosts"]] == ["a-w1", "a-w2", "a-w3"]


def test_a_paused_rollout_hands_out_no_held_back_host(hub: Hub) -> None:
    _create(hub, max_unavailable=1)
    controller = RolloutController(hub)
    _settle(controller)
    RolloutOps(hub).pause("r")
    _report(hub, CP, "healthy", 2)
    _settle(controller)
    assert _generations(hub)["a-w1"] == 1
    RolloutOps(hub).resume("r")
    _settle(controller)
    assert _generations(hub)["a-w1"] == 2


def test_max_unavailable_two_and_a_crash_between_hand_out_and_record(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    _create(hub, max_unavailable=2)
    controller = RolloutController(hub)
    _settle(controller)
    assert _generations(hub) == {CP: 2, "a-w1": 2, "a-w2": 1, "a-w3": 1}
    _report(hub, CP, "healthy", 2)
    original = controller.tables.transition

    def crash(name: str, kind: str, *args: Any, **kw: Any) -> None:
        if kind == "hosts-updated":
            raise RuntimeError("the process dies here")
        original(name, kind, *args, **kw)

    monkeypatch.setattr(controller.tables, "transition", crash)
    with pytest.raises(RuntimeError, match="dies here"):
        controller.tick()  # the loop would log it; here it stands for the process dying
    monkeypatch.undo()
    assert _generations(hub)["a-w2"] == 1  # the hand-out rolled back with its record
    fresh = RolloutController(hub)  # as after a restart
    _settle(fresh)
    assert _generations(hub) == {CP: 2, "a-w1": 2, "a-w2": 2, "a-w3": 1}
    _report(hub, "a-w1", "healthy", 2)
    _report(hub, "a-w2", "healthy", 2)
    _settle(fresh)
    _report(hub, "a-w3", "healthy", 2)
    _report(hub, "solo", "healthy", 2)
    _settle(fresh)
    given = [h for t in _transitions(fresh, "hosts-updated") for h in t.data["hosts"]]
    assert sorted(given) == ["a-w2", "a-w3"]  # each exactly once
    row = fresh.tables.get("r")
    assert row is not None
    assert row.state == "completed"


def test_a_rollback_puts_never_reached_hosts_back_without_an_upgrade(hub: Hub) -> None:
    _create(hub, max_unavailable=1, on_failure="rollback")
    controller = RolloutController(hub)
    _settle(controller)
    _report(hub, CP, "healthy", 2)
    _settle(controller)
    _report(hub, "a-w1", "failed", 1, "no space")
    _settle(controller)
    row = controller.tables.get("r")
    assert row is not None
    assert row.state == "rolling-back"
    desired = {u: hub.host(u).desired or {} for u in (CP, *WORKERS)}
    # Generation 3 is version 1.0.0 again: the two workers never given 2 still run it.
    assert {u: (d["generation"], d["upgrade"]) for u, d in desired.items()} == {
        CP: (3, "reboot"),
        "a-w1": (2, "reboot"),  # held back behind the control plane
        "a-w2": (3, "none"),
        "a-w3": (3, "none"),
    }
    assert desired["a-w2"]["profile"] == {"name": "retail", "version": "1.0.0"}
    _report(hub, CP, "healthy", 3)
    _settle(controller)
    assert (hub.host("a-w1").desired or {})["generation"] == 3


def test_a_rollbacks_own_failure_is_seen_at_once(hub: Hub) -> None:
    _create(hub, on_failure="rollback", gate=HealthGate(soak="0s", timeout="1h"))
    controller = RolloutController(hub)
    _settle(controller)
    _report(hub, "solo", "failed", 1, "bad image")
    _settle(controller)
    [solo] = [m for m in controller.tables.clusters("r") if m.cluster_name == "solo"]
    assert solo.state == "rolling-back"
    assert solo.rollback_generation == 3
    # The same phase again, now about generation 3: no need to wait an hour.
    _report(hub, "solo", "failed", 1, "still bad")
    _settle(controller)
    [solo] = [m for m in controller.tables.clusters("r") if m.cluster_name == "solo"]
    assert solo.state == "rollback-failed"
    assert "solo: failed: still bad" in solo.message


def test_a_failure_about_an_older_generation_does_not_fail_the_wave(hub: Hub) -> None:
    _report(hub, "solo", "failed", 1, "from last week")  # before the roll-out
    _create(hub, max_unavailable=5)
    controller = RolloutController(hub)
    _settle(controller)
    row = controller.tables.get("r")
    assert row is not None
    assert row.state == "running"
    assert row.wave_state == "waiting"
    for uid in (CP, *WORKERS, "solo"):
        _report(hub, uid, "healthy", 2)
    _settle(controller)
    row = controller.tables.get("r")
    assert row is not None
    assert row.state == "completed"


def test_the_gate_counts_a_failure_only_for_the_desired_generation() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    gate = HealthGate(soak="0s")

    def one(attempted: int | None) -> GateState:
        host = HostObservation("c", "h", 2, 1, "failed", now, "x", attempted)
        return evaluate_gate(gate, [host], now=now, wave_started=now).state

    assert one(1) is GateState.WAITING  # a failure of generation 1, and 2 is on its way
    assert one(2) is GateState.FAILED
    assert one(None) is GateState.FAILED  # unknown (an older hub's report): as before


def test_a_labels_only_change_by_the_holder_leaves_the_held_back_hosts_held(hub: Hub) -> None:
    _create(hub, max_unavailable=1)
    controller = RolloutController(hub)
    _settle(controller)
    ops = ClusterOps(hub)
    ops.update("big", {"metadata": {"labels": {"batch": "b", "x": "y"}}}, holder="rollout/r")
    assert _generations(hub) == {CP: 2, "a-w1": 1, "a-w2": 1, "a-w3": 1}
    assert ops.staging.held_back(ops.cluster("big").uid) == 3
