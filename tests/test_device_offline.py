"""Issue 11 item 4 (first half) on a real installed disk (QEMU, TCG, UEFI): with the hub
stopped, the host boots into its applied image (slot A, from the disk alone) and role (kept
on COS_PERSISTENT), retries with a bounded backoff past its timeout, and once the hub is
back (the same database, the same port) registers with its kept credential and reports."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from edgekit_agent.plugin import edgekit_installer_payload_files
from edgekit_iso.build import build_installer_iso
from edgekit_iso.siteiso import write_site_iso
from edgekit_iso.spec import BootMenu, InstallerIsoSpec

from edgekit import model
from edgekit.hub import HubServer
from edgekit.testing import UpgradableImages
from edgekit.vm import VirtualMachine, create_disk

pytestmark = pytest.mark.qemu

UUID = "7d1c0c9a-1b2d-4c61-9a0e-00000000ff11"
SITE = "store-offline-01"
PROFILE = model.ClusterProfile(
    "retail", "1.0.0", (model.Pack.os("sample", "12"), model.Pack.k8s("k3s", "1.30.4"))
)
#: A short timeout and backoff cap: the offline boot must retry past the one, capped by the
#: other.
KERNEL_ARGS = (
    "edgekit.agent.poll=1 edgekit.agent.timeout=40 edgekit.agent.watch=600 "
    "edgekit.agent.max_backoff=4"
)


def test_offline_boot_keeps_its_image_and_role_and_reports_when_the_hub_is_back(
    upgradable_images: UpgradableImages, tmp_path: Path
) -> None:
    payload = edgekit_installer_payload_files(iso_name="installer")
    installer = build_installer_iso(
        InstallerIsoSpec.from_image_tree(
            upgradable_images.sample_os,
            "#cloud-config\ninstall:\n  poweroff: true\n",
            oci_layout_dir=upgradable_images.v1.layout,
            installer_files={inner: Path(host) for inner, host in payload.items()},
            boot_menu=BootMenu(timeout_s=0),
        ),
        tmp_path / "installer.iso",
        backend="xorriso",
    ).path
    db = tmp_path / "hub.db"
    with HubServer(db, access_log=False) as hub:
        port = hub.port
        admin = hub.client()
        admin.profiles.publish(PROFILE)
        token = admin.tokens.create("offline", site=SITE, expires_in="1h")
        assert token.secret is not None
        user_data = (
            f"#cloud-config\nstylus:\n  site:\n    paletteEndpoint: http://10.0.2.2:{port}\n"
            f"    edgeHostToken: {token.secret.reveal()}\n    name: {SITE}\n"
            f"install:\n  poweroff: true\n  grub_options:\n    extra_cmdline: {KERNEL_ARGS}\n"
        )
        site_iso = write_site_iso(tmp_path / "site.iso", user_data=user_data).path
        disk = create_disk(tmp_path / "disk.raw", size_mib=2048)
        with VirtualMachine(
            iso=installer, cdroms=[site_iso], disks=[disk], uuid=UUID, firmware="uefi",
            serial_log=tmp_path / "install.log",
        ) as vm:  # fmt: skip
            log = vm.wait_exit(timeout=900)
        assert "edgekit-installer: installed" in log, log
        with VirtualMachine(
            disk=disk, uuid=UUID, firmware="uefi", serial_log=tmp_path / "boot1.log"
        ) as vm:
            vm.wait_for(f"edgekit-agent: registered uid={UUID} site={SITE}", timeout=600)
            admin.clusters.create(
                model.Cluster.single_node(SITE, PROFILE.ref, UUID), provider_image="sample:v1"
            )
            vm.wait_for("edgekit-agent: status reported: applied generation=1", timeout=300)
    # The hub is stopped. The disk boots alone into slot A and its kept assignment.
    with VirtualMachine(
        disk=disk, uuid=UUID, firmware="uefi", serial_log=tmp_path / "boot2.log"
    ) as vm:
        log = vm.wait_for("edgekit-agent: hub unreachable: running offline", timeout=600)
        assert "Booting `edgekit (slot A)'" in log, log
        offline = re.search(r"running offline with the last applied state \((.*)\)", log)
        assert offline is not None, log
        assert offline.group(1).startswith(
            f"cluster={SITE} role=control-plane generation=1, image v1 "
            f"{upgradable_images.v1.digest}"
        ), log
        started = time.monotonic()
        # Past edgekit.agent.timeout=40 it still retries, at most 4 s apart.
        vm.wait_for(lambda text: time.monotonic() - started > 60, timeout=120)
        log = vm.text()
        delays = [
            int(d) for d in re.findall(r"not ready \(attempt \d+: .*\); retrying in (\d+)s", log)
        ]
        assert delays[:3] == [1, 2, 4], log
        assert set(delays[3:]) == {4}, log
        assert "error: cannot reach the hub" not in log, log
        with HubServer(db, port=port, access_log=False) as hub:
            log = vm.wait_for("edgekit-agent: the hub is reachable again after", timeout=120)
            log = vm.wait_for("phase healthy generation=1 reported: back online", timeout=120)
            assert f"edgekit-agent: registered uid={UUID} site={SITE}" in log, log
            admin = hub.client()
            assert [h.uid for h in admin.hosts.search()] == [UUID]  # the same row
            [m] = admin.clusters.status(SITE).hosts
            assert (m.observed_generation, m.phase) == (1, "healthy")
            assert m.image_digest == upgradable_images.v1.digest
            assert token.secret.reveal() not in log
