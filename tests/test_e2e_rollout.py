"""Issue 12 end to end (QEMU, TCG): three real hosts (the sample OS installed on disks, the
real agent) in three single-node clusters of a real hub, a docker-registry on 127.0.0.1
(10.0.2.2 in the guests, through the site's registry mirror). A roll-out to the profile
whose OS pack changes (a repave) runs a canary wave of one cluster, a soak, then the other
two; every assertion on order and outcome comes from the hub's own records (its event
stream and the roll-out's transitions), the serial consoles only show the slot booted.

The clusters run a release-channel tag, ``.../edgekit/sample:stable``, which the test moves
from v1 to v2 before the roll-out; hosts pull it only when their wave updates them. (A
roll-out can instead name the new image, ``providerImage``: tests/test_rollouts_images.py.)
The canary boots with UEFI and the other two with BIOS, so the A/B switch runs on both.

Wall time is kept low by installing once and copying the installed disk (before its first
boot, so no host identity is on it) for the other two hosts, which differ by SMBIOS UUID.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from edgekit_iso.siteiso import write_site_iso
from edgekit_oras.testing import RegistryServer
from qemu_hosts import build_installer, copy_disk, push_as, site_user_data, wait_all

from edgekit import model
from edgekit.hub import HubClient, HubServer
from edgekit.hub.status import HostStatus
from edgekit.model.selectors import Selector
from edgekit.testing import UpgradableImages
from edgekit.vm import VirtualMachine, create_disk

pytestmark = pytest.mark.qemu

SITE = "store-e2e"
#: cluster -> the SMBIOS UUID of its one host; the first is the canary.
HOSTS = {f"store-e2e-0{i}": f"7d1c0c9a-1b2d-4c61-9a0e-000000e2e00{i}" for i in (1, 2, 3)}
CANARY = "store-e2e-01"
REST = ("store-e2e-02", "store-e2e-03")
K8S = model.Pack.k8s("k3s", "1.30.4")
#: The OS pack's ``system.*`` values change: the profile diff makes the update a repave.
V1 = model.ClusterProfile(
    "retail", "1.0.0", (model.Pack.os("sample", "12", values={"system": {"tag": "v1"}}), K8S)
)
V2 = model.ClusterProfile(
    "retail", "2.0.0", (model.Pack.os("sample", "12", values={"system": {"tag": "v2"}}), K8S)
)
KERNEL_ARGS = (
    "edgekit.agent.poll=1 edgekit.agent.timeout=120 edgekit.agent.watch=forever "
    "edgekit.agent.confirm_within=300"
)
WATCHING = "edgekit-agent: watching the desired state"
CONFIRMED = "edgekit-agent: slot B confirmed healthy: it is the active slot now"


def member(admin: HubClient, cluster: str) -> HostStatus:
    [m] = admin.clusters.status(cluster).hosts
    return m


def when(value: Any) -> float:
    """A record's time (a datetime or the API's RFC 3339 text) as a POSIX timestamp."""
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def test_a_canary_wave_really_repaves_one_host_then_the_rest(
    upgradable_images: UpgradableImages, tmp_path: Path
) -> None:
    images = upgradable_images
    test_started = time.monotonic()
    installer = build_installer(images, tmp_path / "installer.iso")
    with (
        RegistryServer("plain", workdir=tmp_path / "registry") as registry,
        HubServer(tmp_path / "hub.db", access_log=False, rollout_interval=0.5) as hub,
        ExitStack() as vms,
    ):
        channel = push_as(images.v1, f"{registry.host}/edgekit/sample:stable")
        admin = hub.client()
        admin.profiles.publish(V1)
        admin.profiles.publish(V2)
        token = admin.tokens.create("e2e", site=SITE, expires_in="2h")
        assert token.secret is not None
        site_iso = write_site_iso(
            tmp_path / "site.iso",
            user_data=site_user_data(
                hub_port=hub.port,
                token=token.secret.reveal(),
                site=SITE,
                registry=registry.host,
                kernel_args=KERNEL_ARGS,
            ),
        ).path

        # Install once; the other two hosts get copies of the installed disk.
        first = create_disk(tmp_path / f"{CANARY}.raw", size_mib=2048)
        with VirtualMachine(
            iso=installer, cdroms=[site_iso], disks=[first], uuid=HOSTS[CANARY],
            serial_log=tmp_path / "install.log",
        ) as vm:  # fmt: skip
            log = vm.wait_exit(timeout=900)
        assert "edgekit-installer: installed" in log, log
        assert list(admin.hosts.search()) == []  # the installer registered nothing
        disks = {CANARY: first}
        for name in REST:
            disks[name] = copy_disk(first, tmp_path / f"{name}.raw")

        def boot(name: str, n: int) -> VirtualMachine:
            # The canary boots with UEFI (OVMF), the others with BIOS: the installed disk
            # boots on both, and the A/B switch (grubenv's try count, saved by GRUB on the
            # ESP) is exercised on each firmware.
            vm = VirtualMachine(
                disk=disks[name],
                uuid=HOSTS[name],
                firmware="uefi" if name == CANARY else "bios",
                serial_log=tmp_path / f"{name}-boot{n}.log",
            )
            return vms.enter_context(vm)

        # Boot 1 of each: v1 in slot A registers; each host joins its own cluster.
        first_boot = {name: boot(name, 1) for name in HOSTS}
        wait_all(
            list(first_boot.values()),
            lambda vm: "edgekit-agent: registered uid=" in vm.text(),
            timeout=600,
            what="three registrations",
        )
        for name, uid in HOSTS.items():
            assert f"registered uid={uid} site={SITE}" in first_boot[name].text()
            admin.clusters.create(
                model.Cluster.single_node(name, V1.ref, uid),
                provider_image=channel,
                labels={"e2e": "rollout"},
            )
        wait_all(
            list(first_boot.values()),
            lambda vm: WATCHING in vm.text(),
            timeout=300,
            what="three hosts watching",
        )
        for name, vm in first_boot.items():
            assert f"running slot A: image v1 version v1 {images.v1.digest}" in vm.text()
            m = member(admin, name)
            assert (m.observed_generation, m.phase) == (1, "healthy"), (name, m)
            assert m.image_digest == images.v1.digest, (name, m)  # the join says what runs
        booted = time.monotonic()

        # The channel moves to v2; the roll-out takes the canary, soaks, then the rest.
        push_as(images.v2, channel)
        since = admin.events.revision()
        handle = admin.rollouts.create(
            model.Rollout(
                "retail-2.0.0",
                V2.ref,
                Selector(tags={"e2e": "rollout"}),
                waves=(model.Wave("canary", clusters=(CANARY,)), model.Wave("rest")),
                max_unavailable=1,
                gate=model.HealthGate(soak="10s", timeout="20m", unreachable_after="10m"),
                on_failure=model.OnFailure.PAUSE,
            )
        )
        rollout_started = time.monotonic()

        # The canary pulls v2, writes slot B and reboots (QEMU's -no-reboot ends its VM) ...
        log = first_boot[CANARY].wait_exit(timeout=900)
        for phase in ("downloading", "applying", "rebooting"):
            assert f"edgekit-agent: phase {phase} generation=2 reported" in log, log
        assert "edgekit-agent: writing slot B (as slots/.B.new)" in log, log
        assert all(first_boot[n].running for n in REST)  # not theirs yet: still up on v1
        # ... and its next boot is the tentative slot B, which confirms itself healthy.
        canary = boot(CANARY, 2)
        log = canary.wait_for(CONFIRMED, timeout=600)
        assert "Booting `edgekit (slot B)'" in log, log
        assert "(edgekit sample OS 12 v2 (demos and tests only" in log, log
        canary_s = time.monotonic() - rollout_started

        # The rest wave: both remaining hosts repave (one host per cluster, both at once).
        for name in REST:
            log = first_boot[name].wait_exit(timeout=900)
            assert "edgekit-agent: writing slot B (as slots/.B.new)" in log, log
        rest = [boot(name, 2) for name in REST]
        wait_all(rest, lambda vm: CONFIRMED in vm.text(), timeout=600, what="two confirmations")
        for vm in rest:
            assert "Booting `edgekit (slot B)'" in vm.text()
        status = handle.wait(timeout=300)
        rollout_s = time.monotonic() - rollout_started
        assert status.state == "completed", status
        secret = token.secret.reveal()
        for vm in (*first_boot.values(), canary, *rest):
            assert secret not in vm.text()

        # From the hub's records: every host healthy at generation 2 on v2's digest.
        for name in HOSTS:
            m = member(admin, name)
            assert (m.observed_generation, m.phase, m.image_digest) == (
                2,
                "healthy",
                images.v2.digest,
            ), (name, m)
            assert admin.clusters.get(name).spec["profile"] == {
                "name": "retail",
                "version": "2.0.0",
            }
        events = list(admin.events.list(since, kinds=["host"]).events)
        report = handle.report()

    def phases(uid: str) -> list[tuple[str, float]]:
        """A host's reported phases at generation 2, in order, with the hub's time (a
        confirmed repave is handled: no phase after its ``healthy``, so no soak reset)."""
        out: list[tuple[str, float]] = []
        for e in events:
            if e.uid == uid and e.data.get("observedGeneration") == 2:
                phase = str(e.data.get("phase"))
                if not out or out[-1][0] != phase:
                    out.append((phase, when(e.time)))
        return out

    kinds = [(t["type"], t["wave"], t["cluster"]) for t in status.transitions]
    times = {(t["type"], t["wave"], t["cluster"]): when(t["time"]) for t in status.transitions}
    started = {w: times[("wave-started", w, None)] for w in (0, 1)}
    # The canary went through every phase of a repave and was healthy at generation 2 ...
    canary_phases = phases(HOSTS[CANARY])
    assert [p for p, _ in canary_phases] == ["downloading", "applying", "rebooting", "healthy"]
    canary_healthy = canary_phases[-1][1]
    # ... converged, soaked and passed before the second wave started ...
    assert started[0] <= canary_phases[0][1]  # (the hub's times are whole seconds)
    assert times[("cluster-converged", 0, CANARY)] >= canary_healthy
    assert times[("soak-started", 0, None)] >= canary_healthy
    assert times[("wave-passed", 0, None)] - times[("soak-started", 0, None)] >= 10 - 1
    assert times[("wave-passed", 0, None)] <= started[1]
    # ... and the other two hosts only began downloading after that.
    for name in REST:
        rest_phases = phases(HOSTS[name])
        assert [p for p, _ in rest_phases] == ["downloading", "applying", "rebooting", "healthy"]
        assert rest_phases[0][1] >= started[1] > canary_healthy
        assert times[("cluster-converged", 1, name)] >= rest_phases[-1][1]
    assert [k for k in kinds if k[0] in ("wave-started", "wave-passed", "completed")] == [
        ("wave-started", 0, None),
        ("wave-passed", 0, None),
        ("wave-started", 1, None),
        ("wave-passed", 1, None),
        ("completed", 1, None),
    ]
    assert not [k for k in kinds if k[0] in ("cluster-failed", "paused", "soak-reset")]
    assert [(w.name, w.state, w.clusters) for w in status.waves] == [
        ("canary", "passed", 1),
        ("rest", "passed", 2),
    ]
    # The report lists every cluster with its from/to version, generations and timings.
    rows = {c.name: c for c in report.status.clusters}
    assert sorted(rows) == sorted(HOSTS)
    for name, c in rows.items():
        assert (c.wave, c.state) == ("canary" if name == CANARY else "rest", "converged")
        assert (c.from_version, c.to_version) == ("retail@1.0.0", "retail@2.0.0")
        assert (c.from_generation, c.to_generation) == (1, 2)
        assert c.seconds is not None
        assert c.seconds > 0
    table = str(report)
    for name in HOSTS:
        assert name in table
    print(
        f"\ninstall + three boots {booted - test_started:.0f} s; canary confirmed "
        f"{canary_s:.0f} s and roll-out completed {rollout_s:.0f} s after its creation; "
        f"whole test {time.monotonic() - test_started:.0f} s (TCG)"
    )
