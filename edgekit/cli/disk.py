"""``edgekit disk boot``: boot an installed disk image alone, as the machine would after
the installer powered off (no ISO attached)."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.cli._common import cli, user_errors
from edgekit.cli.iso import stream_console


@cli.group()
def disk() -> None:
    """Boot installed disk images."""


@disk.command("boot")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--uefi", is_flag=True, help="Boot with UEFI firmware (OVMF) instead of BIOS.")
@click.option(
    "--site-iso",
    "site_isos",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Attach a site ISO (cidata) as an extra CD; repeatable.",
)
@click.option("--uuid", help="The machine's SMBIOS UUID (the agent's host uid comes from it).")
@click.option("--until", help="Stop once the console shows this text (exit 0).")
@click.option("--timeout", default=600.0, show_default=True, help="Give up after SECONDS.")
def disk_boot(
    file: Path,
    uefi: bool,
    site_isos: tuple[Path, ...],
    uuid: str | None,
    until: str | None,
    timeout: float,
) -> None:
    """Boot the raw disk image FILE (written in place) and stream its serial console.

    FILE is what `edgekit iso boot --target-disk FILE` installed onto. The guest reaches
    this machine's 127.0.0.1 as 10.0.2.2.
    """
    from edgekit.vm import VirtualMachine

    with user_errors():
        vm = VirtualMachine(
            disk=file, firmware="uefi" if uefi else "bios", cdroms=site_isos, uuid=uuid
        )
        stream_console(vm, until, timeout)
