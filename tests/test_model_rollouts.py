"""Roll-out documents and the pure rules the hub's controller applies (issue 12 item 2/3):
wave planning, health gates and maintenance windows. No hub, no clock: ``now`` is given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import edgekit as ek
from edgekit import config
from edgekit.errors import ConfigError
from edgekit.model import (
    GateState,
    HealthGate,
    HostObservation,
    ModelValueError,
    ProfileRef,
    Rollout,
    Wave,
    Window,
    evaluate_gate,
    plan_waves,
)
from edgekit.model.rollouts import duration_seconds

T0 = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
REF = ProfileRef("retail", "1.1.0")


# --- the document --------------------------------------------------------------------


def test_a_rollout_document_loads_and_round_trips() -> None:
    text = """
kind: Rollout
name: retail-1.1.0
profile: {name: retail, version: 1.1.0}
clusters: {tags: {region: us-west}}
waves:
  - {name: canary, clusters: [store-0005]}
  - {name: ten-percent, percent: 10}
  - {name: rest}
gate: {soak: 5m, maxFailedClusters: 0}
onFailure: rollback
window: {cron: "0 2 * * *", duration: 4h, timezone: America/Chicago}
approveEachWave: true
"""
    r = config.loads(text)
    assert isinstance(r, Rollout)
    assert r.waves[0].clusters == ("store-0005",)
    assert r.on_failure is ek.model.OnFailure.ROLLBACK
    assert config.loads(config.dump(r)) == r
    assert config.detect_kind(config.unstructure(r) | {"kind": "Rollout"}) == "rollout"


def test_every_problem_of_a_bad_rollout_at_once() -> None:
    with pytest.raises(ConfigError) as e:
        config.loads(
            "kind: Rollout\nname: x\nprofile: {name: p, version: 1.0.0}\n"
            "waves:\n  - {name: a, clusters: [s1, s1], percent: 5}\n  - {name: b, count: 0}\n"
            'gate: {soak: 5 min}\nwindow: {cron: "61 2 * * *", duration: 0s, timezone: Mars/X}\n'
        )
    paths = sorted(p.path for p in e.value.problems)
    assert paths == [
        "$.gate.soak",
        "$.waves[0].clusters",
        "$.waves[0].percent",
        "$.waves[1].count",
        "$.window.cron",
        "$.window.duration",
        "$.window.timezone",
    ]


def test_rollout_rules_across_waves() -> None:
    with pytest.raises(ModelValueError) as e:
        Rollout(
            "r",
            REF,
            waves=(Wave("rest"), Wave("a", clusters=["s1"]), Wave("a", clusters="s1")),
            max_unavailable=0,
        )
    text = str(e.value)
    assert "wave 'rest' takes every remaining cluster, so it must be last" in text
    assert "two waves are called 'a'" in text
    assert "cluster 's1' is in two waves" in text
    assert "max_unavailable: must be at least 1" in text


def test_a_single_cluster_name_is_one_cluster() -> None:
    assert Wave("canary", clusters="store-0005").clusters == ("store-0005",)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0s", 0), ("30s", 30), ("5m", 300), ("1h30m", 5400), ("2d", 172800), ("1d2h3m4s", 93784)],
)
def test_durations(text: str, seconds: int) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 m", "m", "1m1h", "-1s", "999999d"])
def test_not_durations(text: str) -> None:
    assert duration_seconds(text) is None


# --- wave planning -------------------------------------------------------------------

WAVES = (
    Wave("canary", clusters=["store-0005"]),
    Wave("ten-percent", percent=10),
    Wave("two", count=2),
    Wave("rest"),
)


def test_waves_take_named_then_percent_then_count_then_the_rest_in_name_order() -> None:
    selected = [f"store-{i:04d}" for i in range(20, 0, -1)]  # any input order
    plans = plan_waves(WAVES, selected)
    assert [p.name for p in plans] == ["canary", "ten-percent", "two", "rest"]
    assert plans[0].clusters == ("store-0005",)
    assert plans[1].clusters == ("store-0001", "store-0002")  # ceil(10% of 20) = 2
    assert plans[2].clusters == ("store-0003", "store-0004")  # store-0005 is reserved
    assert plans[3].clusters == tuple(f"store-{i:04d}" for i in range(6, 21))


def test_a_named_cluster_that_is_not_selected_is_an_error() -> None:
    with pytest.raises(ValueError, match="not selected by the roll-out: store-9, store-x"):
        plan_waves((Wave("a", clusters=["store-x", "store-9"]), Wave("rest")), ["store-1"])


def test_without_a_rest_wave_the_others_stay_as_they_are() -> None:
    plans = plan_waves((Wave("one", count=1),), ["b", "a", "c"])
    assert plans[0].clusters == ("a",)


waves_strategy = st.lists(
    st.one_of(
        st.builds(lambda n: Wave("w", count=n), st.integers(1, 30)),
        st.builds(lambda p: Wave("w", percent=p), st.floats(0.5, 100)),
    ),
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(
    st.sets(st.from_regex(r"\As-[0-9]{1,3}\Z"), max_size=40),
    waves_strategy,
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_wave_planning_properties(selected, waves, rest, rnd) -> None:  # type: ignore[no-untyped-def]
    names = sorted(selected)
    canary = rnd.sample(names, min(2, len(names)))
    all_waves = [Wave("canary", clusters=canary), *waves] + ([Wave("rest")] if rest else [])
    order = list(selected)
    rnd.shuffle(order)
    plans = plan_waves(all_waves, order)
    taken = [c for p in plans for c in p.clusters]
    assert len(taken) == len(set(taken))  # no cluster in two waves
    assert set(taken) <= selected
    assert plans == plan_waves(all_waves, sorted(selected))  # input order does not matter
    assert plans[0].clusters == tuple(canary)
    if rest:
        assert set(taken) == selected  # a rest wave leaves nothing behind


# --- health gates --------------------------------------------------------------------


def host(uid: str, cluster: str = "c1", *, observed: int = 2, phase: str | None = "healthy",
         seen: timedelta = timedelta(0), message: str = "") -> HostObservation:  # fmt: skip
    return HostObservation(cluster, uid, 2, observed, phase, T0 - seen, message)


GATE = HealthGate(soak="5m", timeout="30m", unreachable_after="2m")


def test_converging_hosts_keep_the_wave_waiting() -> None:
    v = evaluate_gate(GATE, [host("a"), host("b", observed=1, phase="downloading")],
                      now=T0, wave_started=T0 - timedelta(minutes=1))  # fmt: skip
    assert v.state is GateState.WAITING
    assert v.soak_started is None


def test_all_healthy_soaks_then_passes() -> None:
    hosts = [host("a"), host("b", "c2")]
    v = evaluate_gate(GATE, hosts, now=T0, wave_started=T0 - timedelta(minutes=3))
    assert (v.state, v.soak_started) == (GateState.SOAKING, T0)
    later = T0 + timedelta(minutes=5)
    fresh = [host("a", seen=-timedelta(minutes=5)), host("b", "c2", seen=-timedelta(minutes=5))]
    v = evaluate_gate(GATE, fresh, now=later, wave_started=T0, soak_started=v.soak_started)
    assert v.state is GateState.PASSED


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (host("b", phase="failed", message="disk full"), "failed: disk full"),
        (host("b", phase="rolled-back", observed=1), "rolled-back"),
        (host("b", seen=timedelta(minutes=3)), "unreachable (no heartbeat for more than 2m)"),
        (host("b", observed=1, phase="applying"), "timed out after 30m at generation 1 of 2"),
    ],
)
def test_what_counts_against_the_gate(bad: HostObservation, reason: str) -> None:
    v = evaluate_gate(GATE, [host("a"), bad], now=T0, wave_started=T0 - timedelta(minutes=31))
    assert v.state is GateState.FAILED
    assert v.failed_clusters == ("c1",)
    assert v.reasons["b"].startswith(reason)
    assert "a" not in v.reasons


def test_failed_clusters_within_the_allowance_do_not_fail_the_wave() -> None:
    gate = HealthGate(soak="0s", max_failed_clusters=1)
    v = evaluate_gate(gate, [host("a"), host("b", "c2", phase="failed")],
                      now=T0, wave_started=T0)  # fmt: skip
    assert v.state is GateState.PASSED
    assert v.failed_clusters == ("c2",)


# --- maintenance windows -------------------------------------------------------------

NIGHT = Window(cron="0 2 * * *", duration="4h", timezone="America/Chicago")
CHICAGO = ZoneInfo("America/Chicago")


@pytest.mark.parametrize(
    ("local", "open_"),
    [
        (datetime(2026, 12, 2, 1, 59, tzinfo=CHICAGO), False),
        (datetime(2026, 12, 2, 2, 0, tzinfo=CHICAGO), True),
        (datetime(2026, 12, 2, 5, 59, tzinfo=CHICAGO), True),
        (datetime(2026, 12, 2, 6, 0, tzinfo=CHICAGO), False),
        (datetime(2026, 12, 2, 9, 0, tzinfo=UTC), True),  # 03:00 in Chicago (CST)
        (datetime(2026, 7, 2, 9, 0, tzinfo=UTC), True),  # 04:00 in Chicago (CDT)
        (datetime(2026, 7, 2, 11, 0, tzinfo=UTC), False),  # 06:00 CDT
    ],
)
def test_a_window_is_open_in_its_own_time_zone(local: datetime, open_: bool) -> None:
    assert NIGHT.is_open(local) is open_


def test_next_open_and_open_until() -> None:
    now = datetime(2026, 12, 2, 12, 0, tzinfo=CHICAGO)
    assert NIGHT.next_open(now) == datetime(2026, 12, 3, 2, 0, tzinfo=CHICAGO)
    inside = datetime(2026, 12, 3, 3, 0, tzinfo=CHICAGO)
    assert NIGHT.next_open(inside) == inside
    assert NIGHT.open_until(inside) == datetime(2026, 12, 3, 6, 0, tzinfo=CHICAGO)


def test_on_failure_is_given_as_its_word_too() -> None:
    # The issue's own example writes on_failure="rollback"; it must serialise like the enum.
    from edgekit.config import unstructure
    from edgekit.model.rollouts import OnFailure

    r = Rollout("r", ProfileRef("retail", "1.0.0"), on_failure="rollback")
    assert r.on_failure is OnFailure.ROLLBACK
    assert unstructure(r)["onFailure"] == "rollback"
    with pytest.raises(ValueError, match=r"on_failure: 'sideways' is not pause or rollback"):
        Rollout("r", ProfileRef("retail", "1.0.0"), on_failure="sideways")
