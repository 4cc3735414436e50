"""Installer ISO structure, reproducibility and errors, checked with xorriso, sgdisk, fdisk."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import time
from pathlib import Path

import pycdlib
import pytest
from edgekit_iso.build import EFI_ELTORITO_LIMIT, Backend, build_installer_iso
from edgekit_iso.installer import INSTALLER_HOOK, installer_script
from edgekit_iso.spec import BootloaderPaths, EfiImageOptions, InstallerIsoSpec
from installer_iso_support import (
    IMAGE_REF,
    USER_DATA,
    extract,
    fake_image_tree,
    oci_layout,
    run,
    xorriso_report,
)

from edgekit.errors import BuildError

BACKENDS = ["pycdlib", "xorriso"]


@pytest.fixture
def spec(tmp_path: Path) -> InstallerIsoSpec:
    tree = fake_image_tree(tmp_path / "tree")
    bundle = tmp_path / "bundle-core.tar.zst"
    bundle.write_bytes(b"\x28\xb5\x2f\xfd" + b"content" * 1000)
    extra = tmp_path / "extra"
    (extra / "deep" / "er").mkdir(parents=True)
    (extra / "deep" / "er" / "a-file.with.long-name_and_more.txt").write_text("x")
    (extra / "deep" / "er" / "a-file.with.long-name_and_more.txt2").write_text("y")
    return InstallerIsoSpec.from_image_tree(
        tree,
        USER_DATA,
        oci_layout_dir=oci_layout(tmp_path / "layout"),
        content_bundles=[bundle],
        files={"/extras": extra},
        source_date_epoch=1_700_000_000,
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_layout_boot_records_and_checksum(
    spec: InstallerIsoSpec, tmp_path: Path, backend: Backend
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "installer.iso"
    seen: list[tuple[int, int]] = []
    result = build_installer_iso(
        spec, dest, backend=backend, progress=lambda d, t: seen.append((d, t))
    )

    assert result.path == dest
    assert result.size == dest.stat().st_size
    assert result.sha256 == hashlib.sha256(dest.read_bytes()).hexdigest()
    assert (out / "installer.iso.sha256").read_text() == f"{result.sha256}  installer.iso\n"
    check = subprocess.run(
        ["sha256sum", "-c", "installer.iso.sha256"], cwd=out, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert sorted(p.name for p in out.iterdir()) == ["installer.iso", "installer.iso.sha256"]
    assert seen
    assert seen[-1][0] == seen[-1][1]

    report = xorriso_report(dest)
    assert "Volume id    : 'COS_LIVE'" in report
    assert "El Torito boot img :   1  BIOS  y   none" in report
    assert "El Torito boot img :   2  UEFI  y   none" in report
    assert "/isolinux/isolinux.bin" in report
    assert "boot-info-table" in report
    assert "MBR" in report
    assert "GPT" in report
    assert "CRC" not in report
    assert "problems" not in report

    listing = run(["xorriso", "-indev", str(dest), "-find", "/", "-type", "f"]).stdout
    for path in (
        "/config.yaml",
        "/boot/vmlinuz",
        "/boot/initrd",
        "/boot/grub/grub.cfg",
        "/isolinux/isolinux.cfg",
        "/isolinux/ldlinux.c32",
        "/edgekit/image/index.json",
        "/opt/spectrocloud/content/bundle-core.tar.zst",
        "/extras/deep/er/a-file.with.long-name_and_more.txt",
        "/extras/deep/er/a-file.with.long-name_and_more.txt2",
    ):
        assert f"'{path}'" in listing, path

    assert extract(dest, "/config.yaml", tmp_path / "cfg").read_text() == USER_DATA
    isolinux = extract(dest, "/isolinux/isolinux.cfg", tmp_path / "iso.cfg").read_text()
    assert "SERIAL 0 115200" in isolinux
    assert "DEFAULT auto" in isolinux
    assert "console=tty0 console=ttyS0,115200 edgekit.mode=auto" in isolinux
    assert "edgekit.mode=manual" in isolinux
    grub = extract(dest, "/boot/grub/grub.cfg", tmp_path / "grub.cfg").read_text()
    assert "set default=auto" in grub
    assert grub.count("menuentry") == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_installer_is_a_second_gzip_cpio_after_the_untouched_initrd(
    spec: InstallerIsoSpec, tmp_path: Path, backend: Backend
) -> None:
    dest = build_installer_iso(spec, tmp_path / "i.iso", backend=backend).path
    initrd = extract(dest, "/boot/initrd", tmp_path / "initrd").read_bytes()
    base = spec.initrd.read_bytes()
    assert initrd.startswith(base)
    rest = initrd[len(base) :]
    pad = -len(base) % 4
    assert rest[:pad] == b"\0" * pad
    appended = gzip.decompress(rest[pad:])
    listing = run_cpio(appended, "-t")
    assert INSTALLER_HOOK in listing.split()
    assert "etc/edgekit/installer.conf" in listing.split()
    verbose = run_cpio(appended, "-tv")
    hook_line = next(line for line in verbose.splitlines() if line.endswith(INSTALLER_HOOK))
    assert hook_line.startswith("-rwxr-xr-x")
    workdir = tmp_path / "unpacked"
    workdir.mkdir()
    subprocess.run(["cpio", "-id", "--quiet"], input=appended, cwd=workdir, check=True)
    assert (workdir / INSTALLER_HOOK).read_text() == installer_script()
    conf = (workdir / "etc/edgekit/installer.conf").read_text()
    assert "ISO_LABEL=COS_LIVE" in conf
    assert f"IMAGE_REF={IMAGE_REF}" in conf


def run_cpio(archive: bytes, flag: str) -> str:
    return subprocess.run(
        ["cpio", flag, "--quiet"], input=archive, capture_output=True, check=True
    ).stdout.decode()


@pytest.mark.parametrize("backend", BACKENDS)
def test_identical_inputs_give_identical_bytes(
    spec: InstallerIsoSpec, tmp_path: Path, backend: Backend
) -> None:
    first = build_installer_iso(spec, tmp_path / "a.iso", backend=backend)
    time.sleep(1.1)  # a clock leaking into the image would now differ
    os.utime(spec.kernel)  # and so would a host mtime
    (tmp_path / "b").mkdir()
    second = build_installer_iso(spec, tmp_path / "b" / "a.iso", backend=backend)
    assert first.sha256 == second.sha256
    assert first.path.read_bytes() == second.path.read_bytes()


def test_source_date_epoch_changes_the_dates(spec: InstallerIsoSpec, tmp_path: Path) -> None:
    import attrs

    one = build_installer_iso(spec, tmp_path / "one.iso")
    other = build_installer_iso(attrs.evolve(spec, source_date_epoch=1), tmp_path / "two.iso")
    assert one.sha256 != other.sha256
    for result, stamp in ((one, "2023111422132000"), (other, "1970010100000100")):
        pvd = run(["xorriso", "-indev", str(result.path), "-pvd_info"]).stdout
        assert f"Creation Time: {stamp}" in pvd
        assert f"Modif. Time  : {stamp}" in pvd


def test_pycdlib_gpt_is_repaired(spec: InstallerIsoSpec, tmp_path: Path) -> None:
    """pycdlib alone writes a wrong array CRC; ours passes sgdisk and fdisk."""
    raw = pycdlib.PyCdlib()
    raw.new(interchange_level=3, vol_ident="RAW")
    isolinux = Path("/usr/lib/ISOLINUX/isolinux.bin")
    raw.add_file(str(isolinux), "/ISOLINUX.BIN;1")
    raw.add_fp(io.BytesIO(b"\0" * 2048), 2048, "/EFI.IMG;1")
    raw.add_eltorito("/ISOLINUX.BIN;1", bootcatfile="/BOOT.CAT;1", boot_load_size=4,
                     boot_info_table=True)  # fmt: skip
    raw.add_eltorito("/EFI.IMG;1", efi=True)
    raw.add_isohybrid(efi=True)
    raw.write(str(tmp_path / "raw.iso"))
    raw.close()
    assert "GPT array CRC wrong" in xorriso_report(tmp_path / "raw.iso")

    dest = build_installer_iso(spec, tmp_path / "fixed.iso").path
    report = xorriso_report(dest)
    assert "CRC wrong" not in report
    assert "backup problems" not in report
    assert "GPT type GUID      :   2  28732ac11ff8d211ba4b00a0c93ec93b" in report  # ESP
    sgdisk = run(["sgdisk", "-v", str(dest)], check=False).stdout
    assert "CRC" not in sgdisk
    assert "differ" not in sgdisk
    assert "doesn't\nmatch" not in sgdisk
    fdisk = run(["fdisk", "-l", str(dest)]).stdout
    assert "EFI (FAT-12/16/32)" in fdisk


def test_xorriso_appends_a_large_esp_that_pycdlib_refuses(
    spec: InstallerIsoSpec, tmp_path: Path
) -> None:
    import attrs

    big = attrs.evolve(spec, efi=EfiImageOptions(size_mib=40))
    with pytest.raises(BuildError, match="backend='xorriso'"):
        build_installer_iso(big, tmp_path / "big.iso", backend="pycdlib")
    assert list(tmp_path.glob("big.iso*")) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".big.iso")]

    dest = build_installer_iso(big, tmp_path / "big.iso", backend="xorriso").path
    report = xorriso_report(dest)
    assert EFI_ELTORITO_LIMIT < 40 * 1024 * 1024
    assert "Appended2" in report
    part = next(line for line in report.splitlines() if line.startswith("GPT start and size :   2"))
    assert int(part.split()[-1]) == 40 * 2048  # 512-byte sectors
    sgdisk = run(["sgdisk", "-v", str(dest)], check=False).stdout
    assert "No problems found" in sgdisk


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize("backend", BACKENDS)
def test_label_too_long(spec: InstallerIsoSpec, tmp_path: Path, backend: Backend) -> None:
    import attrs

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BuildError, match="too long"):
        build_installer_iso(
            attrs.evolve(spec, volume_label="X" * 33), out / "i.iso", backend=backend
        )
    assert _leftovers(out) == []


def test_missing_kernel_names_every_path_tried(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "boot").mkdir(parents=True)
    (tree / "boot" / "initrd").write_bytes(b"x")
    with pytest.raises(BuildError) as err:
        InstallerIsoSpec.from_image_tree(tree, USER_DATA)
    for tried in ("boot/vmlinuz", "vmlinuz", "boot/kernel"):
        assert str(tree / tried) in str(err.value)
    (tree / "boot" / "vmlinuz").write_bytes(b"k")
    with pytest.raises(BuildError, match=r"initrd.*boot/initrd\.img"):
        InstallerIsoSpec.from_image_tree(tree, USER_DATA, initrd="boot/initrd.img")


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_initrd_at_build_time(
    spec: InstallerIsoSpec, tmp_path: Path, backend: Backend
) -> None:
    import attrs

    out = tmp_path / "out"
    out.mkdir()
    gone = tmp_path / "nope" / "initrd"
    with pytest.raises(BuildError, match=f"initrd {gone}"):
        build_installer_iso(attrs.evolve(spec, initrd=gone), out / "i.iso", backend=backend)
    assert _leftovers(out) == []


@pytest.mark.parametrize(
    ("paths", "package"),
    [
        ({"syslinux_modules": "mods"}, "syslinux-common"),
        ({"isolinux_bin": "isolinux.bin"}, "isolinux"),
        ({"grub_efi_modules": "grub"}, "grub-efi-amd64-bin"),
    ],
)
def test_missing_bootloader_names_the_package(
    spec: InstallerIsoSpec, tmp_path: Path, paths: dict[str, str], package: str
) -> None:
    import attrs

    out = tmp_path / "out"
    out.mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    bootloaders = BootloaderPaths(**{k: empty / v for k, v in paths.items()})
    with pytest.raises(BuildError, match=f"Debian package {package}"):
        build_installer_iso(attrs.evolve(spec, bootloaders=bootloaders), out / "i.iso")
    assert _leftovers(out) == []


def test_missing_isohdpfx_for_xorriso(spec: InstallerIsoSpec, tmp_path: Path) -> None:
    import attrs

    out = tmp_path / "out"
    out.mkdir()
    bootloaders = BootloaderPaths(isohdpfx=tmp_path / "isohdpfx.bin")
    with pytest.raises(BuildError, match="Debian package isolinux"):
        build_installer_iso(
            attrs.evolve(spec, bootloaders=bootloaders), out / "i.iso", backend="xorriso"
        )
    assert _leftovers(out) == []


def test_user_given_grub_efi_binary_is_used(spec: InstallerIsoSpec, tmp_path: Path) -> None:
    import attrs

    own = tmp_path / "own.efi"
    own.write_bytes(b"MZ" + b"\0" * 4094)
    dest = build_installer_iso(
        attrs.evolve(spec, efi=EfiImageOptions(grub_efi=own)), tmp_path / "i.iso"
    ).path
    efi_img = extract(dest, "/boot/efi.img", tmp_path / "efi.img")
    copied = tmp_path / "BOOTX64.EFI"
    run(["mcopy", "-i", str(efi_img), "::EFI/BOOT/BOOTX64.EFI", str(copied)])
    assert copied.read_bytes() == own.read_bytes()


def test_installer_script_reads_nested_yaml_with_busybox(tmp_path: Path) -> None:
    """The sed-based extraction, run by busybox sh and busybox sed as on the device."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    busybox = shutil.which("busybox")
    assert busybox
    for applet in ("sed", "head", "sh"):
        (bin_dir / applet).symlink_to(busybox)
    script = installer_script()
    functions = script[script.index("yaml_get() {") : script.index("mode=$(cmdline_arg")]
    (tmp_path / "ud.yaml").write_text(USER_DATA)
    probe = (
        functions
        + "yaml_get ud.yaml stylus site name; yaml_get ud.yaml install device; "
        + "yaml_get ud.yaml stylus site missing; echo end\n"
    )
    out = subprocess.run(
        [str(bin_dir / "sh"), "-c", probe],
        cwd=tmp_path,
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.splitlines() == ["store-installer-042", "/dev/vda", "end"]


def test_a_file_may_not_shadow_a_generated_one(spec: InstallerIsoSpec, tmp_path: Path) -> None:
    import attrs

    out = tmp_path / "out"
    out.mkdir()
    other = tmp_path / "other.yaml"
    other.write_text("#cloud-config\n")
    with pytest.raises(BuildError, match=r"two inputs claim the ISO path /config\.yaml"):
        build_installer_iso(attrs.evolve(spec, files={"/config.yaml": other}), out / "i.iso")
    assert _leftovers(out) == []


def test_an_unwritable_destination_is_a_build_error(spec: InstallerIsoSpec, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="does not exist"):
        build_installer_iso(spec, tmp_path / "no" / "such" / "dir" / "i.iso")


@pytest.mark.parametrize("backend", BACKENDS)
def test_names_that_collide_in_iso9660_stay_distinct(
    spec: InstallerIsoSpec, tmp_path: Path, backend: Backend
) -> None:
    import attrs

    src = tmp_path / "src"
    src.mkdir()
    names = ["a-b.txt", "a_b.txt", "A.B.TXT", "x" * 40 + ".tar.zst", "x" * 40 + ".tar.zst2"]
    for name in names:
        (src / name).write_text(name)
    dest = build_installer_iso(
        attrs.evolve(spec, files={"/c": src}), tmp_path / "i.iso", backend=backend
    ).path
    for name in names:
        assert extract(dest, f"/c/{name}", tmp_path / "x").read_text() == name
    # Plain ISO 9660 names (no Rock Ridge) are unique too: isoinfo (no -R) lists them.
    plain = run(["isoinfo", "-i", str(dest), "-f"]).stdout.split()
    listed = [p for p in plain if p.startswith("/C/")]
    assert len(listed) == len(set(listed)) == len(names), listed


def test_source_date_epoch_from_the_environment(
    spec: InstallerIsoSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import attrs

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    dest = build_installer_iso(attrs.evolve(spec, source_date_epoch=None), tmp_path / "i.iso")
    pvd = run(["xorriso", "-indev", str(dest.path), "-pvd_info"]).stdout
    assert "Creation Time: 1970010200000000" in pvd
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(BuildError, match="SOURCE_DATE_EPOCH must be an integer"):
        build_installer_iso(attrs.evolve(spec, source_date_epoch=None), tmp_path / "j.iso")
