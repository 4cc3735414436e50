"""``edgekit rollout ...``: roll-outs the hub drives (:mod:`edgekit.hub.client_rollouts`).
Each command calls one public client method and prints its result's table (one row per
wave; ``status --clusters``: one per cluster), or its JSON with ``--json``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from edgekit.cli._common import cli as _cli
from edgekit.cli._common import emit_json, json_option, require_file, user_errors
from edgekit.cli.clusters import _print
from edgekit.cli.hub import _admin, ca_option, hub_url_option
from edgekit.errors import ConfigError

__all__ = ["rollout"]


def _check_json(c: Any) -> dict[str, Any]:
    return {
        "name": c.name,
        "state": c.state,
        "message": c.message,
        "deadline": c.deadline.isoformat().replace("+00:00", "Z") if c.deadline else None,
    }


def _status_json(status: Any, clusters: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": status.name,
        "state": status.state,
        "message": status.message,
        "wave": status.wave,
        "waveState": status.wave_state,
        "counts": dict(status.counts),
        "eta": {
            "time": status.eta.isoformat().replace("+00:00", "Z") if status.eta else None,
            "remainingSeconds": status.eta_seconds,
            "basis": status.eta_basis,
        },
        "waves": [
            {
                "name": w.name,
                "state": w.state,
                "clusters": w.clusters,
                "counts": dict(w.counts),
                **({"checks": [_check_json(c) for c in w.checks]} if w.checks else {}),
            }
            for w in status.waves
        ],
    }
    if clusters:
        out["clusters"] = [
            {
                "name": c.name,
                "wave": c.wave,
                "state": c.state,
                "fromVersion": c.from_version,
                "toVersion": c.to_version,
                "fromGeneration": c.from_generation,
                "toGeneration": c.to_generation,
                "rollbackGeneration": c.rollback_generation,
                "started": c.started.isoformat() if c.started else None,
                "converged": c.converged.isoformat() if c.converged else None,
                "seconds": c.seconds,
                "message": c.message,
            }
            for c in status.clusters
        ]
    return out


def _show(status: Any, as_json: bool, clusters: bool = False) -> None:
    from edgekit.hub.client_rollouts import RolloutReport

    if as_json:
        emit_json(_status_json(status))
        return
    _print(status.table())
    if clusters:
        _print(RolloutReport(status).table())
    elif status.message:
        click.echo(status.message)


def _command_checks(items: tuple[str, ...], timeout: float, wait: bool = True) -> dict[str, Any]:
    """``--check NAME=COMMAND`` options -> check callables, every bad one reported."""
    from edgekit.errors import Problem
    from edgekit.hub.client_checks import command_check

    checks: dict[str, Any] = {}
    problems = []
    if items and not wait:
        problems.append(Problem("--check", "needs --wait (the commands run while waiting)"))
    for item in items:
        name, sep, command = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError("is not NAME=COMMAND")
            if name in checks:
                raise ValueError(f"names check {name!r} a second time")
            checks[name] = command_check(command, timeout=timeout)
        except ValueError as exc:  # shlex: an unclosed quote
            problems.append(Problem("--check", f"{item!r}: {exc}"))
    if problems:
        raise ConfigError(problems)
    return checks


def _refuse_undeclared(rollout: str, declared: Sequence[str], checks: dict[str, Any]) -> None:
    from edgekit.errors import EdgekitError
    from edgekit.hub.client_checks import refuse_undeclared

    try:
        refuse_undeclared(rollout, declared, checks)
    except EdgekitError as exc:  # a bad option: exit 2, like the other --check problems
        raise ConfigError.single("--check", str(exc)) from None


def _note_unchecked(declared: Sequence[str], checks: dict[str, Any]) -> None:
    left = [name for name in declared if name not in checks]
    if left:
        click.echo(
            f"note: the gate's check(s) {', '.join(left)} need verdicts (--check NAME=COMMAND,"
            " `edgekit rollout verdict` or an SDK); a check without one fails its wave"
            " at its timeout",
            err=True,
        )


def _wait(handle: Any, checks: dict[str, Any], timeout: float | None, as_json: bool) -> Any:
    return handle.wait(progress=not as_json, timeout=timeout, checks=checks or None)


check_option = click.option(
    "--check",
    "check_items",
    multiple=True,
    metavar="NAME=COMMAND",
    help="Run COMMAND (split like a shell, not run by one) for gate check NAME of each wave;"
    " exit 0 passes. Repeatable.",
)
check_timeout_option = click.option(
    "--check-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=600.0,
    show_default=True,
    help="Seconds a --check command may run before it is killed and fails.",
)


@_cli.group()
def rollout() -> None:
    """Roll-outs: a profile version moved to many clusters in waves, by the hub."""


@rollout.command("create")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--wait", "wait", is_flag=True, help="Wait until it settles, with progress bars.")
@click.option("--timeout", type=float, default=None, help="Seconds --wait waits at most.")
@check_option
@check_timeout_option
@hub_url_option
@ca_option
@json_option
def rollout_create(
    file: Path,
    wait: bool,
    timeout: float | None,
    check_items: tuple[str, ...],
    check_timeout: float,
    hub_url: str,
    ca_cert: Path | None,
    as_json: bool,
) -> None:
    """Create the roll-out described in FILE (a `kind: Rollout` document).

    The file is validated strictly first (as `edgekit validate` does); the hub then plans
    the waves over the clusters the selector matches, holds them and drives the roll-out.
    With --wait, waits until it completes, pauses, rolls back or waits for an approval
    (exit 1 unless it completed), running each --check command when a wave awaits its
    verdict.
    """
    from edgekit import config
    from edgekit.model import Rollout

    with user_errors(as_json):
        checks = _command_checks(check_items, check_timeout, wait)
        require_file(file)
        doc: object = config.load(file)
        if not isinstance(doc, Rollout):
            raise ConfigError.single(
                "$", f"{file} holds a {config.detect_kind_of_file(file)}, not a Rollout"
            )
        declared = [c.name for c in doc.gate.checks]
        _refuse_undeclared(doc.name, declared, checks)
        with _admin(hub_url, ca_cert) as client:
            handle = client.rollouts.create(doc)
            status = handle.status()
            if wait:
                _note_unchecked(declared, checks)
                status = _wait(handle, checks, timeout, as_json)
    _show(status, as_json)
    if wait and status.state != "completed":
        raise SystemExit(1)


@rollout.command("wait")
@click.argument("name")
@click.option("--timeout", type=float, default=None, help="Seconds to wait at most.")
@check_option
@check_timeout_option
@hub_url_option
@ca_option
@json_option
def rollout_wait(
    name: str,
    timeout: float | None,
    check_items: tuple[str, ...],
    check_timeout: float,
    hub_url: str,
    ca_cert: Path | None,
    as_json: bool,
) -> None:
    """Wait for roll-out NAME (created by anyone) as `create --wait` does: until it
    completes, pauses, rolls back or waits for an approval (exit 1 unless it completed),
    running each --check command when a wave awaits its verdict."""
    from edgekit.hub.client_checks import declared_checks

    with user_errors(as_json):
        checks = _command_checks(check_items, check_timeout)
        with _admin(hub_url, ca_cert) as client:
            handle = client.rollouts.get(name)
            declared = declared_checks(handle.status().spec)
            _refuse_undeclared(name, declared, checks)
            _note_unchecked(declared, checks)
            status = _wait(handle, checks, timeout, as_json)
    _show(status, as_json)
    if status.state != "completed":
        raise SystemExit(1)


@rollout.command("list")
@hub_url_option
@ca_option
@json_option
def rollout_list(hub_url: str, ca_cert: Path | None, as_json: bool) -> None:
    """Every roll-out, oldest first, with its state and current wave."""
    from edgekit.hub.tables import Table

    with user_errors(as_json), _admin(hub_url, ca_cert) as client:
        items = client.rollouts.list()
    if as_json:
        emit_json([_status_json(s, clusters=False) for s in items])
        return
    rows = [
        (s.name, s.state, s.wave, s.wave_state, ", ".join(f"{k} {v}" for k, v in s.counts.items()))
        for s in items
    ]
    _print(Table("roll-outs", ("name", "state", "wave", "wave state", "clusters"), rows))


@rollout.command("status")
@click.argument("name")
@click.option("--clusters", is_flag=True, help="One row per cluster too (the report).")
@hub_url_option
@ca_option
@json_option
def rollout_status(
    name: str, clusters: bool, hub_url: str, ca_cert: Path | None, as_json: bool
) -> None:
    """Where roll-out NAME is: per wave (and with --clusters per cluster: versions,
    generations, state, timings)."""
    with user_errors(as_json), _admin(hub_url, ca_cert) as client:
        status = client.rollouts.get(name).status()
    _show(status, as_json, clusters)


def _control(action: str, doc: str) -> Callable[..., None]:
    @rollout.command(action, help=doc)
    @click.argument("name")
    @hub_url_option
    @ca_option
    @json_option
    def command(name: str, hub_url: str, ca_cert: Path | None, as_json: bool) -> None:
        with user_errors(as_json), _admin(hub_url, ca_cert) as client:
            status = getattr(client.rollouts.get(name), action)()
        _show(status, as_json)

    return command


rollout_pause = _control("pause", "Pause roll-out NAME: nothing new starts (409 unless running).")
rollout_resume = _control(
    "resume", "Resume roll-out NAME; a failed wave is evaluated again with a fresh timeout."
)
rollout_abort = _control(
    "abort", "Abort roll-out NAME for good: its clusters are released, nothing is put back."
)
rollout_rollback = _control(
    "rollback",
    "Put every cluster roll-out NAME changed back to its previous profile version (also once"
    " it completed; refused when a cluster was changed since).",
)
rollout_approve = _control(
    "approve", "Approve the wave of roll-out NAME that waits for an approval (approveEachWave)."
)


@rollout.command("verdict")
@click.argument("name")
@click.argument("check")
@click.option("--pass/--fail", "passed", required=True, help="The check passed, or failed.")
@click.option("--message", default="", help="Why (shown with the wave; a failure's reason).")
@click.option("--wave", default=None, help="The wave's name or index (default: the current).")
@hub_url_option
@ca_option
@json_option
def rollout_verdict(
    name: str,
    check: str,
    passed: bool,
    message: str,
    wave: str | None,
    hub_url: str,
    ca_cert: Path | None,
    as_json: bool,
) -> None:
    """Post a verdict on gate check CHECK of roll-out NAME's wave that awaits it (a CI job
    or a script as the checker). The first verdict wins: refused (exit 1) when the wave
    awaits none, another verdict came first, or the check's deadline passed."""
    target: int | str | None = int(wave) if wave is not None and wave.isdigit() else wave
    with user_errors(as_json), _admin(hub_url, ca_cert) as client:
        handle = client.rollouts.get(name)
        status = handle.verdict(check, passed, message, wave=target)
    _show(status, as_json)
