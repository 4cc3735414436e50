"""Roll-outs driven by the hub's controller (issue 12), against a real hub subprocess, real
SQLite and the fleet simulator as the fleet; everything asserted from the hub's records."""

from __future__ import annotations

import pytest
from rollout_fleet import (
    FAST,
    V1,
    V2,
    admin_fixture,
    all_events,
    fleet,
    hub_fixture,
    pooled,
    publish_retail,
    rollout,
)

from edgekit import model
from edgekit.hub import HubClient, HubServer
from edgekit.hub.client import HubRequestError
from edgekit.model.selectors import Selector
from edgekit.simulator import Fault, Faults, FleetSimulator, SimulatedHost

hub = hub_fixture()
admin = admin_fixture()


def test_a_rollout_over_thirty_clusters_passes_its_waves(hub: HubServer, admin: HubClient) -> None:
    since = admin.events.revision()
    with fleet(hub, admin, "ok", 30) as (sim, names):
        handle = admin.rollouts.create(rollout("ok"))
        status = handle.wait(timeout=120)
        assert status.state == "completed", status
        assert sim.at_generation(sim.hosts, 2)
    assert [(w.name, w.state, w.clusters) for w in status.waves] == [
        ("canary", "passed", 1),
        ("ten-percent", "passed", 3),  # ceil(10% of 30), from the front by name
        ("rest", "passed", 26),
    ]
    assert status.cluster("ok-00").wave == "canary"
    assert [c.name for c in status.clusters if c.wave == "ten-percent"] == [
        "ok-01",
        "ok-02",
        "ok-03",
    ]
    assert status.counts == {"converged": 30}
    report = handle.report()
    for c in report.status.clusters:
        assert (c.from_version, c.to_version) == ("retail@1.0.0", "retail@2.0.0")
        assert (c.from_generation, c.to_generation) == (1, 2)
        assert c.seconds is not None
        assert c.seconds >= 0
    # The hub's own records: every cluster at generation 2 on V2, and released.
    for name in names:
        cluster = admin.clusters.get(name)
        assert cluster.generation == 2
        assert cluster.spec["profile"] == {"name": "retail", "version": "2.0.0"}
    admin.clusters.update("ok-05", labels={"batch": "ok", "after": "yes"})  # not held any more
    # Waves ran in order: a wave's first update comes after the previous wave passed.
    events = list(admin.events.list(since, kinds=["rollout"]).events)
    kinds = [(e.type, e.data.get("wave")) for e in events if e.type.startswith("wave-")]
    assert kinds == [
        ("wave-started", 0),
        ("wave-passed", 0),
        ("wave-started", 1),
        ("wave-passed", 1),
        ("wave-started", 2),
        ("wave-passed", 2),
    ]
    updated = [e.data["cluster"] for e in events if e.type == "cluster-updated"]
    assert sorted(updated) == names  # each cluster updated exactly once
    assert events[-1].type == "completed"
    assert status._repr_html_().count("<tr>") == 4  # a header and one row per wave


def test_a_failing_wave_pauses_and_rollback_puts_the_clusters_back(
    hub: HubServer, admin: HubClient
) -> None:
    # Site 01 fails every update: the ten-percent wave (cluster 01) fails its gate.
    faults = Faults(sites={"bad-site-01": Fault.FAIL_APPLY})
    with fleet(hub, admin, "bad", 10, faults) as (sim, names):
        handle = admin.rollouts.create(rollout("bad"))
        status = handle.wait(timeout=120)
        assert status.state == "paused"
        assert (status.wave, status.wave_state) == ("ten-percent", "failed")
        assert "bad-01" in status.message
        assert status.cluster("bad-01").state == "failed"
        assert "failed" in status.cluster("bad-01").message
        assert status.cluster("bad-00").state == "converged"
        assert all(status.cluster(n).state == "pending" for n in names[2:])
        # Paused: nothing more is started.
        assert admin.clusters.get("bad-05").generation == 1

        handle.rollback()
        status = handle.wait(timeout=120)
        assert status.state == "rolled-back"
        changed = ["bad-00", "bad-01"]
        for name in changed:
            cluster = admin.clusters.get(name)
            assert cluster.generation == 3  # 1 -> 2 (the roll-out) -> 3 (its rollback)
            assert cluster.spec["profile"] == {"name": "retail", "version": "1.0.0"}
            assert status.cluster(name).rollback_generation == 3
        assert status.cluster("bad-00").state == "rolled-back"
        assert status.cluster("bad-01").state == "rollback-failed"  # its site fails anything
        for name in names[2:]:
            assert status.cluster(name).state == "skipped"
            assert admin.clusters.get(name).generation == 1
        sim.wait(lambda s: s.at_generation(["bad-h00"], 3), timeout=60, what="back")
    types = [t["type"] for t in status.transitions]
    assert "rollback-started" in types
    assert types[-1] == "rolled-back"


