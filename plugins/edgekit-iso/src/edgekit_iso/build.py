"""Build a hybrid BIOS/UEFI installer ISO with pycdlib or xorriso."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time as _time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any, Literal

import pycdlib
import pycdlib.pycdlibexception

from edgekit.errors import BuildError

from .bootfiles import build_efi_image, isolinux_files, require_tool
from .diskboot import stage_disk_files
from .gpt import repair_isohybrid_gpt
from .installer import installer_config, installer_entries, write_combined_initrd
from .spec import BootMenu, InstallerIsoSpec, IsoResult

__all__ = [
    "EFI_ELTORITO_LIMIT",
    "Backend",
    "Progress",
    "build_installer_iso",
    "grub_cfg",
    "isolinux_cfg",
]

Backend = Literal["pycdlib", "xorriso"]
#: Called with (bytes written, total bytes).
Progress = Callable[[int, int], None]

#: El Torito counts boot image sectors (512 bytes) in 16 bits.
EFI_ELTORITO_LIMIT = 0xFFFF * 512
_BLOCK = 1 << 20
IMAGE_DIR = "/edgekit/image"
CONTENT_DIR = "/opt/spectrocloud/content"
_KERNEL = "/boot/vmlinuz"
_INITRD = "/boot/initrd"
_EFI_IMG = "/boot/efi.img"


# --------------------------------------------------------------------------- boot menus


def _entries(menu: BootMenu) -> list[tuple[str, str, str]]:
    """(id, title, kernel arguments) for the three menu entries."""
    serial = f"console={menu.serial}"
    extra = f" {menu.extra_cmdline}" if menu.extra_cmdline else ""
    # The last console= owns /dev/console: the automatic entry prints to the screen and
    # the serial line, with the serial line getting the installer's output.
    return [
        ("auto", "Install edgekit (automatic)", f"console=tty0 {serial} edgekit.mode=auto{extra}"),
        ("manual", "Install edgekit (manual)", f"{serial} console=tty0 edgekit.mode=manual{extra}"),
        ("serial", "Install edgekit (serial console)", f"{serial} edgekit.mode=auto{extra}"),
    ]


def _serial_unit_speed(serial: str) -> tuple[int, int]:
    match = re.fullmatch(r"ttyS(\d+)(?:,(\d+))?.*", serial)
    if not match:
        return 0, 115200
    return int(match.group(1)), int(match.group(2) or 115200)


def isolinux_cfg(menu: BootMenu) -> str:
    """ISOLINUX configuration: a menu on screen and serial, automatic install by default."""
    unit, speed = _serial_unit_speed(menu.serial)
    # TIMEOUT 0 would wait forever in syslinux; 1 (a tenth of a second) boots at once.
    timeout = max(1, menu.timeout_s * 10)
    lines = [
        f"SERIAL {unit} {speed}",
        "UI menu.c32",
        "PROMPT 0",
        f"TIMEOUT {timeout}",
        "MENU TITLE edgekit installer",
        f"DEFAULT {menu.default}",
        "",
    ]
    for ident, title, args in _entries(menu):
        lines += [
            f"LABEL {ident}",
            f"  MENU LABEL {title}",
            f"  LINUX {_KERNEL}",
            f"  INITRD {_INITRD}",
            f"  APPEND {args}",
            "",
        ]
    return "\n".join(lines)


def grub_cfg(menu: BootMenu) -> str:
    """GRUB configuration with the same entries as ISOLINUX's."""
    unit, speed = _serial_unit_speed(menu.serial)
    lines = [
        f"serial --unit={unit} --speed={speed}",
        "terminal_input console serial",
        "terminal_output console serial",
        f"set timeout={menu.timeout_s}",
        f"set default={menu.default}",
        "",
    ]
    for ident, title, args in _entries(menu):
        lines += [
            f'menuentry "{title}" --id {ident} {{',
            f"  linux {_KERNEL} {args}",
            f"  initrd {_INITRD}",
            "}",
            "",
        ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the tree


def _iso_path(path: str) -> str:
    path = "/" + path.strip("/")
    if path == "/" or any(p in ("", ".", "..") for p in path.split("/")[1:]):
        raise BuildError(f"ISO path {path!r} is empty or leaves the ISO root")
    return path


def _walk(iso_dir: str, host_dir: Path, files: dict[str, Path], dirs: set[str]) -> None:
    """Add ``host_dir``'s contents under ``iso_dir`` (sorted, symlinks to files followed)."""
    dirs.add(iso_dir)
    for child in sorted(host_dir.iterdir(), key=lambda p: p.name):
        target = f"{iso_dir}/{child.name}"
        if child.is_dir():
            _walk(target, child, files, dirs)
        elif child.is_file():
            if target in files:
                raise BuildError(f"two inputs claim the ISO path {target}")
            files[target] = child
        else:
            raise BuildError(f"{child} is neither a file nor a directory")


def _add(iso_path: str, host: Path, files: dict[str, Path], dirs: set[str]) -> None:
    iso_path = _iso_path(iso_path)
    if host.is_dir():
        _walk(iso_path, host, files, dirs)
    elif host.is_file():
        if iso_path in files:
            raise BuildError(f"two inputs claim the ISO path {iso_path}")
        files[iso_path] = host
    else:
        raise BuildError(f"input {host} (for {iso_path}) does not exist")


def _all_dirs(files: Mapping[str, Path], dirs: set[str]) -> list[str]:
    out = set(dirs)
    for path in files:
        parent = PurePosixPath(path).parent
        while str(parent) != "/":
            out.add(str(parent))
            parent = parent.parent
    return sorted(out, key=lambda d: (d.count("/"), d))


def _image_ref_from_layout(layout: Path) -> str | None:
    try:
        index = json.loads((layout / "index.json").read_text())
    except (OSError, ValueError) as exc:
        raise BuildError(f"{layout} is not an OCI image layout: {exc}") from None
    for manifest in index.get("manifests", []):
        ref = manifest.get("annotations", {}).get("org.opencontainers.image.ref.name")
        if ref:
            return str(ref)
    return None


def _epoch(spec: InstallerIsoSpec) -> int:
    if spec.source_date_epoch is not None:
        return spec.source_date_epoch
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    try:
        return int(raw) if raw else 0
    except ValueError:
        raise BuildError(f"SOURCE_DATE_EPOCH must be an integer, not {raw!r}") from None


def _stage(
    spec: InstallerIsoSpec, work: Path, epoch: int
) -> tuple[dict[str, Path], list[str], Path, dict[str, Path]]:
    """Write generated files to ``work``; return (files, dirs, efi image, isolinux files)."""
    spec.check_label()
    boot_inputs = (("kernel", spec.kernel), ("initrd", spec.initrd))
    missing = [f"{what} {path}" for what, path in boot_inputs if not path.is_file()]
    if missing:
        raise BuildError("missing boot inputs: " + ", ".join(missing))
    bios = isolinux_files(spec.bootloaders)
    if spec.oci_layout_dir is not None and not (spec.oci_layout_dir / "oci-layout").is_file():
        raise BuildError(f"{spec.oci_layout_dir} is not an OCI image layout (no oci-layout file)")
    for bundle in spec.content_bundles:
        if not bundle.is_file():
            raise BuildError(f"content bundle {bundle} does not exist")

    image_ref = spec.image_ref
    if image_ref is None and spec.oci_layout_dir is not None:
        image_ref = _image_ref_from_layout(spec.oci_layout_dir)
    entries = installer_entries(
        installer_config(volume_label=spec.volume_label, image_dir=IMAGE_DIR, image_ref=image_ref),
        spec.installer_files,
    )
    initrd = work / "initrd"
    with open(initrd, "wb") as out:
        write_combined_initrd(spec.initrd, entries, out, mtime=epoch)
    efi_img = build_efi_image(spec.efi, spec.bootloaders, spec.volume_label, work, epoch=epoch)

    generated = {
        "isolinux.cfg": isolinux_cfg(spec.boot_menu),
        "grub.cfg": grub_cfg(spec.boot_menu),
        "config.yaml": spec.user_data_text,
    }
    for name, text in generated.items():
        (work / name).write_text(text, encoding="utf-8")

    files: dict[str, Path] = {}
    dirs: set[str] = set()
    _add(_KERNEL, spec.kernel, files, dirs)
    _add(_INITRD, initrd, files, dirs)
    for name, host in bios.items():
        _add(f"/isolinux/{name}", host, files, dirs)
    _add("/isolinux/isolinux.cfg", work / "isolinux.cfg", files, dirs)
    _add("/boot/grub/grub.cfg", work / "grub.cfg", files, dirs)
    _add("/config.yaml", work / "config.yaml", files, dirs)
    if spec.oci_layout_dir is not None:
        _add(IMAGE_DIR, spec.oci_layout_dir, files, dirs)
    for bundle in sorted(spec.content_bundles):
        _add(f"{CONTENT_DIR}/{bundle.name}", bundle, files, dirs)
    # What the installer writes to the disk: GRUB for BIOS and UEFI, and the slot payload
    # (the image's own initrd, the device-side hooks, image.json); see diskboot.py.
    disk_files = stage_disk_files(
        paths=spec.bootloaders,
        menu=spec.boot_menu,
        payload_files=spec.installer_files,
        layout=spec.oci_layout_dir,
        image_ref=image_ref,
        kernel=spec.kernel,
        initrd=spec.initrd,
        work=work,
        epoch=epoch,
    )
    for iso_path, host in disk_files.items():
        _add(iso_path, host, files, dirs)
    for iso_path, host in sorted(spec.files.items()):
        _add(iso_path, host, files, dirs)
    for generated_file in work.rglob("*"):
        # Generated files carry the build date, like everything else in the ISO.
        os.utime(generated_file, (epoch, epoch))
    return dict(sorted(files.items())), _all_dirs(files, dirs), efi_img, bios


# --------------------------------------------------------------------------- pycdlib


class _FixedClock:
    """Stands in for the ``time`` module inside pycdlib so every date is ``epoch`` in UTC."""

    def __init__(self, epoch: int) -> None:
        self._epoch = float(epoch)

    def time(self) -> float:
        return self._epoch

    def localtime(self, secs: float | None = None) -> _time.struct_time:
        return _time.gmtime(self._epoch if secs is None else secs)

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


class _FixedUuid:
    """Stands in for ``uuid`` inside pycdlib's isohybrid: GPT GUIDs derived from a seed."""

    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._count = 0

    def uuid4(self) -> uuid.UUID:
        self._count += 1
        digest = hashlib.sha256(self._seed + struct.pack("<I", self._count)).digest()
        return uuid.UUID(bytes=digest[:16], version=4)

    def __getattr__(self, name: str) -> Any:
        return getattr(uuid, name)


@contextlib.contextmanager
def _reproducible_pycdlib(epoch: int, seed: bytes) -> Iterator[None]:
    import pycdlib.dates
    import pycdlib.headervd
    import pycdlib.isohybrid
    import pycdlib.pycdlib

    patches: list[tuple[ModuleType, str, object]] = [
        (pycdlib.pycdlib, "time", _FixedClock(epoch)),
        (pycdlib.headervd, "time", _FixedClock(epoch)),
        (pycdlib.dates, "time", _FixedClock(epoch)),
        (pycdlib.isohybrid, "uuid", _FixedUuid(seed)),
    ]
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in patches]
    try:
        for mod, name, value in patches:
            setattr(mod, name, value)
        yield
    finally:
        for mod, name, value in saved:
            setattr(mod, name, value)


