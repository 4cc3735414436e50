"""Bootloader files: ISOLINUX for BIOS, a GRUB EFI binary in a FAT image for UEFI."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from edgekit.errors import BuildError

from .spec import BootloaderPaths, EfiImageOptions

__all__ = [
    "GRUB_MODULES",
    "SYSLINUX_MODULES",
    "build_efi_image",
    "build_grub_efi",
    "isolinux_files",
    "require_tool",
    "run_tool",
]

#: ISOLINUX modules the menu needs (``menu.c32`` and the libraries it links).
SYSLINUX_MODULES = ("ldlinux.c32", "menu.c32", "libutil.c32", "libcom32.c32")
#: GRUB modules built into BOOTX64.EFI (grub-mkimage adds their dependencies).
GRUB_MODULES = (
    "part_gpt",
    "part_msdos",
    "iso9660",
    "fat",
    "search",
    "search_label",
    "normal",
    "configfile",
    "linux",
    "echo",
    "all_video",
    "serial",
    "terminal",
    "gzio",
    "test",
    "sleep",
    "ls",
    "cat",
    "reboot",
    "halt",
)

_TOOL_PACKAGES = {
    "grub-mkimage": "grub-common",
    "mkfs.vfat": "dosfstools",
    "mmd": "mtools",
    "mcopy": "mtools",
    "xorriso": "xorriso",
}


def require_tool(name: str) -> str:
    """The path of a host tool, or a BuildError naming the Debian package to install."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        package = _TOOL_PACKAGES.get(name, name)
        raise BuildError(f"{name} not found; install the Debian package {package}")
    return found


def isolinux_files(paths: BootloaderPaths) -> dict[str, Path]:
    """ISOLINUX's files by name (``isolinux.bin``, ``ldlinux.c32``, ...), all checked to exist."""
    wanted: dict[str, tuple[Path, str]] = {
        "isolinux.bin": (paths.isolinux_bin, "isolinux"),
        **{m: (paths.syslinux_modules / m, "syslinux-common") for m in SYSLINUX_MODULES},
    }
    missing = [f"{p} (Debian package {pkg})" for p, pkg in wanted.values() if not p.is_file()]
    if missing:
        raise BuildError("BIOS bootloader files missing: " + ", ".join(missing))
    return {name: path for name, (path, _) in wanted.items()}


def early_grub_config(volume_label: str) -> str:
    """The config built into BOOTX64.EFI: find the ISO by label, then load its grub.cfg."""
    return (
        f"search --no-floppy --set=root --label {volume_label}\n"
        "set prefix=($root)/boot/grub\n"
        "configfile $prefix/grub.cfg\n"
    )


def build_grub_efi(
    paths: BootloaderPaths,
    volume_label: str,
    dest: Path,
    *,
    modules: Sequence[str] = GRUB_MODULES,
    early: str | None = None,
) -> Path:
    """Build ``BOOTX64.EFI`` with grub-mkimage and an embedded early config.

    By default the early config finds the ISO by ``volume_label``; the installed disk
    passes its own (``early``) and the modules it needs on top (ext2, loadenv).
    """
    moddir = paths.grub_efi_modules
    if not (moddir / "kernel.img").is_file() or not (moddir / "moddep.lst").is_file():
        raise BuildError(
            f"GRUB EFI modules not found in {moddir}; install the Debian package grub-efi-amd64-bin"
        )
    early_cfg = dest.with_name(dest.name + ".early.cfg")
    early_cfg.write_text(early if early is not None else early_grub_config(volume_label))
    _run(
        [
            require_tool("grub-mkimage"),
            "-O",
            "x86_64-efi",
            "-d",
            str(moddir),
            "-o",
            str(dest),
            "-c",
            str(early_cfg),
            "-p",
            "/boot/grub",
            *modules,
        ],
        "grub-mkimage",
    )
    early_cfg.unlink()
    return dest


def build_efi_image(
    options: EfiImageOptions,
    paths: BootloaderPaths,
    volume_label: str,
    workdir: Path,
    *,
    epoch: int,
) -> Path:
    """A FAT image with ``EFI/BOOT/BOOTX64.EFI`` (and extra files); byte-reproducible."""
    if options.grub_efi is not None:
        if not options.grub_efi.is_file():
            raise BuildError(f"the GRUB EFI binary {options.grub_efi} does not exist")
        bootx64 = options.grub_efi
    else:
        bootx64 = build_grub_efi(paths, volume_label, workdir / "BOOTX64.EFI")
    files: dict[str, Path] = {"EFI/BOOT/BOOTX64.EFI": bootx64}
    for inner, host in sorted(options.extra_files.items()):
        if not host.is_file():
            raise BuildError(f"EFI image file {host} (for {inner}) does not exist")
        files[inner.strip("/")] = host
    payload = sum(p.stat().st_size for p in files.values())
    if options.size_mib is not None:
        size_kib = options.size_mib * 1024
        if payload + 512 * 1024 > size_kib * 1024:
            raise BuildError(
                f"the EFI image ({options.size_mib} MiB) is too small for its "
                f"{payload} bytes of files"
            )
    else:
        # Files plus FAT overhead and slack, rounded up to whole MiB.
        size_kib = max(2048, -(-(payload + payload // 8 + 1024 * 1024) // (1 << 20)) * 1024)
    image = workdir / "efi.img"
    image.unlink(missing_ok=True)
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "MTOOLS_SKIP_CHECK": "1"}
    # --invariant and a fixed volume id remove mkfs.vfat's random and time-based fields;
    # mtools honours SOURCE_DATE_EPOCH, and -m keeps the (fixed) source mtimes.
    _run(
        [
            require_tool("mkfs.vfat"),
            "-C",
            "--invariant",
            "-i",
            "45444745",
            "-n",
            "EFI",
            str(image),
            str(size_kib),
        ],
        "mkfs.vfat",
        env,
    )
    staged = workdir / "efi-files"
    staged.mkdir(exist_ok=True)
    dirs = sorted({str(Path(p).parent) for p in files} - {"."}, key=lambda d: d.count("/"))
    all_dirs: list[str] = []
    for d in dirs:
        parts = d.split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub not in all_dirs:
                all_dirs.append(sub)
    if all_dirs:
        _run([require_tool("mmd"), "-i", str(image), *(f"::{d}" for d in all_dirs)], "mmd", env)
    for n, (inner, host) in enumerate(sorted(files.items())):
        copy = staged / f"{n}"
        shutil.copyfile(host, copy)
        os.utime(copy, (epoch, epoch))
        _run([require_tool("mcopy"), "-m", "-i", str(image), str(copy), f"::{inner}"], "mcopy", env)
    shutil.rmtree(staged)
    return image


def run_tool(argv: Sequence[str], what: str, env: Mapping[str, str] | None = None) -> None:
    """Run a build tool; a failure is a BuildError with its stderr's tail."""
    _run(argv, what, env)


def _run(argv: Sequence[str], what: str, env: Mapping[str, str] | None = None) -> None:
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, env=dict(env) if env else None, check=False
    )
    if proc.returncode != 0:
        raise BuildError(f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
