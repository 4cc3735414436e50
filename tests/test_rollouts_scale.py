"""A roll-out over 300 simulated hosts in 100 three-host clusters: a failing wave pauses it,
a rollback puts the changed clusters back; asserted from the hub's own records."""

from __future__ import annotations

import time

import pytest

from edgekit import model
from edgekit.hub import HubServer
from edgekit.model.selectors import Selector
from edgekit.simulator import Durations, Fault, Faults, FleetSimulator, SimulatedHost

OS = model.Pack.os("ubuntu", "22.04", values={"system": {"uri": "registry.local/edge/os:1"}})
V1 = model.ClusterProfile("retail", "1.0.0", (OS, model.Pack.k8s("k3s", "1.30.4")))
V2 = model.ClusterProfile("retail", "2.0.0", (OS, model.Pack.k8s("k3s", "1.31.0")))
CLUSTERS = 100


def test_three_hundred_hosts_a_failing_wave_pauses_and_rolls_back(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    db = tmp_path_factory.mktemp("scale") / "hub.db"
    with HubServer(db, access_log=False, rollout_interval=0.2) as server:
        admin = server.client(retry_for=30)
        admin.profiles.publish(V1)
        admin.profiles.publish(V2)
        token = admin.tokens.create("scale")
        assert token.secret is not None
        sites = [f"store-{i:03d}" for i in range(CLUSTERS)]
        hosts = [SimulatedHost(f"{s}-h{j}", s) for s in sites for j in range(3)]
        faults = Faults(sites={"store-005": Fault.FAIL_APPLY})
        with FleetSimulator(
            server.url,
            token.secret,
            hosts,
            faults=faults,
            durations=Durations(2, 1, 2),
            poll_interval=25,  # 0.5 s: 300 agents, about 1,200 requests/s at most
            time_scale=0.02,
            seed=11,
        ) as sim:
            sim.wait_registered(timeout=120)
            for s in sites:
                cp, *workers = (model.PoolHost(f"{s}-h{j}") for j in range(3))
                admin.clusters.create(
                    model.Cluster(
                        s,
                        V1.ref,
                        control_plane=model.Pool("cp", (cp,)),
                        workers=(model.Pool("workers", tuple(workers)),),
                    ),
                    labels={"fleet": "scale"},
                )
            sim.wait(lambda x: x.at_generation(x.hosts, 1), timeout=120, what="every join")
            started = time.monotonic()
            handle = admin.rollouts.create(
                model.Rollout(
                    "scale-v2",
                    V2.ref,
                    Selector(tags={"fleet": "scale"}),
                    waves=(
                        model.Wave("canary", clusters="store-000"),
                        model.Wave("ten-percent", percent=10),
                        model.Wave("rest"),
                    ),
                    # maxUnavailable 1 (the default): a cluster's three hosts one after
                    # another, so the timeout leaves time for three upgrades in a row.
                    gate=model.HealthGate(soak="1s", timeout="30s", unreachable_after="1m"),
                )
            )
            status = handle.wait(timeout=180)
            assert status.state == "paused", status
            assert (status.wave, status.wave_state) == ("ten-percent", "failed")
            assert status.message.startswith("wave 'ten-percent' failed: store-005")
            handle.rollback()
            status = handle.wait(timeout=180)
            elapsed = time.monotonic() - started
        assert status.state == "rolled-back"
        changed = sites[:11]  # the canary and ten-percent (ceil(10% of 100)) waves
        for s in sites:
            cluster = admin.clusters.get(s)
            if s in changed:
                assert (cluster.generation, cluster.spec["profile"]["version"]) == (3, "1.0.0")
                want = "rollback-failed" if s == "store-005" else "rolled-back"
                assert status.cluster(s).state == want
            else:
                assert (cluster.generation, cluster.spec["profile"]["version"]) == (1, "1.0.0")
                assert status.cluster(s).state == "skipped"
        for s in changed:
            if s != "store-005":
                [host] = {h.observed_generation for h in admin.clusters.status(s).hosts}
                assert host == 3  # every host of it back, as its agent reported
        assert elapsed < 150
