"""What an operator's QA pass over the build side found: each test is one defect, fixed.

Real parts: the CLI as a subprocess (``cli_runner``), a real docker-registry on 127.0.0.1
(the ``registry`` fixture of edgekit_oras.testing), a real FIFO, real forge files.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import cli_runner
import pytest
from umoci_images import umoci_layout

from edgekit import Forge
from edgekit.errors import ConfigError

#: A FIFO nobody writes to: reading it blocks forever, so a command that opens it hangs.
HANG = 20.0


def edgekit(
    *args: str, cwd: Path | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    env = {"DOCKER_CONFIG": str(cwd or Path.cwd())}
    return cli_runner.edgekit(*args, env=env, cwd=cwd, timeout=timeout)


def test_referrers_names_its_argument_reference(tmp_path: Path):
    proc = edgekit("referrers", "127.0.0.1:9/edge/sample:v1:x", "--plain-http", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "  reference: invalid OCI reference" in proc.stderr  # REFERENCE, not "target"
    assert "target" not in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (os.mkfifo, "a FIFO (named pipe)"),
        (os.mkdir, "a directory"),
    ],
)
def test_push_of_a_special_file_says_what_it_is(tmp_path: Path, make, kind: str):
    make(tmp_path / "thing.iso")
    proc = edgekit("push", "thing.iso", "127.0.0.1:9/edge/x:v1", cwd=tmp_path, timeout=HANG)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "error: 1 problem found:",
        f"  source: cannot read thing.iso: it is {kind}, not a regular file",
    ]


def test_push_of_a_device_says_it_is_one(tmp_path: Path):
    proc = edgekit("push", "/dev/zero", "127.0.0.1:9/edge/x:v1", cwd=tmp_path, timeout=HANG)
    assert proc.returncode == 2, proc.stderr
    assert "source: cannot read /dev/zero: it is a device, not a regular file" in proc.stderr


@pytest.mark.parametrize("subject", ["sha256:short", "sha256:" + "A" * 64])
def test_a_malformed_subject_digest_is_refused_before_any_request(
    registry, tmp_path: Path, subject: str
):
    iso = tmp_path / "x.iso"
    iso.write_bytes(b"not much of an iso")
    target = f"{registry.host}/edge/iso:v1"
    proc = edgekit("push", "x.iso", target, "--plain-http", "--subject", subject, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "subject:" in proc.stderr
    assert "sha256:<64 lowercase hex>" in proc.stderr
    assert "attempts" not in proc.stderr  # refused here, not retried against the registry
    # Nothing was pushed: the tag does not exist.
    pull = edgekit("pull", target, "out.iso", "--plain-http", cwd=tmp_path)
    assert pull.returncode == 1
    assert "not found" in pull.stderr


def test_a_good_subject_digest_still_works(registry, tmp_path: Path):
    lay, digest = umoci_layout(tmp_path)
    repo = f"{registry.host}/edge/sample"
    push = edgekit("push", f"oci:{lay}:v1", f"{repo}:v1", "--plain-http", cwd=tmp_path)
    assert push.returncode == 0, push.stderr
    (tmp_path / "x.iso").write_bytes(b"iso bytes")
    proc = edgekit(
        "push", "x.iso", f"{repo}:iso", "--plain-http", "--subject", digest, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    found = edgekit("referrers", f"{repo}@{digest}", "--plain-http", "--json", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert '"referrers": []' not in found.stdout


def test_iso_inspect_of_a_fifo_does_not_hang(tmp_path: Path):
    os.mkfifo(tmp_path / "x.iso")
    proc = edgekit("iso", "inspect", "x.iso", cwd=tmp_path, timeout=HANG)
    assert proc.returncode == 1, proc.stderr
    assert "cannot inspect x.iso: it is a FIFO (named pipe), not an ISO image" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_iso_inspect_of_a_character_device_names_it(tmp_path: Path):
    proc = edgekit("iso", "inspect", "/dev/zero", cwd=tmp_path, timeout=HANG)
    assert proc.returncode == 1, proc.stderr
    assert "cannot inspect /dev/zero: it is a device, not an ISO image" in proc.stderr


QUICK_FORGE = """\
apiVersion: edgekit/v1
kind: Forge
name: qa
profiles:
  - name: retail
    version: 1.0.0
    packs:
      - {name: sample-os, layer: os, version: "12"}
      - {name: edge-k3s, layer: k8s, version: "1.30.4", source: {path: ./k3s}}
images:
  - name: sample
    profile: retail
    os: {distribution: debian, version: "12"}
    kubernetes: {distribution: k3s, version: "1.30.4"}
    base: {sampleOs: debian-12}
    repo: edgekit/sample
sites:
  - name: store-1
