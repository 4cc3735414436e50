"""Roll-outs: a change applied to many clusters in waves, behind health gates.

This module is the roll-out's *document* (``kind: Rollout``) and the pure rules the hub's
controller applies to it: which clusters each wave takes (:func:`plan_waves`), whether a
wave's gate holds (:func:`evaluate_gate`) and whether a maintenance window is open
(:meth:`Window.is_open`). It does no I/O and keeps no clock: every function takes ``now``.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

import attrs

from ._base import Check, check_name, doc, duplicates, is_name
from .profiles import ProfileRef
from .selectors import Selector

__all__ = [
    "CheckState",
    "CheckStatus",
    "CheckVerdict",
    "GateCheck",
    "GateState",
    "GateVerdict",
    "HealthGate",
    "HostObservation",
    "OnFailure",
    "Rollout",
    "Wave",
    "WavePlan",
    "Window",
    "checks_failure",
    "duration_seconds",
    "evaluate_checks",
    "evaluate_gate",
    "plan_waves",
]

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
#: Longer than any sensible soak, timeout or window; bounds the arithmetic on user input.
_MAX_SECONDS = 366 * 24 * 3600


def duration_seconds(text: str) -> int | None:
    """``"1h30m"`` -> 5400; units d, h, m, s in that order; None when ``text`` is not one."""
    m = _DURATION.fullmatch(text)
    if m is None or not text:
        return None
    d, h, mi, s = (int(g) if g else 0 for g in m.groups())
    total = ((d * 24 + h) * 60 + mi) * 60 + s
    return total if total <= _MAX_SECONDS else None


def _check_duration(c: Check, field: str, value: str, *, zero: bool = True) -> None:
    seconds = duration_seconds(value)
    if seconds is None:
        c.fail(field, f"{value!r} is not a duration such as 30s, 5m, 1h30m or 2d (at most 366d)")
    elif seconds == 0 and not zero:
        c.fail(field, "must be longer than 0s")


def _names(value: str | Iterable[str]) -> tuple[str, ...]:
    # ek.Wave("canary", clusters="store-0005") means one cluster, not eleven letters.
    return (value,) if isinstance(value, str) else tuple(value)


class OnFailure(enum.Enum):
    """What a roll-out does when a wave's gate fails."""

    PAUSE = "pause"  # stop before the next wave; a user resumes, rolls back or aborts
    ROLLBACK = "rollback"  # put the failed wave's clusters back to their previous generation


_ON_FAILURES = tuple(OnFailure)


def _on_failure(value: Any) -> Any:
    # ek.Rollout(..., on_failure="pause") as the example writes it; anything else is
    # left as given for __attrs_post_init__ to report with its path.
    if isinstance(value, str) and value in {m.value for m in OnFailure}:
        return OnFailure(value)
    return value


@attrs.frozen
class Wave:
    """One step of a roll-out: explicit clusters, a percentage or a count of the selected
    clusters, or (none of them) every selected cluster no earlier wave took."""

    name: str = attrs.field(metadata=doc("The wave name, unique in the roll-out."))
    clusters: tuple[str, ...] = attrs.field(
        default=(),
        converter=_names,
        metadata=doc("Cluster names this wave takes (they must be selected)."),
    )
    percent: float | None = attrs.field(
        default=None, metadata=doc("A share of all selected clusters, 0 < percent <= 100.")
    )
    count: int | None = attrs.field(default=None, metadata=doc("A number of clusters, >= 1."))

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        # Independent rules: one that needs a field that failed to load is skipped alone.
        with c.rule():
            check_name(c, "name", self.name)
        with c.rule():
            given = [
                f for f in ("clusters", "percent", "count") if getattr(self, f) not in ((), None)
            ]
            if len(given) > 1:
                c.fail(
                    given[1], f"give one of clusters, percent or count, not {' and '.join(given)}"
                )
        with c.rule():
            if self.percent is not None and not 0 < self.percent <= 100:
                c.fail("percent", f"{self.percent!r} is not in (0, 100]")
        with c.rule():
            if self.count is not None and self.count < 1:
                c.fail("count", f"{self.count!r} is not at least 1")
        with c.rule():
            for i, name in enumerate(self.clusters):
                if not is_name(name):
                    c.fail(("clusters", i), f"{name!r} is not a cluster name")
            for name in duplicates(self.clusters):
                c.fail("clusters", f"{name!r} is listed twice")
        c.done()

    @property
    def is_rest(self) -> bool:
        """Whether this wave takes whatever is left."""
        return not self.clusters and self.percent is None and self.count is None


