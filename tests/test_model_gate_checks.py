"""Gate checks in the roll-out document and the pure rule the controller applies to their
verdicts (:func:`evaluate_checks`); no hub, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

import edgekit as ek
from edgekit import config
from edgekit.errors import ConfigError
from edgekit.hub.client_checks import verdict_of
from edgekit.hub.client_rollouts import WaveStatus
from edgekit.model import GateCheck, GateState, HealthGate, ModelValueError, Rollout
from edgekit.model.rollouts import CheckState, CheckVerdict, checks_failure, evaluate_checks

T0 = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
GATE = HealthGate(checks=(GateCheck("smoke", "10m"), GateCheck("perf", "1m")))


def test_checks_load_from_yaml_and_round_trip() -> None:
    text = """
kind: Rollout
name: retail-1.1.0
profile: {name: retail, version: 1.1.0}
gate: {soak: 5m, checks: [{name: smoke, timeout: 10m}, {name: perf}]}
"""
    r = config.loads(text)
    assert isinstance(r, Rollout)
    assert r.gate.checks == (GateCheck("smoke", "10m"), GateCheck("perf", "10m"))
    assert config.loads(config.dump(r)) == r
    assert ek.HealthGate(checks=["smoke"]).checks == (ek.GateCheck("smoke"),)
    assert ek.HealthGate(checks="smoke").check("smoke") == GateCheck("smoke")
    assert GATE.check("nope") is None


def test_bad_checks_are_reported_by_path_all_at_once() -> None:
    text = """
kind: Rollout
name: r
profile: {name: retail, version: 1.1.0}
gate: {checks: [{name: Bad Name, timeout: soon}, {name: ok, timeout: 0s}, {name: ok}, {nam: x}]}
"""
    with pytest.raises(ConfigError) as err:
        config.loads(text)
    got = {(p.path, p.message.split(":")[0]) for p in err.value.problems}
    assert {path for path, _ in got} >= {
        "$.gate.checks[0].name",
        "$.gate.checks[0].timeout",
        "$.gate.checks[1].timeout",
        "$.gate.checks[3].name",
        "$.gate.checks[3].nam",
    }
    with pytest.raises(ModelValueError, match="two checks are called 'ok'"):
        HealthGate(checks=(GateCheck("ok"), GateCheck("ok", "1m")))
    with pytest.raises(ModelValueError, match="is not a check"):
        HealthGate(checks=({"name": "smoke"},))


def test_no_checks_pass_and_pending_until_the_hosts_passed() -> None:
    assert evaluate_checks(HealthGate(), {}, now=T0, awaiting_since=None) == (GateState.PASSED, ())
    state, statuses = evaluate_checks(GATE, {}, now=T0, awaiting_since=None)
    assert state is GateState.WAITING
    assert [(c.name, c.state, c.deadline) for c in statuses] == [
        ("smoke", CheckState.PENDING, None),
        ("perf", CheckState.PENDING, None),
    ]


def test_awaiting_then_timed_out_at_the_deadline() -> None:
    since = T0
    state, statuses = evaluate_checks(
        GATE, {"smoke": CheckVerdict(True)}, now=T0 + timedelta(seconds=59), awaiting_since=since
    )
    assert state is GateState.WAITING
    assert [(c.state, c.deadline) for c in statuses] == [
        (CheckState.PASSED, T0 + timedelta(minutes=10)),
        (CheckState.AWAITING, T0 + timedelta(minutes=1)),
    ]
    state, statuses = evaluate_checks(
        GATE, {"smoke": CheckVerdict(True)}, now=T0 + timedelta(minutes=1), awaiting_since=since
    )
    assert state is GateState.FAILED
    assert statuses[1].state is CheckState.TIMED_OUT
    assert checks_failure(statuses) == (
        "check 'perf' timed out (no verdict within 1m of the wave's hosts passing)"
    )


def test_a_failed_verdict_fails_at_once_and_all_passed_pass() -> None:
    failed = {"perf": CheckVerdict(False, "p99 420 ms")}
    state, statuses = evaluate_checks(GATE, failed, now=T0, awaiting_since=None)
    assert state is GateState.FAILED  # even before the hosts passed
    assert checks_failure(statuses) == "check 'perf' failed: p99 420 ms"
    both = {
        "smoke": CheckVerdict(True),
        "perf": CheckVerdict(True, "ok"),
        "other": CheckVerdict(False),
    }
    state, _ = evaluate_checks(GATE, both, now=T0 + timedelta(days=1), awaiting_since=T0)
    assert state is GateState.PASSED  # a verdict on an undeclared name is ignored


VERDICTS = st.dictionaries(
    st.sampled_from(["smoke", "perf", "other"]),
    st.builds(CheckVerdict, st.booleans(), st.just(""), st.booleans()),
)


@given(VERDICTS, st.integers(0, 7200), st.one_of(st.none(), st.integers(0, 7200)))
def test_checks_properties(verdicts: dict[str, CheckVerdict], at: int, since: int | None) -> None:
    now = T0 + timedelta(seconds=at)
    start = None if since is None else T0 + timedelta(seconds=since)
    state, statuses = evaluate_checks(GATE, verdicts, now=now, awaiting_since=start)
    assert [c.name for c in statuses] == ["smoke", "perf"]
    declared = {k: v for k, v in verdicts.items() if k in ("smoke", "perf")}
    good = {k for k, v in declared.items() if v.passed and not v.timed_out}
    # It never passes without a passing verdict for every declared check...
    assert (state is GateState.PASSED) == (good == {"smoke", "perf"})
    # ...and any failed or timed-out verdict fails it, whatever the time.
    if any(not v.passed or v.timed_out for v in declared.values()):
        assert state is GateState.FAILED
    # Without a verdict a check fails exactly from its deadline on (none before the hosts
    # passed: then it is pending).
    for c in statuses:
        if c.name in declared:
            continue
        if start is None:
            assert c.state is CheckState.PENDING
        else:
            limit = start + timedelta(minutes=10 if c.name == "smoke" else 1)
            expected = CheckState.TIMED_OUT if now >= limit else CheckState.AWAITING
            assert c.state is expected
    # Deterministic: the same inputs give the same answer.
    assert evaluate_checks(GATE, verdicts, now=now, awaiting_since=start) == (state, statuses)


WAVE = WaveStatus("canary", "soaking", 1, {"converged": 1})


def test_a_callable_s_answer_is_its_verdict() -> None:
    assert verdict_of(lambda w: w.name == "canary", WAVE) == (True, "")
    assert verdict_of(lambda w: (False, "2 errors"), WAVE) == (False, "2 errors")
    assert verdict_of(lambda w: "yes", WAVE) == (  # type: ignore[arg-type,return-value]
        False,
        "the check returned a str, not a bool or (bool, str)",
    )

    def boom(wave: WaveStatus) -> bool:
        secret = "s3cr3t-token"  # a local value: not in the traceback
        raise ValueError(f"probe of {wave.name} failed {len(secret)}")

    passed, message = verdict_of(boom, WAVE)
    assert not passed
    assert message.startswith("ValueError: probe of canary failed 12\nTraceback")
    assert 'raise ValueError(f"probe of {wave.name}' in message
    assert "s3cr3t-token" not in message  # frames and lines only, no local values
    long = verdict_of(lambda w: (False, "x" * 10_000), WAVE)[1]
    assert len(long) <= 4000