_D_CHARS = re.compile(r"[^A-Z0-9_]")


class _Namer:
    """Maps Rock Ridge paths to unique ISO 9660 level 3 names (upper case, 30 characters)."""

    def __init__(self) -> None:
        self._map: dict[str, str] = {"/": "/"}
        self._used: dict[str, set[str]] = {}

    def __call__(self, rr_path: str, is_dir: bool) -> str:
        if rr_path in self._map:
            return self._map[rr_path]
        parent, _, name = rr_path.rpartition("/")
        parent = parent or "/"
        iso_parent = self._map[parent]
        used = self._used.setdefault(iso_parent, set())
        if is_dir:
            stem, ext, limit = name, "", 31
        else:
            stem, dot, ext = name.rpartition(".")
            if not dot:
                stem, ext = name, ""
            ext = _D_CHARS.sub("_", ext.upper())[:8]
            limit = 30 - len(ext) - 1
        stem = _D_CHARS.sub("_", stem.upper()) or "_"
        base = stem[:limit]
        candidate, n = base, 0
        while _join(candidate, ext) in used:
            n += 1
            suffix = f"_{n}"
            candidate = base[: limit - len(suffix)] + suffix
        iso_name = _join(candidate, ext)
        used.add(iso_name)
        full = ("" if iso_parent == "/" else iso_parent) + "/" + iso_name
        self._map[rr_path] = full
        return full


