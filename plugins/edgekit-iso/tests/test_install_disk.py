"""Install from the installer ISO + a site ISO onto a blank disk, then boot the disk alone.

The real sample OS, the real agent and a real hub on 127.0.0.1 (10.0.2.2 in the guest);
the disk boots by itself (GRUB from the MBR on BIOS, from EFI/BOOT/BOOTX64.EFI on UEFI)
into slot A, and its agent registers with the credential kept on COS_PERSISTENT: one row
on the hub, the same uid. TCG boots: each test takes minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from edgekit_iso.build import build_installer_iso
from edgekit_iso.siteiso import write_site_iso
from edgekit_iso.spec import BootMenu, InstallerIsoSpec
from installer_iso_support import IMAGE_REF, oci_layout

from edgekit.hub import HubServer
from edgekit.vm import VirtualMachine, create_disk

pytestmark = pytest.mark.qemu

CACHE = Path(os.environ.get("EDGEKIT_TEST_CACHE", "/tmp/edgekit-test-cache"))
SITE = "store-disk-01"
UUIDS = {
    "bios": "7d1c0c9a-1b2d-4c61-9a0e-00000000b105",
    "uefi": "7d1c0c9a-1b2d-4c61-9a0e-0000000000ef",
}
#: The installer's own user-data: no hub, so only the site ISO's can register.
ISO_USER_DATA = """#cloud-config
stylus:
  site:
    paletteEndpoint: http://10.0.2.2:9
    edgeHostToken: ekt_decoy
    name: not-this-site
install:
  poweroff: true
"""


@pytest.fixture(scope="module")
def installer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgekit_agent.plugin import edgekit_installer_payload_files
    from edgekit_oci.sampleos import assemble_sample_os

    work = tmp_path_factory.mktemp("install")
    root = work / "sampleos"
    assemble_sample_os(root, cache_dir=CACHE / "debs")
    payload = edgekit_installer_payload_files(iso_name="installer")
    spec = InstallerIsoSpec.from_image_tree(
        root,
        ISO_USER_DATA,
        oci_layout_dir=oci_layout(work / "layout"),
        installer_files={inner: Path(host) for inner, host in payload.items()},
        # An agent that runs in the installer boot (install.poweroff: false) gives up soon.
        boot_menu=BootMenu(
            timeout_s=0, extra_cmdline="edgekit.agent.poll=1 edgekit.agent.timeout=20"
        ),
    )
    return build_installer_iso(spec, work / "installer.iso", backend="xorriso").path


def _site_user_data(port: int, token: str, *, poweroff: bool) -> str:
    return f"""#cloud-config
stylus:
  site:
    paletteEndpoint: http://10.0.2.2:{port}
    edgeHostToken: {token}
    name: {SITE}
install:
  poweroff: {"true" if poweroff else "false"}
  grub_options:
    extra_cmdline: edgekit.agent.poll=1 edgekit.agent.timeout=20
