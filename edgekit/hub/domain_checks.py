"""Gate checks a connected SDK evaluates: the verdicts an admin client posts for a wave's
declared checks, and what the status shows of them.

A verdict is a roll-out transition (``gate-check-passed`` / ``gate-check-failed``; the
controller's own ``gate-check-timed-out`` when none came in time), so it is persisted, an
event on the watch stream and survives a SIGKILL with no schema of its own. Each carries
the check's name and the wave **attempt** it is about (the wave's start as stored: a
resume starts a new attempt, whose checks need fresh verdicts). The rules of what a gate
makes of them are :func:`edgekit.model.rollouts.evaluate_checks`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from edgekit.errors import Problem
from edgekit.hub.errors import HubError, Refusal
from edgekit.hub.store_rollouts import RolloutRow, RolloutTables, TransitionRow
from edgekit.hub.views import ts
from edgekit.hub.wire import bad_text
from edgekit.model.rollouts import (
    CheckState,
    CheckStatus,
    CheckVerdict,
    Rollout,
    evaluate_checks,
)

__all__ = ["MAX_MESSAGE", "checks_json", "post_verdict", "verdicts_for"]

#: Longest verdict message kept (a traceback's tail fits).
MAX_MESSAGE = 4000
_KEYS = frozenset({"wave", "check", "passed", "message", "attempt"})
_TYPES = {"gate-check-passed", "gate-check-failed", "gate-check-timed-out"}


def _dt(t: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC)


def verdicts_for(
    rows: Sequence[TransitionRow], wave: int, attempt: float | None
) -> dict[str, CheckVerdict]:
    """check name -> the first verdict recorded for ``wave``'s ``attempt``."""
    out: dict[str, CheckVerdict] = {}
    for t in rows:
        if t.type not in _TYPES or t.wave != wave or t.data.get("attempt") != attempt:
            continue
        name = str(t.data.get("check"))
        if name not in out:  # the first verdict wins
            out[name] = CheckVerdict(
                t.type == "gate-check-passed",
                str(t.data.get("message") or ""),
                timed_out=t.type == "gate-check-timed-out",
            )
    return out


def current_checks(
    doc: Rollout, row: RolloutRow, rows: Sequence[TransitionRow], now: float
) -> tuple[CheckStatus, ...]:
    """The current wave's checks at ``now`` (awaiting only while it soaks)."""
    verdicts = verdicts_for(rows, row.wave, row.wave_started)
    # Deadlines run only while the roll-out runs (a resume starts the soak again).
    since = row.soak_started if row.state == "running" and row.wave_state == "soaking" else None
    return evaluate_checks(
        doc.gate,
        verdicts,
        now=_dt(now),
        awaiting_since=None if since is None else _dt(since),
    )[1]


def _status_json(c: CheckStatus) -> dict[str, Any]:
    return {
        "name": c.name,
        "state": c.state.value,
        "message": c.message,
        "deadline": None if c.deadline is None else ts(c.deadline.timestamp()),
    }


def checks_json(
    doc: Rollout, row: RolloutRow, rows: Sequence[TransitionRow], now: float
) -> dict[int, list[dict[str, Any]]]:
    """wave index -> its declared checks as the status shows them: the current wave's as the
    gate sees them now, an earlier wave's as its last attempt ended, a later one's pending."""
    if not doc.gate.checks:
        return {}
    last: dict[int, float | None] = {}
    for t in rows:
        if t.wave is not None:
            last[t.wave] = t.data.get("attempt")
    out: dict[int, list[dict[str, Any]]] = {}
    for i in range(len(doc.waves)):
        if i == row.wave and row.state in ("running", "paused"):
            statuses = current_checks(doc, row, rows, now)
        else:
            verdicts = verdicts_for(rows, i, last.get(i)) if i in last else {}
            statuses = tuple(
                CheckStatus(c.name, CheckState.PENDING)
                if c.name not in verdicts
                else CheckStatus(
                    c.name,
                    CheckState.TIMED_OUT
                    if verdicts[c.name].timed_out
                    else CheckState.PASSED
                    if verdicts[c.name].passed
                    else CheckState.FAILED,
                    verdicts[c.name].message,
                )
                for c in doc.gate.checks
            )
        out[i] = [_status_json(c) for c in statuses]
    return out


