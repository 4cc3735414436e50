"""``edgekit demo``: the whole quick start on this machine (formatting over run_demo)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from edgekit.cli._common import (
    artifact_json,
    cli,
    console,
    emit_json,
    json_option,
    progress_bars,
    require_file,
    user_errors,
)
from edgekit.cli.build import artifacts_table


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory (default: the forge file's `output`, else ./dist).",
)
@click.option("--no-boot", is_flag=True, help="Build and serve, but do not boot a host.")
@click.option(
    "--timeout", default=900.0, show_default=True, help="Seconds for the install and the boot."
)
@json_option
def demo(file: Path, output: Path | None, no_boot: bool, timeout: float, as_json: bool) -> None:
    """The whole quick start on this machine: hub, build, install a host, cluster it.

    Starts the embedded hub, creates a registration token, runs the forge pipeline with it,
    then (when QEMU is installed) boots the installer with the first site's ISO and a blank
    disk, which it installs; boots that disk alone, waits for the host to register, puts it
    in a single-node cluster and waits for its agent to take the assignment. Ends with a
    summary of every artifact and the host.
    """
    from edgekit.demo import run_demo

    err = console(stderr=True)

    def say(text: str) -> None:
        if not as_json:
            err.print(text, highlight=False, markup=False)

    with user_errors(as_json):
        require_file(file)
        if as_json:
            result = run_demo(file, output_dir=output, boot=not no_boot, timeout=timeout, say=say)
        else:
            with progress_bars() as progress:
                result = run_demo(
                    file,
                    output_dir=output,
                    boot=not no_boot,
                    timeout=timeout,
                    progress=progress,
                    say=say,
                )
    host = result.host
    host_doc = (
        {"uid": host.uid, "site": host.site, "state": host.state, "address": host.address}
        if host is not None
        else None
    )
    out_dir = result.forge.plan.output_dir
    if as_json:
        emit_json(
            {
                "ok": True,
                "output": str(out_dir),
                "manifest": str(result.forge.manifest_path),
                "artifacts": [artifact_json(a, out_dir) for a in result.forge.artifacts.values()],
                "hub": {"url": result.hub_url, "db": str(result.hub_db)},
                "host": host_doc,
                "cluster": result.cluster,
                "assignment": result.assignment,
                "bootSkipped": result.boot_skipped,
                "disk": str(result.disk) if result.disk else None,
                "installed": result.installed,
            }
        )
        return
    out = console()
    out.print(artifacts_table(result.forge))
    if host_doc is not None:
        hosts_table = Table(title=f"hosts registered with the hub ({result.hub_db})")
        for col in ("uid", "site", "state", "address", "cluster", "agent reports"):
            hosts_table.add_column(col, overflow="fold")
        hosts_table.add_row(
            host_doc["uid"], host_doc["site"] or "", host_doc["state"], host_doc["address"] or "",
            result.cluster or "", result.assignment or "",
        )  # fmt: skip
        out.print(hosts_table)
        if result.installed:
            click.echo(f"{result.installed} ({result.disk})")
    else:
        click.echo(f"no host was booted: {result.boot_skipped}")
