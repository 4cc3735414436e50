"""``edgekit iso inspect`` and ``edgekit iso boot``: looking inside and booting ISOs (and
``edgekit disk boot``, which boots what an installer wrote)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table

from edgekit.cli._common import cli, console, emit_json, json_option, user_errors

if TYPE_CHECKING:
    from edgekit.vm import VirtualMachine

#: ``iso inspect`` lists this many files; ``--json`` lists them all.
SHOWN_FILES = 50


@cli.group()
def iso() -> None:
    """Look inside ISOs."""


@iso.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--backend", default="pycdlib", show_default=True, help="ISO assembler to use.")
@json_option
def iso_inspect(file: Path, backend: str, as_json: bool) -> None:
    """Show an ISO's label, boot entries, partitions, files and embedded user-data."""
    from edgekit.dist import inspect_iso

    with user_errors(as_json):
        info = inspect_iso(file, backend=backend)
    if as_json:
        emit_json(info.to_dict())
        return
    # Plain lines (click.echo), so that a pipe or grep sees each one whole, never wrapped.
    label = click.style(info.volume_label, fg="cyan")
    click.echo(f"{click.style(str(file), bold=True)}  label {label}")
    if info.boot_entries:
        boot = Table(title="El Torito boot entries")
        for col in ("platform", "image", "emulation", "load size"):
            boot.add_column(col)
        for e in info.boot_entries:
            load = "" if e.load_size is None else str(e.load_size)
            boot.add_row(e.platform, e.image, e.emulation, load)
        console().print(boot)
    else:
        click.echo("not bootable (no El Torito boot catalog)")
    if info.hybrid:
        tables = "; ".join(
            t.replace("CRCs INVALID", click.style("CRCs INVALID", fg="red"))
            for t in info.partition_tables
        )
        click.echo(f"hybrid (boots as a disk too): {tables}")
    else:
        click.echo("not hybrid (boots from optical media only)")
    click.echo(f"{len(info.files)} file(s)")
    for f in info.files[:SHOWN_FILES]:
        click.echo(f"  {f.path}  {'' if f.size is None else f.size}")
    if len(info.files) > SHOWN_FILES:
        click.echo(f"  ... and {len(info.files) - SHOWN_FILES} more (see --json)")
    if info.user_data:
        click.echo(click.style("user-data:", bold=True))
        click.echo(info.user_data)


@iso.command("boot")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--uefi", is_flag=True, help="Boot with UEFI firmware (OVMF) instead of BIOS.")
@click.option("--disk", is_flag=True, help="Boot the image as a disk (USB stick), not a CD.")
@click.option(
    "--site-iso",
    "site_isos",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Attach a site ISO (cidata) as an extra CD; repeatable.",
)
@click.option(
    "--target-disk",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Attach this raw disk image as the install target (created blank if missing).",
)
@click.option(
    "--target-size",
    type=click.IntRange(min=64),
    default=2048,
    show_default=True,
    help="Size in MiB of a --target-disk that does not exist yet.",
)
@click.option("--until", help="Stop once the console shows this text (exit 0).")
@click.option("--timeout", default=600.0, show_default=True, help="Give up after SECONDS.")
def iso_boot(
    file: Path,
    uefi: bool,
    disk: bool,
    site_isos: tuple[Path, ...],
    target_disk: Path | None,
    target_size: int,
    until: str | None,
    timeout: float,
) -> None:
    """Boot FILE in QEMU and stream its serial console until it powers off.

    With --target-disk the installer has a disk to install onto; boot that disk alone
    afterwards with `edgekit disk boot`. The guest reaches this machine's 127.0.0.1 as
    10.0.2.2 (e.g. a local hub).
    """
    from edgekit.vm import VirtualMachine, create_disk

    with user_errors():
        targets = []
        if target_disk is not None:
            if not target_disk.exists():
                create_disk(target_disk, size_mib=target_size)
            targets.append(target_disk)
        vm = VirtualMachine(
            iso=file,
            firmware="uefi" if uefi else "bios",
            media="disk" if disk else "cd",
            cdroms=site_isos,
            disks=targets,
        )
        stream_console(vm, until, timeout)


def stream_console(vm: VirtualMachine, until: str | None, timeout: float) -> None:
    """Start ``vm`` and print its serial console as it grows until it powers off, shows
    ``until`` or runs past ``timeout`` (a :class:`~edgekit.vm.VmError`). The VM API gives
    the text; this only prints it."""
    import time

    from edgekit.vm import VmError

    shown = 0
    deadline = time.monotonic() + timeout
    with vm:
        while True:
            text = vm.text()
            if len(text) > shown:
                click.echo(text[shown:], nl=False)
                shown = len(text)
            if until is not None and until in text:
                return
            if not vm.running:
                click.echo(vm.text()[shown:], nl=False)
                if until is not None:
                    raise VmError(f"the VM powered off without showing {until!r}")
                return
            if time.monotonic() > deadline:
                raise VmError(f"the VM was still running after {timeout:.0f} s")
            time.sleep(0.2)