def _problems(body: Mapping[str, Any]) -> list[Problem]:
    problems = [Problem(f"$.{k}", "is not a field of a verdict") for k in body if k not in _KEYS]
    if "check" not in body:
        problems.append(Problem("$.check", "is required: the check's name"))
    elif not isinstance(body["check"], str):
        problems.append(Problem("$.check", "must be a string"))
    if "wave" not in body:
        problems.append(Problem("$.wave", "is required: the wave's index or name"))
    elif isinstance(body["wave"], bool) or not isinstance(body["wave"], (int, str)):
        problems.append(Problem("$.wave", "must be the wave's index or name"))
    if not isinstance(body.get("passed"), bool):
        problems.append(Problem("$.passed", "is required: true or false"))
    message = body.get("message", "")
    if not isinstance(message, str):
        problems.append(Problem("$.message", "must be a string"))
    elif len(message) > MAX_MESSAGE:
        problems.append(Problem("$.message", f"is longer than {MAX_MESSAGE} characters"))
    elif (why := bad_text(message)) is not None:
        problems.append(Problem("$.message", why))
    attempt = body.get("attempt")
    if attempt is not None and (isinstance(attempt, bool) or not isinstance(attempt, float | int)):
        problems.append(Problem("$.attempt", "must be the wave's attempt (status.wave.attempt)"))
    return problems


def _conflict(code: str, message: str) -> HubError:
    return HubError(Refusal.CONFLICT, code, message)


def post_verdict(
    tables: RolloutTables, row: RolloutRow, doc: Rollout, body: Mapping[str, Any]
) -> None:
    """Record a verdict ``{wave, check, passed, message?, attempt?}`` for the current wave
    (the caller holds the transaction). 400 for a bad body or a check the gate does not
    declare; 409 when that wave is not awaiting it: not the current wave, not soaking, another
    attempt, a verdict already given (the first wins), or its deadline passed."""
    problems = _problems(body)
    names = [w.name for w in doc.waves]
    wave = body.get("wave")
    index: int | None = None
    if not problems:
        if isinstance(wave, int):
            index = wave if 0 <= wave < len(names) else None
        else:
            index = names.index(wave) if wave in names else None
        if index is None:
            problems.append(
                Problem(
                    "$.wave", f"roll-out {row.name!r} has no wave {wave!r} ({', '.join(names)})"
                )
            )
        if doc.gate.check(str(body["check"])) is None:
            declared = ", ".join(c.name for c in doc.gate.checks) or "none"
            problems.append(
                Problem(
                    "$.check",
                    f"the gate of roll-out {row.name!r} declares no check {body['check']!r}"
                    f" (it declares {declared})",
                )
            )
    if problems:
        raise HubError(Refusal.INVALID, "InvalidVerdict", "the verdict is invalid", problems)
    assert index is not None
    check = str(body["check"])
    where = f"check {check!r} of wave {names[index]!r}"
    if row.state != "running" or index != row.wave or row.wave_state != "soaking":
        now_at = f"roll-out {row.name!r} is {row.state}, wave {names[row.wave]!r} {row.wave_state}"
        raise _conflict("NotAwaitingVerdict", f"{where} awaits no verdict: {now_at}")
    attempt = body.get("attempt")
    if attempt is not None and float(attempt) != row.wave_started:
        raise _conflict(
            "NotAwaitingVerdict",
            f"{where} awaits no verdict for that attempt: the wave was started again since",
        )
    now = time.time()
    rows = tables.check_verdicts(row.name)
    status = next(c for c in current_checks(doc, row, rows, now) if c.name == check)
    if status.state is CheckState.TIMED_OUT and check not in verdicts_for(
        rows, row.wave, row.wave_started
    ):
        raise _conflict("CheckTimedOut", f"{where} timed out: {status.message}")
    if status.state is not CheckState.AWAITING:
        raise _conflict(
            "VerdictExists",
            f"{where} already has a verdict ({status.state.value}"
            + (f": {status.message}" if status.message else "")
            + "); the first verdict stands",
        )
    tables.transition(
        row.name,
        "gate-check-passed" if body["passed"] else "gate-check-failed",
        now,
        wave=row.wave,
        data={
            "check": check,
            "attempt": row.wave_started,
            "message": str(body.get("message") or ""),
        },
    )
