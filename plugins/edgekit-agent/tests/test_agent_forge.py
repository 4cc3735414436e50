"""End to end: the quick-start forge file built with the agent plugin loaded, its installer
ISO and site ISO booted in QEMU (TCG) against a real hub, the host put in a cluster.

A fresh plugin manager with every installed plugin loaded, so the test does not depend on
what other tests registered in the process-wide one.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_boot_support import CACHE, Boot

from edgekit import model
from edgekit.forge import Forge
from edgekit.hub import HubServer
from edgekit.plugins.manager import PluginManager

pytestmark = pytest.mark.qemu

QUICKSTART = Path(__file__).resolve().parents[3] / "examples" / "quickstart"
HOST_UUID = "0b7e4d2c-9f61-4a38-8c15-2e6d4f7a9b01"


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with HubServer(access_log=False) as server:
        yield server


def test_forge_built_installer_registers_and_gets_assigned(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = hub.client()
    token = admin.tokens.create("quickstart", site="store-0042")
    assert token.secret is not None
    monkeypatch.setenv("EDGEKIT_REGISTRATION_TOKEN", token.secret.reveal())
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    project = tmp_path / "project"
    shutil.copytree(QUICKSTART, project)
    forge_file = project / "edgeforge.yaml"
    text = forge_file.read_text()
    assert "endpoint: http://10.0.2.2:8080" in text
    forge_file.write_text(text.replace("10.0.2.2:8080", f"10.0.2.2:{hub.port}"))

    plugins = PluginManager()
    plugins.load_all()
    forge = Forge.load(
        forge_file, output_dir=tmp_path / "dist", cache_dir=CACHE / "forge", plugins=plugins
    )
    result = forge.run()
    installer = result.artifacts["installer-iso/edgekit-installer"].path
    site_iso = result.artifacts["site-iso/store-0042"].path

    # The agent is in the provider image (executable) as well as in the installer.
    image = result.artifacts["provider-image/sample"]
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--rootless", "--image", f"{image.path}:{image.reference}",
         str(bundle)],
        check=True, capture_output=True,
    )  # fmt: skip
    agent = bundle / "rootfs" / "usr" / "bin" / "edgekit-agent"
    hook = bundle / "rootfs" / "etc" / "edgekit" / "boot.d" / "60-edgekit-agent"
    assert agent.stat().st_mode & 0o777 == 0o755
    assert hook.stat().st_mode & 0o777 == 0o755

    boot = Boot(tmp_path / "serial.log", boot_iso=installer, cdroms=[site_iso], uuid=HOST_UUID)
    try:
        boot.wait_for(
            lambda: bool(admin.hosts.search(site="store-0042")), 240, "the host to register"
        )
        (host,) = admin.hosts.search(site="store-0042")
        assert host.uid == HOST_UUID
        assert host.tags == {"city": "chicago", "building": "building-1"}
        cluster = model.Cluster(
            name="store-0042",
            profile=model.ProfileRef("retail", "1.0.0"),
            control_plane=model.Pool("cp", (model.PoolHost(host.uid),)),
        )
        admin.profiles.publish(forge.profiles["retail"])  # clusters need published versions
        admin.clusters.create(cluster, provider_image=image.annotations.get(
            "dev.edgekit.image.reference", image.reference))  # fmt: skip
        log = boot.finish(timeout=180)
    finally:
        boot.kill()
    assert "edgekit-installer: user-data from cidata" in log, log
    assert f"edgekit-agent: registered uid={HOST_UUID} site=store-0042" in log, log
    assert "edgekit-agent: assigned cluster=store-0042 role=control-plane image=" in log, log
    assert token.secret.reveal() not in log
    applied = admin.hosts.get(HOST_UUID).applied
    assert applied is not None
    assert applied["state"] == "applied"
