"""The fleet simulator against a real hub (uvicorn subprocess on 127.0.0.1, real SQLite):
simulated agents register, take clusters, walk an update through the device's phases, and
fail as injected; everything is asserted from the hub's own records (issue 12 item 6)."""

from __future__ import annotations

from collections.abc import Iterator

import attrs
import pytest
from cli_runner import edgekit

from edgekit import model
from edgekit.errors import EdgekitError
from edgekit.hub import HubClient, HubServer
from edgekit.simulator import Durations, Fault, Faults, FleetSimulator, SimulatedHost

OS = model.Pack.os("ubuntu", "22.04", values={"system": {"uri": "registry.local/edge/os:1"}})
V1 = model.ClusterProfile("retail", "1.0.0", (OS, model.Pack.k8s("k3s", "1.30.4")))
V2 = model.ClusterProfile("retail", "2.0.0", (OS, model.Pack.k8s("k3s", "1.31.0")))  # reboot
SITES = ("store-a", "store-b", "store-c")
FAST = Durations(download=1, apply=1, reboot=1)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    with HubServer(tmp_path_factory.mktemp("hub") / "hub.db", access_log=False) as server:
        yield server


@pytest.fixture(scope="module")
def admin(hub: HubServer) -> HubClient:
    client = hub.client()
    client.profiles.publish(V1)
    client.profiles.publish(V2)
    return client


def one_node(uid: str) -> model.Cluster:
    return model.Cluster(
        name=f"c-{uid}", profile=V1.ref, control_plane=model.Pool("cp", (model.PoolHost(uid),))
    )


def test_a_simulated_fleet_takes_clusters_and_an_update_with_one_failing_site(
    hub: HubServer, admin: HubClient
) -> None:
    token = admin.tokens.create("sim")
    assert token.secret is not None
    hosts = [SimulatedHost(f"h-{s}-{i}", s) for s in SITES for i in range(4)]
    faults = Faults(sites={"store-b": Fault.FAIL_APPLY})
    with FleetSimulator(
        hub.url, token.secret, hosts, faults=faults, durations=FAST, time_scale=0.02, seed=7
    ) as sim:
        sim.wait_registered(timeout=60)
        assert admin.hosts.search().total == 12
        for h in hosts:
            admin.clusters.create(one_node(h.uid))
        sim.wait(lambda s: s.at_generation(s.hosts, 1), timeout=60, what="every join")
        for h in hosts:
            admin.clusters.update(f"c-{h.uid}", profile=V2.ref)
        failing = {h.uid for h in hosts if h.site == "store-b"}
        good = [h.uid for h in hosts if h.uid not in failing]
        sim.wait(
            lambda s: (
                s.at_generation(good, 2) and all(s.hosts[u].phase == "failed" for u in failing)
            ),
            timeout=90,
            what="the update to reach every host",
        )
        assert sim.counts() == {"healthy": 8, "failed": 4}

    # the hub's own records say the same
    for h in hosts:
        status = admin.clusters.status(f"c-{h.uid}")
        [host] = status.hosts
        assert host.desired_generation == 2
        if h.uid in failing:
            assert (host.phase, host.observed_generation) == ("failed", 1)
            assert "failed to apply" in (host.message or "")
            assert status.condition("Degraded").status
        else:
            assert (host.phase, host.observed_generation) == ("healthy", 2)
            assert status.ready


def test_faults_by_share_are_reproducible_from_the_seed() -> None:
    faults = Faults(fail_apply=0.2, roll_back=0.1, offline=0.1)

    def picks(seed: int) -> list[Fault | None]:
        import random

        return [faults.pick(random.Random(f"{seed}:h{i}:2"), None) for i in range(500)]

    assert picks(1) == picks(1)
    assert picks(1) != picks(2)
    got = picks(1)
    assert 60 < got.count(Fault.FAIL_APPLY) < 140  # 20% of 500, loosely
    assert got.count(None) > 250


def test_fault_shares_over_one_are_refused() -> None:
    with pytest.raises(EdgekitError, match="add up to at most 1"):
        Faults(fail_apply=0.7, offline=0.5)


def test_a_bad_token_is_reported_per_host_not_raised(hub: HubServer) -> None:
    with FleetSimulator(hub.url, "ekt_not-a-token-at-all", 2, time_scale=0.01) as sim:
        sim.wait(lambda s: all(h.last_error for h in s.hosts.values()), timeout=30)
        assert sim.counts() == {"unregistered": 2}
        assert all(h.last_error.startswith("401") for h in sim.hosts.values())  # type: ignore[union-attr]


def test_the_cli_runs_a_simulated_fleet(hub: HubServer, admin: HubClient) -> None:
    import json

    token = admin.tokens.create("sim-cli")
    assert token.secret is not None
    env = {"EDGEKIT_REGISTRATION_TOKEN": token.secret.reveal()}
    argv = ["simulate", "--hub", hub.url, "--hosts", "5"]
    proc = edgekit(*argv, "--sites", "cli-a,cli-b", "--seconds", "3", "--json", env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["hosts"] == 5
    assert sum(report["counts"].values()) == 5
    assert "unregistered" not in report["counts"]
    assert report["requests"] >= 10  # registered, then heartbeats and polls
    assert token.secret.reveal() not in proc.stdout + proc.stderr
    found = admin.hosts.search(site=["cli-a", "cli-b"])
    assert found.total == 5


def test_the_cli_without_a_token_is_one_line(hub: HubServer) -> None:
    proc = edgekit(
        "simulate", "--hub", hub.url, env={"EDGEKIT_REGISTRATION_TOKEN": None}, timeout=60
    )
    assert proc.returncode == 2
    assert "$EDGEKIT_REGISTRATION_TOKEN: is not set" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_host_moved_to_a_younger_cluster_joins_it(hub: HubServer, admin: HubClient) -> None:
    """Like the device (it keys what it handled by cluster and generation), a simulated host
    that leaves a cluster at generation 3 joins a new cluster at generation 1."""
    token = admin.tokens.create("sim-move")
    assert token.secret is not None
    host = SimulatedHost("h-mover", "store-a")
    with FleetSimulator(hub.url, token.secret, [host], durations=FAST, time_scale=0.02) as sim:
        sim.wait_registered(timeout=60)
        admin.clusters.create(one_node(host.uid))
        for profile in (V2, V1):
            admin.clusters.update(f"c-{host.uid}", profile=profile.ref)
        sim.wait(lambda s: s.at_generation([host.uid], 3), timeout=60, what="generation 3")
        admin.clusters.delete(f"c-{host.uid}")
        sim.wait(
            lambda _: admin.hosts.get(host.uid).state == "ready", timeout=60, what="the release"
        )
        moved = admin.clusters.create(attrs.evolve(one_node(host.uid), name="c-younger"))
        assert moved.generation == 1
        sim.wait(
            lambda _: (
                [(h.observed_generation, h.phase) for h in admin.clusters.status("c-younger").hosts]
                == [(1, "healthy")]
            ),
            timeout=60,
            what="the join of the younger cluster",
        )
