"""What the installer writes to a disk, prepared on the build host and carried on the ISO.

The installed disk (docs/installer-iso.md, "The installed disk") boots with GRUB on BIOS
and UEFI. The device has no GRUB tools, so everything GRUB needs is made here:

- ``boot.img`` (the MBR code, 440 bytes) patched to load ``core.img`` from LBA 2048, the
  first sector of the BIOS boot partition, and ``core.img`` patched to load the rest of
  itself from LBA 2049 on; the installer copies both with ``dd``. This is what
  ``grub-bios-setup`` would patch, for the one fixed partition offset the installer uses.
- ``BOOTX64.EFI`` for the ESP (``COS_GRUB``), copied to the removable-media path
  ``EFI/BOOT/BOOTX64.EFI`` so no NVRAM entry is needed.
- ``grub.cfg`` and a default ``grubenv``, both on ``COS_GRUB`` (FAT, which GRUB can write
  its environment block to, for the boot counting of a later upgrade).
- The slot payload besides the image's own kernel and initrd: ``edgekit.cpio.gz`` (the
  image's layers after its base, the persistence hook, the installer payload where the
  image lacks it; see slotpayload.py) and ``image.json``.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from edgekit.errors import BuildError

from .bootfiles import GRUB_MODULES, build_grub_efi, require_tool, run_tool
from .slotpayload import build_slot_overlay
from .spec import BootloaderPaths, BootMenu

__all__ = [
    "BIOS_CORE_LBA",
    "DISK_DIR",
    "PERSIST_HOOK",
    "SLOT_DIR",
    "build_bios_images",
    "disk_grub_cfg",
    "grubenv_block",
    "image_description",
    "stage_disk_files",
]

#: On the ISO: the boot loader files for the disk, and the slot payload.
DISK_DIR = "/edgekit/disk"
SLOT_DIR = "/edgekit/slot"
#: The BIOS boot partition starts here (1 MiB); core.img is written at its first sector.
BIOS_CORE_LBA = 2048
#: The installed system's early hook: mounts the persistent partitions.
PERSIST_HOOK = "etc/edgekit/boot.d/10-edgekit-persistent"
#: GRUB modules the installed disk needs on top of the ISO's (ext4 slots, the env block).
DISK_MODULES = ("ext2", "loadenv", "part_gpt", "fat", "search_fs_uuid")
_BIOS_MODULES = ("biosdisk",)
#: Offsets patched by grub-bios-setup (grub's boot.S and diskboot.S).
_KERNEL_SECTOR = 0x5C
_DRIVE_CHECK = 0x66
_BLOCKLIST_START = 0x200 - 12
#: The ESP's label: GRUB finds its config by it; Kairos' name for the EFI partition.
GRUB_LABEL = "COS_GRUB"
STATE_LABEL = "COS_STATE"


def _early_config() -> str:
    return (
        f"search --no-floppy --set=root --label {GRUB_LABEL}\n"
        "set prefix=($root)/grub\n"
        "configfile $prefix/grub.cfg\n"
    )


def build_bios_images(paths: BootloaderPaths, work: Path) -> tuple[Path, Path]:
    """(boot.img, core.img) for a GPT disk whose BIOS boot partition starts at LBA 2048."""
    moddir = paths.grub_pc_modules
    for name in ("boot.img", "kernel.img", "moddep.lst", "diskboot.img"):
        if not (moddir / name).is_file():
            raise BuildError(
                f"GRUB BIOS modules not found in {moddir} ({name}); install the Debian "
                "package grub-pc-bin"
            )
    early = work / "disk-early.cfg"
    early.write_text(_early_config())
    core = work / "core.img"
    run_tool(
        [
            require_tool("grub-mkimage"),
            "-O",
            "i386-pc",
            "-d",
            str(moddir),
            "-o",
            str(core),
            "-c",
            str(early),
            "-p",
            "/grub",
            *_BIOS_MODULES,
            *_modules(),
        ],
        "grub-mkimage",
    )
    data = bytearray(core.read_bytes())
    sectors = -(-len(data) // 512)
    if sectors > 2048:
        raise BuildError(f"core.img is {len(data)} bytes, more than the 1 MiB BIOS boot partition")
    start, length, segment = struct.unpack_from("<QHH", data, _BLOCKLIST_START)
    if length != sectors - 1 or segment != 0x820:
        raise BuildError(
            f"unexpected core.img block list (start {start}, {length} sectors, segment "
            f"{segment:#x}); this GRUB version is not supported"
        )
    struct.pack_into("<Q", data, _BLOCKLIST_START, BIOS_CORE_LBA + 1)
    core.write_bytes(bytes(data))
    boot = bytearray((moddir / "boot.img").read_bytes())
    if len(boot) != 512 or boot[510:512] != b"\x55\xaa":
        raise BuildError(f"{moddir / 'boot.img'} is not a 512-byte boot sector")
    struct.pack_into("<Q", boot, _KERNEL_SECTOR, BIOS_CORE_LBA)
    # A hard disk: never trust a floppy drive number from the BIOS (grub-bios-setup's nops).
    boot[_DRIVE_CHECK : _DRIVE_CHECK + 2] = b"\x90\x90"
    boot_img = work / "boot.img"
    boot_img.write_bytes(bytes(boot[:440]))  # the rest of the MBR is the partition table
    return boot_img, core


def _modules() -> list[str]:
    return sorted({*GRUB_MODULES, *DISK_MODULES} - {"iso9660"})


def disk_grub_cfg(menu: BootMenu) -> str:
    """The installed disk's grub.cfg: the slot comes from grubenv (see docs)."""
    serial = menu.serial
    unit = serial.removeprefix("ttyS").split(",")[0] or "0"
    speed = serial.split(",")[1] if "," in serial else "115200"
    return f"""\
# edgekit installed disk. Do not edit: the slot to boot comes from grubenv beside this
# file (docs/installer-iso.md, "Boot selection"). Variables:
#   edgekit_active   slot booted by default (A or B)
#   edgekit_passive  the other slot (empty until the first upgrade)
#   edgekit_try      a slot to boot tentatively (set by an upgrade), edgekit_tries left
#   extra_cmdline    kernel arguments from install.grub_options.extra_cmdline
# panic=5: a slot whose kernel panics reboots (and uses up a try) instead of hanging.
serial --unit={unit} --speed={speed}
terminal_input console serial
terminal_output console serial
set timeout=1
set edgekit_console="console=tty0 console={serial} panic=5"
set edgekit_active=A
set edgekit_passive=
set edgekit_try=
set edgekit_tries=
set extra_cmdline=
if [ -s $prefix/grubenv ]; then
  load_env -f $prefix/grubenv
fi
set edgekit_boot=$edgekit_active
set edgekit_mark=
if [ -n "$edgekit_try" ]; then
  # A tentative slot: boot it while tries are left, counting down in grubenv; once they
  # are used up, forget it and boot the active slot again (the fallback).
  if [ "$edgekit_tries" = 3 ]; then set edgekit_tries=2; set edgekit_boot=$edgekit_try
  elif [ "$edgekit_tries" = 2 ]; then set edgekit_tries=1; set edgekit_boot=$edgekit_try
  elif [ "$edgekit_tries" = 1 ]; then set edgekit_tries=0; set edgekit_boot=$edgekit_try
  else set edgekit_mark="edgekit.fallback=$edgekit_try"; set edgekit_try=; set edgekit_tries=
  fi
  save_env -f $prefix/grubenv edgekit_try edgekit_tries
fi
search --no-floppy --set=state --label {STATE_LABEL}
set default=slot
menuentry "edgekit (slot $edgekit_boot)" --id slot {{
  set dir=($state)/slots/$edgekit_boot
  linux $dir/vmlinuz $edgekit_console edgekit.slot=$edgekit_boot $edgekit_mark $extra_cmdline
  initrd $dir/initrd $dir/edgekit.cpio.gz
}}
if [ -n "$edgekit_passive" ]; then
  menuentry "edgekit (previous slot $edgekit_passive)" --id previous {{
    set dir=($state)/slots/$edgekit_passive
    linux $dir/vmlinuz $edgekit_console edgekit.slot=$edgekit_passive $extra_cmdline
    initrd $dir/initrd $dir/edgekit.cpio.gz
  }}
fi
"""


