"""The roll-out controller in process, on a real SQLite store, with an injected clock and an
injected crash: a transition and its cluster update commit together or not at all."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rollout_fleet import LOCAL_OS as OS
from rollout_fleet import LOCAL_V2 as V2
from rollout_fleet import local_fleet

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
    with local_fleet(tmp_path / "hub.db", 3) as hub:
        yield hub


def _rollout(**kw: Any) -> dict[str, Any]:
    doc = model.Rollout("r", V2.ref, Selector(tags={"batch": "b"}), **kw)
    return unstructure(doc)  # type: ignore[no-any-return]


class Crash(Exception):
    """Stands for the process dying at this instant."""


def test_a_crash_between_a_cluster_update_and_its_record_leaves_neither(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    RolloutOps(hub).create(_rollout())
    controller = RolloutController(hub)
    original = controller.tables.transition

    def crash_after_the_update(name: str, kind: str, *args: Any, **kw: Any) -> None:
        if kind == "cluster-updated":
            raise Crash
        original(name, kind, *args, **kw)

    monkeypatch.setattr(controller.tables, "transition", crash_after_the_update)
    controller.tick()  # starts the wave
    with pytest.raises(Crash):
        controller.tick()  # the first cluster's update, then "the crash"
    clusters = ClusterOps(hub)
    assert clusters.cluster("c-0").generation == 1  # its update rolled back with it
    assert [m.state for m in controller.tables.clusters("r")] == ["pending"] * 3
    monkeypatch.undo()
    fresh = RolloutController(hub)  # as after a restart: only what is stored
    while fresh.tick():
        pass
    assert [clusters.cluster(f"c-{i}").generation for i in range(3)] == [2, 2, 2]
    updated = [t for t in fresh.tables.transitions("r") if t.type == "cluster-updated"]
    assert sorted(t.cluster or "" for t in updated) == ["c-0", "c-1", "c-2"]
    fresh.tick()
    assert len([t for t in fresh.tables.transitions("r") if t.type == "cluster-updated"]) == 3


def test_a_wave_starts_only_once_its_window_opens(hub: Hub) -> None:
    window = model.Window("0 2 * * *", "1h", "America/Chicago")
    RolloutOps(hub).create(_rollout(window=window))
    # 01:30 in Chicago in winter (07:30 UTC): closed; 02:10 (08:10 UTC): open.
    now = [datetime(2026, 1, 15, 7, 30, tzinfo=UTC).timestamp()]
    controller = RolloutController(hub, clock=lambda: now[0])
    controller.tick()
    row = controller.tables.get("r")
    assert row is not None
    assert row.wave_state == "waiting-window"
    assert ClusterOps(hub).cluster("c-0").generation == 1
    [waiting] = [t for t in controller.tables.transitions("r") if t.type == "waiting-window"]
    assert waiting.data["nextOpen"] == "2026-01-15T08:00:00Z"
    now[0] = datetime(2026, 1, 15, 8, 10, tzinfo=UTC).timestamp()
    while controller.tick():
        pass
    assert ClusterOps(hub).cluster("c-0").generation == 2


def test_held_clusters_and_controls(hub: Hub) -> None:
    ops = RolloutOps(hub)
    ops.create(_rollout())
    with pytest.raises(HubError, match=r"held by rollout/r"):
        ops.clusters.update("c-1", {"metadata": {"labels": {"x": "y"}}})
    # A dry run changes nothing, so it is allowed.
    ops.clusters.update("c-1", {"metadata": {"labels": {"x": "y"}}}, dry_run=True)
    assert ops.pause("r").state == "paused"
    with pytest.raises(HubError, match="is paused: it cannot be paused"):
        ops.pause("r")
    assert ops.resume("r").state == "running"
    with pytest.raises(HubError) as nothing:
        ops.approve("r")
    assert nothing.value.code == "NothingToApprove"
    assert ops.abort("r").state == "aborted"
    assert ops.clusters.holders("c-1") == []
    with pytest.raises(HubError) as done:
        ops.resume("r")
    assert done.value.code == "RolloutState"


def _converge(hub: Hub, generation: int) -> None:
    ops = ClusterOps(hub)
    for i in range(3):
        hub.heartbeat(f"h-{i}", None)
        ops.report(f"h-{i}", {"phase": "healthy", "observedGeneration": generation})


def _until(controller: RolloutController, done: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the controller did not get there"
        controller.tick()
        time.sleep(0.02)


def test_the_gate_webhook_must_answer_2xx_for_the_wave_to_pass(hub: Hub) -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    answers = [500]
    posts: list[dict[str, Any]] = []

    class Gate(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            size = int(self.headers["Content-Length"])
            posts.append(json.loads(self.rfile.read(size)))
            self.send_response(answers[0])
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Gate)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/gate"
        ops = RolloutOps(hub)
        ops.create(_rollout(gate=model.HealthGate(webhook=url)))
        controller = RolloutController(hub)
        while controller.tick():
            pass  # the one wave's clusters are updated
        _converge(hub, 2)
        _until(controller, lambda: ops.rollout("r").state != "running")
        row = ops.rollout("r")
        assert row.state == "paused"  # the hosts passed; the webhook did not
        assert row.message == "wave 'all' failed: the gate webhook answered 500; paused"
        assert posts[0]["rollout"] == "r"
        assert posts[0]["wave"] == {"index": 0, "name": "all"}
        assert [c["state"] for c in posts[0]["clusters"]] == ["converged"] * 3
        answers[0] = 204
        ops.resume("r")
        _until(controller, lambda: ops.rollout("r").state != "running")
        assert ops.rollout("r").state == "completed"
        assert len(posts) == 2  # called again after the resume, never reusing an answer
        types = [t.type for t in ops.tables.transitions("r")]
        assert types.count("gate-webhook-failed") == 1
        assert types.count("gate-webhook-passed") == 1
    finally:
        server.shutdown()
        server.server_close()


def test_an_unreachable_webhook_fails_the_gate(hub: Hub) -> None:
    ops = RolloutOps(hub)
    # A port nothing listens on (the HTTP server above is gone; 9 is "discard").
    ops.create(_rollout(gate=model.HealthGate(webhook="http://127.0.0.1:9/gate")))
    controller = RolloutController(hub)
    while controller.tick():
        pass
    _converge(hub, 2)
    _until(controller, lambda: ops.rollout("r").state != "running")
    assert "the gate webhook could not be reached (ConnectionError)" in ops.rollout("r").message


def test_a_refused_cluster_update_fails_the_wave_and_resume_tries_it_again(hub: Hub) -> None:
    v3 = model.ClusterProfile("retail", "3.0.0", (OS, model.Pack.k8s("rke2", "1.31.0")))
    clusters = ClusterOps(hub)
    clusters.publish_profile(unstructure(v3))
    # c-0 carries values for k3s, which 3.0.0 does not have: its update is refused.
    clusters.update("c-0", {"spec": {"values": {"k3s": {"x": 1}}}})
    doc = model.Rollout("r", v3.ref, Selector(tags={"batch": "b"}), waves=(model.Wave("all"),))
    ops = RolloutOps(hub)
    ops.create(unstructure(doc))
    controller = RolloutController(hub)
    while controller.tick():
        pass
    _converge_some(hub, {"h-1": 2, "h-2": 2})
    _until(controller, lambda: ops.rollout("r").state != "running")
    row = ops.rollout("r")
    assert row.state == "paused"
    assert "c-0" in row.message
    [c0] = [m for m in ops.tables.clusters("r") if m.cluster_name == "c-0"]
    assert c0.state == "failed"
    assert c0.to_generation is None  # never updated
    assert "$.spec.values.k3s" in c0.message
    assert clusters.cluster("c-0").generation == 2  # only the values change above
    ops.resume("r")
    _until(controller, lambda: ops.rollout("r").state != "running")
    failures = [t for t in ops.tables.transitions("r") if t.type == "cluster-failed"]
    assert [t.cluster for t in failures] == ["c-0", "c-0"]  # tried again, refused again
    assert [m.state for m in ops.tables.clusters("r")] == ["failed", "converged", "converged"]


def _converge_some(hub: Hub, generations: dict[str, int]) -> None:
    ops = ClusterOps(hub)
    for uid, generation in generations.items():
        hub.heartbeat(uid, None)
        ops.report(uid, {"phase": "healthy", "observedGeneration": generation})
