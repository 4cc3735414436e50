"""The agent's repave pieces (``registry.sh``, ``slots.sh``), run by the host's busybox sh
against a real docker-registry on 127.0.0.1: pull the sample image v2 through a mirror
named in the user-data, every blob checked against its digest; stage its slot payload;
install it into a passive slot; switch grubenv, which GRUB's own ``grub-editenv`` reads.
The QEMU test (tests/test_device_upgrade.py) does the same on an installed disk."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from edgekit_agent import agent_files, agent_parts_dir
from edgekit_iso.diskboot import grubenv_block
from edgekit_oras.testing import RegistryServer
from newc import newc_entries

from edgekit.config import parse_user_data, render_user_data
from edgekit.errors import ConfigError
from edgekit.model import Stylus, StylusSite, UserData
from edgekit.testing import UpgradableImages

AGENT = agent_files()["usr/bin/edgekit-agent"]
MIRROR = "registry.invalid:5000"
REF = f"{MIRROR}/edgekit/sample:v2"


def sh(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``script`` in busybox sh with the agent's functions defined (PATH: busybox first)."""
    if shutil.which("busybox") is None:
        pytest.fail("busybox is required (apt-get install busybox-static)")
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    return subprocess.run(
        ["busybox", "sh", "-c", f'EDGEKIT_AGENT_LIB=1 . "{AGENT}"\n{script}'],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={
            "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
            "EDGEKIT_AGENT_PARTS": str(agent_parts_dir()),
            "EDGEKIT_AGENT_RUN_DIR": str(run),
            "EDGEKIT_AGENT_STATE_DIR": str(tmp_path / "state"),
            **env,
        },
    )


def mirror_user_data(path: Path, endpoint: str, *, insecure: bool) -> Path:
    """User-data naming ``endpoint`` as the mirror of registry.invalid:5000, rendered from
    the model as a site ISO's is; with ``insecure`` false (which the model refuses, see
    test_a_plain_http_mirror_must_be_marked_insecure) written by hand, as a device could
    still be given it."""
    if insecure:
        user_data = UserData(stylus=Stylus(site=StylusSite(name="store-up")))
        path.write_text(render_user_data(user_data.with_mirror(MIRROR, endpoint, insecure=True)))
        return path
    path.write_text(
        "#cloud-config\nstylus:\n  site:\n    name: store-up\n  registry:\n    mirrors:\n"
        f'      "{MIRROR}":\n        endpoint: {endpoint}\n        insecure: false\n'
    )
    return path


def cpio_members(path: Path) -> dict[str, bytes]:
    """The regular files of a gzip'd newc archive (parsed here, not by the agent's tools)."""
    return {name: body for name, mode, body in newc_entries(path) if mode & 0o170000 == 0o100000}


@pytest.fixture
def pushed(upgradable_images: UpgradableImages, registry: RegistryServer) -> str:
    upgradable_images.v2.push(registry.host)
    return str(registry.host)


