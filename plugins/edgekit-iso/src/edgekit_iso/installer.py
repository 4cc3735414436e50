"""The installer payload appended to the image's initrd as a second cpio archive."""

from __future__ import annotations

import gzip
import shlex
import shutil
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import BinaryIO

from edgekit.cpio import CpioEntry, write_newc
from edgekit.errors import BuildError

__all__ = [
    "INSTALLER_HOOK",
    "installer_config",
    "installer_entries",
    "installer_script",
    "write_combined_initrd",
]

#: Where the installer runs from: the sample OS's /init runs every file of boot.d in order.
INSTALLER_HOOK = "etc/edgekit/boot.d/50-edgekit-installer"
INSTALLER_CONFIG = "etc/edgekit/installer.conf"
_CHUNK = 1 << 20


def installer_script() -> str:
    """The installer program (POSIX sh for busybox)."""
    return (resources.files("edgekit_iso") / "data" / "50-edgekit-installer").read_text()


def installer_config(
    *, volume_label: str, image_dir: str = "/edgekit/image", image_ref: str | None = None
) -> str:
    """Shell variables the installer sources: the media label and the embedded image."""
    lines = [
        f"ISO_LABEL={shlex.quote(volume_label)}",
        "SITE_LABEL=cidata",
        f"IMAGE_DIR={shlex.quote(image_dir)}",
        f"IMAGE_REF={shlex.quote(image_ref or '')}",
    ]
    return "\n".join(lines) + "\n"


def installer_entries(config_text: str, extra: Mapping[str, Path] | None = None) -> list[CpioEntry]:
    """Archive members: the installer hook, its config and any extra files (hooks)."""
    entries = [
        CpioEntry.file(INSTALLER_HOOK, installer_script().encode(), mode=0o755),
        CpioEntry.file(INSTALLER_CONFIG, config_text.encode(), mode=0o644),
    ]
    for inner, host in sorted((extra or {}).items()):
        if not host.is_file():
            raise BuildError(f"installer file {host} (for {inner}) does not exist")
        mode = 0o755 if "/boot.d/" in f"/{inner.strip('/')}" else 0o644
        entries.append(CpioEntry.file(inner, host, mode=mode))
    return entries


def write_combined_initrd(
    base_initrd: Path, entries: list[CpioEntry], out: BinaryIO, *, mtime: int
) -> None:
    """Write ``base_initrd`` untouched, pad to 4 bytes, then a gzip'd newc of ``entries``.

    The kernel unpacks concatenated archives in order, so the appended files are added on
    top of the image's own initramfs without rebuilding it.
    """
    with open(base_initrd, "rb") as src:
        shutil.copyfileobj(src, out, _CHUNK)
        size = src.tell()
    out.write(b"\0" * (-size % 4))
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        write_newc(entries, gz, mtime=mtime)  # type: ignore[arg-type]
