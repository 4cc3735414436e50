"""The README's main job, end to end: the quick-start forge file through the real CLI and
the built-in backends, checked with independent tools (skopeo, umoci, xorriso)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cli_runner import edgekit

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart" / "edgeforge.yaml"
TOKEN = "ekt_quickstart-test-token-0123456789"
EPOCH = "1700000000"


def forge(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        "EDGEKIT_REGISTRATION_TOKEN": TOKEN,
        "SOURCE_DATE_EPOCH": EPOCH,
        # Downloads (the sample OS's .debs) and layers are shared between runs.
        "EDGEKIT_CACHE_DIR": os.environ.get("EDGEKIT_TEST_CACHE", "/tmp/edgekit-test-cache"),
    }
    return edgekit("forge", str(QUICKSTART), "-o", str(out), *extra, env=env, timeout=900)


def tool(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, object]]]:
    out = tmp_path_factory.mktemp("quickstart") / "dist"
    proc = forge(out, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    return out, {a["name"]: a for a in manifest["artifacts"]}


def test_manifest_lists_every_artifact_with_its_digest(built):
    out, artifacts = built
    assert set(artifacts) == {
        "provider-image/sample",
        "installer-iso/edgekit-installer",
        "site-iso/store-0042",
        "site-iso/store-0043",
        "published-provider-image/sample",
        "published-installer-iso/edgekit-installer",
        "published-site-iso/store-0042",
        "published-site-iso/store-0043",
    }
    iso = artifacts["installer-iso/edgekit-installer"]
    assert iso["path"] == "iso/edgekit-installer.iso"
    sha = tool("sha256sum", str(out / "iso" / "edgekit-installer.iso")).split()[0]
    assert iso["digest"] == f"sha256:{sha}"
    assert (out / "iso" / "edgekit-installer.iso.sha256").read_text().split()[0] == sha


def test_provider_image_is_a_valid_oci_image(built, tmp_path: Path):
    out, artifacts = built
    image = artifacts["provider-image/sample"]
    tag = image["reference"]
    assert tag == "k3s-1.30.4-v0.1.0-quickstart"
    info = json.loads(tool("skopeo", "inspect", f"oci:{out / 'images' / 'sample'}:{tag}"))
    assert info["Digest"] == image["digest"]
    assert info["Labels"]["io.edgekit.kubernetes.distribution"] == "k3s"
    assert info["Labels"]["io.edgekit.profile.name"] == "retail"
    bundle = tmp_path / "bundle"
    tool("umoci", "unpack", "--image", f"{out / 'images' / 'sample'}:{tag}", str(bundle))
    rootfs = bundle / "rootfs"
    assert (rootfs / "boot" / "vmlinuz").stat().st_size > 1_000_000
    assert "edgekit-sample" in (rootfs / "etc" / "os-release").read_text()
    assert "PLACEHOLDER, NOT KUBERNETES" in (rootfs / "usr" / "local" / "bin" / "k3s").read_text()
    assert (rootfs / "etc" / "rancher" / "k3s" / "config.yaml").exists()


def test_published_image_is_byte_exact_and_the_iso_refers_to_it(built):
    out, artifacts = built
    registry = out / "registry"
    published = artifacts["published-provider-image/sample"]
    assert published["digest"] == artifacts["provider-image/sample"]["digest"]
    tag = artifacts["provider-image/sample"]["reference"]
    info = json.loads(tool("skopeo", "inspect", f"oci:{registry}:{tag}"))
    assert info["Digest"] == published["digest"]
    from edgekit_oras import list_referrers

    referrers = list_referrers(f"oci:{registry}:{tag}")
    assert [r.artifact_type for r in referrers] == ["application/vnd.edgekit.iso.v1"]
    iso_manifest = json.loads(
        (registry / "blobs" / "sha256" / referrers[0].digest.split(":")[1]).read_text()
    )
    notes = iso_manifest["annotations"]
    assert notes["dev.edgekit.profile"] == "retail"
    assert notes["dev.edgekit.image.digest"] == published["digest"]
    [layer] = iso_manifest["layers"]
    assert layer["annotations"]["org.opencontainers.image.title"] == "edgekit-installer.iso"
    assert notes["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"


def test_installer_iso_is_hybrid_bios_and_uefi(built):
    out, _ = built
    iso = out / "iso" / "edgekit-installer.iso"
    report = tool(
        "xorriso", "-indev", str(iso), "-report_el_torito", "plain", "-report_system_area", "plain"
    )
    assert "El Torito boot img :   1  BIOS" in report
    assert "El Torito boot img :   2  UEFI" in report
    assert "GPT array CRC wrong" not in report
    listing = tool("xorriso", "-indev", str(iso), "-find", "/", "-name", "config.yaml")
    assert "/config.yaml" in listing
    assert "Volume Id    : COS_LIVE" in tool("xorriso", "-indev", str(iso), "-pvd_info")


def test_user_data_carries_registration_but_secrets_stay_out_of_records(built, tmp_path: Path):
    out, _ = built
    tool(
        "xorriso", "-osirrox", "on", "-indev", str(out / "iso" / "edgekit-installer.iso"),
        "-extract", "/config.yaml", str(tmp_path / "config.yaml"),
    )  # fmt: skip
    config = (tmp_path / "config.yaml").read_text()
    assert config.startswith("#cloud-config\n")
    assert "paletteEndpoint: http://10.0.2.2:8080" in config
    assert TOKEN in config
    site = out / "sites" / "store-0043.iso"
    tool("xorriso", "-osirrox", "on", "-indev", str(site), "-extract", "/user-data",
         str(tmp_path / "user-data"))  # fmt: skip
    site_data = (tmp_path / "user-data").read_text()
    assert "name: store-0043" in site_data
    assert "ipAddress: 10.0.10.25/24" in site_data
    for record in (out / "manifest.json", out / ".edgekit" / "state.json"):
        assert TOKEN not in record.read_text()


def test_second_run_reuses_every_step(built):
    out, _ = built
    proc = forge(out, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ran"] == []
    assert len(doc["cached"]) == 8  # image, installer, 2 site ISOs, and publishing each


def test_identical_inputs_give_identical_artifacts(built, tmp_path: Path):
    _, artifacts = built
    again = tmp_path / "dist"
    proc = forge(again, "--json", "--no-cache")  # a real rebuild: no layer or step reused
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((again / "manifest.json").read_text())
    digests = {a["name"]: a["digest"] for a in manifest["artifacts"]}
    assert digests == {name: a["digest"] for name, a in artifacts.items()}


def test_bad_forge_file_leaves_nothing_behind(tmp_path: Path):
    bad = tmp_path / "edgeforge.yaml"
    text = QUICKSTART.read_text().replace("customTag: quickstart", "customTag: 3")
    bad.write_text(text)
    out = tmp_path / "dist"
    proc = edgekit("forge", str(bad), "-o", str(out))
    assert proc.returncode == 2
    assert "$.images[0].customTag: expected a string, got the number 3" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_tools_are_installed():
    # scripts/install-deps --test installs these; a missing one must fail loudly, not skip.
    for name in ("skopeo", "umoci", "xorriso", "qemu-system-x86_64", "docker-registry"):
        assert shutil.which(name), f"{name} missing: run scripts/install-deps --test"


@pytest.mark.qemu
def test_installer_boots_bios_cd_with_a_site_iso_via_the_cli(built):
    out, _ = built
    iso = out / "iso" / "edgekit-installer.iso"
    proc = edgekit(
        "iso", "boot", str(iso),
        "--site-iso", str(out / "sites" / "store-0043.iso"),
        "--until", "edgekit-installer: mode=auto", "--timeout", "300",
        timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert "edgekit-installer: user-data from cidata" in proc.stdout
    assert "edgekit-installer: site=store-0043" in proc.stdout


@pytest.mark.qemu
def test_installer_boots_uefi_as_a_disk_with_its_own_user_data(built):
    from edgekit.vm import VirtualMachine

    out, _ = built
    with VirtualMachine(
        iso=out / "iso" / "edgekit-installer.iso", firmware="uefi", media="disk"
    ) as vm:
        text = vm.wait_for("edgekit-installer: install plan", timeout=300)
    assert "edgekit-installer: user-data from installer" in text
    assert "image=localhost/edgekit/sample:k3s-1.30.4-v0.1.0-quickstart" in text


@pytest.mark.qemu
def test_the_cli_installs_onto_a_target_disk_that_then_boots_alone(built, tmp_path: Path):
    out, _ = built
    disk = tmp_path / "store-0043.disk"
    installer = out / "iso" / "edgekit-installer.iso"
    install = edgekit(
        "iso", "boot", str(installer),
        "--site-iso", str(out / "sites" / "store-0043.iso"),
        "--target-disk", str(disk), "--target-size", "2048", "--timeout", "400",
        timeout=500,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr
    assert disk.stat().st_size == 2048 << 20  # created blank at the asked size
    table = subprocess.run(
        ["sfdisk", "--json", str(disk)], capture_output=True, text=True, check=True
    )
    labels = [p.get("name") for p in json.loads(table.stdout)["partitiontable"]["partitions"]]
    # GPT partition names (the file systems on them carry the COS_* labels).
    assert labels == ["bios", "efi", "oem", "state", "persistent"], labels
    boot = edgekit(
        "disk", "boot", str(disk),
        "--until", "edgekit-persistent: booted slot A", "--timeout", "300",
        timeout=400,
    )  # fmt: skip
    assert boot.returncode == 0, boot.stdout[-3000:] + boot.stderr
    assert "edgekit-installer" not in boot.stdout  # the disk alone, no installer


def test_disk_boot_of_a_missing_file_is_one_clear_error(tmp_path: Path):
    proc = edgekit("disk", "boot", str(tmp_path / "nope.disk"))
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
