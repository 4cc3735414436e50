"""Gate checks a connected SDK evaluates (issue 12, item 3), against a real hub subprocess,
real SQLite and the fleet simulator: verdicts posted by admin clients, the hub's own
timeouts, a SIGKILL between a verdict and the controller's next tick; asserted from the
hub's records (its status, transitions and event stream)."""

from __future__ import annotations

import pytest
import requests
from rollout_fleet import (
    QUICK,
    admin_fixture,
    awaiting,
    fleet,
    hub_fixture,
    publish_retail,
    rollout,
)

from edgekit import model
from edgekit.errors import EdgekitError
from edgekit.hub import HubClient, HubServer
from edgekit.hub.client import HubRequestError
from edgekit.hub.client_rollouts import RolloutStatus, WaveStatus

WAVES = (model.Wave("canary", count=1), model.Wave("rest"))


def gate(timeout: str = "1m", **kw: object) -> model.HealthGate:
    return model.HealthGate(
        soak="1s",
        timeout=QUICK.timeout,
        unreachable_after=QUICK.unreachable_after,
        checks=(model.GateCheck("smoke", timeout),),
        **kw,  # type: ignore[arg-type]
    )


hub = hub_fixture("hub-checks")
admin = admin_fixture()


def check_transitions(status: RolloutStatus) -> list[tuple[str, int, str, str]]:
    return [
        (t["type"], t["wave"], t["data"]["check"], t["data"]["message"])
        for t in status.transitions
        if t["type"].startswith("gate-check-")
    ]


def test_a_passing_check_lets_the_next_wave_start(hub: HubServer, admin: HubClient) -> None:
    since = admin.events.revision()
    seen: list[tuple[str, tuple[str, ...]]] = []

    def smoke(wave: WaveStatus) -> bool:
        seen.append((wave.name, wave.members))
        return True

    with fleet(hub, admin, "ck", 3):
        handle = admin.rollouts.create(rollout("ck", waves=WAVES, gate=gate()))
        status = handle.wait(timeout=120, checks={"smoke": smoke}, interval=0.1)
    assert status.state == "completed", status
    assert seen == [("canary", ("ck-00",)), ("rest", ("ck-01", "ck-02"))]  # once per wave
    assert [[(c.name, c.state) for c in w.checks] for w in status.waves] == [
        [("smoke", "passed")],
        [("smoke", "passed")],
    ]
    assert check_transitions(status) == [
        ("gate-check-passed", 0, "smoke", ""),
        ("gate-check-passed", 1, "smoke", ""),
    ]
    events = list(admin.events.list(since, kinds=["rollout"]).events)
    order = [(e.type, e.data.get("wave")) for e in events]
    # The canary's verdict came before the next wave started, and after its soak began.
    assert order.index(("soak-started", 0)) < order.index(("gate-check-passed", 0))
    assert order.index(("gate-check-passed", 0)) < order.index(("wave-passed", 0))
    assert order.index(("wave-passed", 0)) < order.index(("wave-started", 1))
    assert "checks" in str(status).splitlines()[1]  # the table has a checks column
    assert "smoke passed" in str(status)


def test_a_failing_verdict_pauses_with_its_message(hub: HubServer, admin: HubClient) -> None:
    with fleet(hub, admin, "ckf", 3) as (_, names):
        handle = admin.rollouts.create(rollout("ckf", waves=WAVES, gate=gate()))
        status = handle.wait(
            timeout=120, checks={"smoke": lambda w: (False, "3 of 40 probes failed")}
        )
        assert status.state == "paused"
        assert (status.wave, status.wave_state) == ("canary", "failed")
        assert "check 'smoke' failed: 3 of 40 probes failed" in status.message
        assert [(c.name, c.state, c.message) for c in status.checks] == [
            ("smoke", "failed", "3 of 40 probes failed")
        ]
        assert [admin.clusters.get(n).generation for n in names] == [2, 1, 1]  # rest untouched
        assert "1 check(s) failed" in status._repr_html_()
        # A late verdict for the failed wave is refused: it awaits none.
        with pytest.raises(HubRequestError) as err:
            handle.verdict("smoke", True)
        assert (err.value.status, err.value.code) == (409, "NotAwaitingVerdict")
        # A resume is a new attempt: the old verdict does not count, the check awaits again.
        handle.resume()
        status = awaiting(handle, "canary")
        assert status.wave_attempt is not None
        handle.abort()


def test_an_exception_is_a_failed_verdict_and_on_failure_rollback_rolls_back(
    hub: HubServer, admin: HubClient, capsys: pytest.CaptureFixture[str]
) -> None:
    def smoke(wave: WaveStatus) -> bool:
        raise RuntimeError("the store's API answered 503")

    with fleet(hub, admin, "ckr", 3) as (_, names):
        handle = admin.rollouts.create(
            rollout("ckr", waves=WAVES, gate=gate(), on_failure=model.OnFailure.ROLLBACK)
        )
        status = handle.wait(timeout=120, checks={"smoke": smoke})
        assert status.state == "rolled-back", status
        assert [admin.clusters.get(n).generation for n in names] == [3, 1, 1]
    assert status.cluster("ckr-00").state == "rolled-back"
    [(kind, wave, check, message)] = check_transitions(status)
    assert (kind, wave, check) == ("gate-check-failed", 0, "smoke")
    assert message.startswith("RuntimeError: the store's API answered 503")
    assert "Traceback (most recent call last)" in message  # the traceback is kept
    assert "in smoke" in message
    assert "503" not in capsys.readouterr().out  # nothing printed