"""


@pytest.fixture
def forge_file(tmp_path: Path) -> Path:
    (tmp_path / "k3s").mkdir()
    (tmp_path / "k3s" / "k3s").write_text("#!/bin/sh\necho placeholder\n")
    path = tmp_path / "edgeforge.yaml"
    path.write_text(QUICK_FORGE)
    return path


def test_forge_load_takes_str_directories(forge_file: Path, tmp_path: Path):
    # The documented API takes a str path for the file; its directories take one too.
    forge = Forge.load(str(forge_file), output_dir=str(tmp_path / "out"), cache_dir="cache")
    assert forge.output_dir == (tmp_path / "out").resolve()
    assert forge.cache_dir == (Path.cwd() / "cache").resolve()
    assert [s.id for s in forge.plan(["provider-image"]).steps] == ["provider-image/sample"]


def test_plan_takes_one_kind_as_a_string(forge_file: Path, tmp_path: Path):
    forge = Forge.load(forge_file, output_dir=tmp_path / "out")
    assert [s.id for s in forge.plan("provider-image").steps] == ["provider-image/sample"]


def test_plan_with_a_kind_that_is_not_a_string_is_a_config_error(forge_file: Path, tmp_path: Path):
    forge = Forge.load(forge_file, output_dir=tmp_path / "out")
    with pytest.raises(ConfigError) as info:
        forge.plan([3, "nope"])  # type: ignore[list-item]
    assert [(p.path, p.message) for p in info.value.problems] == [
        ("kinds[0]", "expected a step kind (a string), got int 3"),
        (
            "kinds",
            "unknown step kind(s) nope; known: installer-iso, provider-image, publish, site-iso",
        ),
    ]
    assert not (tmp_path / "out").exists()


def test_a_non_utf8_inventory_names_the_line(forge_file: Path, tmp_path: Path):
    # A spreadsheet saved as Latin-1: 'é' is one byte 0xe9, on the third line.
    (tmp_path / "sites.csv").write_bytes(b"name,tags\nstore-2,city=lyon\nstore-3,city=b\xe9ziers\n")
    forge_file.write_text(QUICK_FORGE + "siteInventory: ./sites.csv\n")
    proc = edgekit("validate", str(forge_file), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    csv = tmp_path / "sites.csv"
    assert (
        f"  $.siteInventory: {csv} is not UTF-8 text (line 3, byte 42: invalid continuation byte)"
        f" ({csv}:3)" in proc.stderr.splitlines()
    ), proc.stderr


def test_a_site_removed_from_the_inventory_leaves_no_site_iso_behind(
    forge_file: Path, tmp_path: Path
):
    # Its ISO holds the site's user-data (network, registration): a decommissioned store's
    # ISO must not stay in sites/ to be copied onto the next batch of USB sticks.
    inventory = tmp_path / "sites.csv"
    inventory.write_text("name\nstore-2\nstore-3\n")
    forge_file.write_text(QUICK_FORGE + "siteInventory: ./sites.csv\n")
    out = tmp_path / "out"
    Forge.load(forge_file, output_dir=out).run(kinds=["site-iso"])
    sites = out / "sites"
    assert sorted(p.name for p in sites.iterdir()) == ["store-1.iso", "store-2.iso", "store-3.iso"]
    (sites / "README.txt").write_text("the operator's own file\n")

    inventory.write_text("name\nstore-3\n")
    result = Forge.load(forge_file, output_dir=out).run(kinds=["site-iso"])
    assert sorted(p.name for p in sites.iterdir()) == ["README.txt", "store-1.iso", "store-3.iso"]
    assert sorted(result.artifacts) == ["site-iso/store-1", "site-iso/store-3"]
    again = Forge.load(forge_file, output_dir=out).run(kinds=["site-iso"])
    assert again.ran == ()  # the others stayed cached

    # A run that builds no site ISO leaves sites/ alone, even with the inventory changed.
    inventory.write_text("name\n")
    Forge.load(forge_file, output_dir=out).run(kinds=["provider-image"])
    assert (sites / "store-3.iso").exists()


@pytest.mark.parametrize(
    ("command", "ref"),
    [
        ("push", "admin:Pa55w0rd@127.0.0.1:9/edge/x:v1"),
        ("pull", "https://admin:Pa55w0rd@127.0.0.1:9/edge/x:v1"),
        ("referrers", "admin:Pa55w0rd@127.0.0.1:9/edge/x:v1"),
    ],
)
def test_a_password_written_into_a_reference_is_never_printed(
    tmp_path: Path, command: str, ref: str
):
    (tmp_path / "x.iso").write_bytes(b"iso")
    args = {"push": ["x.iso", ref], "pull": [ref, "d"], "referrers": [ref]}[command]
    proc = edgekit(command, *args, "--plain-http", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Pa55w0rd" not in proc.stderr + proc.stdout
    assert "admin" not in proc.stderr + proc.stdout
    assert "credentials do not belong in a reference" in proc.stderr
    assert not (tmp_path / "d").exists()


def test_an_output_that_is_not_a_directory_says_what_it_is(forge_file: Path, tmp_path: Path):
    out = tmp_path / "out"
    os.mkfifo(out)
    proc = edgekit("build", "site-isos", str(forge_file), "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "File exists" not in proc.stderr
    assert f"output: {out}: it is a FIFO (named pipe), not a directory" in proc.stderr
    assert "Traceback" not in proc.stderr
    # The forge file's own `output:` naming a regular file (click's check does not see it).
    out.unlink()
    out.write_text("a file\n")
    forge_file.write_text(QUICK_FORGE + "output: ./out\n")
    proc = edgekit("build", "site-isos", str(forge_file), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert f"output: {out}: it is a regular file, not a directory" in proc.stderr
    assert out.read_text() == "a file\n"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (os.mkfifo, "cannot read auth.json: it is a FIFO (named pipe), not a regular file"),
        (lambda p: p.write_text("[]"), "must be a JSON object"),
        (lambda p: p.write_text('{"auths": "x"}'), "must be a JSON object"),
        (lambda p: p.write_bytes(b"{" * 20), "cannot read Docker auth config auth.json"),
    ],
)
def test_a_bad_auth_config_is_a_clear_error_and_never_hangs(
    auth_registry, tmp_path: Path, make, message: str
):
    make(tmp_path / "auth.json")
    ref = f"{auth_registry.host}/edge/x:v1"
    args = ("pull", ref, "d", "--plain-http", "--auth-config", "auth.json")
    proc = edgekit(*args, cwd=tmp_path, timeout=HANG)
    assert proc.returncode == 1, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "unexpected" not in proc.stderr
    assert not (tmp_path / "d").exists()


def test_an_auth_config_that_is_a_device_is_refused_unread(auth_registry, tmp_path: Path):
    # /dev/zero was read whole: the process grew past 14 GB before it was killed.
    ref = f"{auth_registry.host}/edge/x:v1"
    args = ("pull", ref, "d", "--plain-http", "--auth-config", "/dev/zero")
    proc = edgekit(*args, cwd=tmp_path, timeout=HANG)
    assert proc.returncode == 1, proc.stderr
    assert "cannot read /dev/zero: it is a device, not a regular file" in proc.stderr


def test_a_ca_cert_that_is_a_fifo_is_not_called_missing(tmp_path: Path):
    os.mkfifo(tmp_path / "ca.pem")
    args = ("pull", "127.0.0.1:9/edge/x:v1", "d", "--ca-cert", "ca.pem")
    proc = edgekit(*args, cwd=tmp_path, timeout=HANG)
    assert proc.returncode == 1, proc.stderr
    assert "CA certificate ca.pem: it is a FIFO (named pipe), not a regular file" in proc.stderr


def _char_device(path: Path) -> None:
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null of our own


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (os.mkfifo, "a FIFO (named pipe)"),
        pytest.param(
            _char_device,
            "a device",
            marks=pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root"),
        ),
    ],
)
def test_pull_never_replaces_a_fifo_or_device_with_the_artifact(
    registry, tmp_path: Path, make, kind: str
):
    # 'edgekit pull REF /dev/null' (as root) renamed the artifact over /dev/null.
    (tmp_path / "x.iso").write_bytes(b"iso bytes")
    ref = f"{registry.host}/edge/iso:v1"
    assert edgekit("push", "x.iso", ref, "--plain-http", cwd=tmp_path).returncode == 0
    dest = tmp_path / "dest"
    make(dest)
    before = dest.lstat()
    proc = edgekit("pull", ref, str(dest), "--plain-http", cwd=tmp_path, timeout=HANG)
    assert proc.returncode == 2, proc.stderr
    assert f"dest: {dest}: it is {kind}, not a regular file" in proc.stderr
    after = dest.lstat()
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "x.iso"]  # no temp file


def test_pull_into_an_oci_target_writes_that_layout(registry, tmp_path: Path):
    # push takes TARGET oci:PATH[:TAG]; pull's DEST written the same way made a directory
    # literally named 'oci:lay' instead of the layout 'lay'.
    lay, digest = umoci_layout(tmp_path)
    ref = f"{registry.host}/edge/sample:v1"
    assert edgekit("push", f"oci:{lay}:v1", ref, "--plain-http", cwd=tmp_path).returncode == 0
    proc = edgekit("pull", ref, "oci:lay:v9", "--plain-http", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "oci:lay:v9").exists()
    assert not (tmp_path / "oci:lay").exists()
    index = (tmp_path / "lay" / "index.json").read_text()
    assert digest in index
    assert '"v9"' in index
    bad = edgekit("pull", ref, "oci:lay@sha256:abc", "--plain-http", cwd=tmp_path)
    assert bad.returncode == 2, bad.stderr
    assert "dest: invalid OCI reference" in bad.stderr


@pytest.mark.parametrize("kind", ["not a type!", "application", "application/x/y", "a/b\x01"])
def test_a_malformed_artifact_type_is_refused(tmp_path: Path, kind: str):
    # It became the manifest's artifactType as written: a registry refuses it later, an
    # oci: layout stored it, and 'referrers --artifact-type' could never match it again.
    (tmp_path / "x.iso").write_bytes(b"iso")
    proc = edgekit("push", "x.iso", "oci:lay:v1", "--artifact-type", kind, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "artifact_type:" in proc.stderr
    assert "is not a media type (type/subtype" in proc.stderr
    assert not (tmp_path / "lay").exists()
    good = edgekit(
        "push", "x.iso", "oci:lay:v1", "--artifact-type", "application/vnd.x+json", cwd=tmp_path
    )
    assert good.returncode == 0, good.stderr
