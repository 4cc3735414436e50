"""The installer's disk choice and refusals, run by busybox sh on the host (no QEMU).

The installer script is sourced with EDGEKIT_INSTALLER_LIB=1 against a fake /sys/block
tree and fake device files, as on the device. Every refusal must be exactly one console
line starting with ``edgekit-installer: refusing to install:``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from edgekit_iso.installer import installer_script

REFUSAL = "edgekit-installer: refusing to install: "


def _disk(sys_root: Path, dev: Path, name: str, *, sectors: int = 4 << 20, removable: int = 0,
          parts: int = 0, head: bytes = b"") -> None:  # fmt: skip
    block = sys_root / "block" / name
    block.mkdir(parents=True)
    (block / "size").write_text(f"{sectors}\n")
    (block / "removable").write_text(f"{removable}\n")
    for n in range(1, parts + 1):
        (block / f"{name}{n}").mkdir()
        (block / f"{name}{n}" / "partition").write_text(f"{n}\n")
    (dev / name).write_bytes(head.ljust(4096, b"\0"))


@pytest.fixture
def machine(tmp_path: Path) -> Path:
    """sr0: the installer CD; sda: an installer written to a stick, booted as a disk (one
    partition); vda: blank; vdb: partitioned; vdc: an MBR signature only; vdd: too small."""
    sys_root, dev = tmp_path / "sys", tmp_path / "dev"
    dev.mkdir()
    _disk(sys_root, dev, "loop0")
    _disk(sys_root, dev, "sda", parts=1)
    _disk(sys_root, dev, "sr0", removable=1)
    _disk(sys_root, dev, "vda")
    _disk(sys_root, dev, "vdb", parts=2)
    _disk(sys_root, dev, "vdc", head=b"\0" * 510 + b"\x55\xaa")
    _disk(sys_root, dev, "vdd", sectors=2048 * 100)
    _disk(sys_root, dev, "vde", head=b"\0" * 512 + b"EFI PART")
    return tmp_path


def _run(machine: Path, commands: str) -> subprocess.CompletedProcess[str]:
    busybox = shutil.which("busybox")
    assert busybox, "busybox is needed (the device's shell)"
    bin_dir = machine / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        for applet in ("sh", "sed", "head", "cat", "dd", "od", "tr", "grep", "blkid", "readlink",
                       "wc", "mv"):  # fmt: skip
            (bin_dir / applet).symlink_to(busybox)
    (machine / "installer").write_text(installer_script())
    env = {
        "PATH": str(bin_dir),
        "EDGEKIT_INSTALLER_LIB": "1",
        "EDGEKIT_INSTALLER_SYS": str(machine / "sys"),
        "EDGEKIT_INSTALLER_DEV": str(machine / "dev"),
        "EDGEKIT_INSTALLER_RUN": str(machine / "run"),
    }
    return subprocess.run(
        [str(bin_dir / "sh"), "-c", f". {machine / 'installer'}\n{commands}"],
        cwd=machine,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _refusal(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.splitlines()
    assert done.returncode == 1, done
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(REFUSAL), lines
    return lines[0].removeprefix(REFUSAL)


def test_the_default_is_the_first_fixed_disk_that_is_not_the_boot_media(machine: Path) -> None:
    done = _run(machine, 'choose_disk "" "sda sr0"')
    assert (done.returncode, done.stdout, done.stderr) == (0, "vda\n", "")
    done = _run(machine, 'choose_disk auto "sr0"')  # booted from the CD: sda is a fine target
    assert done.stdout == "sda\n"


def test_install_device_names_the_disk(machine: Path) -> None:
    done = _run(machine, 'choose_disk /dev/vdc "sda sr0"')
    assert (done.returncode, done.stdout) == (0, "vdc\n")


def test_the_boot_disk_is_never_chosen(machine: Path) -> None:
    done = _run(machine, 'choose_disk /dev/sda "sda sr0"')
    assert "install.device /dev/sda is the disk this installer booted from" in _refusal(done)
    assert done.stdout == ""


def test_a_missing_device_or_a_partition_is_refused(machine: Path) -> None:
    missing = _refusal(_run(machine, 'choose_disk /dev/nvme0n1 "sr0"'))
    assert missing == (
        "install.device /dev/nvme0n1 does not exist (disks: sda vda vdb vdc vdd vde)"
    )
    part = _refusal(_run(machine, 'choose_disk /dev/vdb1 "sr0"'))
    assert part == "install.device /dev/vdb1 is a partition of " + str(machine / "dev/vdb") + (
        "; name the whole disk"
    )
    assert "is not a disk" in _refusal(_run(machine, 'choose_disk /dev/loop0 "sr0"'))


def test_no_candidate_disk_is_one_refusal(machine: Path) -> None:
    shutil.rmtree(machine / "sys" / "block" / "vda")
    for name in ("vdb", "vdc", "vdd", "vde"):
        (machine / "sys" / "block" / name / "removable").write_text("1\n")
    text = _refusal(_run(machine, 'choose_disk "" "sda sr0"'))
    assert text.startswith("no disk to install onto"), text
    assert text.endswith("set install.device"), text


@pytest.mark.parametrize(
    ("disk", "held"),
    [("vdb", "partitions"), ("vdc", "a partition table"), ("vde", "a GPT header")],
)
def test_a_disk_in_use_is_left_alone_unless_wipe_is_set(
    machine: Path, disk: str, held: str
) -> None:
    dev = machine / "dev" / disk
    before = dev.read_bytes()
    text = _refusal(_run(machine, f'check_disk {disk} ""'))
    assert text == f"{dev} is not empty (it holds {held}); set install.wipe: true to erase it"
    assert _refusal(_run(machine, f"check_disk {disk} false")) == text
    assert dev.read_bytes() == before
    done = _run(machine, f"check_disk {disk} true")
    assert done.returncode == 0, done
    assert (
        done.stdout == f"edgekit-installer: install.wipe is set: erasing {dev} (it holds {held})\n"
    )


def test_a_blank_disk_passes_and_a_small_one_is_refused(machine: Path) -> None:
    done = _run(machine, "check_disk vda")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    text = _refusal(_run(machine, "check_disk vdd"))
    assert text == f"{machine / 'dev/vdd'} has 100 MiB; the layout needs at least 1283 MiB"
    # install.partitions.state.size shrinks the layout (read by the main part).
    done = _run(machine, "STATE_MIB=16; check_disk vdd")
    assert done.returncode == 1
    assert "at least 275 MiB" in done.stderr


def test_grubenv_block_is_what_grub_reads(machine: Path) -> None:
    done = _run(
        machine,
        'write_grubenv env edgekit_active=A edgekit_passive= "extra_cmdline=a=1 b"',
    )
    assert done.returncode == 0, done
    block = (machine / "env").read_bytes()
    assert len(block) == 1024
    assert block.startswith(
        b"# GRUB Environment Block\nedgekit_active=A\nedgekit_passive=\nextra_cmdline=a=1 b\n#"
    )
    editenv = shutil.which("grub-editenv")
    if editenv:  # GRUB's own tool reads it back
        listed = subprocess.run([editenv, str(machine / "env"), "list"], capture_output=True,
                                text=True, check=True).stdout  # fmt: skip
        assert listed.splitlines() == [
            "edgekit_active=A",
            "edgekit_passive=",
            "extra_cmdline=a=1 b",
        ]


def test_an_old_media_or_image_is_refused_before_any_write(machine: Path) -> None:
    media = machine / "media"
    text = _refusal(_run(machine, f"media={media}; check_payload"))
    assert (
        text == "the installer media has no /edgekit/disk/boot.img (an ISO from an older edgekit)"
    )
    for name in ("disk/boot.img", "disk/core.img", "disk/BOOTX64.EFI", "disk/grub.cfg",
                 "slot/initrd", "slot/edgekit.cpio.gz", "slot/image.json"):  # fmt: skip
        (media / "edgekit" / name).parent.mkdir(parents=True, exist_ok=True)
        (media / "edgekit" / name).write_bytes(b"x")
    (media / "boot").mkdir()
    (media / "boot" / "vmlinuz").write_bytes(b"k")
    tools = machine / "tools"
    tools.mkdir()
    for tool in ("sfdisk", "mke2fs", "mkfs.fat"):
        (tools / tool).write_text("#!/bin/sh\n")
        (tools / tool).chmod(0o755)
    (tools / "busybox-mke2fs").symlink_to(tools / "mke2fs")  # an applet link, as before
    setup = f"media={media}; SFDISK={tools}/sfdisk; MKFS_FAT={tools}/mkfs.fat; "
    text = _refusal(_run(machine, setup + f"MKE2FS={tools}/busybox-mke2fs; check_payload"))
    assert text == (
        f"this image has no {tools}/busybox-mke2fs (a sample OS from an older edgekit: rebuild it)"
    )
    done = _run(machine, setup + f"MKE2FS={tools}/mke2fs; check_payload")
    assert (done.returncode, done.stderr) == (0, "")