def test_held_clusters_refuse_updates_and_deletion_and_approval_gates_waves(
    hub: HubServer, admin: HubClient
) -> None:
    with fleet(hub, admin, "held", 4):
        handle = admin.rollouts.create(rollout("held", approve_each_wave=True))
        status = handle.wait(timeout=60)
        # The canary went; the next wave waits for an approval.
        assert (status.state, status.wave, status.wave_state) == (
            "running",
            "ten-percent",
            "waiting-approval",
        )
        assert admin.clusters.get("held-01").generation == 1
        for name in ("held-00", "held-03"):
            with pytest.raises(HubRequestError) as refused:
                admin.clusters.update(name, labels={"x": "y"})
            assert (refused.value.status, refused.value.code) == (409, "ClusterHeld")
            assert "rollout/held-v2" in str(refused.value)
            with pytest.raises(HubRequestError) as refused:
                admin.clusters.delete(name)
            assert (refused.value.status, refused.value.code) == (409, "ClusterHeld")
            assert "rollout/held-v2" in str(refused.value)
        # At most one active roll-out per cluster.
        with pytest.raises(HubRequestError) as taken:
            admin.rollouts.create(model.Rollout("other", V2.ref, Selector(tags={"batch": "held"})))
        assert (taken.value.status, taken.value.code) == (409, "ClusterHeld")
        assert "held-v2" in str(taken.value)
        status = handle.approve()
        status = handle.wait(timeout=60)
        assert (status.wave, status.wave_state) == ("rest", "waiting-approval")
        assert admin.clusters.get("held-01").generation == 2
        handle.approve()
        assert handle.wait(timeout=60).state == "completed"
        with pytest.raises(HubRequestError) as late:
            handle.approve()
        assert (late.value.status, late.value.code) == (409, "RolloutState")
    admin.clusters.delete("held-03")  # released at completion


def test_a_closed_window_keeps_the_wave_from_starting(hub: HubServer, admin: HubClient) -> None:
    with fleet(hub, admin, "win", 2) as (_, names):
        # Open for one minute once a year, on a day that is not today (Feb 29 at 03:00 UTC).
        window = model.Window("0 3 29 2 *", "1m", "UTC")
        handle = admin.rollouts.create(rollout("win", waves=(model.Wave("all"),), window=window))
        import time

        time.sleep(1.0)  # ten controller ticks
        status = handle.status()
        assert (status.state, status.wave_state) == ("running", "waiting-window")
        assert all(admin.clusters.get(n).generation == 1 for n in names)
        [waiting] = [t for t in status.transitions if t["type"] == "waiting-window"]
        assert waiting["data"]["nextOpen"].endswith("-02-29T03:00:00Z")
        status = handle.abort()
        assert status.state == "aborted"
        assert {c.state for c in status.clusters} == {"skipped"}
    admin.clusters.delete(names[0])  # aborting released the holds


def test_bad_rollouts_are_refused_with_every_problem(hub: HubServer, admin: HubClient) -> None:
    with pytest.raises(HubRequestError) as bad:
        admin.rollouts.create(
            {"name": "Bad Name", "profile": {"name": "retail", "version": "9"}, "waves": []}
        )
    assert (bad.value.status, bad.value.code) == (400, "InvalidRollout")
    paths = {p.path for p in bad.value.problems}
    assert {"$.name", "$.waves"} <= paths
    with pytest.raises(HubRequestError) as bad:
        admin.rollouts.create(model.Rollout("ghost", model.ProfileRef("retail", "9.9.9")))
    assert {p.path for p in bad.value.problems} >= {"$.profile"}
    with pytest.raises(HubRequestError) as missing:
        admin.rollouts.get("no-such-rollout")
    assert (missing.value.status, missing.value.code) == (404, "RolloutNotFound")


