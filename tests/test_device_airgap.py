"""Airgap upgrades on the device (``agent/airgap.sh``), run by the host's busybox sh: real
bundles written by ``write_upgrade_bundles`` from a real hub's desired state, with the
bootable sample image v2 pulled from a real docker-registry, on a directory standing in
for the stick (``find_label``/``mounted_at`` point at it), and directories for COS_STATE,
COS_GRUB and COS_PERSISTENT as tests/test_device_confirm.py has them.

The stick's layout is staged into slot B through symlinks (no copy), the phases are kept
offline and sent in order once the hub is reachable, and every refusal (another host's
stick, a renamed envelope, another token, a damaged blob, an old generation) is one line
that leaves slots, grubenv and state as they were. The QEMU test is
tests/test_device_airgap_boot.py."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgekit_agent import agent_files, agent_parts_dir
from edgekit_iso.diskboot import grubenv_block
from edgekit_oras.testing import RegistryServer

from edgekit import model
from edgekit.hub import HubServer
from edgekit.hub.upgrade_bundles import UpgradeBundle, write_upgrade_bundles
from edgekit.plugins.interfaces import RegistryOptions
from edgekit.testing import UpgradableImages

AGENT = agent_files()["usr/bin/edgekit-agent"]
PROFILE = model.ClusterProfile(
    "retail", "1.0.0", (model.Pack.os("sample", "12"), model.Pack.k8s("k3s", "1.30.4"))
)
V1_DIGEST = "sha256:" + "a1" * 32


class Fleet:
    """A hub with hosts air-1 and air-2 (one token, one site) updated from v1 to v2 (a
    repave) and air-3 given new values (in place); bundles for all three on ``stick``."""

    def __init__(self, hub: HubServer, images: dict[str, str], stick: Path) -> None:
        self.hub, self.images, self.stick = hub, images, stick
        self.admin = hub.client()
        self.admin.profiles.publish(PROFILE)
        token = self.admin.tokens.create("stick", site="mine-7")
        assert token.secret is not None
        self.token = token.secret.reveal()
        self.credentials: dict[str, str] = {}
        self.cluster_uids: dict[str, str] = {}
        for uid in ("air-1", "air-2", "air-3"):
            receipt = hub.host_client(uid).register(token.secret, address="10.0.0.9")
            self.credentials[uid] = receipt.credential.reveal()
            self.cluster_uids[uid] = self.admin.clusters.create(
                model.Cluster.single_node(uid, PROFILE.ref, uid), provider_image=images["v1"]
            ).uid
        for uid in ("air-1", "air-2"):
            self.admin.clusters.update(uid, provider_image=images["v2"])
        self.admin.clusters.update("air-3", values={"k3s": {"flags": "--disable=traefik"}})
        written = write_upgrade_bundles(
            hub.db_path, stick, hosts=["air-1", "air-2", "air-3"],
            options=RegistryOptions(plain_http=True),
        )  # fmt: skip
        self.bundles: dict[str, UpgradeBundle] = {b.host_uid: b for b in written}


@pytest.fixture(scope="module")
def fleet(
    upgradable_images: UpgradableImages, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("airgap")
    with (
        RegistryServer("plain", workdir=tmp / "registry") as registry,
        HubServer(tmp / "hub.db", access_log=False) as hub,
    ):
        images = {v: getattr(upgradable_images, v).push(registry.host) for v in ("v1", "v2")}
        yield Fleet(hub, images, tmp / "stick")


class Host:
    """One host's disk as the agent sees it: slot A (v1) active, slot B empty."""

    def __init__(self, fleet: Fleet, uid: str, root: Path, *, token: str | None = None) -> None:
        self.fleet, self.uid, self.root = fleet, uid, root
        slot_a = root / "state-mnt" / "slots" / "A"
        slot_a.mkdir(parents=True)
        (slot_a / "image.json").write_text(
            json.dumps({"digest": V1_DIGEST, "ref": fleet.images["v1"], "version": "v1"}, indent=2)
        )
        (root / "grub" / "grub").mkdir(parents=True)
        self.grubenv = root / "grub" / "grub" / "grubenv"
        self.grubenv.write_bytes(grubenv_block({"edgekit_active": "A", "edgekit_passive": "B"}))
        for d in ("state", "run", "health"):
            (root / d).mkdir()
        # Generation 1 was applied and reported before the site lost its link.
        (root / "state" / "observed").write_text(f"{fleet.cluster_uids[uid]}:1\n")
        self.hook = root / "10-edgekit-persistent"
        self.hook.write_text("#!/bin/sh\necho persistent\n")
        self.user_data = root / "user-data"
        self.user_data.write_text(
            "#cloud-config\nstylus:\n  site:\n    paletteEndpoint: http://10.0.2.2:1\n"
            f"    edgeHostToken: {token or fleet.token}\n    name: mine-7\n"
        )

    def sh(self, script: str, cmdline: str, stick: Path | None = None) -> str:
        if shutil.which("busybox") is None:
            pytest.fail("busybox is required (apt-get install busybox-static)")
        (self.root / "cmdline").write_text(cmdline + "\n")
        prelude = (
            f'EDGEKIT_AGENT_LIB=1 . "{AGENT}"\n'
            # The stick: a directory the agent finds "mounted" (no mount in a test).
            'find_label() { [ "$1" = EDGEKIT-UPG ] && [ -d "$STICK" ] && echo /dev/sdz; }\n'
            'stick_now() { find_label "$1" 0; }\n'
            'mounted_at() { [ "$1" = /dev/sdz ] && echo "$STICK"; }\n'
            f'uid={self.uid} USERDATA="{self.user_data}"\n'
        )
        proc = subprocess.run(
            ["busybox", "sh", "-c", prelude + script],
            capture_output=True, text=True, timeout=300, check=False,
            env={
                "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
                "STICK": str(stick or self.fleet.stick),
                "EDGEKIT_AGENT_PARTS": str(agent_parts_dir()),
                "EDGEKIT_AGENT_RUN_DIR": str(self.root / "run"),
                "EDGEKIT_AGENT_STATE_DIR": str(self.root / "state"),
                "EDGEKIT_AGENT_STATE_MNT": str(self.root / "state-mnt"),
                "EDGEKIT_AGENT_GRUB_MNT": str(self.root / "grub"),
                "EDGEKIT_AGENT_HEALTH_DIR": str(self.root / "health"),
                "EDGEKIT_AGENT_CMDLINE": str(self.root / "cmdline"),
                "EDGEKIT_AGENT_PERSIST_HOOK": str(self.hook),
                "EDGEKIT_AGENT_REBOOT": "echo REBOOT",
                "HP": f"{self.fleet.hub.url}/v1/edgehosts/{self.uid}",
                "CRED": self.fleet.credentials[self.uid],
            },
        )  # fmt: skip
        out = proc.stdout + proc.stderr
        assert self.fleet.token not in out  # the token is never printed
        return out

    def env(self) -> list[str]:
        listed = subprocess.run(
            ["grub-editenv", str(self.grubenv), "list"], capture_output=True, text=True, check=True
        ).stdout
        return sorted(listed.split())

    def phases(self) -> list[dict[str, object]]:
        path = self.root / "state" / "phases.pending"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def agent_lines(self, out: str) -> list[str]:
        return [line for line in out.splitlines() if line.startswith("edgekit-agent: ")]


