"""The agent's boot-time half of an upgrade (``upgrade.sh``), run by the host's busybox sh
against a real hub, with directories standing in for COS_STATE and COS_GRUB and a kernel
command line file: a tentative slot whose health checks pass becomes active; one whose
check fails is given up at once (tries=0, reboot) and the previous slot's boot reports
``rolled-back`` with that check's words, and the same generation is not applied again; a
``reboot`` upgrade reboots and reports ``healthy`` on the next boot. GRUB's
``grub-editenv`` reads every environment block written. The QEMU path (a slot whose
kernel panics) is tests/test_device_upgrade.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from edgekit_agent import agent_files, agent_parts_dir
from edgekit_iso.diskboot import grubenv_block

from edgekit import model
from edgekit.hub import HubClient, HubServer
from edgekit.hub.status import HostStatus

AGENT = agent_files()["usr/bin/edgekit-agent"]
PROFILE = model.ClusterProfile(
    "retail", "1.0.0", (model.Pack.os("sample", "12"), model.Pack.k8s("k3s", "1.30.4"))
)
DIGEST = {"A": "sha256:" + "aa" * 32, "B": "sha256:" + "bb" * 32}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    with HubServer(tmp_path_factory.mktemp("hub") / "hub.db", access_log=False) as server:
        server.client().profiles.publish(PROFILE)
        yield server


class Device:
    """A host registered on the hub, in a cluster updated to generation 2 (a repave), and
    the files its agent sees."""

    def __init__(self, hub: HubServer, name: str, root: Path) -> None:
        self.hub, self.name, self.root = hub, name, root
        self.admin: HubClient = hub.client()
        token = self.admin.tokens.create(name, site=name)
        assert token.secret is not None
        self.credential = hub.host_client(name).register(token.secret).credential.reveal()
        self.cluster_uid = self.admin.clusters.create(
            model.Cluster.single_node(name, PROFILE.ref, name), provider_image="r.example/i:1"
        ).uid
        assert self.admin.clusters.update(name, provider_image="r.example/i:2").generation == 2
        for slot in "AB":
            d = root / "state-mnt" / "slots" / slot
            d.mkdir(parents=True)
            (d / "image.json").write_text(
                json.dumps(
                    {"digest": DIGEST[slot], "ref": f"r.example/i:{slot}", "version": slot},
                    indent=2,
                )
            )
        (root / "grub" / "grub").mkdir(parents=True)
        self.grubenv = root / "grub" / "grub" / "grubenv"
        self.grubenv.write_bytes(
            grubenv_block({"edgekit_active": "A", "edgekit_try": "B", "edgekit_tries": "2"})
        )
        (root / "state").mkdir()
        (root / "run").mkdir()
        (root / "health").mkdir()

    def upgrade_env(self, kind: str = "repave") -> None:
        (self.root / "state" / "upgrade.env").write_text(
            f"U_KIND={kind}\nU_CLUSTER='{self.cluster_uid}'\nU_GENERATION=2\nU_SLOT=B\nU_FROM=A\n"
            f"U_REF='r.example/i:2'\nU_DIGEST={DIGEST['B']}\n"
        )

    def sh(self, script: str, cmdline: str) -> subprocess.CompletedProcess[str]:
        if shutil.which("busybox") is None:
            pytest.fail("busybox is required (apt-get install busybox-static)")
        (self.root / "cmdline").write_text(cmdline + "\n")
        return subprocess.run(
            ["busybox", "sh", "-c",
             f'EDGEKIT_AGENT_LIB=1 . "{AGENT}"\nHOSTPATH="$HP" AUTH="Authorization: Bearer $CRED"\n'
             f"{script}"],
            capture_output=True, text=True, timeout=60, check=False,
            env={
                "PATH": "/usr/bin:/bin",
                "EDGEKIT_AGENT_PARTS": str(agent_parts_dir()),
                "EDGEKIT_AGENT_RUN_DIR": str(self.root / "run"),
                "EDGEKIT_AGENT_STATE_DIR": str(self.root / "state"),
                "EDGEKIT_AGENT_STATE_MNT": str(self.root / "state-mnt"),
                "EDGEKIT_AGENT_GRUB_MNT": str(self.root / "grub"),
                "EDGEKIT_AGENT_HEALTH_DIR": str(self.root / "health"),
                "EDGEKIT_AGENT_CMDLINE": str(self.root / "cmdline"),
                "EDGEKIT_AGENT_REBOOT": "echo REBOOT",
                "HP": f"{self.hub.url}/v1/edgehosts/{self.name}",
                "CRED": self.credential,
            },
        )  # fmt: skip

    def desired(self, **changes: str) -> Path:
        """The desired-state answer the agent reads (the hub's own JSON), with ``changes``."""
        answer = requests.get(
            f"{self.hub.url}/v1/edgehosts/{self.name}/desired-state",
            headers={"Authorization": f"Bearer {self.credential}"},
            timeout=10,
        ).json()
        answer["desired"].update(changes)
        path = self.root / "run" / "desired.json"
        path.write_text(json.dumps(answer))
        return path

    def env(self) -> list[str]:
        listed = subprocess.run(
            ["grub-editenv", str(self.grubenv), "list"], capture_output=True, text=True, check=True
        ).stdout
        return sorted(listed.split())

    def member(self) -> HostStatus:
        [m] = self.admin.clusters.status(self.name).hosts
        return m


def test_a_tentative_slot_whose_checks_pass_becomes_active(hub: HubServer, tmp_path: Path) -> None:
    dev = Device(hub, "confirm-1", tmp_path)
    dev.upgrade_env()
    check = tmp_path / "health" / "10-ok"
    check.write_text("#!/bin/sh\nexit 0\n")
    check.chmod(0o755)
    out = dev.sh("upgrade_boot_check", "console=ttyS0 edgekit.slot=B")
    assert out.returncode == 0, out.stderr
    assert (
        f"slot B confirmed healthy: it is the active slot now (image {DIGEST['B']})" in out.stdout
    )
    assert "REBOOT" not in out.stdout
    assert dev.env() == ["edgekit_active=B", "edgekit_passive=A"]
    assert not (tmp_path / "state" / "upgrade.env").exists()
    assert (tmp_path / "run" / "agent-confirmed").exists()  # the watchdog stands down
    m = dev.member()
    assert (m.observed_generation, m.phase, m.image_digest) == (2, "healthy", DIGEST["B"])
    assert dev.credential not in out.stdout + out.stderr


def test_a_failing_check_falls_back_at_once_and_the_rollback_is_reported(
    hub: HubServer, tmp_path: Path
) -> None:
    dev = Device(hub, "confirm-2", tmp_path)
    dev.upgrade_env()
    check = tmp_path / "health" / "20-store-db"
    check.write_text(
        "#!/bin/sh\necho 'starting the store database'\necho 'db: port 5432 refused'\nexit 1\n"
    )
    check.chmod(0o755)
    out = dev.sh("upgrade_boot_check", "edgekit.slot=B")
    assert "REBOOT" in out.stdout, out.stdout + out.stderr
    assert dev.env() == ["edgekit_active=A", "edgekit_tries=0", "edgekit_try=B"]  # GRUB falls back
    m = dev.member()
    assert (m.phase, m.observed_generation) == ("failed", 2)
    assert "health check 20-store-db failed: db: port 5432 refused" in (m.message or "")

    # What GRUB does on the next boot with tries=0: forgets the try, boots A, marks it.
    dev.grubenv.write_bytes(grubenv_block({"edgekit_active": "A"}))
    out = dev.sh("upgrade_boot_check", "edgekit.slot=A edgekit.fallback=B")
    assert out.returncode == 0, out.stderr
    assert "rolled back to slot A (A " in out.stdout, out.stdout
    m = dev.member()
    assert (m.phase, m.observed_generation, m.image_digest) == ("rolled-back", 2, DIGEST["A"])
    assert "health check 20-store-db failed: db: port 5432 refused" in (m.message or "")
    assert "GRUB fell back (edgekit.fallback=B)" in (m.message or "")
    assert not (tmp_path / "state" / "upgrade.env").exists()

    # The same generation is not applied again (no pull, no report).
    desired = dev.desired()
    out = dev.sh(
        f'oci_pull() {{ echo PULLED; return 1; }}\napply_desired "{desired}" && echo handled',
        "edgekit.slot=A",
    )
    assert out.stdout.strip() == "handled", out.stdout + out.stderr
    assert dev.member().phase == "rolled-back"


def test_a_reboot_upgrade_reboots_and_reports_healthy_after(hub: HubServer, tmp_path: Path) -> None:
    dev = Device(hub, "confirm-3", tmp_path)
    desired = dev.desired(upgrade="reboot")
    out = dev.sh(f'apply_desired "{desired}"', "edgekit.slot=A")
    assert "REBOOT" in out.stdout, out.stdout + out.stderr
    assert dev.member().phase == "rebooting"
    assert "U_KIND=reboot" in (tmp_path / "state" / "upgrade.env").read_text()
    kept = json.loads((tmp_path / "state" / "desired.json").read_text())
    assert kept["desired"]["generation"] == 2  # kept where an offline boot finds it
    out = dev.sh("upgrade_boot_check", "edgekit.slot=A")
    assert out.returncode == 0, out.stderr
    m = dev.member()
    assert (m.phase, m.observed_generation, m.image_digest) == ("healthy", 2, DIGEST["A"])
    assert not (tmp_path / "state" / "upgrade.env").exists()


def test_a_live_boot_reports_that_it_cannot_repave(hub: HubServer, tmp_path: Path) -> None:
    dev = Device(hub, "confirm-4", tmp_path)
    desired = dev.desired()
    out = dev.sh(f'apply_desired "{desired}"', "console=ttyS0")
    assert out.returncode == 0, out.stdout + out.stderr
    m = dev.member()
    assert m.phase == "failed"
    assert "cannot repave: this host runs live, not from an installed disk" in (m.message or "")


def test_the_watchdog_reboots_a_tentative_slot_left_unconfirmed(
    hub: HubServer, tmp_path: Path
) -> None:
    dev = Device(hub, "confirm-5", tmp_path)
    dev.upgrade_env()
    out = dev.sh("upgrade_boot_start; wait", "edgekit.slot=B edgekit.agent.confirm_within=2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "edgekit-agent: slot B is tentative (2 boots left after this one)" in lines
    assert lines[-2:] == [
        "edgekit-agent: slot B not confirmed healthy within 2s (edgekit.agent.confirm_within):"
        " rebooting",
        "REBOOT",
    ]
    # Confirmed in time: the watchdog stands down without rebooting.
    out = dev.sh(
        'upgrade_boot_start; touch "$EDGEKIT_AGENT_RUN_DIR/agent-confirmed"; wait',
        "edgekit.slot=B edgekit.agent.confirm_within=4",
    )
    assert out.returncode == 0, out.stderr
    assert "REBOOT" not in out.stdout
    # The previous slot (not tentative) starts no watchdog.
    (tmp_path / "run" / "agent-confirmed").unlink()
    out = dev.sh("upgrade_boot_start; wait", "edgekit.slot=A edgekit.agent.confirm_within=1")
    assert "REBOOT" not in out.stdout
    assert "tentative" not in out.stdout