def test_a_hub_killed_mid_rollout_resumes_and_updates_every_cluster_once(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    import time

    db = tmp_path_factory.mktemp("killed") / "hub.db"
    with HubServer(db, access_log=False, rollout_interval=0.05) as server:
        admin = publish_retail(server.client(retry_for=30))
        since = admin.events.revision()
        gate = model.HealthGate(soak="1s", timeout="2m", unreachable_after="1m")
        with fleet(server, admin, "kill", 30) as (sim, names):
            handle = admin.rollouts.create(rollout("kill", gate=gate))
            kills = 0
            # SIGKILL whenever a new wave has just started (the controller is updating its
            # clusters), and once more while the last wave converges.
            seen: set[str] = set()
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                status = handle.status()
                if status.state == "completed":
                    break
                key = f"{status.wave}/{status.wave_state}"
                if status.wave_state in ("updating", "waiting") and key not in seen:
                    seen.add(key)
                    server.kill()
                    kills += 1
                    server.start()
                time.sleep(0.02)
            status = handle.wait(timeout=120)
            assert status.state == "completed", status
            assert kills >= 3
            assert sim.at_generation(sim.hosts, 2)
        events = all_events(admin, since, ["rollout", "cluster"])
        updated = sorted(e.data["cluster"] for e in events if e.type == "cluster-updated")
        assert updated == names  # exactly once each, none skipped
        generations = [
            e.data["generation"] for e in events if e.kind == "cluster" and e.type == "updated"
        ]
        assert generations == [2] * 30  # one cluster update each, to generation 2
        assert [e.type for e in events if e.kind == "rollout"].count("completed") == 1
        for name in names:
            assert admin.clusters.get(name).generation == 2


def test_on_failure_rollback_puts_the_failed_wave_back_by_itself(
    hub: HubServer, admin: HubClient, capsys: pytest.CaptureFixture[str]
) -> None:
    faults = Faults(sites={"rb-site-00": Fault.FAIL_APPLY})
    with fleet(hub, admin, "rb", 4, faults) as (_, names):
        waves = (model.Wave("first-two", count=2), model.Wave("rest"))
        handle = admin.rollouts.create(
            rollout("rb", waves=waves, on_failure=model.OnFailure.ROLLBACK)
        )
        status = handle.wait(progress=True, timeout=120)
    assert status.state == "rolled-back"
    assert "first-two" in capsys.readouterr().out  # the progress bars, one per wave
    assert {c.name: c.state for c in status.clusters} == {
        "rb-00": "rollback-failed",  # its site fails every update, the rollback's too
        "rb-01": "rolled-back",
        "rb-02": "skipped",
        "rb-03": "skipped",
    }
    assert [admin.clusters.get(n).generation for n in names] == [3, 3, 1, 1]
    types = [t["type"] for t in status.transitions]
    assert types.index("wave-failed") < types.index("rollback-started") < types.index("rolled-back")
    frame = handle.report().to_dataframe()
    assert list(frame["cluster"]) == names
    assert list(frame["rollback_generation"].fillna(0)) == [3, 3, 0, 0]
    html = handle.report()._repr_html_()
    assert "<details><summary>4 clusters</summary>" in html
    assert "1 failed" in html


def test_a_hub_killed_mid_cluster_gives_every_host_its_desired_state_once(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """maxUnavailable 1 over four-host clusters, the hub SIGKILLed each time it has just handed
    a held-back host its desired state: from the hub's event log, every host is given
    generation 2 exactly once, none is skipped, and no cluster ever has two hosts in flight."""
    import time

    db = tmp_path_factory.mktemp("killed-hosts") / "hub.db"
    with HubServer(db, access_log=False, rollout_interval=0.05) as server:
        admin = publish_retail(server.client(retry_for=30))
        token = admin.tokens.create("khost")
        assert token.secret is not None
        hosts = [SimulatedHost(f"kh{c}-h{j}", f"kh-site-{c}") for c in range(4) for j in range(4)]
        since = admin.events.revision()
        with FleetSimulator(
            server.url, token.secret, hosts, durations=FAST, time_scale=0.02, seed=5
        ) as sim:
            sim.wait_registered(timeout=60)
            for c in range(4):
                uids = [f"kh{c}-h{j}" for j in range(4)]
                admin.clusters.create(pooled(f"kh-{c}", V1.ref, uids), labels={"batch": "khost"})
            sim.wait(lambda s: s.at_generation(s.hosts, 1), timeout=60, what="every join")
            gate = model.HealthGate(soak="0s", timeout="3m", unreachable_after="1m")
            handle = admin.rollouts.create(
                rollout("khost", waves=(model.Wave("all"),), gate=gate, max_unavailable=1)
            )
            kills, seen = 0, 0
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and kills < 6:
                status = handle.status()
                if status.state == "completed":
                    break
                given = sum(t["type"] == "hosts-updated" for t in status.transitions)
                if given > seen:  # a host was just handed its desired state: kill now
                    seen = given
                    server.kill()
                    kills += 1
                    server.start()
                time.sleep(0.02)
            status = handle.wait(timeout=120)
            assert status.state == "completed", status
            assert kills >= 3
            assert sim.at_generation(sim.hosts, 2)
        events = all_events(admin, since, ["rollout", "host"])
    # Replay the hosts' records in revision order: a host is in flight from its desired
    # generation 2 until it first reports 2 healthy.
    cluster_of: dict[str, str | None] = {}
    wants: dict[str, int] = {}
    done: set[str] = set()
    handed: dict[str, int] = {}
    for e in events:
        if e.kind != "host":
            continue
        d = e.data
        want = d.get("desiredGeneration") or 0
        if wants.get(e.uid, 0) < 2 <= want:
            handed[e.uid] = handed.get(e.uid, 0) + 1
        wants[e.uid], cluster_of[e.uid] = want, d.get("clusterUid")
        if want >= 2 and (d.get("observedGeneration") or 0) >= 2 and d.get("phase") == "healthy":
            done.add(e.uid)
        in_flight = [
            u
            for u, c in cluster_of.items()
            if c == d.get("clusterUid") and wants[u] >= 2 and u not in done
        ]
        assert len(in_flight) <= 1, (e, in_flight)
    assert handed == {h.uid: 1 for h in hosts}  # each host once, none skipped
    released = sorted(
        u
        for e in events
        if e.kind == "rollout" and e.type == "hosts-updated"
        for u in e.data["hosts"]
    )
    assert released == sorted(h.uid for h in hosts if not h.uid.endswith("-h0"))


def test_a_completed_rollout_rolls_back_and_refuses_when_a_cluster_changed_since(
    hub: HubServer, admin: HubClient
) -> None:
    one_wave = (model.Wave("all"),)
    with fleet(hub, admin, "undo", 3) as (sim, names):
        handle = admin.rollouts.create(rollout("undo", waves=one_wave))
        assert handle.wait(timeout=60).state == "completed"
        since = admin.events.revision()
        assert handle.rollback().state == "rolling-back"
        # Held again while it is put back.
        with pytest.raises(HubRequestError) as refused:
            admin.clusters.update(names[0], labels={"x": "y"})
        assert (refused.value.status, refused.value.code) == (409, "ClusterHeld")
        status = handle.wait(timeout=60)
        assert status.state == "rolled-back", status
        assert {c.name: c.state for c in status.clusters} == dict.fromkeys(names, "rolled-back")
        assert sim.at_generation(sim.hosts, 3)
        for name in names:
            cluster = admin.clusters.get(name)
            assert (cluster.generation, cluster.spec["profile"]["version"]) == (3, "1.0.0")
        events = admin.events.list(since, kinds=["rollout"], limit=1000).events
        types = [e.type for e in events]
        assert types[0] == "rollback-started"
        assert events[0].data["after"] == "completed"
        assert types.count("cluster-rolling-back") == types.count("cluster-rolled-back") == 3
        assert types[-1] == "rolled-back"
        admin.clusters.update(names[0], labels={"x": "y"})  # released again
    with fleet(hub, admin, "redo", 2) as (sim, names):
        handle = admin.rollouts.create(rollout("redo", waves=one_wave))
        assert handle.wait(timeout=60).state == "completed"
        admin.clusters.update(names[1], profile=V1.ref)  # by hand, after the roll-out
        with pytest.raises(HubRequestError) as refused:
            handle.rollback()
        assert (refused.value.status, refused.value.code) == (409, "ClusterChanged")
        assert "redo-01 is at generation 3, not the 2 this roll-out made" in str(refused.value)
        status = handle.status()
        assert status.state == "completed"  # nothing changed
        assert [admin.clusters.get(n).generation for n in names] == [2, 3]
        admin.clusters.update(names[0], labels={"x": "y"})  # not held again