def test_a_repave_from_the_stick_stages_slot_b_and_reports_when_the_hub_is_back(
    fleet: Fleet, upgradable_images: UpgradableImages, tmp_path: Path
) -> None:
    host = Host(fleet, "air-1", tmp_path)
    v2 = upgradable_images.v2
    bundle = fleet.bundles["air-1"]
    assert (bundle.generation, bundle.desired["upgrade"]) == (2, "repave")

    # Boot 1 (slot A, v1): the hub is unreachable; the stick's bundle is checked and applied.
    out = host.sh("airgap_turn; echo rc=$?", "edgekit.slot=A")
    assert (
        "edgekit-agent: upgrade bundle accepted: edgekit-upgrade-air-1.json generation 2, "
        f"image {v2.digest} (EDGEKIT-UPG, /dev/sdz)" in out
    ), out
    assert "edgekit-agent: writing slot B (as slots/.B.new)" in out, out
    assert "REBOOT" in out, out
    image = json.loads((tmp_path / "state-mnt" / "slots" / "B" / "image.json").read_text())
    assert (image["digest"], image["version"], image["ref"]) == (
        v2.digest,
        "v2",
        fleet.images["v2"],
    )
    slot_b = tmp_path / "state-mnt" / "slots" / "B"
    boot = upgradable_images.sample_os / "boot"
    assert (slot_b / "vmlinuz").read_bytes() == (boot / "vmlinuz").read_bytes()
    assert b"VERSION=v2" in gzip.decompress((slot_b / "edgekit.cpio.gz").read_bytes())
    assert not (slot_b / "vmlinuz").is_symlink()  # a real copy on the disk, not a link to the stick
    # The layout was read through links in $RUN, now gone; nothing was downloaded.
    assert not (tmp_path / "run" / "bundle-image").exists()
    assert not (tmp_path / "state-mnt" / "download").exists()
    assert not (tmp_path / "state-mnt" / "staged").exists()
    assert host.env() == [
        "edgekit_active=A", "edgekit_passive=B", "edgekit_tries=3", "edgekit_try=B",
    ]  # fmt: skip
    upgrade_env = (tmp_path / "state" / "upgrade.env").read_text()
    assert "U_SOURCE=bundle" in upgrade_env
    assert "U_SLOT=B" in upgrade_env
    cluster_uid = fleet.cluster_uids["air-1"]
    assert (tmp_path / "state" / "observed").read_text().strip() == f"{cluster_uid}:2"
    kept = json.loads((tmp_path / "state" / "desired.json").read_text())
    assert kept["desired"] == bundle.desired  # the last desired state this host knows
    assignment = (tmp_path / "state" / "assignment.env").read_text().splitlines()
    assert "CLUSTER_NAME=air-1" in assignment
    assert "ROLE=control-plane" in assignment
    assert "GENERATION=2" in assignment
    assert f"PROVIDER_IMAGE={fleet.images['v2']}" in assignment
    phases = host.phases()
    assert [(p["phase"], p["observedGeneration"]) for p in phases] == [
        ("downloading", 2), ("applying", 2), ("rebooting", 2),
    ]  # fmt: skip
    assert {p["imageDigest"] for p in phases} == {V1_DIGEST}  # what ran when each was recorded
    assert "via upgrade bundle" in str(phases[1]["message"])
    assert not list((tmp_path / "run").glob("agent-upgrade-payload*"))

    # Boot 2 (slot B, tentative, hub still unreachable): confirmed by its health checks;
    # the stick (still attached) is now an old generation.
    host.grubenv.write_bytes(
        grubenv_block({"edgekit_active": "A", "edgekit_try": "B", "edgekit_tries": "2"})
    )
    shutil.rmtree(tmp_path / "run")
    (tmp_path / "run").mkdir()
    out = host.sh("airgap_turn; echo rc=$?", "edgekit.slot=B")
    assert (
        f"edgekit-agent: slot B confirmed healthy: it is the active slot now (image {v2.digest})"
        in out
    )
    assert (
        "edgekit-agent: upgrade bundle refused: edgekit-upgrade-air-1.json carries generation 2, "
        "but 2 is applied (EDGEKIT-UPG, /dev/sdz); nothing of it is used" in out
    ), out
    assert "REBOOT" not in out
    assert host.env() == ["edgekit_active=B", "edgekit_passive=A"]
    assert not (tmp_path / "state" / "upgrade.env").exists()
    assert [p["phase"] for p in host.phases()][-1] == "healthy"
    assert host.phases()[-1]["imageDigest"] == v2.digest
    [member] = fleet.admin.clusters.status("air-1").hosts
    assert member.phase != "healthy" or member.observed_generation != 2  # not told yet

    # The hub is reachable again: the kept phases go in order; the hub has v2 healthy.
    out = host.sh(
        'HOSTPATH="$HP" AUTH="Authorization: Bearer $CRED"\nphases_flush; echo rc=$?',
        "edgekit.slot=B",
    )
    assert "edgekit-agent: reported 4 phases recorded while the hub was unreachable" in out, out
    assert "rc=0" in out
    assert not (tmp_path / "state" / "phases.pending").exists()
    [member] = fleet.admin.clusters.status("air-1").hosts
    assert (member.observed_generation, member.phase, member.image_digest) == (
        2, "healthy", v2.digest,
    )  # fmt: skip
    assert fleet.credentials["air-1"] not in out