def grubenv_block(values: Mapping[str, str]) -> bytes:
    """A GRUB environment block (1024 bytes, ``#``-padded), as grub-editenv writes it."""
    text = "# GRUB Environment Block\n" + "".join(f"{k}={v}\n" for k, v in values.items())
    raw = text.encode()
    if len(raw) > 1024:
        raise BuildError("the GRUB environment is over 1024 bytes")
    return raw + b"#" * (1024 - len(raw))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fp:
        while block := fp.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _file_entry(name: str, path: Path) -> dict[str, object]:
    return {"path": name, "sha256": _sha256_file(path), "size": path.stat().st_size}


def image_description(
    *,
    layout: Path | None,
    image_ref: str | None,
    kernel: Path,
    initrd: Path,
    overlay: Path | None = None,
) -> dict[str, object]:
    """What ``image.json`` in a slot says about the image (docs: "What a slot holds").

    With ``overlay`` (the slot's edgekit.cpio.gz) its entry has sha256 and size too, as the
    image.json a repave writes.
    """
    digest = tag = version = None
    if layout is not None:
        try:
            index = json.loads((layout / "index.json").read_text())
            manifest = index["manifests"][0]
            digest = str(manifest["digest"])
            tag = manifest.get("annotations", {}).get("org.opencontainers.image.ref.name")
            algo, _, hexd = digest.partition(":")
            body = json.loads((layout / "blobs" / algo / hexd).read_text())
            config = body.get("config", {}).get("digest", "")
            calgo, _, chex = str(config).partition(":")
            if chex:
                labels = json.loads((layout / "blobs" / calgo / chex).read_text())
                labels = (labels.get("config") or {}).get("Labels") or {}
                version = labels.get("org.opencontainers.image.version")
        except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
            pass  # a layout without these fields still installs; the fields stay null
    return {
        "format": "edgekit-slot/v1",
        "ref": image_ref,
        "digest": digest,
        "tag": tag,
        "version": version or tag,
        "kernel": _file_entry("vmlinuz", kernel),
        "initrd": _file_entry("initrd", initrd),
        "overlay": (
            _file_entry("edgekit.cpio.gz", overlay)
            if overlay is not None
            else {"path": "edgekit.cpio.gz"}
        ),
    }


