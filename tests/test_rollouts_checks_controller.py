"""Gate checks in process on a real SQLite store, the controller ticked by hand with an
injected clock: the deadline is the hub's (a verdict after it is refused even before the
controller recorded the timeout), the timeout is recorded once, and a failed verdict fails
the wave even when a host just stopped being healthy."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rollout_fleet import LOCAL_V1 as V1
from rollout_fleet import LOCAL_V2 as V2
from rollout_fleet import add_cluster, join, local_hub

from edgekit import model
from edgekit.config import unstructure
from edgekit.hub.controller import RolloutController
from edgekit.hub.domain import Hub
from edgekit.hub.domain_clusters import ClusterOps
from edgekit.hub.domain_rollouts import RolloutOps
from edgekit.hub.errors import HubError
from edgekit.model.selectors import Selector


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    with local_hub(tmp_path / "hub.db") as (hub, secret):
        join(hub, secret, "solo", "10.0.0.1")
        add_cluster(hub, model.Cluster.single_node("solo", V1.ref, "solo"))
        ClusterOps(hub).report("solo", {"phase": "healthy", "observedGeneration": 1})
        yield hub


def _soaking(hub: Hub, gate: model.HealthGate, clock: list[float]) -> RolloutController:
    doc = model.Rollout("r", V2.ref, Selector(tags={"batch": "b"}), gate=gate)
    RolloutOps(hub).create(unstructure(doc))
    controller = RolloutController(hub, clock=lambda: clock[0])
    for _ in range(3):
        controller.tick()  # the wave starts, its cluster is updated
    ClusterOps(hub).report("solo", {"phase": "healthy", "observedGeneration": 2})
    hub.heartbeat("solo", None)
    controller.tick()
    row = controller.tables.get("r")
    assert row is not None
    assert row.wave_state == "soaking"
    return controller


def _types(controller: RolloutController) -> list[str]:
    return [t.type for t in controller.tables.transitions("r")]


def test_the_deadline_is_the_hub_s_and_its_timeout_is_recorded_once(hub: Hub) -> None:
    # The soak (and so the check's 60 s) began two minutes ago by the controller's clock.
    clock = [time.time() - 120]
    gate = model.HealthGate(soak="1h", checks=(model.GateCheck("smoke", "1m"),))
    controller = _soaking(hub, gate, clock)
    ops = RolloutOps(hub)
    with pytest.raises(HubError) as late:
        ops.verdict("r", {"wave": 0, "check": "smoke", "passed": True})
    assert late.value.code == "CheckTimedOut"  # before any tick recorded the timeout
    assert "gate-check-timed-out" not in _types(controller)
    clock[0] = time.time()
    controller.tick()
    controller.tick()
    row = controller.tables.get("r")
    assert row is not None
    assert (row.state, row.wave_state) == ("paused", "failed")
    assert "check 'smoke' timed out (no verdict within 1m" in row.message
    assert _types(controller).count("gate-check-timed-out") == 1
    with pytest.raises(HubError) as after:
        ops.verdict("r", {"wave": 0, "check": "smoke", "passed": True})
    assert after.value.code == "NotAwaitingVerdict"


def test_a_failed_verdict_fails_the_wave_even_while_a_host_is_unhealthy(hub: Hub) -> None:
    clock = [time.time()]
    gate = model.HealthGate(soak="1h", checks=("smoke", "perf"))
    controller = _soaking(hub, gate, clock)
    ops = RolloutOps(hub)
    ops.verdict("r", {"wave": "all", "check": "perf", "passed": True, "message": "p99 80 ms"})
    controller.tick()
    assert controller.tables.get("r").state == "running"  # type: ignore[union-attr]
    ops.verdict("r", {"wave": "all", "check": "smoke", "passed": False, "message": "2 down"})
    ClusterOps(hub).report("solo", {"phase": "applying", "observedGeneration": 2})
    controller.tick()
    row = controller.tables.get("r")
    assert row is not None
    assert (row.state, row.wave_state) == ("paused", "failed")
    assert row.message == "wave 'all' failed: check 'smoke' failed: 2 down; paused"


def test_a_resume_is_a_new_attempt_whose_checks_need_fresh_verdicts(hub: Hub) -> None:
    clock = [time.time()]
    gate = model.HealthGate(soak="0s", checks=("smoke",))
    controller = _soaking(hub, gate, clock)
    ops = RolloutOps(hub)
    first = controller.tables.get("r")
    assert first is not None
    ops.verdict("r", {"wave": 0, "check": "smoke", "passed": False, "attempt": first.wave_started})
    controller.tick()
    clock[0] += 5
    ops.resume("r")
    controller.tick()
    row = controller.tables.get("r")
    assert row is not None
    assert (row.state, row.wave_state) == ("running", "soaking")  # not failed again
    with pytest.raises(HubError) as old:
        ops.verdict(
            "r", {"wave": 0, "check": "smoke", "passed": True, "attempt": first.wave_started}
        )
    assert old.value.code == "NotAwaitingVerdict"
    ops.verdict("r", {"wave": 0, "check": "smoke", "passed": True, "attempt": row.wave_started})
    controller.tick()
    done = controller.tables.get("r")
    assert done is not None
    assert done.state == "completed"


def test_a_pause_while_checks_await_restarts_their_deadlines_on_resume(hub: Hub) -> None:
    clock = [time.time() - 120]
    gate = model.HealthGate(soak="0s", checks=(model.GateCheck("smoke", "1m"),))
    controller = _soaking(hub, gate, clock)
    ops = RolloutOps(hub)
    ops.pause("r")
    with pytest.raises(HubError) as paused:
        ops.verdict("r", {"wave": 0, "check": "smoke", "passed": True})
    assert paused.value.code == "NotAwaitingVerdict"  # none is taken while paused
    clock[0] = time.time()  # the deadline passed during the pause
    ops.resume("r")
    controller.tick()
    row = controller.tables.get("r")
    assert row is not None
    assert (row.state, row.wave_state) == ("running", "soaking")
    assert "gate-check-timed-out" not in _types(controller)
    ops.verdict("r", {"wave": 0, "check": "smoke", "passed": True})
    controller.tick()
    assert controller.tables.get("r").state == "completed"  # type: ignore[union-attr]
