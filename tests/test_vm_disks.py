"""edgekit.vm's install-target disks: created sparse, attached after the boot medium, and
booted alone (the QEMU command line only; the boots are in plugins/edgekit-iso/tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.vm import VirtualMachine, VmError, create_disk


def test_create_disk_is_sparse_and_sized(tmp_path: Path) -> None:
    disk = create_disk(tmp_path / "d.raw", size_mib=2048)
    assert disk.stat().st_size == 2048 << 20
    assert disk.stat().st_blocks == 0  # nothing allocated until the guest writes
    with pytest.raises(VmError, match="positive size"):
        create_disk(tmp_path / "e.raw", size_mib=0)


def test_install_targets_come_after_the_boot_medium(tmp_path: Path) -> None:
    iso = tmp_path / "i.iso"
    iso.write_bytes(b"\0" * 2048)
    disk = create_disk(tmp_path / "d.raw", size_mib=8)
    vm = VirtualMachine(iso=iso, disks=[disk], network=False)
    try:
        argv = " ".join(vm.argv)
    finally:
        vm.stop()
    assert f"file={iso},media=cdrom,readonly=on,if=none,id=boot0" in argv
    assert "ide-cd,drive=boot0,bus=ide.0,unit=0,bootindex=0" in argv
    assert f"file={disk},format=raw,if=none,id=disk1" in argv
    assert "virtio-blk-pci,drive=disk1,bootindex=1" in argv
    assert "snapshot=on" not in argv  # the target is written in place


def test_a_disk_boots_alone(tmp_path: Path) -> None:
    disk = create_disk(tmp_path / "d.raw", size_mib=8)
    vm = VirtualMachine(disk=disk, firmware="uefi", network=False)
    try:
        argv = " ".join(vm.argv)
    finally:
        vm.stop()
    assert "virtio-blk-pci,drive=boot0,bootindex=0" in argv
    assert "media=cdrom" not in argv
    assert "-kernel" not in argv
    with pytest.raises(ValueError, match="one of iso, kernel"):
        VirtualMachine(disk=disk, iso=disk)
    with pytest.raises(VmError, match="no such file"):
        VirtualMachine(disk=tmp_path / "missing.raw")
