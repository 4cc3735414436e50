"""Three hosts, booted one after another from one generic installer with three site ISOs,
register with a real hub and form a three-node control plane with a VIP."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import attrs
import pytest

from edgekit import config, model
from edgekit.forge import Forge
from edgekit.hub import HubClient, HubRequestError, HubServer
from edgekit.vm import VirtualMachine

pytestmark = pytest.mark.qemu

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart"
CACHE = Path(os.environ.get("EDGEKIT_TEST_CACHE", "/tmp/edgekit-test-cache"))
NODES = {
    "edge-a": ("6a0e2c4d-0000-4000-8000-00000000000a", "10.0.2.21/24"),
    "edge-b": ("6a0e2c4d-0000-4000-8000-00000000000b", "10.0.2.22/24"),
    "edge-c": ("6a0e2c4d-0000-4000-8000-00000000000c", "10.0.2.23/24"),
}


def build(
    tmp_path: Path,
    hub: HubServer,
    token: str,
    sites: tuple[model.Site, ...],
    *,
    kernel_args: str = "edgekit.agent.timeout=900",
) -> tuple[Forge, dict[str, Path]]:
    """The quick start's installer and one site ISO per site, registering with ``hub``."""
    project = tmp_path / "project"
    shutil.copytree(QUICKSTART, project)
    spec = config.load(project / "edgeforge.yaml", model.Forge)
    assert spec.iso is not None
    assert spec.registration is not None
    spec = attrs.evolve(
        spec,
        sites=sites,
        # Boots under TCG are slow: let the first agent wait for the last host.
        iso=attrs.evolve(spec.iso, kernel_args=kernel_args),
        registration=attrs.evolve(spec.registration, endpoint=f"http://10.0.2.2:{hub.port}"),
    )
    forge = Forge(
        spec,
        base_dir=project,
        output_dir=tmp_path / "dist",
        cache_dir=CACHE / "forge",
        registration_token=token,
    )
    built = forge.run(kinds=["installer-iso", "site-isos"])
    isos = {name.split("/", 1)[1]: a.path for name, a in built.artifacts.items()}
    return forge, isos


def wait_in_use(admin: HubClient, uuids: list[str], timeout: float = 300) -> None:
    """Until every host is ``in_use``: its agent's report of the applied assignment has
    landed. The console's "assigned" line comes before that report, so stopping a machine
    at that line could cut the report off."""
    deadline = time.monotonic() + timeout
    while True:
        states = {uuid: admin.hosts.get(uuid).state for uuid in uuids}
        if set(states.values()) == {"in_use"}:
            return
        assert time.monotonic() < deadline, states
        time.sleep(0.5)


def test_uefi_host_from_a_usb_stick_registers_and_takes_a_single_node_cluster(
    tmp_path: Path,
) -> None:
    uuid = "6a0e2c4d-0000-4000-8000-0000000000e1"
    with HubServer(tmp_path / "hub.db", access_log=False) as hub:
        admin = hub.client()
        token = admin.tokens.create("usb", site="store-0099", expires_in="1h")
        assert token.secret is not None
        forge, isos = build(tmp_path, hub, token.secret.reveal(), (model.Site("store-0099"),))
        with VirtualMachine(
            iso=isos["edgekit-installer"],
            firmware="uefi",
            media="disk",
            cdroms=[isos["store-0099"]],
            uuid=uuid,
        ) as vm:
            vm.wait_for(f"edgekit-agent: registered uid={uuid} site=store-0099", timeout=600)
            cluster = model.Cluster.single_node("store-0099", forge.profiles["retail"], uuid)
            admin.clusters.create(
                cluster,
                provider_image="localhost/edgekit/sample:usb",
                profile=forge.profiles["retail"],
            )
            text = vm.wait_for("edgekit-agent: assigned", timeout=600)
            wait_in_use(admin, [uuid])
        assert "assigned cluster=store-0099 role=control-plane" in text
        assert token.secret.reveal() not in text
        assert admin.hosts.get(uuid).state == "in_use"


