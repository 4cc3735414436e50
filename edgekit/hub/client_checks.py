"""Gate checks evaluated in a notebook: call the user's callables on a wave that awaits
their verdicts and post each verdict to the hub.

The hub decides, not the notebook: a check the gate declares fails the wave when no verdict
arrives before its deadline, so closing the notebook (or a callable that hangs) fails the
wave; it never passes it. A callable that raises is a failed verdict whose message is the
exception and its traceback (frames and lines only: no local values, so no secret held in
a variable reaches the hub); nothing is printed.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from edgekit.errors import EdgekitError

if TYPE_CHECKING:
    from edgekit.hub.client_rollouts import RolloutHandle, RolloutStatus, WaveStatus

__all__ = ["CheckFn", "CheckRun", "run_checks", "verdict_of"]

log = logging.getLogger("edgekit.hub")

#: A check: the current wave's status -> passed, or (passed, message).
CheckFn = Callable[["WaveStatus"], "bool | tuple[bool, str]"]
#: The longest message the hub keeps (edgekit.hub.domain_checks.MAX_MESSAGE).
MAX_MESSAGE = 4000


@attrs.frozen
class CheckRun:
    """What :func:`run_checks` did for one check: ``posted`` (the hub took the verdict), or
    ``refused`` with the hub's reason (another client's verdict came first, the wave moved
    on, the deadline passed)."""

    check: str
    wave: str
    passed: bool
    message: str
    posted: bool
    refused: str = ""


def _clip(text: str) -> str:
    # The tail of a traceback says where it failed: keep the first line and the end.
    if len(text) <= MAX_MESSAGE:
        return text
    head, _, _ = text.partition("\n")
    head = head[:200]
    return head + "\n...\n" + text[-(MAX_MESSAGE - len(head) - 5) :]


def verdict_of(fn: CheckFn, wave: WaveStatus) -> tuple[bool, str]:
    """Call ``fn(wave)``: ``(passed, message)``; an exception or an answer that is neither a
    bool nor ``(bool, str)`` is a failed verdict saying so."""
    try:
        answer: Any = fn(wave)
    except Exception as exc:  # any failure of the user's check is its verdict
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return False, _clip(f"{type(exc).__name__}: {exc}\n{text}".strip())
    if isinstance(answer, bool):
        return answer, ""
    if (
        isinstance(answer, tuple)
        and len(answer) == 2
        and isinstance(answer[0], bool)
        and isinstance(answer[1], str)
    ):
        return answer[0], _clip(answer[1])
    return False, f"the check returned a {type(answer).__name__}, not a bool or (bool, str)"


def check_names(status: RolloutStatus, checks: Mapping[str, CheckFn]) -> None:
    """Refuse callables for checks the roll-out's gate does not declare (a typo would
    otherwise leave the declared check to time out)."""
    declared = [str(c.get("name")) for c in (status.spec.get("gate") or {}).get("checks", [])]
    unknown = sorted(set(checks) - set(declared))
    if unknown:
        raise EdgekitError(
            f"roll-out {status.name!r} declares no check {', '.join(map(repr, unknown))}"
            f" (its gate declares {', '.join(declared) or 'none'})"
        )


def run_checks(
    handle: RolloutHandle, checks: Mapping[str, CheckFn], status: RolloutStatus
) -> list[CheckRun]:
    """Evaluate every check of ``checks`` the current wave awaits and post its verdict."""
    from edgekit.hub.client import HubRequestError

    check_names(status, checks)
    wave = status.current
    if status.state != "running" or status.wave_state != "soaking" or wave is None:
        return []
    out = []
    for c in wave.checks:
        if c.state != "awaiting" or c.name not in checks:
            continue
        passed, message = verdict_of(checks[c.name], wave)
        try:
            handle.verdict(c.name, passed, message, wave=wave.index, attempt=status.wave_attempt)
        except HubRequestError as exc:
            if exc.status != 409:
                raise
            log.info("verdict on %s of %s not taken: %s", c.name, wave.name, exc)
            out.append(CheckRun(c.name, wave.name, passed, message, False, str(exc)))
            continue
        out.append(CheckRun(c.name, wave.name, passed, message, True))
    return out
