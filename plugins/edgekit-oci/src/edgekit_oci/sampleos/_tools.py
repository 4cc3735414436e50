"""Disk tools the installer needs and busybox lacks, taken from Debian packages.

busybox 1.35 cannot write a GPT (its fdisk only reads one) and its mke2fs makes ext2
without a journal; the install writes a GPT disk with ext4 filesystems, whose journal is
what keeps a slot or the agent's state consistent across a power cut. So the sample OS
carries util-linux's ``sfdisk``, e2fsprogs' ``mke2fs`` and dosfstools' ``mkfs.fat``, with
the shared libraries they link (glibc included), copied from the host's apt sources like
the kernel. About 2.5 MB of files, 1.2 MB once gzipped into the initrd.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Mapping
from pathlib import Path

from edgekit.errors import BuildError

from ._debs import deb_members

__all__ = ["TOOL_BINARIES", "TOOL_PACKAGES", "install_tools"]

#: Path in the tree -> the package that ships it (Debian 12 keeps them under /sbin).
TOOL_BINARIES: Mapping[str, str] = {
    "sbin/sfdisk": "fdisk",
    "sbin/mke2fs": "e2fsprogs",
    "sbin/mkfs.fat": "dosfstools",
}
#: Every package the tools need, binaries first, then their libraries.
TOOL_PACKAGES: tuple[str, ...] = (
    "fdisk",
    "e2fsprogs",
    "dosfstools",
    "libc6",
    "libfdisk1",
    "libsmartcols1",
    "libblkid1",
    "libuuid1",
    "libreadline8",
    "libtinfo6",
    "libext2fs2",
    "libcom-err2",
)
_LIBDIR = "lib/x86_64-linux-gnu"
_LOADER = "lib64/ld-linux-x86-64.so.2"
#: The shared objects to copy (by their soname), found in any of the packages.
_LIBS = (
    "ld-linux-x86-64.so.2",
    "libc.so.6",
    "libfdisk.so.1",
    "libsmartcols.so.1",
    "libblkid.so.1",
    "libuuid.so.1",
    "libreadline.so.8",
    "libtinfo.so.6",
    "libext2fs.so.2",
    "libe2p.so.2",
    "libcom_err.so.2",
)


def install_tools(debs: Mapping[str, Path], root: Path) -> None:
    """Copy the tools and their libraries from ``debs`` (package -> .deb) into ``root``.

    Libraries go to /lib/x86_64-linux-gnu under their sonames (symlinks in the packages are
    resolved), the loader is linked from /lib64; glibc finds the rest in its default path.
    """
    wanted_bins = set(TOOL_BINARIES)
    found: dict[str, bytes] = {}
    links: dict[str, str] = {}
    for package in TOOL_PACKAGES:
        for name, info, fobj in deb_members(debs[package], _is_wanted):
            if name in wanted_bins and fobj is not None:
                found[name] = fobj.read()
            elif posixpath.basename(name) in _LIBS or _is_real_lib(name):
                if info.issym():
                    pointed = posixpath.normpath(
                        posixpath.join(posixpath.dirname(name), info.linkname)
                    )
                    links[posixpath.basename(name)] = posixpath.basename(pointed)
                elif fobj is not None and info.type == tarfile.REGTYPE:
                    found[posixpath.basename(name)] = fobj.read()
    missing = sorted(b for b in wanted_bins if b not in found)
    for lib in _LIBS:
        real = lib
        for _ in range(4):  # soname -> versioned file
            if real in found:
                break
            real = links.get(real, "")
        if real not in found:
            missing.append(lib)
        else:
            found.setdefault(lib, found[real])
    if missing:
        raise BuildError(
            "the sample OS disk tools are incomplete: "
            + ", ".join(missing)
            + f" not found in {', '.join(TOOL_PACKAGES)}; delete the cached .debs to refetch"
        )
    libdir = root / _LIBDIR
    libdir.mkdir(parents=True, exist_ok=True)
    for lib in _LIBS:
        target = libdir / lib
        target.write_bytes(found[lib])
        target.chmod(0o755)
    loader = root / _LOADER
    loader.parent.mkdir(parents=True, exist_ok=True)
    loader.unlink(missing_ok=True)
    loader.symlink_to(f"/{_LIBDIR}/ld-linux-x86-64.so.2")
    for name in sorted(wanted_bins):
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()  # a busybox applet of the same name gives way
        target.write_bytes(found[name])
        target.chmod(0o755)
    fat = root / "sbin" / "mkfs.vfat"
    if fat.is_symlink() or fat.exists():
        fat.unlink()
    fat.symlink_to("mkfs.fat")
    ext4 = root / "sbin" / "mkfs.ext4"
    if ext4.is_symlink() or ext4.exists():
        ext4.unlink()
    ext4.symlink_to("mke2fs")


def _is_real_lib(name: str) -> bool:
    base = posixpath.basename(name)
    return any(base.startswith(lib + ".") for lib in _LIBS) and "/x86_64-linux-gnu/" in name


def _is_wanted(name: str) -> bool:
    if name in TOOL_BINARIES:
        return True
    base = posixpath.basename(name)
    return base in _LIBS or _is_real_lib(name)
