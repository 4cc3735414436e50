"""`edgekit rollout ...` as subprocesses against a real hub and a simulated fleet."""

from __future__ import annotations

import json
from pathlib import Path

from rollout_fleet import V2, admin_fixture, edgekit, fleet, hub_fixture

from edgekit import config, model
from edgekit.hub import HubClient, HubServer
from edgekit.model.selectors import Selector

API_KEY = "eka_cli-rollouts-admin-key-0123456789abcdef"

hub = hub_fixture("hub", API_KEY)
admin = admin_fixture()


def test_create_wait_status_list_and_refusals(
    hub: HubServer, admin: HubClient, tmp_path: Path
) -> None:
    env = {"EDGEKIT_HUB_URL": hub.url, "EDGEKIT_HUB_API_KEY": API_KEY}
    with fleet(hub, admin, "cli", 3, seed=0, digits=1):
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


def test_status_shows_checks_and_verdict_posts_one(
    hub: HubServer, admin: HubClient, tmp_path: Path
) -> None:
    import time

    env = {"EDGEKIT_HUB_URL": hub.url, "EDGEKIT_HUB_API_KEY": API_KEY}
    with fleet(hub, admin, "clk", 2, seed=0, digits=1):
        doc = model.Rollout(
            "clk-v2",
            V2.ref,
            Selector(tags={"batch": "clk"}),
            waves=(model.Wave("canary", count=1), model.Wave("rest")),
            gate=model.HealthGate(soak="0s", timeout="1m", checks=("smoke",)),
        )
        file = config.dump_file(doc, tmp_path / "rollout.yaml")
        assert "checks:" in file.read_text()
        proc = edgekit("rollout", "create", str(file), env=env)
        assert proc.returncode == 0, proc.stderr
        handle = admin.rollouts.get("clk-v2")
        deadline = time.monotonic() + 60
        while [c.state for c in handle.status().checks] != ["awaiting"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        proc = edgekit("rollout", "status", "clk-v2", env=env)
        assert proc.returncode == 0, proc.stderr
        assert "smoke awaiting" in proc.stdout
        shown = json.loads(edgekit("rollout", "status", "clk-v2", "--json", env=env).stdout)
        [check] = shown["waves"][0]["checks"]
        assert (check["name"], check["state"]) == ("smoke", "awaiting")
        assert check["deadline"] is not None
        proc = edgekit("rollout", "verdict", "clk-v2", "smoke", "--pass", "-m", "ok", env=env)
        assert proc.returncode == 2  # no -m: the option is --message
        proc = edgekit(
            "rollout", "verdict", "clk-v2", "smoke", "--pass", "--message", "ok", env=env
        )
        assert proc.returncode == 0, proc.stderr
        # The same check of the same wave again: refused, the first verdict stands.
        proc = edgekit("rollout", "verdict", "clk-v2", "smoke", "--fail", "--wave", "0", env=env)
        assert proc.returncode == 1
        assert "409" in proc.stderr
        assert "Traceback" not in proc.stderr
        deadline = time.monotonic() + 60
        while handle.status().wave != "rest" or handle.status().checks[0].state != "awaiting":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        proc = edgekit("rollout", "verdict", "clk-v2", "smoke", "--fail", env=env)
        assert proc.returncode == 0, proc.stderr
        status = handle.wait(timeout=60)
        assert (status.state, status.wave) == ("paused", "rest")
        assert "check 'smoke' failed" in status.message
