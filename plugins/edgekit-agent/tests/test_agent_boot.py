"""Boot the sample OS with the agent in QEMU (TCG) against a real hub on 127.0.0.1.

QEMU's user networking maps 10.0.2.2 to the host's 127.0.0.1, so the user-data on the site
ISO names ``http://10.0.2.2:<port>``. Every boot is bounded and QEMU is always killed.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_boot_support import CACHE, Boot, FlakyFront, agent_initrd, site_user_data
from edgekit_iso.siteiso import write_site_iso
from edgekit_oci.sampleos import SampleOsInfo, assemble_sample_os

from edgekit import model
from edgekit.hub import HubClient, HubServer
from edgekit.hub.airgap import import_registrations
from edgekit.hub.store import HubStore

RETAIL = model.ClusterProfile(
    "retail", "1.2.0", (model.Pack.os("ubuntu", "22.04"), model.Pack.k8s("k3s", "1.30.4"))
)

pytestmark = pytest.mark.qemu

HOST_UUID = "5e1f0c9a-7b2d-4c61-9a0e-1d2c3b4a5f60"
SITE = "store-042"


@pytest.fixture(scope="module")
def sample_os(tmp_path_factory: pytest.TempPathFactory) -> SampleOsInfo:
    root = tmp_path_factory.mktemp("sampleos") / "root"
    return assemble_sample_os(root, cache_dir=CACHE / "debs")


@pytest.fixture(scope="module")
def initrd(sample_os: SampleOsInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return agent_initrd(sample_os.initrd, tmp_path_factory.mktemp("initrd") / "initrd")


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with HubServer(access_log=False) as server:
        yield server


def _site_iso(tmp_path: Path, hub: HubServer, token: str) -> Path:
    text = site_user_data(
        f"http://10.0.2.2:{hub.port}", token, SITE, {"city": "chicago", "building": "b 1"}
    )
    return write_site_iso(tmp_path / "site.iso", user_data=text).path


def test_registers_and_receives_its_cluster_assignment(
    sample_os: SampleOsInfo, initrd: Path, hub: HubServer, tmp_path: Path
) -> None:
    admin: HubClient = hub.client()
    token = admin.tokens.create("store-042", site=SITE, max_hosts=1)
    assert token.secret is not None
    iso = _site_iso(tmp_path, hub, token.secret.reveal())
    boot = Boot(
        tmp_path / "serial.log",
        kernel=sample_os.kernel,
        initrd=initrd,
        append="edgekit.agent.poll=1 edgekit.agent.timeout=150",
        cdroms=[iso],
        uuid=HOST_UUID,
    )
    try:
        boot.wait_for(lambda: bool(admin.hosts.search(site=SITE)), 180, "the host to register")
        (host,) = admin.hosts.search(site=SITE)
        assert host.uid == HOST_UUID
        assert host.site == SITE
        assert host.tags == {"city": "chicago", "building": "b 1"}
        assert host.address == "10.0.2.15"
        assert host.mac is not None
        assert host.mac.startswith("52:54:00:")
        assert host.arch == "amd64"
        assert host.agent_version == "0.1.0"
        cluster = model.Cluster(
            name="store-042-edge",
            profile=model.ProfileRef("retail", "1.2.0"),
            control_plane=model.Pool("cp", (model.PoolHost(host.uid),)),
        )
        admin.profiles.publish(RETAIL)  # a cluster references a published profile version
        admin.clusters.create(cluster, provider_image="registry.example.com/edge/os:k3s-1.30.4")
        log = boot.finish(timeout=120)
    finally:
        boot.kill()
    token_text = token.secret.reveal()
    assert f"edgekit-agent: registered uid={HOST_UUID} site={SITE}" in log, log
    assert (
        "edgekit-agent: assigned cluster=store-042-edge role=control-plane "
        "image=registry.example.com/edge/os:k3s-1.30.4"
    ) in log, log
    assert "edgekit-agent: status reported: applied generation=1" in log, log
    assert "edgekit-init: 60-edgekit-agent exited 0" in log, log
    assert "state-dir: assignment.env credential endpoint host-uid" in log, log
    assert "mode: 600 /var/lib/edgekit/credential" in log, log
    assert "assignment: ROLE=control-plane" in log, log
    assert token_text not in log
    assert "ekh_" not in log  # the credential is never printed
    done = admin.hosts.get(HOST_UUID)
    assert done.state == "in_use"
    assert done.applied is not None
    assert done.applied["state"] == "applied"
    assert done.applied["providerImage"] == "registry.example.com/edge/os:k3s-1.30.4"


def test_wrong_token_prints_an_error_and_stores_nothing(
    sample_os: SampleOsInfo, initrd: Path, hub: HubServer, tmp_path: Path
) -> None:
    admin = hub.client()
    admin.tokens.create("store-042", site=SITE)
    iso = _site_iso(tmp_path, hub, "ekt_not-the-real-token")
    boot = Boot(
        tmp_path / "serial.log",
        kernel=sample_os.kernel,
        initrd=initrd,
        append="edgekit.agent.timeout=60",
        cdroms=[iso],
        uuid=HOST_UUID,
    )
    log = boot.finish(timeout=150)
    assert (
        "edgekit-agent: error: registration refused: the hub does not know the registration "
        "token (401 Unauthorized)"
    ) in log, log
    assert "edgekit-init: 60-edgekit-agent exited 1" in log, log
    assert "state-dir: \n" in log or "state-dir: \r\n" in log, log
    assert "ekt_not-the-real-token" not in log
    assert admin.hosts.search() == []


def test_installer_payload_runs_the_agent_with_the_site_iso_user_data(
    sample_os: SampleOsInfo, hub: HubServer, tmp_path: Path
) -> None:
    """The plugin's payload files in a real installer ISO: the installer hook picks the
    site ISO's user-data (the installer's own carries a decoy token), the agent reuses it."""
    from edgekit_agent.plugin import edgekit_installer_payload_files
    from edgekit_iso.build import build_installer_iso
    from edgekit_iso.spec import BootMenu, InstallerIsoSpec

    admin = hub.client()
    token = admin.tokens.create("store-042", site=SITE)
    assert token.secret is not None
    decoy = site_user_data(f"http://10.0.2.2:{hub.port}", "ekt_decoy", SITE, {"from": "iso"})
    payload = edgekit_installer_payload_files(iso_name="installer")
    spec = InstallerIsoSpec.from_image_tree(
        sample_os.root,
        decoy,
        installer_files={inner: Path(host) for inner, host in payload.items()},
        boot_menu=BootMenu(timeout_s=0, extra_cmdline="edgekit.agent.poll=1"),
    )
    installer = build_installer_iso(spec, tmp_path / "installer.iso", backend="xorriso").path
    site_iso = _site_iso(tmp_path, hub, token.secret.reveal())
    boot = Boot(tmp_path / "serial.log", boot_iso=installer, cdroms=[site_iso], uuid=HOST_UUID)
    try:
        boot.wait_for(lambda: bool(admin.hosts.search(site=SITE)), 240, "the host to register")
        (host,) = admin.hosts.search(site=SITE)
        assert host.tags == {"city": "chicago", "building": "b 1"}  # the site ISO's, not "from"
        cluster = model.Cluster(
            name="store-042-edge",
            profile=model.ProfileRef("retail", "1.2.0"),
            control_plane=model.Pool("cp", (model.PoolHost(host.uid),)),
        )
        admin.profiles.publish(RETAIL)  # a cluster references a published profile version
        admin.clusters.create(cluster, provider_image="registry.example.com/edge/os:k3s-1.30.4")
        log = boot.finish(timeout=150)
    finally:
        boot.kill()
    assert "edgekit-installer: user-data from cidata" in log, log
    assert "edgekit-agent: user-data from installer hook (/run/edgekit/user-data)" in log, log
    assert f"edgekit-agent: registered uid={HOST_UUID} site={SITE}" in log, log
    assert "edgekit-agent: assigned cluster=store-042-edge role=control-plane" in log, log
    assert "edgekit-init: 60-edgekit-agent exited 0" in log, log
    assert token.secret.reveal() not in log


def test_retries_a_busy_hub_then_times_out_without_an_assignment(
    sample_os: SampleOsInfo, initrd: Path, hub: HubServer, tmp_path: Path
) -> None:
    admin = hub.client()
    token = admin.tokens.create("store-042", site=SITE)
    assert token.secret is not None
    front = FlakyFront(hub.port, fail_first=2)
    try:
        text = site_user_data(f"http://10.0.2.2:{front.port}", token.secret.reveal(), SITE, {})
        iso = write_site_iso(tmp_path / "site.iso", user_data=text).path
        boot = Boot(
            tmp_path / "serial.log",
            kernel=sample_os.kernel,
            initrd=initrd,
            append="edgekit.agent.poll=1 edgekit.agent.timeout=25",
            cdroms=[iso],
            uuid=HOST_UUID,
        )
        log = boot.finish(timeout=150)
    finally:
        front.close()
    assert front.registrations == 3
    assert "(attempt 1: 503 Service Unavailable); retrying in 1s" in log, log
    assert "(attempt 2: 503 Service Unavailable); retrying in 2s" in log, log
    assert f"edgekit-agent: registered uid={HOST_UUID} site={SITE}" in log, log
    assert "edgekit-agent: error: no cluster assignment within 25s (edgekit.agent.timeout)" in log
    assert "edgekit-init: 60-edgekit-agent exited 1" in log, log
    # Registered, heartbeating while it waited: ready, in no cluster.
    host = admin.hosts.get(HOST_UUID)
    assert host.state == "ready"
    assert host.cluster_uid is None


@pytest.mark.parametrize("nic", [True, False], ids=["nic", "no-nic"])
def test_file_transport_writes_a_bundle_the_hub_imports(
    sample_os: SampleOsInfo, initrd: Path, hub: HubServer, tmp_path: Path, nic: bool
) -> None:
    """No route to the hub: the agent signs a bundle onto a FAT stick labelled EDGEKIT-REG
    (with a NIC it reports its MAC; without one it still registers by its DMI uuid)."""
    admin = hub.client()
    token = admin.tokens.create("store-042", site=SITE)
    assert token.secret is not None
    stick = tmp_path / "stick.img"
    subprocess.run(
        ["mkfs.vfat", "-C", "-n", "EDGEKIT-REG", str(stick), "8192"],
        check=True,
        capture_output=True,
    )
    iso = _site_iso(tmp_path, hub, token.secret.reveal())
    boot = Boot(
        tmp_path / "serial.log",
        kernel=sample_os.kernel,
        initrd=initrd,
        append="edgekit.agent.transport=file",
        cdroms=[iso],
        disks=[stick],
        uuid=HOST_UUID,
        network=nic,
    )
    log = boot.finish(timeout=150)
    name = f"edgekit-registration-{HOST_UUID}.json"
    assert f"edgekit-agent: wrote registration bundle {name} to EDGEKIT-REG" in log, log
    assert "edgekit-init: 60-edgekit-agent exited 0" in log, log
    assert "state-dir: \n" in log  # nothing kept: the host has no credential yet
    assert admin.hosts.search() == []  # it never talked to the hub
    bundle = tmp_path / name
    subprocess.run(["mcopy", "-i", str(stick), f"::{name}", str(bundle)], check=True)
    assert token.secret.reveal() not in bundle.read_text()
    store = HubStore(hub.db_path)
    try:
        (result,) = import_registrations(store, [bundle])
    finally:
        store.close()
    assert result.ok, result.error
    (host,) = admin.hosts.search(site=SITE)
    assert host.uid == HOST_UUID
    assert host.tags == {"city": "chicago", "building": "b 1"}
    assert host.agent_version == "0.1.0"
    assert (host.mac is not None) == nic


def test_registers_through_the_sites_http_proxy(
    sample_os: SampleOsInfo, initrd: Path, hub: HubServer, tmp_path: Path
) -> None:
    """stylus.site.network.httpProxy: the endpoint's name resolves nowhere, only the proxy
    (which forwards to the hub) makes registration possible."""
    admin = hub.client()
    token = admin.tokens.create("store-042", site=SITE)
    assert token.secret is not None
    front = FlakyFront(hub.port, fail_first=0)
    try:
        text = site_user_data(
            "http://edge-hub.invalid:8080",
            token.secret.reveal(),
            SITE,
            {"via": "proxy"},
            http_proxy=f"http://10.0.2.2:{front.port}",
        )
        assert "httpProxy: http://10.0.2.2:" in text
        iso = write_site_iso(tmp_path / "site.iso", user_data=text).path
        boot = Boot(
            tmp_path / "serial.log",
            kernel=sample_os.kernel,
            initrd=initrd,
            append="edgekit.agent.poll=1 edgekit.agent.timeout=10",
            cdroms=[iso],
            uuid=HOST_UUID,
        )
        log = boot.finish(timeout=150)
    finally:
        front.close()
    assert f"edgekit-agent: using proxy 10.0.2.2:{front.port}" in log, log
    assert f"edgekit-agent: registered uid={HOST_UUID} site={SITE}" in log, log
    assert front.registrations == 1
    assert front.proxied >= 3  # register, heartbeat, desired-state polls
    assert admin.hosts.get(HOST_UUID).tags == {"via": "proxy"}