@attrs.frozen
class GateCheck:
    """A named check a connected SDK (or any admin client) evaluates once a wave's hosts
    passed, posting its verdict to the hub; no verdict within ``timeout`` fails the gate."""

    name: str = attrs.field(metadata=doc("The check's name, unique in the gate."))
    timeout: str = attrs.field(
        default="10m",
        metadata=doc("Time from the soak's start a verdict has to arrive; none fails the gate."),
    )

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        with c.rule():
            check_name(c, "name", self.name)
        with c.rule():
            _check_duration(c, "timeout", self.timeout, zero=False)
        c.done()


def _checks(value: Any) -> Any:
    # ek.HealthGate(checks=["smoke"]) means one check with the default timeout; anything
    # else is left as given for the field's own rules to report.
    if isinstance(value, str):
        value = (value,)
    if isinstance(value, Iterable) and not isinstance(value, Mapping):
        return tuple(GateCheck(v) if isinstance(v, str) else v for v in value)
    return value


@attrs.frozen
class HealthGate:
    """When a wave counts as done: every host converged and healthy, then a soak with no
    failure. Failed, rolled-back, unreachable and timed-out hosts count against it."""

    soak: str = attrs.field(default="0s", metadata=doc("Time healthy before the next wave."))
    timeout: str = attrs.field(
        default="30m", metadata=doc("Time a wave's hosts have to converge before they fail.")
    )
    unreachable_after: str = attrs.field(
        default="2m", metadata=doc("A host silent this long (no heartbeat) counts as failed.")
    )
    max_failed_clusters: int = attrs.field(
        default=0, metadata=doc("Clusters of the wave allowed to fail without failing it.")
    )
    webhook: str | None = attrs.field(
        default=None,
        metadata=doc(
            "An http(s) URL the hub POSTs the wave's status to; anything but 2xx fails the gate."
        ),
    )
    checks: tuple[GateCheck, ...] = attrs.field(
        default=(),
        converter=_checks,
        metadata=doc(
            "Named checks whose verdicts an admin client (a notebook's callables) posts once "
            "the wave's hosts passed; a failed verdict, or none in time, fails the gate."
        ),
    )

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        with c.rule():
            _check_duration(c, "soak", self.soak)
        for field in ("timeout", "unreachable_after"):
            with c.rule():
                _check_duration(c, field, getattr(self, field), zero=False)
        with c.rule():
            if self.max_failed_clusters < 0:
                c.fail("max_failed_clusters", "must not be negative")
        with c.rule():
            webhook = self.webhook
            if webhook is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", webhook):
                c.fail("webhook", f"{webhook!r} is not an http(s) URL")
        with c.rule():
            for i, check in enumerate(self.checks):
                # Typed as GateCheck, but a Python caller can pass anything (a dict, a number).
                if not isinstance(cast(object, check), GateCheck):
                    c.fail(("checks", i), f"{check!r} is not a check (name and timeout)")
            for name in duplicates([k.name for k in self.checks if isinstance(k, GateCheck)]):
                c.fail("checks", f"two checks are called {name!r}")
        c.done()

    def check(self, name: str) -> GateCheck | None:
        """The declared check ``name``, or None."""
        return next((k for k in self.checks if k.name == name), None)