def test_pull_stage_install_and_switch(
    upgradable_images: UpgradableImages, pushed: str, tmp_path: Path
) -> None:
    v2 = upgradable_images.v2
    userdata = mirror_user_data(tmp_path / "user-data", f"http://{pushed}", insecure=True)
    hook = tmp_path / "10-edgekit-persistent"
    hook.write_text("#!/bin/sh\necho persistent\n")
    state = tmp_path / "cos-state"
    (state / "slots" / "A").mkdir(parents=True)
    (state / "slots" / "A" / "keep").write_text("the active slot is never touched")
    (state / "slots" / ".B.new").mkdir()  # a power cut mid-install left this behind
    (state / "slots" / ".B.new" / "junk").write_text("x")
    env = tmp_path / "grubenv"
    env.write_bytes(grubenv_block({"edgekit_active": "A", "extra_cmdline": "quiet"}))
    out = sh(
        f'oci_pull "{REF}" "{tmp_path}/pull" "{userdata}" || {{ echo "E: $OCI_ERROR"; exit 1; }}\n'
        'echo "digest=$OCI_DIGEST via=$OCI_VIA"\n'
        f'stage_payload "{tmp_path}/pull" "{REF}" "$OCI_DIGEST" "{tmp_path}/staged"'
        ' || { echo "E: $STAGE_ERROR"; exit 1; }\n'
        f'install_slot "{tmp_path}/staged" "{state}" B || {{ echo "E: $INSTALL_ERROR"; exit 1; }}\n'
        f'grubenv_set "{env}" edgekit_try=B edgekit_tries=3\n',
        tmp_path,
        EDGEKIT_AGENT_PERSIST_HOOK=str(hook),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"digest={v2.digest} via=mirror http://{pushed}" in out.stdout
    slot = state / "slots" / "B"
    assert sorted(p.name for p in slot.iterdir()) == [
        "edgekit.cpio.gz",
        "image.json",
        "initrd",
        "vmlinuz",
    ]
    assert not (state / "slots" / ".B.new").exists()
    assert (state / "slots" / "A" / "keep").exists()
    tree = upgradable_images.sample_os
    assert (slot / "vmlinuz").read_bytes() == (tree / "boot" / "vmlinuz").read_bytes()
    assert (slot / "initrd").read_bytes() == (tree / "boot" / "initrd").read_bytes()
    info = json.loads((slot / "image.json").read_text())
    assert info["digest"] == v2.digest
    assert (info["ref"], info["tag"], info["version"]) == (REF, "v2", "v2")
    for key, name in (("kernel", "vmlinuz"), ("initrd", "initrd"), ("overlay", "edgekit.cpio.gz")):
        assert info[key]["path"] == name
        assert info[key]["sha256"] == hashlib.sha256((slot / name).read_bytes()).hexdigest()
    members = cpio_members(slot / "edgekit.cpio.gz")
    assert b"VERSION=v2\n" in members["etc/os-release"]
    assert members["etc/edgekit/boot.d/10-edgekit-persistent"] == hook.read_bytes()
    assert members["usr/bin/edgekit-agent"] == AGENT.read_bytes()
    assert "usr/lib/edgekit/agent/slots.sh" in members
    assert not any(name.startswith("boot/") for name in members)
    # GRUB's own tool reads what the shell wrote, and the other variables are kept.
    listed = subprocess.run(
        ["grub-editenv", str(env), "list"], capture_output=True, text=True, check=True
    ).stdout
    assert sorted(listed.split()) == sorted(
        ["edgekit_active=A", "extra_cmdline=quiet", "edgekit_try=B", "edgekit_tries=3"]
    )
    assert env.stat().st_size == 1024
    # Unset two, set one: grub-editenv agrees again.
    out = sh(f'grubenv_set "{env}" edgekit_try= edgekit_tries= edgekit_active=B', tmp_path)
    assert out.returncode == 0, out.stderr
    listed = subprocess.run(
        ["grub-editenv", str(env), "list"], capture_output=True, text=True, check=True
    ).stdout
    assert sorted(listed.split()) == ["edgekit_active=B", "extra_cmdline=quiet"]
    # A second pull reuses the verified blobs (nothing is fetched again: the registry could
    # be gone).
    out = sh(
        f'BLOB_TIMEOUT=1; oci_get() {{ echo "fetched $1"; return 1; }}\n'
        f'm="{tmp_path}/pull/manifest.json"\n'
        f'fetch_blob edgekit/sample "$(json_flat "$m" | manifest_config)" "{tmp_path}/pull/blobs"'
        " && echo reused",
        tmp_path,
    )
    assert out.stdout.strip() == "reused", out.stdout + out.stderr


def test_a_plain_http_mirror_must_be_marked_insecure(pushed: str, tmp_path: Path) -> None:
    userdata = mirror_user_data(tmp_path / "user-data", f"http://{pushed}", insecure=False)
    out = sh(
        f'oci_pull "{REF}" "{tmp_path}/pull" "{userdata}" || {{ echo "E: $OCI_ERROR"; exit 3; }}',
        tmp_path,
    )
    assert out.returncode == 3
    assert out.stdout.strip() == (
        f"E: the mirror http://{pushed} for registry.invalid:5000 is plain http; set "
        'stylus.registry.mirrors."registry.invalid:5000".insecure: true to allow it'
    )
    assert not (tmp_path / "pull").exists()
    # A build refuses the same file first, with the agent's words.
    with pytest.raises(ConfigError) as e:
        parse_user_data(userdata.read_text())
    [problem] = e.value.problems
    assert problem.path == '$.stylus.registry.mirrors["registry.invalid:5000"].endpoint'
    assert problem.message.endswith(out.stdout.strip().removeprefix("E: "))


@pytest.mark.parametrize(
    "ref", ["registry.invalid/x:1'; reboot; '", "no-registry-host/x:1", "registry.invalid", ""]
)
def test_a_bad_reference_is_refused_before_any_request(ref: str, tmp_path: Path) -> None:
    out = sh(
        f'oci_pull "{ref}" "{tmp_path}/pull" "" || {{ echo "E: $OCI_ERROR"; exit 3; }}', tmp_path
    )
    assert out.returncode == 3, out.stdout + out.stderr
    assert out.stdout.strip() == (
        f"E: '{ref}' is not an image reference (host[:port]/repo[:tag][@digest])"
    )
    assert not (tmp_path / "pull").exists()


def test_a_blob_that_does_not_match_its_digest_is_not_used(
    upgradable_images: UpgradableImages,
    pushed: str,
    registry: RegistryServer,
    tmp_path: Path,
) -> None:
    # Corrupt the agent layer in the registry's own storage: it still serves it.
    manifest = json.loads(
        (
            upgradable_images.v2.layout / "blobs" / "sha256" / upgradable_images.v2.digest[7:]
        ).read_text()
    )
    victim = manifest["layers"][2]["digest"]
    [data] = list(registry.storage.rglob(f"blobs/sha256/{victim[7:9]}/{victim[7:]}/data"))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    userdata = mirror_user_data(tmp_path / "user-data", f"http://{pushed}", insecure=True)
    out = sh(
        f'oci_pull "{REF}" "{tmp_path}/pull" "{userdata}" || {{ echo "E: $OCI_ERROR"; exit 3; }}',
        tmp_path,
    )
    assert out.returncode == 3, out.stdout + out.stderr
    assert out.stdout.startswith(f"E: blob {victim} does not match its digest (got sha256:")
    assert not (tmp_path / "pull" / "blobs" / victim[7:]).exists()
    assert list((tmp_path / "pull" / "blobs").glob(".*.part")) == []
