"""Shared pieces of the QEMU tests that install the sample OS onto a blank disk and boot it
as a real host of a real hub (tests/test_e2e_rollout.py, tests/test_device_upgrade.py)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from edgekit_agent.plugin import edgekit_installer_payload_files
from edgekit_iso.build import build_installer_iso
from edgekit_iso.spec import BootMenu, InstallerIsoSpec

from edgekit.config import render_user_data
from edgekit.model import Install, Secret, Stylus, StylusSite, UserData
from edgekit.testing import UpgradableImage, UpgradableImages
from edgekit.vm import VirtualMachine

#: The installer ISO's own user-data: powers off after installing (the site ISO's wins).
ISO_USER_DATA = (
    "#cloud-config\nstylus:\n  site:\n    name: not-this-site\ninstall:\n  poweroff: true\n"
)


def build_installer(images: UpgradableImages, iso: Path) -> Path:
    """The installer ISO of image v1 (its kernel, initrd and OCI layout) with the agent."""
    payload = edgekit_installer_payload_files(iso_name="installer")
    spec = InstallerIsoSpec.from_image_tree(
        images.sample_os,
        ISO_USER_DATA,
        oci_layout_dir=images.v1.layout,
        installer_files={inner: Path(host) for inner, host in payload.items()},
        boot_menu=BootMenu(timeout_s=0),
    )
    return build_installer_iso(spec, iso, backend="xorriso").path


def site_user_data(*, hub_port: int, token: str, site: str, registry: str, kernel_args: str) -> str:
    """A site's user-data: the hub and registry on the QEMU host (10.0.2.2), the registry
    reached through a mirror of its 127.0.0.1 name, and the agent's kernel arguments.

    Built through the model and rendered as a site ISO's is, so the rules a build applies
    (a plain-http mirror needs ``insecure: true``) hold for what these hosts boot with."""
    port = registry.rpartition(":")[2]
    user_data = UserData(
        stylus=Stylus(
            site=StylusSite(
                palette_endpoint=f"http://10.0.2.2:{hub_port}",
                edge_host_token=Secret(token),
                name=site,
            )
        ),
        install=Install(poweroff=True, grub_options={"extra_cmdline": kernel_args}),
    ).with_mirror(registry, f"http://10.0.2.2:{port}", insecure=True)
    return render_user_data(user_data)


def copy_disk(source: Path, target: Path) -> Path:
    """A sparse copy of an installed disk image (a second host installed the same way)."""
    subprocess.run(["cp", "--sparse=always", str(source), str(target)], check=True)
    return target


def push_as(image: UpgradableImage, ref: str) -> str:
    """Copy ``image`` to ``ref`` (``host/repo:tag`` on a plain-HTTP registry), digest kept:
    moving a tag, as a release channel does."""
    subprocess.run(
        ["skopeo", "copy", "--preserve-digests", "--dest-tls-verify=false", image.oci,
         f"docker://{ref}"],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return ref


def wait_all(
    vms: Sequence[VirtualMachine],
    done: Callable[[VirtualMachine], bool],
    *,
    timeout: float,
    what: str,
) -> None:
    """Poll several running VMs until ``done`` holds for each; fail with their logs' tails."""
    deadline = time.monotonic() + timeout
    while True:
        if all(done(vm) for vm in vms):
            return
        if time.monotonic() > deadline:
            tails = "\n---\n".join(vm.text()[-3000:] for vm in vms)
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}:\n{tails}")
        time.sleep(1)