@attrs.frozen
class Window:
    """A maintenance window: waves start only while one is open (a wave already running
    finishes). ``cron`` gives the openings in ``timezone``; each lasts ``duration``."""

    cron: str = attrs.field(metadata=doc('When a window opens, five cron fields ("0 2 * * *").'))
    duration: str = attrs.field(metadata=doc("How long it stays open (4h, 90m)."))
    timezone: str = attrs.field(default="UTC", metadata=doc("An IANA time zone name."))

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        with c.rule():
            _check_duration(c, "duration", self.duration, zero=False)
        with c.rule():
            if len(self.cron.split()) != 5:
                c.fail(
                    "cron", f"{self.cron!r} is not five cron fields (minute hour day month weekday)"
                )
            else:
                problem = _cron_problem(self.cron)
                if problem is not None:
                    c.fail("cron", f"{self.cron!r}: {problem}")
        with c.rule():
            if _zone(self.timezone) is None:
                c.fail("timezone", f"{self.timezone!r} is not an IANA time zone (America/Chicago)")
        c.done()

    def is_open(self, now: datetime) -> bool:
        """Whether ``now`` (timezone-aware) is inside a window."""
        return self.open_until(now) is not None

    def open_until(self, now: datetime) -> datetime | None:
        """When the window ``now`` is in closes; None when none is open."""
        from cronsim import CronSim

        local = now.astimezone(_zone(self.timezone))
        # The latest opening at or before now (CronSim in reverse starts at now itself).
        start = next(CronSim(self.cron, local + timedelta(seconds=1), reverse=True), None)
        if start is None:
            return None
        end = start + timedelta(seconds=duration_seconds(self.duration) or 0)
        return end if start <= local < end else None

    def next_open(self, now: datetime) -> datetime:
        """``now`` when a window is open, else when the next one opens."""
        from cronsim import CronSim

        if self.is_open(now):
            return now
        local = now.astimezone(_zone(self.timezone))
        return next(CronSim(self.cron, local))


def _zone(name: str) -> Any:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _cron_problem(expr: str) -> str | None:
    from cronsim import CronSim, CronSimError

    try:
        CronSim(expr, datetime(2000, 1, 1))
    except CronSimError as e:
        return str(e).rstrip(".").lower() or "not a cron expression"
    return None


@attrs.frozen
class Rollout:
    """A change (a profile version, and optionally a provider image) rolled out to the selected
    clusters in waves."""

    name: str = attrs.field(metadata=doc("The roll-out name, unique in the hub."))
    profile: ProfileRef = attrs.field(metadata=doc("The profile version clusters move to."))
    clusters: Selector = attrs.field(
        factory=Selector, metadata=doc("Which clusters: labels all matched (and a profile).")
    )
    waves: tuple[Wave, ...] = attrs.field(
        default=(Wave("all"),), metadata=doc("The waves, in order; the last may take the rest.")
    )
    max_unavailable: int = attrs.field(
        default=1, metadata=doc("Hosts of one cluster updated at the same time.")
    )
    gate: HealthGate = attrs.field(factory=HealthGate, metadata=doc("When a wave is done."))
    on_failure: OnFailure = attrs.field(
        default=OnFailure.PAUSE,
        converter=_on_failure,
        metadata=doc("pause, or rollback the failed wave."),
    )
    window: Window | None = attrs.field(
        default=None, metadata=doc("When waves may start; any time when absent.")
    )
    approve_each_wave: bool = attrs.field(
        default=False, metadata=doc("Wait for an approval before every wave after the first.")
    )
    provider_image: str | None = attrs.field(
        default=None,
        metadata=doc(
            "The provider image clusters move to with the profile (a repave); a rollback "
            "puts back the one each cluster had. None: each keeps its image."
        ),
    )

    def __attrs_post_init__(self) -> None:
        c = Check(self)
        with c.rule():
            check_name(c, "name", self.name)
        with c.rule():
            image = self.provider_image
            if image is not None and (
                not image
                or len(image) > 512
                or any(ch.isspace() or not ch.isprintable() for ch in image)
            ):
                c.fail(
                    "provider_image",
                    "must be an image reference (1-512 printable characters, no spaces)",
                )
        with c.rule():
            self._check_waves(c)
        with c.rule():
            if self.max_unavailable < 1:
                c.fail("max_unavailable", "must be at least 1")
        with c.rule():
            if self.on_failure not in _ON_FAILURES:
                c.fail("on_failure", f"{self.on_failure!r} is not pause or rollback")
        c.done()

    def _check_waves(self, c: Check) -> None:
        # The waves' rules, all on the one field: they run, or (waves unloadable) none does.
        if not self.waves:
            c.fail("waves", "at least one wave is needed")
        for name in duplicates([w.name for w in self.waves]):
            c.fail("waves", f"two waves are called {name!r}")
        for i, wave in enumerate(self.waves[:-1]):
            if wave.is_rest:
                c.fail(
                    ("waves", i),
                    f"wave {wave.name!r} takes every remaining cluster, so it must be last",
                )
        named = [n for w in self.waves for n in w.clusters]
        for name in duplicates(named):
            c.fail("waves", f"cluster {name!r} is in two waves")


