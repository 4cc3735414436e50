"""The issue's rehearsal at its size: 1,000 simulated hosts in 300 clusters (100 of four
hosts, 200 of three), a roll-out whose second wave fails (one site fails to apply, one rolls
back after its reboot), so it pauses; a rollback then puts every changed cluster back.
Everything is asserted from the hub's own records (roll-out status, clusters, host status
and the event log), never from what the simulator believes."""

from __future__ import annotations

from collections import Counter

import pytest
from rollout_fleet import V1, V2, all_events, pooled, publish_retail

from edgekit import model
from edgekit.hub import HubServer
from edgekit.model.selectors import Selector
from edgekit.simulator import Durations, Fault, Faults, FleetSimulator, SimulatedHost

#: Site -> hosts: the first 100 stores have four hosts, the other 200 three (1,000 in all).
SITES = {f"store-{i:03d}": 4 if i < 100 else 3 for i in range(300)}
#: Both in the ten-percent wave (store-001..store-030, the canary being store-000).
FAULTS = {"store-007": Fault.FAIL_APPLY, "store-021": Fault.ROLL_BACK}


def test_a_thousand_hosts_a_failing_wave_pauses_and_rolls_back(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    db = tmp_path_factory.mktemp("fleet") / "hub.db"
    hosts = [SimulatedHost(f"{s}-h{j}", s) for s, n in SITES.items() for j in range(n)]
    assert len(hosts) == 1000
    with HubServer(db, access_log=False, rollout_interval=0.2) as server:
        admin = publish_retail(server.client(retry_for=30))
        token = admin.tokens.create("fleet")
        assert token.secret is not None
        with FleetSimulator(
            server.url,
            token.secret,
            hosts,
            faults=Faults(sites=FAULTS),
            durations=Durations(2, 1, 2),
            # 3 s between polls (a heartbeat and a desired-state read each): about 700
            # requests/s from 1,000 agents, within what one SQLite writer serves on two
            # cores shared with the simulator itself.
            poll_interval=150,
            time_scale=0.02,
            seed=1000,
        ) as sim:
            sim.wait_registered(timeout=300)
            for s, n in SITES.items():
                uids = [f"{s}-h{j}" for j in range(n)]
                admin.clusters.create(pooled(s, V1.ref, uids), labels={"fleet": "rehearsal"})
            sim.wait(lambda x: x.at_generation(x.hosts, 1), timeout=300, what="every join")
            since = admin.events.revision()
            handle = admin.rollouts.create(
                model.Rollout(
                    "fleet-v2",
                    V2.ref,
                    Selector(tags={"fleet": "rehearsal"}),
                    waves=(
                        model.Wave("canary", clusters="store-000"),
                        model.Wave("ten-percent", percent=10),
                        model.Wave("rest"),
                    ),
                    max_unavailable=2,  # control plane first, then two workers at a time
                    gate=model.HealthGate(soak="1s", timeout="2m", unreachable_after="2m"),
                )
            )
            status = handle.wait(timeout=400)
            assert status.state == "paused", status
            assert (status.wave, status.wave_state) == ("ten-percent", "failed")
            # The gate fails the wave on its first failure: store-007's, at applying (store-021
            # rolls back later, after its reboot, if the tick had not judged the wave by then).
            assert status.message.startswith("wave 'ten-percent' failed: store-007"), status
            # Nothing of the third wave was touched while the roll-out is paused.
            assert {status.cluster(s).state for s in list(SITES)[31:]} == {"pending"}
            handle.rollback()
            status = handle.wait(timeout=400)
        assert status.state == "rolled-back", status

        changed = list(SITES)[:31]  # the canary and ten-percent (ceil(10 % of 300))
        states = Counter(status.cluster(s).state for s in SITES)
        assert states == Counter({"skipped": 269, "rolled-back": 29, "rollback-failed": 2})
        # The two faulty stores fail every update (the faults are the sites'), the rollback's
        # too, and say so; the other 29 changed clusters are back on 1.0.0 everywhere.
        assert status.cluster("store-007").state == "rollback-failed"
        assert status.cluster("store-021").state == "rollback-failed"
        for s, n in SITES.items():
            cluster = admin.clusters.get(s)
            want = (3, "1.0.0") if s in changed else (1, "1.0.0")
            assert (cluster.generation, cluster.spec["profile"]["version"]) == want, s
            reported = admin.clusters.status(s).hosts
            assert len(reported) == n
            if s in changed and s not in FAULTS:
                assert {(h.observed_generation, h.phase) for h in reported} == {(3, "healthy")}
            elif s not in changed:
                assert {(h.observed_generation, h.phase) for h in reported} == {(1, "healthy")}

        events = all_events(admin, since, ["rollout", "cluster", "host"])
        rollout_events = [e for e in events if e.kind == "rollout"]
        kinds = [(e.type, e.data.get("wave")) for e in rollout_events if e.type.startswith("wave-")]
        [failed] = [e for e in rollout_events if e.type == "wave-failed"]
        assert "store-007" in failed.data["failedClusters"]
        assert set(failed.data["failedClusters"]) <= set(FAULTS)
        # Waves by index: the canary and ten-percent started, the third never did.
        assert [k for k in kinds if k[0] == "wave-started"] == [
            ("wave-started", 0),
            ("wave-started", 1),
        ]
        # The roll-out updated each changed cluster once, and no other cluster; the cluster
        # records say each of them changed exactly twice: to 2, then back as 3.
        updated = Counter(e.data["cluster"] for e in rollout_events if e.type == "cluster-updated")
        assert updated == Counter(dict.fromkeys(changed, 1))
        generations = Counter(
            (e.data["name"], e.data["generation"])
            for e in events
            if e.kind == "cluster" and e.type == "updated"
        )
        assert set(generations.values()) == {1}
        assert {s for s, _ in generations} == set(changed)
        assert {g for _, g in generations} == {2, 3}
        # The devices' own failures are in the host records the gate judged.
        phases = {(e.uid, e.data.get("phase")) for e in events if e.kind == "host"}
        assert ("store-007-h0", "failed") in phases
        assert ("store-021-h0", "rolled-back") in phases
