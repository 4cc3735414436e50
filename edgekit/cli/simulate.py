"""``edgekit simulate``: a simulated fleet against a hub (formatting over run_simulation)."""

from __future__ import annotations

import os
from pathlib import Path

import click
from rich.table import Table

from edgekit.cli._common import cli, console, emit_json, json_option, user_errors
from edgekit.cli.hub import ca_option, hub_url_option
from edgekit.errors import ConfigError


@cli.command()
@hub_url_option
@ca_option
@click.option("--hosts", type=click.IntRange(1, 100_000), default=100, show_default=True)
@click.option("--sites", default="", help="Comma-separated site names hosts are spread over.")
@click.option(
    "--token-env",
    default="EDGEKIT_REGISTRATION_TOKEN",
    show_default=True,
    help="The environment variable holding the registration token.",
)
@click.option("--prefix", default="sim", show_default=True,
              help="Start of every host's uid (PREFIX-00000, ...); one per fleet.")  # fmt: skip
@click.option("--seconds", type=click.FloatRange(0.1), default=60.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--time-scale", type=click.FloatRange(0.0001), default=0.01, show_default=True,
              help="Real seconds per simulated second.")  # fmt: skip
@click.option("--workers", type=click.IntRange(1, 256), default=16, show_default=True)
@click.option("--fail-apply", type=click.FloatRange(0, 1), default=0.0,
              help="Share of updates that fail to apply.")  # fmt: skip
@click.option("--never-report", type=click.FloatRange(0, 1), default=0.0,
              help="Share of updates that go silent.")  # fmt: skip
@click.option("--roll-back", type=click.FloatRange(0, 1), default=0.0,
              help="Share of updates whose new image rolls back.")  # fmt: skip
@click.option("--offline", type=click.FloatRange(0, 1), default=0.0,
              help="Share of updates during which the host goes offline.")  # fmt: skip
@json_option
def simulate(
    hub_url: str,
    ca_cert: Path | None,
    hosts: int,
    sites: str,
    token_env: str,
    prefix: str,
    seconds: float,
    seed: int,
    time_scale: float,
    workers: int,
    fail_apply: float,
    never_report: float,
    roll_back: float,
    offline: float,
    as_json: bool,
) -> None:
    """Run simulated agents against a hub: they register, heartbeat, take clusters and
    walk updates through the device's phases, failing as asked. For rehearsing a roll-out."""
    from edgekit.simulator import Faults, run_simulation

    err = console(stderr=True)
    with user_errors(as_json):
        token = os.environ.get(token_env)
        if not token:
            raise ConfigError.single(f"${token_env}", "is not set: put the token there")
        faults = Faults(
            fail_apply=fail_apply, never_report=never_report, roll_back=roll_back, offline=offline
        )

        def tick(counts: dict[str, int]) -> None:
            if not as_json:
                line = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                err.print(line, highlight=False, markup=False)

        report = run_simulation(
            hub_url,
            token,
            hosts,
            seconds=seconds,
            on_tick=tick,
            sites=[s for s in sites.split(",") if s],
            prefix=prefix,
            seed=seed,
            faults=faults,
            time_scale=time_scale,
            workers=workers,
            ca_cert=str(ca_cert) if ca_cert else None,
        )
    if as_json:
        emit_json(report.to_json())
        return
    table = Table(
        "phase", "hosts", title=f"{report.hosts} simulated hosts, {report.requests} requests"
    )
    for phase, n in sorted(report.counts.items()):
        table.add_row(phase, str(n))
    console().print(table)
    if report.errors:
        n = report.counts.get("unregistered", 0)
        err.print(f"warning: {n} host(s) never registered; the hub answered:", markup=False)
        for e in report.errors:
            err.print(f"  {e}", markup=False, highlight=False)
        for hint in _hints(report.errors):
            err.print(f"hint: {hint}", markup=False, highlight=False)


def _hints(errors: tuple[str, ...]) -> list[str]:
    """What to do about the refusals a new user meets most: a second run against the same
    hub (its hosts bring new credentials or another site) and the throttle that follows."""
    hints = []
    if any("HostAlreadyRegistered" in e or "HostSiteConflict" in e for e in errors):
        hints.append(
            "these uids are already registered in this hub, by an earlier run whose"
            " credentials this run does not have (or in another site): give this fleet"
            " another --prefix, use a fresh hub database, or reset them"
            " (`edgekit hosts reset UID`)"
        )
    if any("TooManyFailures" in e for e in errors):
        hints.append(
            "the hub throttles this address after failed authentications (a wrong token, or"
            " hosts an earlier run registered); wait for the window to pass (60 s by"
            " default) and fix that first"
        )
    return hints