@attrs.frozen
class WavePlan:
    """The clusters one wave takes, in the order they are updated."""

    name: str
    clusters: tuple[str, ...]


def plan_waves(waves: Sequence[Wave], selected: Iterable[str]) -> tuple[WavePlan, ...]:
    """Which clusters each wave takes, deterministically.

    The selected clusters are ordered by name. Waves naming clusters take exactly those (in
    the order given); a percentage wave takes ``ceil(percent * N / 100)`` of the ``N``
    selected clusters, and a count wave ``count``, both from the front of the clusters no
    wave took yet (named clusters are reserved first, whatever wave names them); a last
    wave with neither takes what is left. Clusters no wave takes stay as they are.
    Raises ValueError naming every named cluster that is not selected.
    """
    pool = sorted(set(selected))
    total = len(pool)
    chosen = set(pool)
    missing = sorted({n for w in waves for n in w.clusters if n not in chosen})
    if missing:
        raise ValueError("not selected by the roll-out: " + ", ".join(missing))
    reserved = {n for w in waves for n in w.clusters}
    free = [n for n in pool if n not in reserved]
    out = []
    for wave in waves:
        if wave.clusters:
            take: list[str] = list(wave.clusters)
        else:
            if wave.percent is not None:
                size = math.ceil(wave.percent * total / 100)
            elif wave.count is not None:
                size = wave.count
            else:
                size = len(free)
            take, free = free[:size], free[size:]
        out.append(WavePlan(wave.name, tuple(take)))
    return tuple(out)


@attrs.frozen
class HostObservation:
    """What the hub knows of one host of a wave."""

    cluster: str
    uid: str
    desired_generation: int
    observed_generation: int
    phase: str | None  # downloading, applying, rebooting, healthy, failed, rolled-back
    last_seen: datetime | None
    message: str = ""
    #: The desired generation the host had when it sent ``phase`` (None: unknown, as from
    #: older hubs): a ``failed`` about an older generation is not this wave's failure.
    attempted_generation: int | None = None

    @property
    def failed(self) -> bool:
        """Whether it reported ``failed`` or ``rolled-back`` for its desired generation."""
        return self.phase in ("failed", "rolled-back") and (
            self.attempted_generation is None
            or self.attempted_generation >= self.desired_generation
        )


class GateState(enum.Enum):
    """Where a wave is, as its gate sees it."""

    WAITING = "waiting"  # hosts still converging
    SOAKING = "soaking"  # every host converged and healthy; the soak clock runs
    PASSED = "passed"
    FAILED = "failed"


@attrs.frozen
class GateVerdict:
    """A gate's answer: the state, when soaking began, and why hosts count as failed."""

    state: GateState
    soak_started: datetime | None = None
    failed_clusters: tuple[str, ...] = ()
    reasons: Mapping[str, str] = attrs.field(factory=dict)  # host uid -> why it failed


def evaluate_gate(
    gate: HealthGate,
    hosts: Sequence[HostObservation],
    *,
    now: datetime,
    wave_started: datetime,
    soak_started: datetime | None = None,
) -> GateVerdict:
    """The gate's verdict on a wave's hosts at ``now``.

    A host fails when it reports ``failed`` or ``rolled-back`` for its desired generation
    (:attr:`HostObservation.failed`; one about an older generation is not converged yet), is
    silent longer than
    ``unreachable_after``, or has not converged (observed generation = desired, phase
    healthy) within ``timeout`` of the wave's start. More failed clusters than
    ``max_failed_clusters`` fail the wave. When every host that has not failed converged, the
    soak starts (``soak_started`` carries it between calls) and the wave passes once it lasted
    ``soak``; a failure during the soak resets it.
    """
    timeout = timedelta(seconds=duration_seconds(gate.timeout) or 0)
    silent = timedelta(seconds=duration_seconds(gate.unreachable_after) or 0)
    soak = timedelta(seconds=duration_seconds(gate.soak) or 0)
    reasons: dict[str, str] = {}
    converging = False
    for h in hosts:
        converged = h.observed_generation >= h.desired_generation and h.phase == "healthy"
        if h.failed:
            reasons[h.uid] = f"{h.phase}: {h.message}" if h.message else str(h.phase)
        elif h.last_seen is None or now - h.last_seen > silent:
            reasons[h.uid] = f"unreachable (no heartbeat for more than {gate.unreachable_after})"
        elif not converged and now - wave_started > timeout:
            reasons[h.uid] = (
                f"timed out after {gate.timeout} at generation {h.observed_generation} "
                f"of {h.desired_generation} ({h.phase or 'no phase'})"
            )
        elif not converged:
            converging = True
    failed = tuple(sorted({h.cluster for h in hosts if h.uid in reasons}))
    if len(failed) > gate.max_failed_clusters:
        return GateVerdict(GateState.FAILED, None, failed, reasons)
    if converging:
        return GateVerdict(GateState.WAITING, None, failed, reasons)
    started = soak_started if soak_started is not None else now
    if now - started >= soak:
        return GateVerdict(GateState.PASSED, started, failed, reasons)
    return GateVerdict(GateState.SOAKING, started, failed, reasons)