def test_a_bundle_that_needs_no_image_applies_in_place(fleet: Fleet, tmp_path: Path) -> None:
    host = Host(fleet, "air-3", tmp_path)
    bundle = fleet.bundles["air-3"]
    # (the bundle carries the image its desired state names, v1: checked, not staged)
    assert bundle.desired["upgrade"] == "in_place"
    out = host.sh("airgap_turn; echo rc=$?", "edgekit.slot=A")
    assert (
        "edgekit-agent: upgrade bundle accepted: edgekit-upgrade-air-3.json generation 2, "
        f"image {bundle.image_digest} (EDGEKIT-UPG, /dev/sdz)" in out
    ), out
    assert "observed generation=2 upgrade=in_place from the upgrade bundle: reported healthy" in out
    assert "rc=0" in out
    assert "REBOOT" not in out
    assert [(p["phase"], p["observedGeneration"]) for p in host.phases()] == [("healthy", 2)]
    kept = json.loads((tmp_path / "state" / "desired.json").read_text())
    assert kept["desired"]["values"] == bundle.desired["values"]
    assert host.env() == ["edgekit_active=A", "edgekit_passive=B"]  # no slot touched


def _refused(host: Host, tmp_path: Path, stick: Path, why: str) -> None:
    """One turn refuses with one line containing ``why`` and changes nothing; a second turn
    in the same boot says nothing again."""
    before_env = host.env()
    out = host.sh("airgap_turn; echo rc=$?", "edgekit.slot=A", stick=stick)
    lines = host.agent_lines(out)
    assert len(lines) == 1, out
    assert lines[0].startswith("edgekit-agent: upgrade bundle refused: "), out
    assert why in lines[0], out
    assert "rc=1" in out
    assert "REBOOT" not in out
    assert host.env() == before_env
    assert not (tmp_path / "state-mnt" / "slots" / "B").exists()
    assert not (tmp_path / "state" / "upgrade.env").exists()
    assert not (tmp_path / "state" / "desired.json").exists()
    assert host.phases() == []
    assert (tmp_path / "state" / "observed").read_text().strip().endswith(":1")
    assert not list((tmp_path / "run").glob("agent-upgrade-payload*"))
    again = host.sh("airgap_turn; echo rc=$?", "edgekit.slot=A", stick=stick)
    assert host.agent_lines(again) == [], again


