"""`edgekit push|pull|referrers` and `edgekit iso inspect` against a real docker-registry on
127.0.0.1 (the `registry` fixtures come from edgekit_oras.testing), checked with skopeo."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import cli_runner
import pytest
from edgekit_iso.siteiso import write_site_iso
from umoci_images import tool, umoci_layout


def edgekit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"DOCKER_CONFIG": str(cwd or Path.cwd())}
    return cli_runner.edgekit(*args, env=env, cwd=cwd, timeout=300)


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, str]:
    """A small image built by umoci (an independent tool), tagged v1; (layout, digest)."""
    return umoci_layout(tmp_path)


def test_push_pull_and_referrers_round_trip(registry, layout, tmp_path: Path):
    lay, digest = layout
    repo = f"{registry.host}/fleet/sample"

    pushed = edgekit("push", f"oci:{lay}:v1", f"{repo}:v1", "--plain-http", "--json", cwd=tmp_path)
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["digest"] == digest
    remote = json.loads(tool("skopeo", "inspect", "--tls-verify=false", f"docker://{repo}:v1"))
    assert remote["Digest"] == digest  # byte-exact

    again = edgekit("push", f"oci:{lay}:v1", f"{repo}:v1", "--plain-http", "--json", cwd=tmp_path)
    assert json.loads(again.stdout)["uploadedBytes"] == 0

    iso = tmp_path / "store-1.iso"
    write_site_iso(iso, user_data="#cloud-config\n{}\n")
    attached = edgekit(
        "push", str(iso), repo, "--subject", digest, "--plain-http", "--json", cwd=tmp_path
    )
    assert attached.returncode == 0, attached.stderr
    artifact_digest = json.loads(attached.stdout)["digest"]

    listed = edgekit("referrers", f"{repo}:v1", "--plain-http", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    [ref] = json.loads(listed.stdout)["referrers"]
    assert ref["artifactType"] == "application/vnd.edgekit.iso.v1"
    assert ref["digest"] == artifact_digest

    dest = tmp_path / "pulled"
    got = edgekit("pull", f"{repo}:v1", str(dest), "--plain-http", "--json", cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert json.loads(tool("skopeo", "inspect", f"oci:{dest}:v1"))["Digest"] == digest
    tool("umoci", "unpack", "--image", f"{dest}:v1", str(tmp_path / "bundle"))
    assert (tmp_path / "bundle" / "rootfs" / "etc" / "motd").read_text() == "hello from umoci\n"

    file = tmp_path / "back.iso"
    got = edgekit("pull", f"{repo}@{artifact_digest}", str(file), "--plain-http", cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert file.read_bytes() == iso.read_bytes()


def test_wrong_password_is_a_clear_error(auth_registry, layout, tmp_path: Path):
    lay, _ = layout
    config = tmp_path / "config.json"
    import base64

    secret = "not-the-password"
    basic = base64.b64encode(f"{auth_registry.username}:{secret}".encode()).decode()
    config.write_text(json.dumps({"auths": {auth_registry.host: {"auth": basic}}}))
    target = f"{auth_registry.host}/fleet/sample:v1"
    proc = edgekit(
        "push", f"oci:{lay}:v1", target, "--plain-http", "--auth-config", str(config), cwd=tmp_path
    )
    assert proc.returncode == 1
    assert "\nerror: push to " in "\n" + proc.stderr
    assert "Traceback" not in proc.stderr
    assert secret not in proc.stderr + proc.stdout
    assert "401" in proc.stderr or "authentication" in proc.stderr.lower()


def test_unreachable_registry_fails_cleanly(layout, tmp_path: Path):
    lay, _ = layout
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = edgekit("push", f"oci:{lay}:v1", f"127.0.0.1:{port}/x/y:v1", "--plain-http")
    assert proc.returncode == 1
    assert f"127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        ("oci:nolayout", "127.0.0.1:5000/x:v1", "is not oci:PATH:TAG"),
        ("missing.iso", "127.0.0.1:5000/x:v1", "no such file"),
        ("{layout}", "Not A Reference!", "reference"),
    ],
)
def test_bad_input_exits_2(layout, tmp_path: Path, source: str, target: str, message: str):
    lay, _ = layout
    proc = edgekit("push", source.replace("{layout}", f"oci:{lay}:v1"), target, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_iso_inspect_prints_label_files_and_user_data(tmp_path: Path):
    iso = tmp_path / "store-9.iso"
    write_site_iso(iso, user_data="#cloud-config\nstylus:\n  site:\n    name: store-9\n")
    proc = edgekit("iso", "inspect", str(iso), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["volume_label"] == "cidata"
    assert {f["path"] for f in info["files"]} == {"/user-data", "/meta-data"}
    assert "name: store-9" in info["user_data"]
    text = edgekit("iso", "inspect", str(iso))
    assert "label cidata" in text.stdout
    assert "not bootable" in text.stdout
    missing = edgekit("iso", "inspect", str(tmp_path / "nope.iso"))
    assert missing.returncode == 1
    assert "no such file" in missing.stderr


@pytest.mark.parametrize("command", ["push", "pull", "referrers"])
def test_an_unknown_publisher_is_a_usage_error(tmp_path: Path, command: str):
    (tmp_path / "x.iso").write_bytes(b"iso")
    args = {"push": ["x.iso", "127.0.0.1:9/x"], "pull": ["127.0.0.1:9/x:v1", "d"]}
    argv = [command, *args.get(command, ["127.0.0.1:9/x:v1"]), "--publisher", "nope"]
    proc = edgekit(*argv, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "d").exists()


def test_a_refused_argument_prints_only_its_error(tmp_path: Path):
    proc = edgekit("push", "missing.iso", "127.0.0.1:9/x", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: 1 problem found:",
        "  source: missing.iso: no such file (nor oci:PATH:TAG)",
    ]
