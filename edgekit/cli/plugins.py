"""``edgekit plugins``: the backends, plugins and hooks installed, conflicts, broken plugins.

A listing, not a check: it formats :meth:`PluginManager.report()
<edgekit.plugins.PluginManager.report>` (``--json`` prints ``report.to_json()``) and exits 0
whatever a plugin got wrong, so that a user can always see what is installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click
from rich.table import Table

from edgekit.cli._common import cli, console, echo_error, emit_json, json_option, user_errors
from edgekit.debug import debug_enabled


@contextmanager
def _manager_log_silenced() -> Iterator[None]:
    """Mute the manager's "skipping broken plugin" warnings while the listing is built.

    The listing prints every problem itself; without a logging setup Python would print
    each warning a second time on stderr (and its traceback, with ``EDGEKIT_DEBUG=1``).
    """
    from edgekit.plugins import manager

    log = manager.log
    was = log.disabled
    log.disabled = True
    try:
        yield
    finally:
        log.disabled = was


@cli.command()
@json_option
def plugins(as_json: bool) -> None:
    """List backends, plugins and their hooks, conflicting names and skipped plugins."""
    from edgekit.plugins import get_plugin_manager

    with user_errors(as_json), _manager_log_silenced():
        report = get_plugin_manager().report()
    if debug_enabled():  # the traceback of each skipped plugin, on stderr, before the listing
        for problem in report.problems:
            if problem.traceback:
                click.echo(f"{problem}\n{problem.traceback}\n", err=True)
    if as_json:
        emit_json(report.to_json())
        return
    out = console()
    table = Table(title="edgekit backends")
    for col in ("capability", "name", "distribution", "status"):
        table.add_column(col)
    for info in report.backends:
        table.add_row(info.capability, info.name, info.distribution, report.backend_status(info))
    out.print(table)
    hooks_table = Table(title="plugins and the hooks they implement")
    for col in ("plugin", "distribution", "hooks"):
        hooks_table.add_column(col, overflow="fold")
    for summary in report.plugins:
        hooks_table.add_row(summary.name, summary.distribution, ", ".join(summary.hooks))
    out.print(hooks_table)
    for conflict in report.conflicts:
        echo_error("warning:", conflict.message, color="yellow")
    for problem in report.problems:
        echo_error("warning:", str(problem), color="yellow")
