"""Issue 11 item 4 (second half) on a real installed disk (QEMU, TCG, BIOS): an airgapped
host upgrades from a bundle on a FAT stick.

v1 is installed from the installer ISO and a site ISO; the disk's first boot registers and
is assigned (generation 1). The cluster is then updated to v2 on the hub, the hub is
stopped, and ``edgekit hub upgrade-bundle`` writes the host's bundle (the v2 image pulled
from a real docker-registry as an OCI layout), copied onto a FAT image labelled
EDGEKIT-UPG with mtools. Booted with the stick and no hub, the host checks the bundle,
writes v2 into slot B from the stick and reboots; slot B confirms itself by its health
checks with the hub still unreachable (the stick is now an old generation and refused).
When the hub is back on the same port, the host reports the phases it kept and the hub
has generation 2 ``healthy`` with v2's digest. Another host's stick is refused in
tests/test_device_airgap.py (busybox, no QEMU)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from cli_runner import edgekit
from edgekit_agent.plugin import edgekit_installer_payload_files
from edgekit_iso.build import build_installer_iso
from edgekit_iso.siteiso import write_site_iso
from edgekit_iso.spec import BootMenu, InstallerIsoSpec
from edgekit_oras.testing import RegistryServer

from edgekit import model
from edgekit.hub import HubServer
from edgekit.testing import UpgradableImages
from edgekit.vm import VirtualMachine, create_disk

pytestmark = pytest.mark.qemu

UUID = "7d1c0c9a-1b2d-4c61-9a0e-0000000a1a01"
SITE = "mine-airgap-01"
PROFILE = model.ClusterProfile(
    "retail", "1.0.0", (model.Pack.os("sample", "12"), model.Pack.k8s("k3s", "1.30.4"))
)
KERNEL_ARGS = (
    "edgekit.agent.poll=1 edgekit.agent.timeout=60 edgekit.agent.watch=600 "
    "edgekit.agent.max_backoff=4 edgekit.agent.confirm_within=300"
)


def fat_stick(path: Path, bundle_dir: Path) -> Path:
    """A 64 MiB FAT image labelled EDGEKIT-UPG holding ``bundle_dir/edgekit-upgrade``."""
    subprocess.run(
        ["mkfs.vfat", "-C", "-n", "EDGEKIT-UPG", str(path), "65536"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    subprocess.run(
        ["mcopy", "-s", "-i", str(path), str(bundle_dir / "edgekit-upgrade"), "::/"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return path


def test_an_airgapped_host_upgrades_from_a_stick_and_reports_when_the_hub_is_back(
    upgradable_images: UpgradableImages, tmp_path: Path
) -> None:
    images = upgradable_images
    payload = edgekit_installer_payload_files(iso_name="installer")
    installer = build_installer_iso(
        InstallerIsoSpec.from_image_tree(
            images.sample_os,
            "#cloud-config\ninstall:\n  poweroff: true\n",
            oci_layout_dir=images.v1.layout,
            installer_files={inner: Path(host) for inner, host in payload.items()},
            boot_menu=BootMenu(timeout_s=0),
        ),
        tmp_path / "installer.iso",
        backend="xorriso",
    ).path
    db = tmp_path / "hub.db"
    with RegistryServer("plain", workdir=tmp_path / "registry") as registry:
        refs = {i.version: i.push(registry.host) for i in (images.v1, images.v2)}
        with HubServer(db, access_log=False) as hub:
            port = hub.port
            admin = hub.client()
            admin.profiles.publish(PROFILE)
            token = admin.tokens.create("airgap", site=SITE, expires_in="1h")
            assert token.secret is not None
            secret = token.secret.reveal()
            user_data = (
                f"#cloud-config\nstylus:\n  site:\n    paletteEndpoint: http://10.0.2.2:{port}\n"
                f"    edgeHostToken: {secret}\n    name: {SITE}\n"
                f"install:\n  poweroff: true\n  grub_options:\n    extra_cmdline: {KERNEL_ARGS}\n"
            )
            site_iso = write_site_iso(tmp_path / "site.iso", user_data=user_data).path
            disk = create_disk(tmp_path / "disk.raw", size_mib=2048)
            with VirtualMachine(
                iso=installer, cdroms=[site_iso], disks=[disk], uuid=UUID,
                serial_log=tmp_path / "install.log",
            ) as vm:  # fmt: skip
                log = vm.wait_exit(timeout=900)
            assert "edgekit-installer: installed" in log, log
            with VirtualMachine(disk=disk, uuid=UUID, serial_log=tmp_path / "boot1.log") as vm:
                vm.wait_for(f"edgekit-agent: registered uid={UUID} site={SITE}", timeout=600)
                admin.clusters.create(
                    model.Cluster.single_node(SITE, PROFILE.ref, UUID), provider_image=refs["v1"]
                )
                vm.wait_for("edgekit-agent: status reported: applied generation=1", timeout=300)
            # The site loses its link; the hub moves the cluster on to v2.
            assert admin.clusters.update(SITE, provider_image=refs["v2"]).generation == 2
        # The hub is stopped. Its operator writes the host's bundle onto a stick.
        out = tmp_path / "bundle"
        cli = edgekit(
            "hub", "upgrade-bundle", UUID, "--out", str(out), "--db", str(db), "--plain-http",
            env={"COLUMNS": "200"}, timeout=300,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
    # (the registry is gone too: the host has the stick and nothing else)
    stick = fat_stick(tmp_path / "stick.img", out)

    # Boot 2: slot A (v1), no hub: the bundle is checked and v2 written into slot B.
    started = time.monotonic()
    with VirtualMachine(
        disk=disk, disks=[stick], uuid=UUID, serial_log=tmp_path / "boot2.log"
    ) as vm:
        log = vm.wait_exit(timeout=900)
    upgrade_s = time.monotonic() - started
    assert "Booting `edgekit (slot A)'" in log, log
    assert "edgekit-agent: hub unreachable: running offline" in log, log
    assert (
        f"edgekit-agent: upgrade bundle accepted: edgekit-upgrade-{UUID}.json generation 2, "
        f"image {images.v2.digest} (EDGEKIT-UPG, /dev/" in log
    ), log
    assert "edgekit-agent: writing slot B (as slots/.B.new)" in log, log
    for phase in ("downloading", "applying", "rebooting"):
        assert f"edgekit-agent: phase {phase} generation=2 recorded (hub unreachable" in log, log

    # Boot 3: slot B (v2) is tentative and confirms itself; the stick is an old generation.
    with VirtualMachine(
        disk=disk, disks=[stick], uuid=UUID, serial_log=tmp_path / "boot3.log"
    ) as vm:
        log = vm.wait_for("edgekit-agent: slot B confirmed healthy", timeout=600)
        confirmed_s = time.monotonic() - started
        assert "Booting `edgekit (slot B)'" in log, log
        assert "(edgekit sample OS 12 v2 (demos and tests only" in log, log
        assert "edgekit-agent: slot B is tentative (2 boots left after this one)" in log, log
        assert f"it is the active slot now (image {images.v2.digest})" in log, log
        # Offline, it runs the bundle's assignment (kept on COS_PERSISTENT) and image.
        assert (
            f"running offline with the last applied state (cluster={SITE} role=control-plane "
            f"generation=2, image v2 {images.v2.digest})" in log
        ), log
        log = vm.wait_for("carries generation 2, but 2 is applied", timeout=120)
        assert "edgekit-agent: upgrade bundle refused: " in log, log
        # The hub is back (the same database and port): the kept phases reach it.
        with HubServer(db, port=port, access_log=False) as hub:
            log = vm.wait_for("phases recorded while the hub was unreachable", timeout=180)
            log = vm.wait_for("phase healthy generation=2 reported: back online", timeout=120)
            admin = hub.client()
            assert [h.uid for h in admin.hosts.search()] == [UUID]
            [m] = admin.clusters.status(SITE).hosts
            assert (m.observed_generation, m.phase, m.image_digest) == (
                2,
                "healthy",
                images.v2.digest,
            )
    assert "edgekit-agent: reported 4 phases recorded while the hub was unreachable" in log, log
    assert secret not in log
    print(f"\nairgap upgrade v1->v2 from a stick: {upgrade_s:.0f} s to the reboot, "
          f"{confirmed_s:.0f} s to confirmed (TCG)")  # fmt: skip
