"""The README's main job (`edgekit demo`): hub, build, a host installed from the installer ISO
onto a blank disk in QEMU boots that disk, registers and takes its cluster assignment, all
on this machine."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from cli_runner import edgekit

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart" / "edgeforge.yaml"


def demo(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        "SOURCE_DATE_EPOCH": "1700000000",
        "EDGEKIT_CACHE_DIR": os.environ.get("EDGEKIT_TEST_CACHE", "/tmp/edgekit-test-cache"),
        "EDGEKIT_REGISTRATION_TOKEN": None,  # the demo makes its own
    }
    return edgekit("demo", str(QUICKSTART), "-o", str(out), *extra, env=env, timeout=1500)


@pytest.mark.qemu
def test_demo_registers_a_host_and_assigns_it_a_cluster(tmp_path: Path):
    out = tmp_path / "dist"
    proc = demo(out, "--json")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    doc = json.loads(proc.stdout)
    names = {a["name"] for a in doc["artifacts"]}
    assert {"provider-image/sample", "installer-iso/edgekit-installer"} <= names
    host = doc["host"]
    assert host["site"] == "store-0042"
    assert host["state"] == "in_use"
    assert host["address"] == "10.0.2.15"
    assert doc["cluster"] == "store-0042"
    assert doc["assignment"].startswith("cluster=store-0042 role=control-plane image=")
    # installed onto a blank disk, which then booted alone and registered
    assert doc["installed"].startswith("edgekit-installer: installed ")
    assert Path(doc["disk"]).is_file()
    assert (out / "hub" / "hub.db").exists()
    # The token the demo minted went into the user-data, never into records or output.
    assert "ekt_" not in proc.stdout
    assert "ekt_" not in (out / "manifest.json").read_text()


def test_demo_without_boot_builds_and_serves(tmp_path: Path):
    proc = demo(tmp_path / "dist", "--json", "--no-boot")
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads(proc.stdout)
    assert doc["host"] is None
    assert doc["bootSkipped"] == "--no-boot"
    assert doc["hub"]["url"].startswith("http://127.0.0.1:")
