"""Gate checks evaluated in a notebook: call the user's callables on a wave that awaits
their verdicts and post each verdict to the hub.

The hub decides, not the notebook: a check the gate declares fails the wave when no verdict
arrives before its deadline, so closing the notebook (or a callable that hangs) fails the
wave; it never passes it. A callable that raises is a failed verdict whose message is the
exception and its traceback (frames and lines only: no local values, so no secret held in
a variable reaches the hub); nothing is printed.

:func:`command_check` makes a check of a command (a CI job's script, a shell's smoke test):
exit 0 passes, anything else fails, and the verdict's message is the command's last line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import tempfile
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from edgekit.errors import EdgekitError

if TYPE_CHECKING:
    from edgekit.hub.client_rollouts import RolloutHandle, RolloutStatus, WaveStatus

__all__ = ["CheckFn", "CheckRun", "CommandCheck", "command_check", "run_checks", "verdict_of"]

log = logging.getLogger("edgekit.hub")

#: A check: the current wave's status -> passed, or (passed, message).
CheckFn = Callable[["WaveStatus"], "bool | tuple[bool, str]"]
#: The longest message the hub keeps (edgekit.hub.domain_checks.MAX_MESSAGE).
MAX_MESSAGE = 4000
#: How much of a command's output (stdout and stderr, in one file) a verdict reads: its
#: tail only, so a command that prints gigabytes costs disk, never memory.
OUTPUT_TAIL = 4096
#: ``EDGEKIT_CLUSTERS`` is left unset past this length (one variable may hold at most
#: 128 KiB on Linux, and all of them 2 MiB); ``EDGEKIT_CLUSTERS_FILE`` always has them.
CLUSTERS_ENV_MAX = 32 * 1024


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


def _tail(path: Path) -> str:
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - OUTPUT_TAIL))
        data = f.read(OUTPUT_TAIL)
    return data.decode("utf-8", errors="replace")


def _last_line(path: Path) -> str:
    lines = [line.strip() for line in _tail(path).splitlines()]
    # A line longer than the hub keeps: its end, where a message usually says why.
    return next((line for line in reversed(lines) if line), "")[-MAX_MESSAGE:]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # The command runs in its own session: its children (a shell's pipeline, a test
    # runner's workers) go with it rather than running on past the verdict.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal has no name of its own
        return f"signal {number}"


@attrs.frozen
class CommandCheck:
    """A gate check that runs a command (made by :func:`command_check`); a
    :data:`CheckFn`. Called by :func:`run_checks` with the roll-out's and the check's
    names too, which a :class:`WaveStatus` does not carry."""

    argv: tuple[str, ...]
    timeout: float = 600
    env: Mapping[str, str] = attrs.field(factory=dict)

    def __call__(self, wave: WaveStatus, rollout: str = "", check: str = "") -> tuple[bool, str]:
        with tempfile.TemporaryDirectory(prefix="edgekit-check-") as tmp:
            members = Path(tmp, "clusters")
            members.write_text("".join(f"{name}\n" for name in wave.members))
            joined = ",".join(wave.members)
            variables = {
                "EDGEKIT_ROLLOUT": rollout,
                "EDGEKIT_CHECK": check,
                "EDGEKIT_WAVE": wave.name,
                "EDGEKIT_WAVE_INDEX": str(wave.index),
                "EDGEKIT_CLUSTERS_FILE": str(members),
                "EDGEKIT_CLUSTER_COUNT": str(len(wave.members)),
            }
            env = {**os.environ, **self.env, **variables}
            if len(joined) <= CLUSTERS_ENV_MAX:
                env["EDGEKIT_CLUSTERS"] = joined
            else:  # a stale value from the caller's environment would be wrong
                env.pop("EDGEKIT_CLUSTERS", None)
            output = Path(tmp, "output")
            with output.open("wb") as out:
                try:
                    proc = subprocess.Popen(
                        self.argv,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=env,
                        start_new_session=True,
                    )
                except OSError as exc:  # not found, not executable: the verdict, not a crash
                    return False, _clip(f"cannot run {self.argv[0]!r}: {exc.strerror or exc}")
                try:
                    code = proc.wait(timeout=self.timeout)
                except subprocess.TimeoutExpired:
                    _kill_group(proc)
                    last = _last_line(output)
                    message = f"timed out after {self.timeout:g} s"
                    return False, _clip(message + (f"; last output: {last}" if last else ""))
                except BaseException:  # Ctrl-C in wait(): leave no command running
                    _kill_group(proc)
                    raise
            last = _last_line(output)
            if code == 0:
                return True, last
            if code < 0:
                return False, last or f"killed by {_signal_name(-code)}"
            return False, last or f"exit {code}"


def command_check(
    argv: Sequence[str] | str, *, timeout: float = 600, env: Mapping[str, str] | None = None
) -> CommandCheck:
    """A check that runs ``argv`` (a string is split as a shell would, by :mod:`shlex`, but
    never run by a shell: use ``sh -c '...'`` for pipes and ``&&``) for each wave awaiting
    it. Exit 0 passes, anything else fails; the message is the last non-empty line of its
    output (stdout and stderr; only the last 4 KiB are read), else ``exit N``. Past
    ``timeout`` seconds its process group is killed and the check fails (``timed out after
    T s``); a command that cannot start fails with the reason.

    It runs in this process's environment plus ``env`` plus ``EDGEKIT_ROLLOUT``,
    ``EDGEKIT_CHECK``, ``EDGEKIT_WAVE``, ``EDGEKIT_WAVE_INDEX``, ``EDGEKIT_CLUSTER_COUNT``,
    ``EDGEKIT_CLUSTERS_FILE`` (the wave's clusters, one per line; removed afterwards) and
    ``EDGEKIT_CLUSTERS`` (the same, comma-separated; unset past 32 KiB)."""
    args = tuple(shlex.split(argv)) if isinstance(argv, str) else tuple(argv)
    if not args or not args[0]:
        raise ValueError("a command check needs a command")
    if not timeout > 0:
        raise ValueError(f"a command check's timeout must be positive, not {timeout!r}")
    return CommandCheck(args, float(timeout), dict(env or {}))


def verdict_of(
    fn: CheckFn, wave: WaveStatus, rollout: str = "", check: str = ""
) -> tuple[bool, str]:
    """Call ``fn(wave)``: ``(passed, message)``; an exception or an answer that is neither a
    bool nor ``(bool, str)`` is a failed verdict saying so. A :class:`CommandCheck` is also
    told the roll-out's and the check's names (its command's variables)."""
    try:
        answer: Any = fn(wave, rollout, check) if isinstance(fn, CommandCheck) else fn(wave)
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


def declared_checks(spec: Mapping[str, Any]) -> list[str]:
    """The names of the checks a roll-out's gate declares (``spec``: its JSON document)."""
    return [str(c.get("name")) for c in (spec.get("gate") or {}).get("checks", [])]


def refuse_undeclared(rollout: str, declared: Sequence[str], checks: Mapping[str, Any]) -> None:
    """Refuse checks (callables or commands) named for checks ``declared`` (the roll-out's
    gate) does not hold: a typo would otherwise leave the declared check to time out."""
    unknown = sorted(set(checks) - set(declared))
    if unknown:
        raise EdgekitError(
            f"roll-out {rollout!r} declares no check {', '.join(map(repr, unknown))}"
            f" (its gate declares {', '.join(declared) or 'none'})"
        )


def check_names(status: RolloutStatus, checks: Mapping[str, CheckFn]) -> None:
    """:func:`refuse_undeclared` for a roll-out as the hub answered it."""
    refuse_undeclared(status.name, declared_checks(status.spec), checks)


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
        passed, message = verdict_of(checks[c.name], wave, status.name, c.name)
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