def _join(stem: str, ext: str) -> str:
    return f"{stem}.{ext}" if ext else stem


def _write_pycdlib(
    spec: InstallerIsoSpec,
    files: Mapping[str, Path],
    dirs: list[str],
    efi_img: Path,
    out: Path,
    epoch: int,
    progress: Progress | None,
) -> None:
    if efi_img.stat().st_size > EFI_ELTORITO_LIMIT:
        raise BuildError(
            f"the EFI image is {efi_img.stat().st_size} bytes, over El Torito's "
            f"{EFI_ELTORITO_LIMIT}-byte limit for the pycdlib backend; use "
            "backend='xorriso', which appends it as a GPT partition"
        )
    all_files = {**files, _EFI_IMG: efi_img}
    seed = spec.volume_label.encode() + struct.pack("<q", epoch)
    namer = _Namer()
    with _reproducible_pycdlib(epoch, seed):
        iso = pycdlib.PyCdlib()
        iso.new(
            interchange_level=3,
            vol_ident=spec.volume_label,
            sys_ident="LINUX",
            app_ident_str="EDGEKIT",
            rock_ridge="1.09",
        )
        for d in dirs:
            iso.add_directory(namer(d, True), rr_name=PurePosixPath(d).name)
        for path in sorted(all_files):
            iso.add_file(
                str(all_files[path]), namer(path, False) + ";1", rr_name=PurePosixPath(path).name
            )
        iso.add_eltorito(
            namer("/isolinux/isolinux.bin", False) + ";1",
            bootcatfile=namer("/isolinux/boot.cat", False) + ";1",
            rr_bootcatname="boot.cat",
            boot_load_size=4,
            boot_info_table=True,
        )
        iso.add_eltorito(namer(_EFI_IMG, False) + ";1", efi=True)
        iso.add_isohybrid(
            efi=True, mbr_id=int.from_bytes(hashlib.sha256(seed).digest()[:4], "little")
        )

        def report(done: int, total: int, _opaque: object) -> None:
            if progress is not None:
                progress(done, total)

        try:
            iso.write(str(out), blocksize=_BLOCK, progress_cb=report)
        except struct.error as exc:
            raise BuildError(f"pycdlib could not write the ISO: {exc}") from exc
        finally:
            iso.close()
    repair_isohybrid_gpt(out)