def test_no_verdict_times_out_and_fails_the_wave(hub: HubServer, admin: HubClient) -> None:
    # The notebook that was to evaluate the check is gone: nobody posts.
    with fleet(hub, admin, "ckt", 2):
        handle = admin.rollouts.create(rollout("ckt", waves=WAVES, gate=gate("2s")))
        status = handle.wait(timeout=120)
        assert status.state == "paused"
        assert (status.wave, status.wave_state) == ("canary", "failed")
        assert "check 'smoke' timed out (no verdict within 2s" in status.message
        assert [(c.name, c.state) for c in status.checks] == [("smoke", "timed-out")]
        [(kind, wave, _, _)] = check_transitions(status)
        assert (kind, wave) == ("gate-check-timed-out", 0)
        with pytest.raises(HubRequestError) as err:
            handle.verdict("smoke", True)
        assert err.value.status == 409
        handle.abort()


def test_bad_verdicts_are_refused_and_the_first_verdict_wins(
    hub: HubServer, admin: HubClient
) -> None:
    with fleet(hub, admin, "ckb", 2):
        handle = admin.rollouts.create(rollout("ckb", waves=WAVES, gate=gate("5m")))
        status = awaiting(handle, "canary")
        url = f"{hub.url}/v1/rollouts/ckb-v2/verdicts"
        key = {"ApiKey": hub.api_key.reveal()}

        def post(body: object, **kw: object) -> requests.Response:
            return requests.post(url, json=body, headers=key, timeout=10, **kw)  # type: ignore[arg-type]

        answer = post({"wave": "canary", "check": "smoke", "pass": True, "message": 3})
        assert answer.status_code == 400
        assert {p["path"] for p in answer.json()["problems"]} == {
            "$.pass",
            "$.passed",
            "$.message",
        }
        answer = post({"wave": 7, "check": "perf", "passed": True})
        assert answer.status_code == 400
        assert [p["path"] for p in answer.json()["problems"]] == ["$.wave", "$.check"]
        assert "declares smoke" in answer.json()["problems"][1]["message"]
        assert post([1, 2]).status_code == 400
        assert post({"wave": 0, "check": "smoke", "passed": "yes"}).status_code == 400
        answer = post({"wave": "rest", "check": "smoke", "passed": True})  # not the current wave
        assert (answer.status_code, answer.json()["code"]) == (409, "NotAwaitingVerdict")
        answer = post({"wave": 0, "check": "smoke", "passed": True, "attempt": 1.5})
        assert (answer.status_code, answer.json()["code"]) == (409, "NotAwaitingVerdict")
        answer = requests.post(
            url, data=b"x", headers={**key, "Content-Type": "text/plain"}, timeout=10
        )
        assert answer.status_code == 415
        answer = requests.post(
            f"{hub.url}/v1/rollouts/nope/verdicts", json={}, headers=key, timeout=10
        )
        assert answer.status_code == 404
        assert requests.post(url, json={}, timeout=10).status_code == 401
        with pytest.raises(EdgekitError, match="declares no check 'perf'"):
            handle.run_checks({"perf": lambda w: True})
        assert handle.status().checks[0].state == "awaiting"  # nothing was posted
        # Two notebooks: the first verdict wins, the second gets a clear 409.
        other = hub.client().rollouts.get("ckb-v2")
        first = other.run_checks({"smoke": lambda w: (True, "all green")}, status)
        assert [(r.check, r.posted) for r in first] == [("smoke", True)]
        late = handle.run_checks({"smoke": lambda w: False}, status)
        assert [(r.check, r.posted) for r in late] == [("smoke", False)]
        assert "VerdictExists" in late[0].refused
        with pytest.raises(HubRequestError) as err:
            handle.verdict("smoke", False, "too late", wave=0, attempt=status.wave_attempt)
        assert (err.value.status, err.value.code) == (409, "VerdictExists")
        assert "already has a verdict (passed: all green)" in str(err.value)
        status = handle.wait(timeout=120, checks={"smoke": lambda w: True})
        assert status.state == "completed"
        assert check_transitions(status)[0] == ("gate-check-passed", 0, "smoke", "all green")


def test_a_verdict_survives_a_hub_sigkill(tmp_path_factory: pytest.TempPathFactory) -> None:
    db = tmp_path_factory.mktemp("killed-checks") / "hub.db"
    # A slow controller: the verdict is committed, the hub killed before a tick acts on it.
    with HubServer(db, access_log=False, rollout_interval=1.0) as server:
        admin = publish_retail(server.client(retry_for=30))
        since = admin.events.revision()
        with fleet(server, admin, "ckk", 2):
            handle = admin.rollouts.create(rollout("ckk", waves=WAVES, gate=gate("5m")))
            awaiting(handle, "canary")
            handle.verdict("smoke", True, "checked before the crash")
            server.kill()
            server.start()
            status = awaiting(handle, "rest")  # the canary passed on the stored verdict
            handle.verdict("smoke", True)
            status = handle.wait(timeout=120)
        assert status.state == "completed"
        assert [c.state for w in status.waves for c in w.checks] == ["passed", "passed"]
        events = list(admin.events.list(since, kinds=["rollout"]).events)
        verdicts = [(e.type, e.data["wave"]) for e in events if e.type.startswith("gate-check")]
        assert verdicts == [("gate-check-passed", 0), ("gate-check-passed", 1)]
        assert events[-1].type == "completed"
