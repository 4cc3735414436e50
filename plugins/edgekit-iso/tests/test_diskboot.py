"""The disk boot files the installer ISO carries, checked on the host (no QEMU)."""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from edgekit_iso.build import build_installer_iso
from edgekit_iso.diskboot import (
    BIOS_CORE_LBA,
    PERSIST_HOOK,
    build_bios_images,
    disk_grub_cfg,
    grubenv_block,
    image_description,
)
from edgekit_iso.spec import BootloaderPaths, BootMenu, InstallerIsoSpec
from installer_iso_support import IMAGE_REF, USER_DATA, extract, fake_image_tree, oci_layout, run

from edgekit.errors import BuildError


def test_boot_img_and_core_img_are_patched_for_lba_2048(tmp_path: Path) -> None:
    boot, core = build_bios_images(BootloaderPaths(), tmp_path)
    mbr = boot.read_bytes()
    assert len(mbr) == 440  # the code only: the partition table after it is the disk's
    original = Path("/usr/lib/grub/i386-pc/boot.img").read_bytes()
    assert struct.unpack_from("<Q", mbr, 0x5C)[0] == BIOS_CORE_LBA
    assert mbr[0x66:0x68] == b"\x90\x90"
    # Nothing else differs from GRUB's boot.img.
    changed = [i for i in range(440) if mbr[i] != original[i]]
    assert set(changed) <= set(range(0x5C, 0x64)) | {0x66, 0x67}
    image = core.read_bytes()
    start, length, segment = struct.unpack_from("<QHH", image, 0x200 - 12)
    assert start == BIOS_CORE_LBA + 1
    assert length == -(-len(image) // 512) - 1
    assert segment == 0x820
    assert len(image) < 1 << 20  # fits the BIOS boot partition


def test_missing_grub_pc_modules_name_the_package(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="grub-pc-bin"):
        build_bios_images(BootloaderPaths(grub_pc_modules=tmp_path / "none"), tmp_path)


def test_grub_cfg_is_valid_grub_script_and_reads_the_slot_from_grubenv(tmp_path: Path) -> None:
    cfg = tmp_path / "grub.cfg"
    cfg.write_text(disk_grub_cfg(BootMenu()))
    checker = shutil.which("grub-script-check")
    assert checker, "grub-common provides grub-script-check"
    subprocess.run([checker, str(cfg)], check=True)
    text = cfg.read_text()
    assert "load_env -f $prefix/grubenv" in text
    assert "set dir=($state)/slots/$edgekit_boot" in text
    assert "initrd $dir/initrd $dir/edgekit.cpio.gz" in text
    assert "search --no-floppy --set=state --label COS_STATE" in text


def test_grubenv_block_reads_back_with_grub_editenv(tmp_path: Path) -> None:
    env = tmp_path / "grubenv"
    env.write_bytes(grubenv_block({"edgekit_active": "A", "edgekit_passive": ""}))
    assert env.stat().st_size == 1024
    listed = run(["grub-editenv", str(env), "list"]).stdout.splitlines()
    assert listed == ["edgekit_active=A", "edgekit_passive="]
    with pytest.raises(BuildError, match="over 1024 bytes"):
        grubenv_block({"x": "y" * 1100})


def test_image_description_reads_the_layout(tmp_path: Path) -> None:
    tree = fake_image_tree(tmp_path / "tree")
    info = image_description(
        layout=oci_layout(tmp_path / "layout"),
        image_ref=IMAGE_REF,
        kernel=tree / "boot/vmlinuz",
        initrd=tree / "boot/initrd",
    )
    index = json.loads((tmp_path / "layout/index.json").read_text())
    assert info["digest"] == index["manifests"][0]["digest"]
    assert info["ref"] == info["tag"] == info["version"] == IMAGE_REF
    kernel = info["kernel"]
    assert isinstance(kernel, dict)
    assert kernel["size"] == (tree / "boot/vmlinuz").stat().st_size
    no_layout = image_description(
        layout=None, image_ref=None, kernel=tree / "boot/vmlinuz", initrd=tree / "boot/initrd"
    )
    assert no_layout["digest"] is None
    assert no_layout["version"] is None


def test_the_iso_carries_the_disk_files_and_the_slot(tmp_path: Path) -> None:
    tree = fake_image_tree(tmp_path / "tree")
    hook = tmp_path / "60-agent"
    hook.write_text("#!/bin/sh\necho agent\n")
    spec = InstallerIsoSpec.from_image_tree(
        tree,
        USER_DATA,
        oci_layout_dir=oci_layout(tmp_path / "layout"),
        installer_files={"etc/edgekit/boot.d/60-agent": hook},
        source_date_epoch=1_700_000_000,
    )
    iso = build_installer_iso(spec, tmp_path / "i.iso").path
    initrd = extract(iso, "/edgekit/slot/initrd", tmp_path / "initrd")
    assert initrd.read_bytes() == (tree / "boot/initrd").read_bytes()  # the image's own
    overlay = extract(iso, "/edgekit/slot/edgekit.cpio.gz", tmp_path / "overlay.gz")
    listing = subprocess.run(
        ["cpio", "-t", "-v"], input=gzip.decompress(overlay.read_bytes()), capture_output=True
    ).stdout.decode()
    assert PERSIST_HOOK in listing
    assert "etc/edgekit/boot.d/60-agent" in listing
    assert "50-edgekit-installer" not in listing  # the installed system does not reinstall
    info = json.loads(extract(iso, "/edgekit/slot/image.json", tmp_path / "i.json").read_text())
    assert info["format"] == "edgekit-slot/v1"
    assert info["initrd"]["sha256"] == run(["sha256sum", str(initrd)]).stdout.split()[0]
    for name in ("boot.img", "core.img", "BOOTX64.EFI", "grub.cfg", "grubenv"):
        assert extract(iso, f"/edgekit/disk/{name}", tmp_path / name).stat().st_size > 0
