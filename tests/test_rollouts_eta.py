"""A roll-out's ETA: the rule (mean of the measured waves, windows, empty waves, soak), how
status() shows it, and the hub's answer for a roll-out driven with an injected clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rollout_fleet import LOCAL_V2 as V2
from rollout_fleet import local_fleet

from edgekit import model
from edgekit.config import unstructure
from edgekit.hub.client_rollouts import RolloutStatus
from edgekit.hub.controller import RolloutController
from edgekit.hub.domain_clusters import ClusterOps
from edgekit.hub.domain_rollouts import RolloutOps, rollout_json
from edgekit.hub.eta import estimate, human, wave_durations
from edgekit.model.selectors import Selector

WAVES = (model.Wave("canary", count=1), model.Wave("more", count=2), model.Wave("rest"))
T0 = datetime(2026, 1, 15, 1, 0, tzinfo=UTC).timestamp()


def _doc(**kw: Any) -> model.Rollout:
    return model.Rollout("r", V2.ref, Selector(tags={"batch": "b"}), waves=WAVES, **kw)


def _eta(doc: model.Rollout, **kw: Any) -> Any:
    base: dict[str, Any] = {
        "state": "running",
        "wave": 1,
        "wave_state": "waiting",
        "wave_started": T0 - 100,
        "soak_started": None,
        "finished": None,
        "sizes": {0: 1, 1: 2, 2: 5},
        "durations": {0: 600.0},
        "now": T0,
    }
    base.update(kw)
    return estimate(doc, **base)


def test_the_rest_of_the_current_wave_and_one_mean_per_wave_to_go() -> None:
    eta = _eta(_doc())
    assert eta.remaining == 500 + 600
    assert eta.time == T0 + 1100
    assert eta.basis == "mean of 1 measured wave(s), 10m00s each; 2 wave(s) to go"
    assert _eta(_doc(), sizes={0: 1, 1: 2, 2: 0}).remaining == 500  # an empty wave is free
    # Over its mean already: the current wave is counted as ending now.
    assert _eta(_doc(), wave_started=T0 - 900).remaining == 600
    # Soaking: at least what is left of the soak.
    soaking = _eta(
        _doc(gate=model.HealthGate(soak="20m")),
        wave_state="soaking",
        wave_started=T0 - 500,
        soak_started=T0 - 60,
    )
    assert soaking.remaining == 1140 + 600


def test_later_waves_wait_for_the_window_and_approvals_are_said_to_be_left_out() -> None:
    # Open 02:00-03:00 UTC; at 01:00 the current wave (started) ends 01:08:20, the last one
    # waits for 02:00 and takes its 10 minutes.
    window = model.Window("0 2 * * *", "1h", "UTC")
    eta = _eta(_doc(window=window, approve_each_wave=True))
    assert eta.time == datetime(2026, 1, 15, 2, 10, tzinfo=UTC).timestamp()
    assert "1 wait(s) for the maintenance window" in eta.basis
    assert eta.basis.endswith("approvals not counted")
    # A wave not started yet waits for the window itself.
    pending = _eta(_doc(window=window), wave_state="waiting-window", wave_started=None)
    assert pending.time == datetime(2026, 1, 15, 2, 20, tzinfo=UTC).timestamp()


def test_no_estimate_without_a_measured_wave_or_while_not_running() -> None:
    unknown = _eta(_doc(), wave=0, durations={})
    assert (unknown.time, unknown.basis) == (None, "no wave with clusters has passed yet")
    assert _eta(_doc(), state="paused").basis == "no estimate while paused"
    done = _eta(_doc(), state="completed", finished=T0 - 5)
    assert (done.time, done.remaining, done.basis) == (T0 - 5, 0.0, "completed")


def test_a_resumed_wave_is_measured_from_its_restart() -> None:
    events = [
        (0, "wave-started", 10.0),
        (0, "wave-passed", 70.0),
        (1, "wave-started", 80.0),
        (1, "wave-started", 500.0),  # resumed after a pause
        (1, "wave-passed", 530.0),
        (2, "wave-started", 540.0),
    ]
    assert wave_durations(events) == {0: 60.0, 1: 30.0}
    assert [human(s) for s in (5, 75, 3725)] == ["5s", "1m15s", "1h02m"]


def test_the_hub_answers_an_eta_and_status_shows_it(tmp_path: Path) -> None:
    with local_fleet(tmp_path / "hub.db", 4) as hub:
        ops = ClusterOps(hub)
        rollouts = RolloutOps(hub)
        rollouts.create(unstructure(_doc(gate=model.HealthGate(soak="0s", unreachable_after="1h"))))
        now = [time.time()]
        controller = RolloutController(hub, clock=lambda: now[0])

        def answer() -> RolloutStatus:
            row = rollouts.rollout("r")
            durations = wave_durations(rollouts.tables.wave_events("r"))
            data = rollout_json(row, rollouts.tables.clusters("r"), durations=durations, now=now[0])
            return RolloutStatus.from_json(data)

        for _ in range(3):
            controller.tick()
        first = answer()
        assert (first.wave, first.eta, first.eta_basis) == (
            "canary",
            None,
            "no wave with clusters has passed yet",
        )
        assert "ETA unknown (no wave with clusters has passed yet)" in str(first)
        now[0] += 240  # the canary takes 4 minutes
        ops.report("h-0", {"phase": "healthy", "observedGeneration": 2})
        for _ in range(4):
            controller.tick()
        second = answer()
        assert (second.wave, second.eta_seconds) == ("more", 480)  # 4 minutes for each of two
        assert "(in 8m00s: mean of 1 measured wave(s), 4m00s each; 2 wave(s) to go)" in str(second)
        assert "ETA " in second._repr_html_()
