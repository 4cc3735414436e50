"""``edgekit validate``, ``schema``, ``forge`` and ``build ...``: checking and building."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from edgekit.cli._common import (
    F,
    artifact_json,
    cli,
    console,
    emit_json,
    json_option,
    progress_bars,
    require_file,
    user_errors,
)

if TYPE_CHECKING:
    from edgekit.forge import ForgeResult
    from edgekit.plugins.interfaces import Artifact

# config.KINDS' names (kept literal: the CLI imports edgekit.config only when it runs).
KIND_CHOICES = ["forge", "profile", "cluster", "site", "user-data", "pack", "host", "rollout"]


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--kind", type=click.Choice(KIND_CHOICES), help="What the file holds; detected when omitted."
)
@json_option
def validate(file: Path, kind: str | None, as_json: bool) -> None:
    """Check FILE strictly and report every problem with its path."""
    from edgekit import config

    with user_errors(as_json):
        require_file(file)
        obj: object = config.load(file, config.KINDS[kind] if kind else None)
        kind = kind or next(k for k, cls in config.KINDS.items() if type(obj) is cls)
        if kind == "forge":
            from edgekit.forge import Forge
            from edgekit.model import Forge as ForgeSpec

            assert isinstance(obj, ForgeSpec)
            forge = Forge(obj, base_dir=file.resolve().parent, source=str(file))  # inventory
            forge.check_backends()  # names, options, registry.target: as plan() checks them
    if as_json:
        emit_json({"ok": True, "kind": kind, "file": str(file)})
    else:
        console().print(f"[green]ok[/]: {file} is a valid {kind}", highlight=False)


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

    emit_json(forge_json_schema())


def _print_plan(plan: Any) -> None:
    console().print(plan)
    for note in plan.notes:
        click.echo(f"{click.style('note:', fg='yellow')} {note}", err=True)


def run_forge(
    file: Path,
    *,
    plan_only: bool,
    no_cache: bool,
    output: Path | None,
    as_json: bool,
    kinds: list[str] | None = None,
    scheduler: str | None = None,
) -> None:
    """Shared by ``forge`` and ``build ...``: plan, run with progress bars, summarise."""
    from edgekit.forge import Forge

    with user_errors(as_json), ExitStack() as stack:
        require_file(file)
        pipeline = Forge.load(file, output_dir=output)
        plan = pipeline.plan(kinds)
        if plan_only:
            if as_json:
                emit_json(plan.to_dict())
            else:
                _print_plan(plan)
            return
        executor = None
        if scheduler is not None:
            from edgekit.forge.farm import scheduler_executor

            # A path is a scheduler file (dask scheduler --scheduler-file), else an address.
            as_file = "://" not in scheduler and Path(scheduler).is_file()
            executor = stack.enter_context(
                scheduler_executor(scheduler_file=scheduler)
                if as_file
                else scheduler_executor(scheduler)
            )
        if as_json:
            result = pipeline.run(no_cache=no_cache, kinds=kinds, executor=executor)
        else:
            _print_plan(plan)
            with progress_bars() as progress:
                result = pipeline.run(
                    no_cache=no_cache, progress=progress, kinds=kinds, executor=executor
                )
    out_dir = result.plan.output_dir
    if as_json:
        emit_json(
            {
                "ok": True,
                "output": str(out_dir),
                "manifest": str(result.manifest_path),
                "ran": list(result.ran),
                "cached": list(result.cached),
                "artifacts": [artifact_json(a, out_dir) for a in result.artifacts.values()],
            }
        )
        return
    console().print(artifacts_table(result))


#: A kind with more artifacts than this is one summary row (a fleet has thousands of sites);
#: ``--json`` and ``manifest.json`` keep every artifact.
COLLAPSE_ABOVE = 12


def artifacts_table(result: ForgeResult) -> Table:
    """The artifacts of a run, one row each, or one row per kind for fleet-sized kinds."""
    table = Table(title=f"artifacts (manifest: {result.manifest_path})")
    for col in ("artifact", "size", "digest", "reference"):
        table.add_column(col, overflow="fold")
    by_kind: dict[tuple[str, bool], list[Artifact]] = {}
    for a in result.artifacts.values():
        by_kind.setdefault((a.kind, a.reference is not None), []).append(a)
    for (kind, published), arts in by_kind.items():
        if len(arts) > COLLAPSE_ABOVE:
            what = f"published {kind}" if published else kind
            size = sum(a.size for a in arts)
            table.add_row(f"{what} x{len(arts):,}", f"{size:,}", "", "(see the manifest)")
            continue
        for a in arts:
            table.add_row(a.name, f"{a.size:,}", a.digest[:19], a.reference or "")
    return table


def forge_options(func: F) -> F:
    func = click.argument("file", type=click.Path(dir_okay=False, path_type=Path))(func)
    func = click.option("--plan", "plan_only", is_flag=True, help="Only show what would run.")(func)
    func = click.option(
        "--no-cache", is_flag=True, help="Run every step, even those whose key is unchanged."
    )(func)
    func = click.option(
        "--output",
        "-o",
        type=click.Path(file_okay=False, path_type=Path),
        help="Output directory (default: the forge file's `output`, else ./dist).",
    )(func)
    func = click.option(
        "--scheduler",
        metavar="ADDRESS|FILE",
        help="Run the steps on a Dask cluster: its scheduler's address (tcp://host:8786) "
        "or scheduler file. Needs the 'dask' extra.",
    )(func)
    return json_option(func)


def _forge_command(group: click.Group, name: str, summary: str, kinds: list[str] | None) -> None:
    """Add ``GROUP NAME``: the forge pipeline, limited to steps of ``kinds`` (None: all)."""

    @group.command(name, help=summary)
    @forge_options
    def command(
        file: Path,
        plan_only: bool,
        no_cache: bool,
        output: Path | None,
        scheduler: str | None,
        as_json: bool,
    ) -> None:
        run_forge(
            file,
            plan_only=plan_only,
            no_cache=no_cache,
            output=output,
            as_json=as_json,
            kinds=kinds,
            scheduler=scheduler,
        )


_forge_command(
    cli, "forge", "Run the EdgeForge pipeline of FILE: images, ISOs, site ISOs, publishing.", None
)


@cli.group()
def build() -> None:
    """Run one part of a forge file (and what it depends on), without publishing."""


def _build_command(name: str, kind: str, summary: str) -> None:
    """Add ``edgekit build NAME``: the forge pipeline limited to steps of ``kind``."""
    _forge_command(build, name, summary, [kind])


_build_command(
    "image", "provider-image", "Build the provider images of FILE into OCI layouts (OUTPUT/images)."
)
_build_command(
    "iso", "installer-iso", "Build the installer ISO of FILE and the image it embeds (OUTPUT/iso)."
)
_build_command(
    "site-isos", "site-isos", "Build one small cidata ISO per site of FILE (OUTPUT/sites)."
)