def _copy_stick(fleet: Fleet, dest: Path, uids: tuple[str, ...]) -> Path:
    src = fleet.stick / "edgekit-upgrade"
    (dest / "edgekit-upgrade").mkdir(parents=True)
    shutil.copytree(src / "images", dest / "edgekit-upgrade" / "images")
    for uid in uids:
        name = f"edgekit-upgrade-{uid}.json"
        shutil.copy(src / name, dest / "edgekit-upgrade" / name)
    return dest


def test_a_stick_for_another_host_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    host = Host(fleet, "air-1", tmp_path / "host")
    stick = _copy_stick(fleet, tmp_path / "stick", ("air-2",))
    _refused(
        host, tmp_path / "host", stick,
        "EDGEKIT-UPG (/dev/sdz) has no edgekit-upgrade-air-1.json (it holds bundles for "
        "other hosts: air-2)",
    )  # fmt: skip


def test_a_renamed_envelope_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    host = Host(fleet, "air-1", tmp_path / "host")
    stick = _copy_stick(fleet, tmp_path / "stick", ())
    shutil.copy(
        fleet.bundles["air-2"].path, stick / "edgekit-upgrade" / "edgekit-upgrade-air-1.json"
    )
    _refused(host, tmp_path / "host", stick, "is for host air-2, not air-1")