# --------------------------------------------------------------------------- xorriso


def _escape_graft(path: str) -> str:
    return path.replace("\\", "\\\\").replace("=", "\\=")


def _write_xorriso(
    spec: InstallerIsoSpec,
    files: Mapping[str, Path],
    dirs: list[str],
    efi_img: Path,
    out: Path,
    epoch: int,
    work: Path,
    progress: Progress | None,
) -> None:
    if not spec.bootloaders.isohdpfx.is_file():
        raise BuildError(
            f"isohybrid MBR {spec.bootloaders.isohdpfx} missing; install the Debian package "
            "isolinux"
        )
    listing = work / "path-list"
    empty = work / "empty-dir"
    empty.mkdir()
    os.utime(empty, (epoch, epoch))
    lines = [f"{_escape_graft(d)}={_escape_graft(str(empty))}" for d in dirs]
    lines += [f"{_escape_graft(p)}={_escape_graft(str(h))}" for p, h in sorted(files.items())]
    listing.write_text("\n".join(lines) + "\n")
    argv = [
        require_tool("xorriso"),
        # Without this, Rock Ridge inode numbers follow the host files' inode numbers.
        "-hardlinks",
        "off",
        "-as",
        "mkisofs",
        "-iso-level",
        "3",
        "-R",
        "-V",
        spec.volume_label,
        "-sysid",
        "LINUX",
        "-A",
        "EDGEKIT",
        "-o",
        str(out),
        "-b",
        "isolinux/isolinux.bin",
        "-c",
        "isolinux/boot.cat",
        "-no-emul-boot",
        "-boot-load-size",
        "4",
        "-boot-info-table",
        "-isohybrid-mbr",
        str(spec.bootloaders.isohdpfx),
        "-eltorito-alt-boot",
        "-e",
        "--interval:appended_partition_2:all::",
        "-no-emul-boot",
        "-isohybrid-gpt-basdat",
        "-append_partition",
        "2",
        "0xef",
        str(efi_img),
        "-appended_part_as_gpt",
        "-graft-points",
        "-path-list",
        str(listing),
        # Back in native mode: every file and directory gets the build date (as with the
        # pycdlib backend); mkisofs' --set_all_file_dates leaves some at the build time.
        "--",
        "-alter_date_r",
        "b-c",
        f"={epoch}",
        "/",
        "--",
        "-alter_date_r",
        "c",
        f"={epoch}",
        "/",
        "--",
    ]
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
    total = sum(h.stat().st_size for h in files.values())
    if progress is not None:
        progress(0, total)
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise BuildError(f"xorriso failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    if progress is not None:
        progress(total, total)


# --------------------------------------------------------------------------- entry point


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        while block := fp.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def build_installer_iso(
    spec: InstallerIsoSpec,
    dest: Path,
    *,
    backend: Backend = "pycdlib",
    progress: Progress | None = None,
) -> IsoResult:
    """Build the installer ISO ``dest`` and ``dest.sha256`` beside it.

    Both are written under temporary names in ``dest``'s directory and renamed at the end,
    so a failed build leaves nothing behind. Identical inputs give identical bytes.
    """
    if backend not in ("pycdlib", "xorriso"):
        raise BuildError(f"unknown ISO backend {backend!r}; use 'pycdlib' or 'xorriso'")
    dest = Path(dest)
    if not dest.parent.is_dir():
        raise BuildError(f"output directory {dest.parent} does not exist")
    epoch = _epoch(spec)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".work", dir=dest.parent))
    tmp_iso = work / "out.iso"
    tmp_sum = work / "out.sha256"
    try:
        files, dirs, efi_img, _bios = _stage(spec, work, epoch)
        if backend == "pycdlib":
            _write_pycdlib(spec, files, dirs, efi_img, tmp_iso, epoch, progress)
        else:
            _write_xorriso(spec, files, dirs, efi_img, tmp_iso, epoch, work, progress)
        sha = _sha256(tmp_iso)
        tmp_sum.write_text(f"{sha}  {dest.name}\n")
        tmp_iso.chmod(0o644)
        tmp_sum.chmod(0o644)
        checksum_path = dest.with_name(dest.name + ".sha256")
        os.replace(tmp_iso, dest)
        os.replace(tmp_sum, checksum_path)
        return IsoResult(dest, sha, dest.stat().st_size, checksum_path)
    except pycdlib.pycdlibexception.PyCdlibException as exc:
        raise BuildError(f"pycdlib could not build {dest}: {exc}") from exc
    except OSError as exc:
        # A full disk, a file that vanished or became unreadable during the build.
        raise BuildError(f"building {dest} failed: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
