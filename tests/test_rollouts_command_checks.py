"""Gate checks a command evaluates (``command_check``, ``edgekit rollout create --wait
--check``, ``edgekit rollout wait``): the commands are real processes, the hub a real
subprocess with SQLite, the fleet simulated; asserted from the hub's records."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from rollout_fleet import QUICK, admin_fixture, awaiting, edgekit, fleet, hub_fixture, rollout

from edgekit import config, model
from edgekit.hub import CommandCheck, HubClient, HubServer, command_check
from edgekit.hub.client_rollouts import WaveStatus

API_KEY = "eka_command-checks-admin-key-0123456789abcdef"
WAVES = (model.Wave("canary", count=1), model.Wave("rest"))
WAVE = WaveStatus("canary", "soaking", 2, {"converged": 2}, 0, (), ("shop-1", "shop-2"))


def gate(*checks: model.GateCheck) -> model.HealthGate:
    return model.HealthGate(
        soak="1s",
        timeout=QUICK.timeout,
        unreachable_after=QUICK.unreachable_after,
        checks=checks or (model.GateCheck("smoke", "1m"),),
    )


hub = hub_fixture("hub-command-checks", API_KEY)
admin = admin_fixture()


@pytest.fixture
def env(hub: HubServer) -> dict[str, str]:
    return {"EDGEKIT_HUB_URL": hub.url, "EDGEKIT_HUB_API_KEY": API_KEY}


# -- the command, on its own ------------------------------------------------------------


def test_exit_status_and_last_line_make_the_verdict() -> None:
    passed = command_check(["sh", "-c", "echo checking; echo '  all green  '; echo"])
    assert passed(WAVE) == (True, "all green")
    # stderr counts, and only the last non-empty line is the message.
    failed = command_check("sh -c 'echo probing; echo \"3 of 40 probes failed\" >&2; exit 3'")
    assert failed(WAVE) == (False, "3 of 40 probes failed")
    assert command_check("sh -c 'exit 4'")(WAVE) == (False, "exit 4")
    assert command_check("sh -c 'kill -TERM $$'")(WAVE) == (False, "killed by SIGTERM")
    # A string is split, never given to a shell: no expansion, no `&&`.
    assert command_check("echo $HOME && false")(WAVE) == (True, "$HOME && false")


def test_only_the_tail_of_a_large_output_is_read() -> None:
    # 8 MB of output, then the line that says why: the message is that line, clipped.
    check = command_check(
        ["sh", "-c", "head -c 8000000 /dev/zero | tr '\\0' x; echo; echo done; exit 1"]
    )
    assert check(WAVE) == (False, "done")
    long_line = command_check(["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' y; exit 1"])
    passed, message = long_line(WAVE)
    assert not passed
    assert set(message) == {"y"}
    assert len(message) <= 4000  # what the hub keeps


def test_a_command_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    check = command_check(
        ["sh", "-c", 'echo started; sleep 60 & echo $! > "$PID"; wait'],
        timeout=0.5,
        env={"PID": str(pid_file)},
    )
    start = time.monotonic()
    assert check(WAVE) == (False, "timed out after 0.5 s; last output: started")
    assert time.monotonic() - start < 10
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the group was SIGKILLed: gone, or a zombie
        stat = Path(f"/proc/{child}/stat")
        if not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"the command's child {child} still runs")


def test_a_command_that_cannot_start_is_a_failed_verdict(tmp_path: Path) -> None:
    missing = command_check("no-such-edgekit-check --now")
    assert missing(WAVE) == (
        False,
        "cannot run 'no-such-edgekit-check': No such file or directory",
    )
    script = tmp_path / "check.sh"
    script.write_text("#!/bin/sh\nexit 0\n")  # not executable
    passed, message = command_check([str(script)])(WAVE)
    assert (passed, message) == (False, f"cannot run {str(script)!r}: Permission denied")
    for bad in ("", "   ", "sh -c 'unclosed"):
        with pytest.raises(ValueError, match=r"needs a command|No closing quotation"):
            command_check(bad)
    with pytest.raises(ValueError, match="positive"):
        command_check("true", timeout=0)
    assert isinstance(command_check(["true"]), CommandCheck)


def test_a_long_cluster_list_is_in_the_file_only(tmp_path: Path) -> None:
    names = tuple(f"store-{i:05d}-with-a-rather-long-cluster-name" for i in range(1000))
    wave = WaveStatus("rest", "soaking", len(names), {}, 3, (), names)
    out = tmp_path / "seen.txt"
    script = (
        'echo "${EDGEKIT_CLUSTERS-unset}|$EDGEKIT_CLUSTER_COUNT|$EDGEKIT_WAVE_INDEX" > "$OUT";'
        ' cat "$EDGEKIT_CLUSTERS_FILE" >> "$OUT"'
    )
    # A stale EDGEKIT_CLUSTERS from the caller's environment does not leak through.
    check = command_check(["sh", "-c", script], env={"OUT": str(out), "EDGEKIT_CLUSTERS": "x"})
    assert check(wave, "big-v2", "smoke") == (True, "")
    first, *listed = out.read_text().splitlines()
    assert first == "unset|1000|3"
    assert tuple(listed) == names


def test_bad_check_options_are_all_reported_before_anything_runs(tmp_path: Path) -> None:
    # No hub at this address and no file: the options are refused first, all of them.
    env = {"EDGEKIT_HUB_URL": "http://127.0.0.1:9", "EDGEKIT_HUB_API_KEY": API_KEY}
    proc = edgekit(
        "rollout", "create", str(tmp_path / "none.yaml"),
        "--check", "smoke=true", "--check", "smoke=false", "--check", "perf",
        "--check", "=true", env=env,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "4 problems found" in proc.stderr
    for text in (
        "needs --wait",
        "names check 'smoke' a second time",
        "'perf': is not NAME=COMMAND",
        "'=true'",
    ):
        assert text in proc.stderr
    assert "none.yaml" not in proc.stderr
    assert "Traceback" not in proc.stderr


# -- against the hub --------------------------------------------------------------------

VARIABLES = (
    'echo "$EDGEKIT_ROLLOUT|$EDGEKIT_CHECK|$EDGEKIT_WAVE|$EDGEKIT_WAVE_INDEX|$EDGEKIT_CLUSTERS'
    '|$EDGEKIT_CLUSTER_COUNT|$(paste -sd, "$EDGEKIT_CLUSTERS_FILE")|$EDGEKIT_CLUSTERS_FILE"'
    ' >> "$OUT"; echo "wave $EDGEKIT_WAVE green"'
)


def test_create_wait_check_passes_each_wave_with_its_variables(
    hub: HubServer, admin: HubClient, env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "seen.txt"
    with fleet(hub, admin, "cmd", 3):
        file = config.dump_file(rollout("cmd", waves=WAVES, gate=gate()), tmp_path / "rollout.yaml")
        proc = edgekit(
            "rollout", "create", str(file), "--wait", "--json",
            "--check", f"smoke=sh -c '{VARIABLES}'",
            env={**env, "OUT": str(out)},
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "need verdicts" not in proc.stderr  # every declared check has a command
    shown = json.loads(proc.stdout)
    assert shown["state"] == "completed"
    checks = [
        (w["name"], w["checks"][0]["state"], w["checks"][0]["message"]) for w in shown["waves"]
    ]
    assert checks == [
        ("canary", "passed", "wave canary green"),
        ("rest", "passed", "wave rest green"),
    ]  # fmt: skip
    lines = [line.split("|") for line in out.read_text().splitlines()]
    assert [line[:7] for line in lines] == [
        ["cmd-v2", "smoke", "canary", "0", "cmd-00", "1", "cmd-00"],
        ["cmd-v2", "smoke", "rest", "1", "cmd-01,cmd-02", "2", "cmd-01,cmd-02"],
    ]  # the canary's verdict let the next wave start; each wave ran the command once
    assert not any(Path(line[7]).exists() for line in lines)  # the list file is removed


def test_a_failing_command_pauses_the_rollout_with_its_last_line(
    hub: HubServer, admin: HubClient
) -> None:
    fail = command_check(
        ["sh", "-c", "echo probing 40 stores; echo '3 of 40 probes failed' >&2; exit 3"]
    )
    with fleet(hub, admin, "cmf", 2) as (_, names):
        handle = admin.rollouts.create(rollout("cmf", waves=WAVES, gate=gate()))
        status = handle.wait(timeout=120, checks={"smoke": fail}, interval=0.1)
        assert status.state == "paused"
        assert (status.wave, status.wave_state) == ("canary", "failed")
        assert "check 'smoke' failed: 3 of 40 probes failed" in status.message
        assert [(c.name, c.state, c.message) for c in status.checks] == [
            ("smoke", "failed", "3 of 40 probes failed")
        ]
        assert [admin.clusters.get(n).generation for n in names] == [2, 1]  # rest untouched
        handle.abort()


def test_a_command_that_times_out_or_cannot_start_fails_the_wave(
    hub: HubServer, admin: HubClient
) -> None:
    checks = (model.GateCheck("smoke", "1m"), model.GateCheck("perf", "1m"))
    with fleet(hub, admin, "cmt", 2):
        handle = admin.rollouts.create(rollout("cmt", waves=WAVES, gate=gate(*checks)))
        status = awaiting(handle, "canary")
        runs = handle.run_checks(
            {
                "smoke": command_check("sleep 30", timeout=1),
                "perf": command_check("no-such-edgekit-probe"),
            },
            status,
        )
        # Both ran; the first failed verdict may fail the wave before the second is
        # posted (then the hub refuses it: the wave awaits none), so only the first is sure.
        assert [(r.check, r.passed, r.message) for r in runs] == [
            ("smoke", False, "timed out after 1 s"),
            ("perf", False, "cannot run 'no-such-edgekit-probe': No such file or directory"),
        ]
        assert runs[0].posted
        status = handle.wait(timeout=120, interval=0.1)
        assert (status.state, status.wave, status.wave_state) == ("paused", "canary", "failed")
        assert "check 'smoke' failed: timed out after 1 s" in status.message
        assert status.checks[0].message == "timed out after 1 s"
        handle.abort()


def test_rollout_wait_attaches_refuses_undeclared_checks_and_notes_missing_ones(
    hub: HubServer, admin: HubClient, env: dict[str, str], tmp_path: Path
) -> None:
    with fleet(hub, admin, "cmw", 2):
        # Refused before anything runs: create sends nothing, wait posts nothing.
        file = config.dump_file(
            rollout("cmw", waves=WAVES, gate=gate(model.GateCheck("smoke", "5m"))),
            tmp_path / "rollout.yaml",
        )
        proc = edgekit("rollout", "create", str(file), "--wait", "--check", "perf=true", env=env)
        assert proc.returncode == 2, proc.stderr
        assert (
            "--check: roll-out 'cmw-v2' declares no check 'perf' (its gate declares smoke)"
            in proc.stderr
        )
        assert "Traceback" not in proc.stderr
        assert [r.name for r in admin.rollouts.list() if r.name == "cmw-v2"] == []
        proc = edgekit("rollout", "create", str(file), "--check", "smoke=true", env=env)
        assert proc.returncode == 2
        assert "needs --wait" in proc.stderr

        # Another client creates it; the shell attaches to it.
        handle = admin.rollouts.create(
            rollout("cmw", waves=WAVES, gate=gate(model.GateCheck("smoke", "5m")))
        )
        awaiting(handle, "canary")
        proc = edgekit("rollout", "wait", "cmw-v2", "--check", "perf=true", env=env)
        assert proc.returncode == 2
        assert "declares no check 'perf'" in proc.stderr
        assert "Traceback" not in proc.stderr
        proc = edgekit("rollout", "wait", "cmw-v2", "--check", "smoke=sh -c 'unclosed", env=env)
        assert proc.returncode == 2
        assert "--check" in proc.stderr
        assert "No closing quotation" in proc.stderr
        # Without --check: one note says why nothing will pass; --timeout gives up (exit 1).
        proc = edgekit("rollout", "wait", "cmw-v2", "--timeout", "1", env=env)
        assert proc.returncode == 1
        notes = [line for line in proc.stderr.splitlines() if "need verdicts" in line]
        assert len(notes) == 1
        assert "smoke" in notes[0]
        assert "--check" in notes[0]
        assert "edgekit rollout verdict" in notes[0]
        assert [c.state for c in handle.status().checks] == ["awaiting"]  # nothing posted

        proc = edgekit(
            "rollout", "wait", "cmw-v2", "--json", "--check", "smoke=echo attached", env=env
        )
        assert proc.returncode == 0, proc.stderr
        assert "need verdicts" not in proc.stderr
        shown = json.loads(proc.stdout)
        assert shown["state"] == "completed"
        assert [w["checks"][0]["message"] for w in shown["waves"]] == ["attached", "attached"]
    proc = edgekit("rollout", "wait", "nope", env=env)
    assert proc.returncode == 1
    assert "no roll-out 'nope'" in proc.stderr
