"""The ``edgekit`` command: a thin layer over the Python API that adds formatting only.

Exit codes: 0 success, 1 failure, 2 usage or configuration error. Errors a user can cause
print a message (every problem, with its path) and never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from edgekit import __version__
from edgekit.errors import ConfigError, EdgekitError

F = TypeVar("F", bound=Callable[..., Any])

err_console = Console(stderr=True)
out_console = Console()

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=False, default=str))


def fail(error: EdgekitError, *, as_json: bool = False) -> NoReturn:
    """Report a user error (no traceback) and exit with its code."""
    if as_json:
        doc: dict[str, Any] = {"ok": False, "error": type(error).__name__, "message": str(error)}
        if isinstance(error, ConfigError):
            doc["problems"] = [
                {"path": p.path, "message": p.message, "line": p.line, "source": p.source}
                for p in error.problems
            ]
        _emit_json(doc)
    else:
        click.echo(f"{click.style('error:', fg='red', bold=True)} {error}", err=True)
    sys.exit(error.exit_code)


@contextmanager
def user_errors(as_json: bool = False) -> Iterator[None]:
    """Turn :class:`EdgekitError` into a clean message and exit code."""
    try:
        yield
    except EdgekitError as exc:
        fail(exc, as_json=as_json)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekit")
def cli() -> None:
    """edgekit: build and run edge Kubernetes fleets from Python or the shell."""


# --- validate / schema / plugins ----------------------------------------------------------


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--kind",
    type=click.Choice(["forge", "profile", "cluster", "site", "user-data", "pack", "host"]),
    help="What the file holds; detected when omitted.",
)
@json_option
def validate(file: Path, kind: str | None, as_json: bool) -> None:
    """Check FILE strictly and report every problem with its path."""
    from edgekit import config

    with user_errors(as_json):
        if not file.exists():
            raise ConfigError.single("$", f"{file}: no such file")
        obj: object = config.load(file, config.KINDS[kind] if kind else None)
        kind = kind or next(k for k, cls in config.KINDS.items() if type(obj) is cls)
        if kind == "forge":
            from edgekit.forge import Forge
            from edgekit.model import Forge as ForgeSpec

            assert isinstance(obj, ForgeSpec)
            Forge(obj, base_dir=file.resolve().parent, source=str(file))  # inventory, sites
    if as_json:
        _emit_json({"ok": True, "kind": kind, "file": str(file)})
    else:
        out_console.print(f"[green]ok[/]: {file} is a valid {kind}", highlight=False)


@cli.command()
@click.option(
    "--kind",
    type=click.Choice(["forge"]),
    default="forge",
    show_default=True,
    help="Which document's schema.",
)
def schema(kind: str) -> None:
    """Print the JSON Schema of the forge file (for editor completion)."""
    from edgekit.schema import forge_json_schema

    _emit_json(forge_json_schema())


@cli.command()
@json_option
def plugins(as_json: bool) -> None:
    """List plugins, their backends, and any plugin that failed to load."""
    from edgekit.plugins import get_plugin_manager

    pm = get_plugin_manager()
    with user_errors(as_json):
        infos = pm.backends()
    if as_json:
        _emit_json(
            {
                "backends": [
                    {
                        "capability": i.capability,
                        "name": i.name,
                        "plugin": i.plugin,
                        "distribution": i.distribution,
                        "builtin": i.builtin,
                        "unavailable": i.cls.unavailable_reason(),
                    }
                    for i in infos
                ],
                "broken": [
                    {"plugin": b.plugin, "distribution": b.distribution, "error": b.error}
                    for b in pm.broken
                ],
            }
        )
        return
    table = Table(title="edgekit backends")
    for col in ("capability", "name", "distribution", "status"):
        table.add_column(col)
    for i in infos:
        reason = i.cls.unavailable_reason()
        table.add_row(i.capability, i.name, i.distribution, reason or "ok")
    out_console.print(table)
    for b in pm.broken:
        warn = click.style("warning:", fg="yellow")
        click.echo(
            f"{warn} plugin {b.plugin!r} ({b.distribution}) failed to load: {b.error}", err=True
        )


# --- forge --------------------------------------------------------------------------------


class ProgressView:
    """Draws one progress bar per running step from forge events."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, event: Any) -> None:
        from edgekit.forge import StepFinished, StepStarted
        from edgekit.plugins.interfaces import Progress as StepProgress

        if isinstance(event, StepStarted):
            self.tasks[event.step.id] = self.progress.add_task(event.step.id, total=None)
        elif isinstance(event, StepProgress):
            task = self.tasks.get(event.step)
            if task is not None:
                self.progress.update(task, completed=event.done, total=event.total)
        elif isinstance(event, StepFinished):
            task = self.tasks.get(event.step.id)
            label = f"{event.step.id} [dim](cached)[/]" if event.cached else event.step.id
            if task is None:
                task = self.progress.add_task(label, total=1)
            size = sum(a.size for a in event.artifacts)
            self.progress.update(task, description=label, total=size or 1, completed=size or 1)


def _print_plan(plan: Any) -> None:
    out_console.print(plan)
    for note in plan.notes:
        click.echo(f"{click.style('note:', fg='yellow')} {note}", err=True)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--plan", "plan_only", is_flag=True, help="Only show what each step would build.")
@click.option("--no-cache", is_flag=True, help="Run every step, even those whose key is unchanged.")
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory (default: the forge file's `output`, else ./dist).",
)
@json_option
def forge(file: Path, plan_only: bool, no_cache: bool, output: Path | None, as_json: bool) -> None:
    """Run the EdgeForge pipeline of FILE: images, ISOs, site ISOs, publishing."""
    from edgekit.forge import Forge

    with user_errors(as_json):
        if not file.exists():
            raise ConfigError.single("$", f"{file}: no such file")
        pipeline = Forge.load(file, output_dir=output)
        plan = pipeline.plan()
        if plan_only:
            if as_json:
                _emit_json(plan.to_dict())
            else:
                _print_plan(plan)
            return
        if as_json:
            result = pipeline.run(no_cache=no_cache)
        else:
            _print_plan(plan)
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeElapsedColumn(),
                console=err_console,
                transient=False,
            ) as progress:
                result = pipeline.run(no_cache=no_cache, events=ProgressView(progress))
    if as_json:
        _emit_json(
            {
                "ok": True,
                "manifest": str(result.manifest_path),
                "ran": list(result.ran),
                "cached": list(result.cached),
                "artifacts": [
                    {"name": a.name, "path": str(a.path), "digest": a.digest, "size": a.size}
                    for a in result.artifacts.values()
                ],
            }
        )
        return
    table = Table(title=f"artifacts (manifest: {result.manifest_path})")
    for col in ("artifact", "size", "digest", "reference"):
        table.add_column(col)
    for a in result.artifacts.values():
        table.add_row(a.name, f"{a.size:,}", a.digest[:19], a.reference or "")
    out_console.print(table)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``edgekit`` command."""
    try:
        cli.main(args=argv, prog_name="edgekit", standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except EdgekitError as exc:  # raised outside a command's own handler
        fail(exc)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
