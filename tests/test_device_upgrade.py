"""Issue 11 on a real installed disk (QEMU, TCG): the real sample OS, agent, hub and a
docker-registry on 127.0.0.1 (10.0.2.2 in the guest, through the site's registry mirror).

One disk goes v1 -> v2 (repave: pulled, written to slot B, tentative, confirmed healthy),
then v2 -> v3 with QEMU killed while slot A is being written (the disk still boots v2,
which pulls and writes v3 again), then v3 (broken: its kernel panics) uses up its three
tries and GRUB falls back to v2, whose agent reports ``rolled-back`` with the reason. Every
report carries the observed generation and the digest of the image actually running.
QEMU runs with -no-reboot, so each reboot ends one VirtualMachine and the test starts the
next boot of the same disk.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import qemu_hosts
from edgekit_iso.siteiso import write_site_iso
from edgekit_oras.testing import RegistryServer

from edgekit import model
from edgekit.hub import HubClient, HubServer
from edgekit.hub.status import HostStatus
from edgekit.testing import UpgradableImages
from edgekit.vm import VirtualMachine, create_disk

pytestmark = pytest.mark.qemu

UUID = "7d1c0c9a-1b2d-4c61-9a0e-0000000b0b02"
SITE = "store-upgrade-01"
PROFILE = model.ClusterProfile(
    "retail", "1.0.0", (model.Pack.os("sample", "12"), model.Pack.k8s("k3s", "1.30.4"))
)
KERNEL_ARGS = (
    "edgekit.agent.poll=1 edgekit.agent.timeout=120 edgekit.agent.watch=900 "
    "edgekit.agent.confirm_within=300"
)


def site_user_data(hub_port: int, token: str, registry: str) -> str:
    return qemu_hosts.site_user_data(
        hub_port=hub_port, token=token, site=SITE, registry=registry, kernel_args=KERNEL_ARGS
    )


@pytest.fixture(scope="module")
def installer(
    upgradable_images: UpgradableImages, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The installer ISO of image v1 (its kernel, initrd and OCI layout) with the agent."""
    work = tmp_path_factory.mktemp("upgrade-installer")
    return qemu_hosts.build_installer(upgradable_images, work / "installer.iso")


def boot(disk: Path, log: Path) -> VirtualMachine:
    return VirtualMachine(disk=disk, uuid=UUID, serial_log=log)


def member(admin: HubClient) -> HostStatus:
    [m] = admin.clusters.status(SITE).hosts
    return m