def test_another_token_fails_the_hmac_check(fleet: Fleet, tmp_path: Path) -> None:
    host = Host(fleet, "air-1", tmp_path / "host", token="ekt_" + "x" * 40)
    _refused(host, tmp_path / "host", fleet.stick, "fails its HMAC check")


def test_a_damaged_blob_is_refused_before_anything_is_staged(fleet: Fleet, tmp_path: Path) -> None:
    host = Host(fleet, "air-1", tmp_path / "host")
    stick = _copy_stick(fleet, tmp_path / "stick", ("air-1",))
    bundle = fleet.bundles["air-1"]
    assert bundle.layout is not None
    assert bundle.image_digest is not None
    blobs = stick / "edgekit-upgrade" / "images" / bundle.layout.name / "blobs" / "sha256"
    manifest = json.loads((blobs / bundle.image_digest.removeprefix("sha256:")).read_text())
    layer = blobs / manifest["layers"][-1]["digest"].removeprefix("sha256:")
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 0xFF
    layer.write_bytes(bytes(data))
    why = f"blob sha256:{layer.name} of the image is missing or does not match its digest"
    _refused(host, tmp_path / "host", stick, why)


def test_an_old_generation_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    host = Host(fleet, "air-2", tmp_path / "host")
    (tmp_path / "host" / "state" / "observed").write_text(f"{fleet.cluster_uids['air-2']}:2\n")
    before = (tmp_path / "host" / "state" / "observed").read_text()
    out = host.sh("airgap_turn; echo rc=$?", "edgekit.slot=A")
    assert host.agent_lines(out) == [
        "edgekit-agent: upgrade bundle refused: edgekit-upgrade-air-2.json carries generation 2,"
        " but 2 is applied (EDGEKIT-UPG, /dev/sdz); nothing of it is used"
    ], out
    assert (tmp_path / "host" / "state" / "observed").read_text() == before
    assert not (tmp_path / "host" / "state-mnt" / "slots" / "B").exists()


def test_a_watch_turn_with_the_hub_unreachable_applies_the_stick_once(
    fleet: Fleet, upgradable_images: UpgradableImages, tmp_path: Path
) -> None:
    host = Host(fleet, "air-1", tmp_path)
    (tmp_path / "run" / "beat.json").write_text("{}")
    cluster_uid = fleet.cluster_uids["air-1"]
    # Nothing listens on port 9 of 127.0.0.1: every poll of the 3 s watch gets no answer.
    out = host.sh(
        'watch_desired http://127.0.0.1:9/v1/edgehosts/air-1 "Authorization: Bearer x" '
        f'"$EDGEKIT_AGENT_RUN_DIR/beat.json" 3 1 "{cluster_uid}:1"; echo rc=$?',
        "edgekit.slot=A",
    )
    assert out.count("edgekit-agent: upgrade bundle accepted: edgekit-upgrade-air-1.json") == 1
    assert out.count("REBOOT") == 1, out
    assert "rc=0" in out
    image = json.loads((tmp_path / "state-mnt" / "slots" / "B" / "image.json").read_text())
    assert image["digest"] == upgradable_images.v2.digest
    assert [p["phase"] for p in host.phases()] == ["downloading", "applying", "rebooting"]


