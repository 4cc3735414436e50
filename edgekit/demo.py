"""The whole quick start on one machine: hub, build, install, boot, register, cluster.

``run_demo`` is what ``edgekit demo`` (the README's first command) runs:

1. start the embedded registration hub on 127.0.0.1 (SQLite under ``OUTPUT/hub``);
2. create a registration token and run the forge pipeline with it (images, installer ISO,
   site ISOs, publishing into the local OCI layout);
3. when QEMU is installed, boot the installer with the first site's ISO and a blank disk
   attached; it installs the provider image onto the disk and powers off;
4. boot that disk alone (no ISO): the installed system's agent registers with the hub (the
   guest reaches 127.0.0.1 as 10.0.2.2);
5. put the host into a single-node cluster and wait for the agent to report its assignment.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from edgekit import __version__, model
from edgekit.errors import ConfigError, EdgekitError
from edgekit.forge import Forge, ForgeEvent, ForgeResult
from edgekit.plugins.manager import PluginManager

__all__ = ["DemoResult", "run_demo"]

#: A fixed SMBIOS UUID for the demo VM, so reruns register the same host.
DEMO_HOST_UUID = "5e1f0c2a-7d3b-4e58-9a61-0c2d4b6e8f10"
GUEST_HOST = "10.0.2.2"  # QEMU's user network: the host's 127.0.0.1


@attrs.frozen
class DemoResult:
    """What the demo built and what the booted host did."""

    forge: ForgeResult
    hub_url: str
    hub_db: Path
    #: The registered host (``edgekit.hub.Host``), when a VM was booted.
    host: Any = None
    cluster: str | None = None
    #: The agent's ``assigned ...`` console line.
    assignment: str | None = None
    #: Why no VM was booted, when none was.
    boot_skipped: str | None = None
    #: The VM's serial console log (the disk's boot), when one was booted.
    console: str | None = None
    #: The disk the installer wrote, which the host then booted from alone.
    disk: Path | None = None
    #: The installer's ``installed ...`` console line.
    installed: str | None = None


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _hub_port(endpoint: str) -> int:
    """The port the forge file's endpoint names, if it is free here; else any free port."""
    from urllib.parse import urlsplit

    wanted = urlsplit(endpoint).port or 80
    return wanted if wanted > 1024 and _free(wanted) else 0


def run_demo(
    forge_file: Path,
    *,
    output_dir: Path | None = None,
    boot: bool = True,
    timeout: float = 900,
    events: Callable[[ForgeEvent], None] | None = None,
    progress: bool | Any = False,
    say: Callable[[str], None] = print,
    plugins: PluginManager | None = None,
) -> DemoResult:
    """Run the quick start end to end; see the module docstring."""
    from edgekit.hub import HubServer
    from edgekit.vm import VirtualMachine, create_disk, qemu_available

    loaded = Forge.load(forge_file, output_dir=output_dir, plugins=plugins)
    reg = loaded.spec.registration
    if reg is None:
        raise ConfigError.single("$.registration", "the demo needs a registration endpoint")
    if loaded.spec.iso is None:
        raise ConfigError.single("$.iso", "the demo needs an installer ISO")
    hub_dir = loaded.output_dir / "hub"
    hub_dir.mkdir(parents=True, exist_ok=True)
    port = _hub_port(reg.endpoint)
    with HubServer(hub_dir / "hub.db", port=port, access_log=False) as hub:
        say(f"hub: serving {hub.url} (database {hub.db_path})")
        admin = hub.client()
        token = admin.tokens.create("edgekit-demo", expires_in="1d", project=reg.project)
        assert token.secret is not None
        say(f"hub: created registration token {token.uid}")
        # The guest reaches this hub as 10.0.2.2 on the port it really listens on.
        spec = attrs.evolve(
            loaded.spec,
            registration=attrs.evolve(reg, endpoint=f"http://{GUEST_HOST}:{hub.port}"),
        )
        forge = Forge(
            spec,
            base_dir=loaded.base_dir,
            output_dir=loaded.output_dir,
            cache_dir=loaded.cache_dir,
            plugins=loaded.plugins,
            source=loaded.source,
            registration_token=token.secret.reveal(),
        )
        built = forge.run(events=events, progress=progress)
        result = DemoResult(built, hub.url, hub.db_path)
        reason = qemu_available()
        if not boot:
            reason = "--no-boot"
        elif not forge.sites:
            reason = "the forge file has no sites"
        if reason:
            say(f"boot: skipped ({reason})")
            return attrs.evolve(result, boot_skipped=reason)
        site = forge.sites[0]
        installer = built.artifacts[f"installer-iso/{loaded.spec.iso.name}"].path
        site_iso = built.artifacts[f"site-iso/{site.name}"].path
        image = forge.iso_image()
        say(f"install: {installer.name} with {site_iso.name} onto a blank disk in QEMU "
            "(no KVM: this takes a while)")  # fmt: skip
        deadline = time.monotonic() + timeout
        disk = create_disk(loaded.output_dir / "demo-host.disk", size_mib=2048)
        with VirtualMachine(
            iso=installer, cdroms=[site_iso], disks=[disk], uuid=DEMO_HOST_UUID
        ) as vm:
            installed = vm.wait_exit(timeout=max(30.0, deadline - time.monotonic()))
        if "edgekit-installer: installed" not in installed:
            raise EdgekitError(
                "the installer did not install the disk; console:\n"
                + "\n".join(installed.splitlines()[-40:])
            )
        say(f"install: done; booting {disk.name} alone (no ISO attached)")
        with VirtualMachine(disk=disk, uuid=DEMO_HOST_UUID) as vm:
            host = None
            while host is None:
                found = admin.hosts.search(site=site.name)
                host = next((h for h in found if h.uid == DEMO_HOST_UUID), None)
                if host is None:
                    if not vm.running:
                        vm.wait_for("edgekit-agent: registered", timeout=0)  # raises, with log
                    if time.monotonic() > deadline:
                        raise EdgekitError(
                            f"the host did not register within {timeout:.0f} s; console:\n"
                            + "\n".join(vm.text().splitlines()[-40:])
                        )
                    time.sleep(1)
            say(f"hub: host {host.uid} registered from site {host.site} ({host.address})")
            cluster = model.Cluster.single_node(site.name, forge.profiles[image.profile], host.uid)
            admin.clusters.create(
                cluster,
                provider_image=image.reference_for(__version__),
                profile=forge.profiles[image.profile],  # published first: the hub needs it
            )
            say(f"hub: cluster {cluster.name} created; waiting for the agent to take it")
            remaining = max(30.0, deadline - time.monotonic())
            text = vm.wait_for("edgekit-agent: assigned", timeout=remaining)
        marker = "edgekit-agent: assigned "
        assignment = next(
            line[line.index(marker) + len(marker) :].strip()
            for line in text.splitlines()
            if marker in line
        )
        host = admin.hosts.get(host.uid)
        installed_line = next(
            line[line.index("edgekit-installer: installed") :].strip()
            for line in installed.splitlines()
            if "edgekit-installer: installed" in line
        )
        return attrs.evolve(
            result,
            host=host,
            cluster=cluster.name,
            assignment=assignment,
            console=text,
            disk=disk,
            installed=installed_line,
        )
