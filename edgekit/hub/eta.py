"""When a running roll-out will be done: from the measured durations of its waves that
passed, the waves left and their maintenance windows.

The rule (docs/rollouts.md, "ETA"): a wave that passed took from its last ``wave-started``
to its ``wave-passed`` transition (a resumed wave counts from its restart, so a pause is
not counted). Every wave still to run is assumed to take the mean of those, whatever its
size: the waves' clusters are updated together, so a wave lasts about as long as its
slowest cluster takes to converge plus the soak. The current wave has what is left of that
mean (at least what is left of its soak); each later one starts when the one before ends,
or when its window next opens. Waves without clusters take no time. Approvals are not
predictable and are not counted (the basis says so). Pure: ``now`` is an argument.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from edgekit.hub.views import ts
from edgekit.model.rollouts import Rollout, duration_seconds

__all__ = ["Eta", "estimate", "human", "wave_durations"]


@attrs.frozen
class Eta:
    """An estimate: when (epoch seconds), how long from now, and what it rests on."""

    time: float | None
    remaining: float | None
    basis: str

    def to_json(self) -> dict[str, Any]:
        """As the API shows it (``status.eta``)."""
        return {
            "time": ts(self.time),
            "remainingSeconds": None if self.remaining is None else round(self.remaining),
            "basis": self.basis,
        }


def human(seconds: float) -> str:
    """``3h05m``, ``12m30s``, ``45s``."""
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def wave_durations(events: Sequence[tuple[int, str, float]]) -> dict[int, float]:
    """wave index -> seconds from its last ``wave-started`` to its ``wave-passed``, from
    ``(wave, type, time)`` transitions in the order they happened."""
    started: dict[int, float] = {}
    out: dict[int, float] = {}
    for wave, kind, when in events:
        if kind == "wave-started":
            started[wave] = when
        elif kind == "wave-passed" and wave in started:
            out[wave] = when - started[wave]
    return out


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def estimate(
    doc: Rollout,
    *,
    state: str,
    wave: int,
    wave_state: str,
    wave_started: float | None,
    soak_started: float | None,
    finished: float | None,
    sizes: Mapping[int, int],
    durations: Mapping[int, float],
    now: float,
) -> Eta:
    """The ETA of a roll-out where it is at ``now``; ``sizes``: clusters per wave."""
    if state == "completed":
        return Eta(finished, 0.0, "completed")
    if state != "running":
        return Eta(None, None, f"no estimate while {state}")
    measured = [d for i, d in durations.items() if i < wave and sizes.get(i, 0) > 0]
    if not measured:
        return Eta(None, None, "no wave with clusters has passed yet")
    mean = sum(measured) / len(measured)
    waits = 0

    def opened(t: float) -> float:
        nonlocal waits
        if doc.window is None or doc.window.is_open(_dt(t)):
            return t
        waits += 1
        return doc.window.next_open(_dt(t)).timestamp()

    def cost(i: int) -> float:
        return mean if sizes.get(i, 0) > 0 else 0.0

    if wave_state in ("updating", "waiting", "soaking"):
        left = max(cost(wave) - (now - (wave_started or now)), 0.0)
        if wave_state == "soaking" and soak_started is not None:
            soak = float(duration_seconds(doc.gate.soak) or 0)
            left = max(left, soak - (now - soak_started))
        t = now + left
    else:  # pending, waiting for its window or an approval
        t = opened(now) + cost(wave)
    for i in range(wave + 1, len(doc.waves)):
        t = opened(t) + cost(i)
    left_waves = len(doc.waves) - wave
    basis = (
        f"mean of {len(measured)} measured wave(s), {human(mean)} each; {left_waves} wave(s) to go"
    )
    if waits:
        basis += f"; {waits} wait(s) for the maintenance window"
    if doc.approve_each_wave and wave + 1 < len(doc.waves):
        basis += "; approvals not counted"
    return Eta(t, t - now, basis)
