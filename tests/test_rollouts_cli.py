"""`edgekit rollout ...` as subprocesses against a real hub and a simulated fleet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekit import config, model
from edgekit.hub import HubServer
from edgekit.model.selectors import Selector
from edgekit.simulator import Durations, FleetSimulator, SimulatedHost

API_KEY = "eka_cli-rollouts-admin-key-0123456789abcdef"
OS = model.Pack.os("ubuntu", "22.04", values={"system": {"uri": "registry.local/edge/os:1"}})
V1 = model.ClusterProfile("retail", "1.0.0", (OS, model.Pack.k8s("k3s", "1.30.4")))
V2 = model.ClusterProfile("retail", "2.0.0", (OS, model.Pack.k8s("k3s", "1.31.0")))


def edgekit(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgekit", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
        timeout=180,
    )


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    db = tmp_path_factory.mktemp("hub") / "hub.db"
    with HubServer(db, api_key=API_KEY, access_log=False, rollout_interval=0.1) as server:
        yield server


def test_create_wait_status_list_and_refusals(hub: HubServer, tmp_path: Path) -> None:
    env = {"EDGEKIT_HUB_URL": hub.url, "EDGEKIT_HUB_API_KEY": API_KEY}
    admin = hub.client()
    admin.profiles.publish(V1)
    admin.profiles.publish(V2)
    token = admin.tokens.create("cli")
    assert token.secret is not None
    hosts = [SimulatedHost(f"cli-h{i}", f"cli-site-{i}") for i in range(3)]
    with FleetSimulator(
        hub.url, token.secret, hosts, durations=Durations(1, 1, 1), time_scale=0.02
    ) as sim:
        sim.wait_registered(timeout=60)
        for i, h in enumerate(hosts):
            admin.clusters.create(
                model.Cluster(f"cli-{i}", V1.ref, model.Pool("cp", (model.PoolHost(h.uid),))),
                labels={"batch": "cli"},
            )
        sim.wait(lambda s: s.at_generation(s.hosts, 1), timeout=60, what="every join")
        doc = model.Rollout(
            "cli-v2",
            V2.ref,
            Selector(tags={"batch": "cli"}),
            waves=(model.Wave("canary", count=1), model.Wave("rest")),
            gate=model.HealthGate(soak="0s", timeout="1m"),
        )
        file = config.dump_file(doc, tmp_path / "rollout.yaml")
        assert "kind: Rollout" in file.read_text()

        proc = edgekit("rollout", "create", str(file), "--wait", "--json", env=env)
        assert proc.returncode == 0, proc.stderr
        created = json.loads(proc.stdout)
        assert created["state"] == "completed"
        assert created["eta"] == {
            "time": created["eta"]["time"],
            "remainingSeconds": 0,
            "basis": "completed",
        }
        assert created["eta"]["time"] is not None
        assert [(w["name"], w["clusters"]) for w in created["waves"]] == [
            ("canary", 1),
            ("rest", 2),
        ]
        assert {c["toGeneration"] for c in created["clusters"]} == {2}

    proc = edgekit("rollout", "status", "cli-v2", "--clusters", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "completed" in proc.stdout
    for i in range(3):
        assert f"cli-{i}" in proc.stdout
    listed = json.loads(edgekit("rollout", "list", "--json", env=env).stdout)
    assert [(r["name"], r["state"]) for r in listed] == [("cli-v2", "completed")]
    assert "clusters" not in listed[0]

    # A control that does not apply, an unknown roll-out, the same name again: exit 1.
    proc = edgekit("rollout", "pause", "cli-v2", env=env)
    assert proc.returncode == 1
    assert "is completed: it cannot be paused" in proc.stderr
    proc = edgekit("rollout", "status", "nope", env=env)
    assert proc.returncode == 1
    assert "no roll-out 'nope'" in proc.stderr
    proc = edgekit("rollout", "create", str(file), env=env)
    assert proc.returncode == 1
    assert "exists" in proc.stderr
    # A bad file: every problem with its path, exit 2, nothing sent; no API key: exit 2.
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: edgekit/v1\nkind: Rollout\nname: x\nprofile: {name: retail, version: 2.0.0}\n"
        "waves: [{name: a, percent: 150}, {name: a}]\ngate: {soak: soon}\n"
    )
    proc = edgekit("rollout", "create", str(bad), env=env)
    assert proc.returncode == 2, proc.stderr
    for path in ("waves[0].percent", "gate.soak", "waves"):
        assert path in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = edgekit("rollout", "list", env={**env, "EDGEKIT_HUB_API_KEY": ""})
    assert proc.returncode == 2
    assert "EDGEKIT_HUB_API_KEY" in proc.stderr