def persist_hook() -> bytes:
    return (resources.files("edgekit_iso") / "data" / "10-edgekit-persistent").read_bytes()


def stage_disk_files(
    *,
    paths: BootloaderPaths,
    menu: BootMenu,
    payload_files: Mapping[str, Path],
    layout: Path | None,
    image_ref: str | None,
    kernel: Path,
    initrd: Path,
    work: Path,
    epoch: int,
) -> dict[str, Path]:
    """Write the disk files into ``work``; return ISO path -> host file."""
    disk = work / "disk"
    disk.mkdir()
    boot_img, core_img = build_bios_images(paths, disk)
    efi = build_grub_efi(
        paths, GRUB_LABEL, disk / "BOOTX64.EFI", modules=_modules(), early=_early_config()
    )
    (disk / "grub.cfg").write_text(disk_grub_cfg(menu))
    (disk / "grubenv").write_bytes(grubenv_block({"edgekit_active": "A"}))
    slot = work / "slot"
    slot.mkdir()
    # What a repave of this image would stage (slotpayload.py), plus the payload's files
    # where the image has none.
    overlay = build_slot_overlay(
        layout=layout,
        persist_hook=(PERSIST_HOOK, persist_hook()),
        payload_files=payload_files,
        dest=slot / "edgekit.cpio.gz",
        work=work,
        epoch=epoch,
    )
    info = image_description(
        layout=layout, image_ref=image_ref, kernel=kernel, initrd=initrd, overlay=overlay
    )
    (slot / "image.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return {
        f"{DISK_DIR}/boot.img": boot_img,
        f"{DISK_DIR}/core.img": core_img,
        f"{DISK_DIR}/BOOTX64.EFI": efi,
        f"{DISK_DIR}/grub.cfg": disk / "grub.cfg",
        f"{DISK_DIR}/grubenv": disk / "grubenv",
        f"{SLOT_DIR}/initrd": initrd,
        f"{SLOT_DIR}/edgekit.cpio.gz": slot / "edgekit.cpio.gz",
        f"{SLOT_DIR}/image.json": slot / "image.json",
    }