def test_a_bundle_slot_that_falls_back_is_recorded_rolled_back_offline(
    fleet: Fleet, tmp_path: Path
) -> None:
    host = Host(fleet, "air-2", tmp_path)
    out = host.sh("airgap_turn", "edgekit.slot=A")
    assert "REBOOT" in out, out
    # Slot B never confirmed (its kernel panicked three times): GRUB boots A again.
    host.grubenv.write_bytes(grubenv_block({"edgekit_active": "A", "edgekit_passive": "B"}))
    shutil.rmtree(tmp_path / "run")
    (tmp_path / "run").mkdir()
    out = host.sh("airgap_turn; echo rc=$?", "edgekit.slot=A edgekit.fallback=B")
    assert "edgekit-agent: rolled back to slot A (v1 " in out, out
    assert "carries generation 2, but 2 is applied" in out  # not applied again
    assert "REBOOT" not in out
    last = host.phases()[-1]
    assert (last["phase"], last["observedGeneration"], last["imageDigest"]) == (
        "rolled-back",
        2,
        V1_DIGEST,
    )
    assert "GRUB fell back (edgekit.fallback=B)" in str(last["message"])
    assert "F_GENERATION=2" in (tmp_path / "state" / "failed.env").read_text()
    assert not (tmp_path / "state" / "upgrade.env").exists()


def test_an_airgapped_host_registering_by_file_applies_the_stick_at_boot(
    fleet: Fleet, tmp_path: Path
) -> None:
    host = Host(fleet, "air-1", tmp_path)
    shutil.copy(host.user_data, tmp_path / "run" / "user-data")  # as the installer hook leaves it
    out = host.sh(
        "agent_main", "edgekit.slot=A edgekit.agent.transport=file edgekit.agent.uid=air-1"
    )
    lines = host.agent_lines(out)
    accepted = [i for i, line in enumerate(lines) if "upgrade bundle accepted" in line]
    assert len(accepted) == 1, out
    assert "REBOOT" in out
    # The stick came first; the registration bundle after it (here: no EDGEKIT-REG stick).
    assert (
        lines[-1]
        == "edgekit-agent: error: no filesystem labelled EDGEKIT-REG for the registration bundle"
    )
    assert [p["phase"] for p in host.phases()] == ["downloading", "applying", "rebooting"]


def test_kept_phases_survive_a_failed_send_and_a_refused_one_is_dropped(
    fleet: Fleet, tmp_path: Path
) -> None:
    host = Host(fleet, "air-2", tmp_path)
    pending = tmp_path / "state" / "phases.pending"
    bad = {"phase": "healthy", "observedGeneration": 99, "message": "not the hub's generation"}
    good = {"phase": "applying", "observedGeneration": 2, "imageDigest": V1_DIGEST,
            "message": "kept"}  # fmt: skip
    pending.write_text(f"{json.dumps(bad)}\n{json.dumps(good)}\n")
    before = pending.read_text()
    out = host.sh(
        'HOSTPATH=http://127.0.0.1:9/v1/edgehosts/air-2 AUTH="Authorization: Bearer $CRED"\n'
        "phases_flush; echo rc=$?",
        "edgekit.slot=A",
    )
    assert "sending the phases recorded offline failed (000 " in out, out
    assert "rc=1" in out
    assert pending.read_text() == before  # nothing lost
    out = host.sh(
        'HOSTPATH="$HP" AUTH="Authorization: Bearer $CRED"\nphases_flush; echo rc=$?',
        "edgekit.slot=A",
    )
    assert "the hub refused a phase recorded offline (400 " in out, out
    assert "reported 1 phases recorded while the hub was unreachable" in out, out
    assert not pending.exists()
    [member] = fleet.admin.clusters.status("air-2").hosts
    assert (member.phase, member.observed_generation, member.message) == ("applying", 2, "kept")
