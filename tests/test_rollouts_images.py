"""A roll-out that moves clusters to a new provider image with the profile (a repave), in
process on a real SQLite store: every host's desired state names the new image with
``upgrade: repave``, the report says from/to image, and a rollback of the completed roll-out
puts each cluster's image back with its profile version."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rollout_fleet import LOCAL_V2 as V2
from rollout_fleet import local_fleet

from edgekit import model
from edgekit.config import unstructure
from edgekit.hub.controller import RolloutController
from edgekit.hub.domain import Hub
from edgekit.hub.domain_clusters import ClusterOps
from edgekit.hub.domain_rollouts import RolloutOps, rollout_json
from edgekit.model.selectors import Selector

IMAGE_V1 = "registry.example/edge/sample:v1"
IMAGE_V2 = "registry.example/edge/sample:v2"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    with local_fleet(tmp_path / "hub.db", 2, IMAGE_V1) as hub:
        yield hub


def _settle(controller: RolloutController, hub: Hub, generation: int, state: str) -> None:
    ops, rollouts = ClusterOps(hub), RolloutOps(hub)
    deadline = time.monotonic() + 15
    while rollouts.rollout("r").state != state:
        assert time.monotonic() < deadline, rollouts.rollout("r")
        controller.tick()
        for i in range(2):
            desired = hub.host(f"h-{i}").desired or {}
            if desired.get("generation") == generation:
                hub.heartbeat(f"h-{i}", None)
                ops.report(f"h-{i}", {"phase": "healthy", "observedGeneration": generation})
        time.sleep(0.01)


def _desired(hub: Hub, uid: str) -> dict[str, Any]:
    return dict(hub.host(uid).desired or {})


def _report(hub: Hub) -> list[dict[str, Any]]:
    """The clusters of the API's answer for the roll-out."""
    ops = RolloutOps(hub)
    answer = rollout_json(ops.rollout("r"), ops.tables.clusters("r"))
    return list(answer["status"]["clusters"])


def test_a_rollout_repaves_to_its_image_and_its_rollback_puts_the_old_one_back(hub: Hub) -> None:
    doc = model.Rollout(
        "r", V2.ref, Selector(tags={"batch": "b"}), provider_image=IMAGE_V2,
        gate=model.HealthGate(soak="0s", timeout="1h"),
    )  # fmt: skip
    rollouts = RolloutOps(hub)
    rollouts.create(unstructure(doc))
    controller = RolloutController(hub)
    _settle(controller, hub, 2, "completed")
    clusters = ClusterOps(hub)
    for i in range(2):
        assert clusters.cluster(f"c-{i}").spec["providerImage"] == IMAGE_V2
        desired = _desired(hub, f"h-{i}")
        assert (desired["providerImage"], desired["upgrade"]) == (IMAGE_V2, "repave")
    report = _report(hub)
    assert {(c["fromImage"], c["toImage"]) for c in report} == {(IMAGE_V1, IMAGE_V2)}

    rollouts.rollback("r")
    _settle(controller, hub, 3, "rolled-back")
    for i in range(2):
        cluster = clusters.cluster(f"c-{i}")
        assert cluster.spec["providerImage"] == IMAGE_V1
        assert cluster.spec["profile"] == {"name": "retail", "version": "1.0.0"}
        desired = _desired(hub, f"h-{i}")
        assert (desired["providerImage"], desired["upgrade"], desired["generation"]) == (
            IMAGE_V1,
            "repave",
            3,
        )


def test_a_rollout_without_an_image_keeps_each_clusters_image(hub: Hub) -> None:
    doc = model.Rollout(
        "r", V2.ref, Selector(tags={"batch": "b"}), gate=model.HealthGate(soak="0s", timeout="1h")
    )
    RolloutOps(hub).create(unstructure(doc))
    _settle(RolloutController(hub), hub, 2, "completed")
    for i in range(2):
        assert ClusterOps(hub).cluster(f"c-{i}").spec["providerImage"] == IMAGE_V1
    assert {(c["fromImage"], c["toImage"]) for c in _report(hub)} == {(None, None)}


def test_a_bad_image_reference_is_a_path_addressed_problem() -> None:
    with pytest.raises(model.ModelValueError, match=r"provider_image: must be an image reference"):
        model.Rollout("r", V2.ref, provider_image="has space:v2")