def test_repave_kill_mid_write_and_rollback(
    installer: Path, upgradable_images: UpgradableImages, tmp_path: Path
) -> None:
    images = upgradable_images
    with (
        RegistryServer("plain", workdir=tmp_path / "registry") as registry,
        HubServer(tmp_path / "hub.db", access_log=False) as hub,
    ):
        refs = {i.version: i.push(registry.host) for i in (images.v1, images.v2, images.v3)}
        admin = hub.client()
        admin.profiles.publish(PROFILE)
        token = admin.tokens.create("upgrade", site=SITE, expires_in="1h")
        assert token.secret is not None
        site_iso = write_site_iso(
            tmp_path / "site.iso",
            user_data=site_user_data(hub.port, token.secret.reveal(), registry.host),
        ).path
        disk = create_disk(tmp_path / "disk.raw", size_mib=2048)
        with VirtualMachine(
            iso=installer, cdroms=[site_iso], disks=[disk], uuid=UUID,
            serial_log=tmp_path / "install.log",
        ) as vm:  # fmt: skip
            log = vm.wait_exit(timeout=900)
        assert "edgekit-installer: installed" in log, log

        # Boot 1: v1 in slot A registers, is assigned, and is told to run v2.
        with boot(disk, tmp_path / "boot1.log") as vm:
            vm.wait_for(f"edgekit-agent: registered uid={UUID} site={SITE}", timeout=600)
            log = vm.text()
            assert "edgekit-agent: running slot A: image " in log, log
            assert f"version v1 {images.v1.digest}" in log, log
            admin.clusters.create(
                model.Cluster.single_node(SITE, PROFILE.ref, UUID), provider_image=refs["v1"]
            )
            vm.wait_for("edgekit-agent: watching the desired state", timeout=300)
            started = time.monotonic()
            assert admin.clusters.update(SITE, provider_image=refs["v2"]).generation == 2
            log = vm.wait_exit(timeout=900)
        repave_s = time.monotonic() - started
        for phase in ("downloading", "applying", "rebooting"):
            assert f"edgekit-agent: phase {phase} generation=2 reported" in log, log
        assert f"via mirror http://10.0.2.2:{registry.port}" in log, log
        assert "edgekit-agent: writing slot B (as slots/.B.new)" in log, log

        # Boot 2: slot B (v2) is tentative, confirms itself healthy, becomes active.
        with boot(disk, tmp_path / "boot2.log") as vm:
            log = vm.wait_for("edgekit-agent: watching the desired state", timeout=600)
            confirmed_s = time.monotonic() - started
            assert "Booting `edgekit (slot B)'" in log, log
            assert "edgekit-agent: slot B is tentative (2 boots left after this one)" in log, log
            assert "(edgekit sample OS 12 v2 (demos and tests only" in log, log
            assert (
                "edgekit-agent: slot B confirmed healthy: it is the active slot now "
                f"(image {images.v2.digest})" in log
            ), log
            m = member(admin)
            assert (m.observed_generation, m.phase, m.image_digest) == (
                2,
                "healthy",
                images.v2.digest,
            )

            # v2 -> v3; QEMU is killed while the passive slot A is being written.
            assert admin.clusters.update(SITE, provider_image=refs["v3"]).generation == 3
            vm.wait_for("edgekit-agent: writing slot A (as slots/.A.new)", timeout=900)
        # (leaving the block killed QEMU: a power cut in the middle of the write)

        # Boot 3: still v2 from slot B; the agent applies generation 3 again: v3 to slot A.
        with boot(disk, tmp_path / "boot3.log") as vm:
            log = vm.wait_exit(timeout=900)
        assert "Booting `edgekit (slot B)'" in log, log
        assert f"running slot B: image {refs['v2']} version v2 {images.v2.digest}" in log, log
        assert "edgekit-agent: phase rebooting generation=3 reported" in log, log

        # Boots 4-6: v3's kernel panics three times (GRUB counts its tries down) ...
        rolled = time.monotonic()
        for n in (4, 5, 6):
            with boot(disk, tmp_path / f"boot{n}.log") as vm:
                log = vm.wait_exit(timeout=600)
            assert "Booting `edgekit (slot A)'" in log, log
            assert "this is the broken sample image v3" in log, log
            assert "Kernel panic" in log, log
        # ... and boot 7: GRUB falls back to slot B, whose agent reports the rollback.
        with boot(disk, tmp_path / "boot7.log") as vm:
            log = vm.wait_for("edgekit-agent: watching the desired state", timeout=600)
        rollback_s = time.monotonic() - rolled
        assert "Booting `edgekit (slot B)'" in log, log
        assert "edgekit.fallback=A" in log, log
        assert "edgekit-agent: rolled back to slot B (v2 " in log, log
        m = member(admin)
        assert (m.observed_generation, m.phase, m.image_digest) == (
            3,
            "rolled-back",
            images.v2.digest,
        )
        assert m.message is not None
        assert "did not confirm its health within 3 boots" in m.message
        assert images.v3.digest in m.message
        assert token.secret.reveal() not in log
    print(f"\nrepave v1->v2 {repave_s:.0f} s to reboot, {confirmed_s:.0f} s to confirmed; "
          f"rollback from v3 {rollback_s:.0f} s (TCG)")  # fmt: skip
