"""The edgekit command as a user runs it: exit codes, messages, JSON, no tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runner import edgekit

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart" / "edgeforge.yaml"


BAD = """\
name: bad
profiles:
  - name: retail
    version: 1.0
    packs:
      - {name: os, layer: os, version: 12}
      - {name: k8s, layer: kube, version: "1.30.4"}
images:
  - name: img
    profile: retail
    os: {distribution: debian, version: "12"}
    kubernetes: {distribution: k3s, version: "1.30.4"}
    customtag: x
"""


def test_validate_accepts_the_quickstart():
    proc = edgekit("validate", str(QUICKSTART))
    assert proc.returncode == 0, proc.stderr
    assert "is a valid forge" in proc.stdout


def test_validate_reports_every_problem_with_path_and_line(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    proc = edgekit("validate", str(bad))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0] == "error: 5 problems found:"
    assert lines[1].startswith("  $.profiles[0].version: expected a string, got the number 1.0")
    assert lines[1].endswith(f"({bad}:4)")
    assert lines[2].startswith("  $.profiles[0].packs[0].version:")
    assert lines[3] == (
        f"  $.profiles[0].packs[1].layer: the string 'kube' is not one of: "
        f"os, k8s, cni, csi, addon ({bad}:7)"
    )
    assert lines[4] == (
        f"  $.images[0].repo: ImageSpec.repo: required unless reference is given ({bad}:9)"
    )
    assert lines[5] == (
        f"  $.images[0].customtag: unknown key 'customtag'; did you mean 'customTag'? ({bad}:13)"
    )


def test_validate_json_lists_problems(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    proc = edgekit("validate", str(bad), "--json")
    assert proc.returncode == 2
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False
    assert [(p["path"], p["line"]) for p in doc["problems"]] == [
        ("$.profiles[0].version", 4),
        ("$.profiles[0].packs[0].version", 6),
        ("$.profiles[0].packs[1].layer", 7),
        ("$.images[0].repo", 9),
        ("$.images[0].customtag", 13),
    ]


def test_validate_with_explicit_kind(tmp_path: Path):
    site = tmp_path / "site.yaml"
    site.write_text("name: store-9\ntags: {city: rome}\n")
    assert edgekit("validate", str(site), "--kind", "site").returncode == 0
    proc = edgekit("validate", str(site), "--kind", "profile", "--json")
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["problems"]


def test_missing_file_and_usage_errors_exit_2(tmp_path: Path):
    proc = edgekit("validate", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2
    assert "no such file" in proc.stderr
    assert edgekit("forge").returncode == 2
    assert edgekit("no-such-command").returncode == 2
    assert edgekit("validate", "x", "--kind", "spaceship").returncode == 2


def test_schema_is_json_schema_for_the_forge_file():
    proc = edgekit("schema")
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/draft/2020-12")
    assert "profiles" in schema["properties"]
    assert schema["additionalProperties"] is False


def test_plugins_lists_backends_as_json():
    proc = edgekit("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert {"backends", "plugins", "broken"} <= doc.keys()
    assert any(b["capability"] == "publisher" and b["name"] == "oras" for b in doc["backends"])
    hooks = {p["name"]: p["hooks"] for p in doc["plugins"]}
    assert hooks["agent"] == ["edgekit_image_extra_files", "edgekit_installer_payload_files"]
    assert hooks["oci"] == ["edgekit_image_builders"]
    assert doc["broken"] == []


def test_forge_plan_prints_each_step(tmp_path: Path):
    proc = edgekit("forge", str(QUICKSTART), "--plan", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["output"] == str(tmp_path / "dist")
    ids = [s["id"] for s in plan["steps"]]
    assert ids[:4] == [
        "provider-image/sample",
        "installer-iso/edgekit-installer",
        "site-iso/store-0042",
        "site-iso/store-0043",
    ]
    assert all(s["status"] == "will run" for s in plan["steps"])
    assert not (tmp_path / "dist").exists()  # planning writes nothing


def test_forge_plan_notes_a_missing_token(tmp_path: Path):
    env = {"EDGEKIT_REGISTRATION_TOKEN": ""}
    proc = edgekit("forge", str(QUICKSTART), "--plan", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "EDGEKIT_REGISTRATION_TOKEN is not set" in proc.stderr


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help(flag: str):
    proc = edgekit(flag)
    assert proc.returncode == 0
    assert proc.stdout


def test_unusable_output_directory_is_a_clear_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = edgekit("build", "site-isos", str(QUICKSTART), "-o", str(blocker / "dist"))
    assert proc.returncode == 1
    expected = f"error: cannot use output directory {blocker / 'dist'}: Not a directory"
    assert expected in proc.stderr.splitlines()
    assert "Traceback" not in proc.stderr


def test_build_json_lists_artifacts_as_the_manifest_records_them(tmp_path: Path):
    proc = edgekit("build", "site-isos", str(QUICKSTART), "-o", str(tmp_path / "dist"), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["output"] == str(tmp_path / "dist")
    manifest = json.loads(Path(doc["manifest"]).read_text())
    recorded = {
        a["name"]: {k: v for k, v in a.items() if k != "step"} for a in manifest["artifacts"]
    }
    assert doc["artifacts"]
    for artifact in doc["artifacts"]:
        assert artifact == recorded[artifact["name"]]  # one serialisation of an Artifact
        assert (tmp_path / "dist" / artifact["path"]).is_file()