"""


def _partitions(disk: Path) -> list[tuple[str, str]]:
    dump = subprocess.run(
        ["sfdisk", "--json", str(disk)], capture_output=True, text=True, check=True
    ).stdout
    table = json.loads(dump)["partitiontable"]
    assert table["label"] == "gpt"
    return [(p["name"], p["type"]) for p in table["partitions"]]


@pytest.mark.parametrize(("firmware", "poweroff"), [("bios", True), ("uefi", False)])
def test_install_onto_a_blank_disk_then_boot_it_alone(
    installer: Path, tmp_path: Path, firmware: str, poweroff: bool
) -> None:
    """BIOS: the install powers off, the disk's first boot registers, its second boot
    registers again with the kept credential. UEFI with install.poweroff: false: the
    installer boot goes on and registers with its state already on the new disk, and the
    disk's boot carries on with that credential."""
    uuid = UUIDS[firmware]
    with HubServer(tmp_path / "hub.db", access_log=False) as hub:
        admin = hub.client()
        token = admin.tokens.create("disk", site=SITE, expires_in="1h")
        assert token.secret is not None
        site_iso = write_site_iso(
            tmp_path / "site.iso",
            user_data=_site_user_data(hub.port, token.secret.reveal(), poweroff=poweroff),
        ).path
        disk = create_disk(tmp_path / "disk.raw", size_mib=2048)

        started = time.monotonic()
        with VirtualMachine(
            iso=installer,
            cdroms=[site_iso],
            disks=[disk],
            firmware=firmware,  # type: ignore[arg-type]
            uuid=uuid,
            serial_log=tmp_path / "install.log",
        ) as vm:
            log = vm.wait_exit(timeout=900)
        install_s = time.monotonic() - started
        assert f"edgekit-installer: installed {IMAGE_REF} onto /dev/vda as slot A" in log, log
        if poweroff:
            assert "edgekit-installer: powering off (install.poweroff)" in log, log
            assert "edgekit-agent:" not in log  # powered off before the agent: nothing registered
            assert admin.hosts.search() == []
        else:
            assert (
                "edgekit-installer: install.poweroff is false: continuing this boot with "
                "/var/lib/edgekit on /dev/vda"
            ) in log, log
            assert f"edgekit-agent: registered uid={uuid} site={SITE}" in log, log
            assert [h.uid for h in admin.hosts.search()] == [uuid]
        assert _partitions(disk) == [
            ("bios", "21686148-6449-6E6F-744E-656564454649"),
            ("efi", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            ("oem", "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
            ("state", "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
            ("persistent", "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
        ]

        boots = 2 if firmware == "bios" else 1
        for n in range(1, boots + 1):
            with VirtualMachine(
                disk=disk,
                firmware=firmware,  # type: ignore[arg-type]
                uuid=uuid,
                serial_log=tmp_path / f"boot{n}.log",
            ) as vm:
                log = vm.wait_for(f"edgekit-agent: registered uid={uuid} site={SITE}", timeout=600)
            assert "Booting `edgekit (slot A)'" in log, log
            assert "edgekit-persistent: user-data from COS_OEM" in log, log
            assert "edgekit-persistent: /var/lib/edgekit on COS_PERSISTENT" in log, log
            assert f"edgekit-persistent: booted slot A: image {IMAGE_REF} sha256:" in log, log
            assert "edgekit.agent.timeout=20" in log  # install.grub_options.extra_cmdline
            assert "refused" not in log, log
            assert token.secret.reveal() not in log
            hosts = admin.hosts.search()
            assert [h.uid for h in hosts] == [uuid], f"boot {n}: {hosts}"
            assert hosts[0].site == SITE
    print(f"\n{firmware}: install {install_s:.0f} s (TCG)")


def _quiet_user_data(*, wipe: bool) -> str:
    """User-data that installs but never registers (the agent stops at once); the wiping
    install also reboots (QEMU runs with -no-reboot, so a reboot ends it like a power-off)."""
    end = "reboot: true" if wipe else "poweroff: true"
    return (
        "#cloud-config\nstylus:\n  site:\n    name: store-wipe\n    disableAutoRegister: true\n"
        f"install:\n  {end}\n  wipe: {'true' if wipe else 'false'}\n"
    )


def test_a_partitioned_disk_is_left_alone_unless_wipe_is_set(
    installer: Path, tmp_path: Path
) -> None:
    disk = create_disk(tmp_path / "disk.raw", size_mib=2048)
    subprocess.run(
        ["sfdisk", "-q", str(disk)], input="label: dos\n,512M,L\n,,L\n", text=True, check=True
    )
    before = disk.read_bytes()[: 1 << 20]
    for wipe in (False, True):
        site_iso = write_site_iso(
            tmp_path / f"site-{wipe}.iso", user_data=_quiet_user_data(wipe=wipe)
        ).path
        with VirtualMachine(
            iso=installer,
            cdroms=[site_iso],
            disks=[disk],
            network=False,
            serial_log=tmp_path / f"wipe-{wipe}.log",
        ) as vm:
            log = vm.wait_exit(timeout=900)
        if not wipe:
            refusals = [line for line in log.splitlines() if "refusing to install" in line]
            assert refusals == [
                "edgekit-init: 50-edgekit-installer: edgekit-installer: refusing to install: "
                "/dev/vda is not empty (it holds partitions); set install.wipe: true to erase it"
            ], log
            assert "edgekit-init: 50-edgekit-installer exited 1" in log, log
            assert disk.read_bytes()[: 1 << 20] == before  # not one byte written
        else:
            assert (
                "edgekit-installer: install.wipe is set: erasing /dev/vda (it holds partitions)"
                in log
            ), log
            assert f"edgekit-installer: installed {IMAGE_REF} onto /dev/vda as slot A" in log
            assert "edgekit-installer: install.reboot: rebooting" in log, log
            assert "edgekit-init: hooks done" not in log  # rebooted from the installer hook
            assert [name for name, _ in _partitions(disk)] == [
                "bios", "efi", "oem", "state", "persistent"
            ]  # fmt: skip