def test_three_hosts_form_a_control_plane_with_a_vip(tmp_path: Path) -> None:
    with HubServer(tmp_path / "hub.db", access_log=False) as hub:
        admin = hub.client()
        token = admin.tokens.create("trio", expires_in="1h", max_hosts=3)
        assert token.secret is not None
        sites = tuple(model.Site(name=name, tags={"rack": "r1"}) for name in NODES)
        forge, isos = build(tmp_path, hub, token.secret.reveal(), sites)
        installer = isos["edgekit-installer"]

        vms: dict[str, VirtualMachine] = {}
        try:
            for site, (uuid, _) in NODES.items():  # one after another
                vm = VirtualMachine(
                    iso=installer,
                    cdroms=[isos[site]],
                    uuid=uuid,
                    serial_log=tmp_path / f"{site}.log",
                ).start()
                vms[site] = vm
                vm.wait_for(f"edgekit-agent: registered uid={uuid} site={site}", timeout=600)
            hosts = {h.uid: h for h in admin.hosts.search(tags={"rack": "r1"})}
            assert set(hosts) == {uuid for uuid, _ in NODES.values()}
            assert {h.site for h in hosts.values()} == set(NODES)

            cluster = model.Cluster(
                name="edge-trio",
                profile=forge.profiles["retail"].ref,
                control_plane=model.Pool(
                    "control-plane",
                    tuple(model.PoolHost(uuid, static_ip=ip) for uuid, ip in NODES.values()),
                ),
                vip="10.0.2.100",
            )
            admin.clusters.create(
                cluster,
                provider_image="localhost/edgekit/sample:trio",
                profile=forge.profiles["retail"],
            )
            for site, vm in vms.items():
                text = vm.wait_for("edgekit-agent: assigned", timeout=600)
                assert "assigned cluster=edge-trio role=control-plane" in text, site
            wait_in_use(admin, [uuid for uuid, _ in NODES.values()])
        finally:
            for vm in vms.values():
                vm.stop()
        for uuid, _ in NODES.values():
            assert admin.hosts.get(uuid).state == "in_use"
        # A fourth host is over the token's limit: nothing more is stored.
        with (
            pytest.raises(HubRequestError, match=r"403 TokenExhausted.*already registered its 3"),
            hub.host_client("extra") as extra,
        ):
            extra.register(token.secret, arch="amd64")
        assert len(admin.hosts.search()) == 3


def test_a_booted_host_in_a_cluster_reports_the_generation_of_an_update(tmp_path: Path) -> None:
    """The agent keeps watching its desired state (edgekit.agent.watch) and reports each new
    generation it observes; it applies nothing yet (docs/agent.md), so the report is
    "healthy, observed N" with a message saying so."""
    uuid = "6a0e2c4d-0000-4000-8000-0000000000f2"
    with HubServer(tmp_path / "hub.db", access_log=False) as hub:
        admin = hub.client()
        token = admin.tokens.create("watch", site="store-0098", expires_in="1h")
        assert token.secret is not None
        forge, isos = build(
            tmp_path,
            hub,
            token.secret.reveal(),
            (model.Site("store-0098"),),
            kernel_args="edgekit.agent.timeout=900 edgekit.agent.poll=2 edgekit.agent.watch=900",
        )
        v1 = forge.profiles["retail"]
        cni = next(p for p in v1.packs if p.name == "cni-flannel")
        v2 = attrs.evolve(
            v1,
            version="1.1.0",
            packs=tuple(
                attrs.evolve(p, values={"flannel": {"backend": "host-gw"}}) if p is cni else p
                for p in v1.packs
            ),
        )
        with VirtualMachine(
            iso=isos["edgekit-installer"],
            cdroms=[isos["store-0098"]],
            uuid=uuid,
            serial_log=tmp_path / "store-0098.log",
        ) as vm:
            vm.wait_for(f"edgekit-agent: registered uid={uuid} site=store-0098", timeout=600)
            admin.clusters.create(
                model.Cluster.single_node("store-0098", v1.ref, uuid),
                provider_image="localhost/edgekit/sample:watch",
                profile=v1,
            )
            vm.wait_for("edgekit-agent: watching the desired state every 2s", timeout=600)
            assert admin.clusters.status("store-0098").hosts[0].observed_generation == 1

            admin.profiles.publish(v2)
            updated = admin.clusters.update("store-0098", profile=v2.ref)
            assert updated.generation == 2
            text = vm.wait_for(
                "edgekit-agent: observed generation=2 action=update upgrade=in_place: "
                "reported healthy (applied in place)",
                timeout=300,
            )
        assert token.secret.reveal() not in text
        status = admin.clusters.status("store-0098")
        [member] = status.hosts
        assert (member.desired_generation, member.observed_generation) == (2, 2)
        assert member.phase == "healthy"
        assert member.message is not None
        assert "applied in place" in member.message
        assert status.ready
        assert admin.hosts.get(uuid).state == "in_use"