class CheckState(enum.Enum):
    """Where one declared check of a wave is."""

    PENDING = "pending"  # the wave's hosts have not passed yet: nothing to judge
    AWAITING = "awaiting"  # the hosts passed; a verdict is due before the deadline
    PASSED = "passed"
    FAILED = "failed"
    TIMED_OUT = "timed-out"


@attrs.frozen
class CheckVerdict:
    """A verdict recorded for one check of one wave attempt (``timed_out``: the hub's own,
    recorded when the deadline passed without one)."""

    passed: bool
    message: str = ""
    timed_out: bool = False


@attrs.frozen
class CheckStatus:
    """One check as the gate sees it at ``now``."""

    name: str
    state: CheckState
    message: str = ""
    deadline: datetime | None = None


def evaluate_checks(
    gate: HealthGate,
    verdicts: Mapping[str, CheckVerdict],
    *,
    now: datetime,
    awaiting_since: datetime | None,
) -> tuple[GateState, tuple[CheckStatus, ...]]:
    """The declared checks' part of a gate at ``now``.

    ``verdicts`` are those recorded for this wave attempt (check name -> verdict; names the
    gate does not declare are ignored); ``awaiting_since`` is when the wave's hosts passed
    (the soak's start), None while they have not. A check with no verdict is ``awaiting``
    until ``awaiting_since + timeout`` and ``timed-out`` from then on, so a gate whose
    verdicts never come fails; it can never pass without one. Any failed or timed-out check
    fails the gate (``FAILED``), all passed pass it (``PASSED``), otherwise it ``WAITING``.
    No gate without checks: ``PASSED`` with no statuses.
    """
    out: list[CheckStatus] = []
    for check in gate.checks:
        verdict = verdicts.get(check.name)
        deadline = (
            None
            if awaiting_since is None
            else awaiting_since + timedelta(seconds=duration_seconds(check.timeout) or 0)
        )
        if verdict is not None and verdict.timed_out:
            out.append(CheckStatus(check.name, CheckState.TIMED_OUT, verdict.message, deadline))
        elif verdict is not None:
            state = CheckState.PASSED if verdict.passed else CheckState.FAILED
            out.append(CheckStatus(check.name, state, verdict.message, deadline))
        elif deadline is None:
            out.append(CheckStatus(check.name, CheckState.PENDING))
        elif now >= deadline:
            why = f"no verdict within {check.timeout} of the wave's hosts passing"
            out.append(CheckStatus(check.name, CheckState.TIMED_OUT, why, deadline))
        else:
            out.append(CheckStatus(check.name, CheckState.AWAITING, "", deadline))
    states = {c.state for c in out}
    if states & {CheckState.FAILED, CheckState.TIMED_OUT}:
        return GateState.FAILED, tuple(out)
    if states <= {CheckState.PASSED}:
        return GateState.PASSED, tuple(out)
    return GateState.WAITING, tuple(out)


def checks_failure(statuses: Sequence[CheckStatus]) -> str:
    """Why failed or timed-out checks fail a wave, in one line."""
    parts = []
    for c in statuses:
        if c.state is CheckState.FAILED:
            parts.append(f"check {c.name!r} failed" + (f": {c.message}" if c.message else ""))
        elif c.state is CheckState.TIMED_OUT:
            parts.append(f"check {c.name!r} timed out ({c.message})")
    return "; ".join(parts)
