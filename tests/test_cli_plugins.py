"""``edgekit plugins`` with real installed plugins: conflicts, broken plugins, statuses.

Every plugin is a real distribution (a module and a ``*.dist-info`` with an ``edgekit``
entry point, written by ``edgekit.testing.install_distribution``) on the ``PYTHONPATH`` of
an ``edgekit`` subprocess, which finds it as it finds a pip-installed plugin.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cli_runner import edgekit
from plugin_sources import S3DIR

from edgekit.testing import install_distribution

TYPO = """
from edgekit.plugins import hookimpl

@hookimpl
def edgekit_publisher():
    return []
"""

NEEDS_TOOL = """
from edgekit.plugins import hookimpl, Transport

class Carrier(Transport):
    name = "carrier"

    @classmethod
    def unavailable_reason(cls):
        return "carrier-pigeon-ctl is not installed"

    def register(self, request, ctx):
        return {}

@hookimpl
def edgekit_transports():
    return [Carrier]
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two distributions with a publisher named 's3dir', a misspelled hook, a plugin that
    does not import, one that does not parse, and a backend that cannot run here."""
    root = tmp_path_factory.mktemp("site-packages")
    install_distribution(root, "edgekit-s3dir", S3DIR, module="edgekit_s3dir_p1")
    install_distribution(
        root, "edgekit-s3dir-fork", S3DIR, module="edgekit_s3dir_p2", version="2.0"
    )
    install_distribution(root, "edgekit-typo", TYPO, module="edgekit_typo_p")
    install_distribution(
        root, "edgekit-missing", "import json\nimport no_such_module\n", module="edgekit_missing_p"
    )
    install_distribution(root, "edgekit-syntax", "def broken(:\n", module="edgekit_syntax_p")
    install_distribution(root, "edgekit-carrier", NEEDS_TOOL, module="edgekit_carrier_p")
    return root


def edgekit_plugins(site: Path, *flags: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    return edgekit("plugins", *flags, base=base, env={"PYTHONPATH": str(site), **env})


def warnings_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: ")]


def test_json_is_the_report_with_conflicts_statuses_and_problems(site: Path):
    proc = edgekit_plugins(site, "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # the manager's own warnings do not leak beside the document
    doc: dict[str, Any] = json.loads(proc.stdout)
    assert list(doc) == ["backends", "plugins", "broken", "conflicts"]

    status = {(b["name"], b["distribution"]): b["status"] for b in doc["backends"]}
    assert status[("s3dir", "edgekit-s3dir 0.1.0")] == "conflict"
    assert status[("s3dir", "edgekit-s3dir-fork 2.0")] == "conflict"
    assert status[("carrier", "edgekit-carrier 0.1.0")] == "carrier-pigeon-ctl is not installed"
    assert status[("oras", "edgekit-oras 0.1.0")] == "ok"

    [conflict] = doc["conflicts"]
    assert (conflict["capability"], conflict["name"]) == ("publisher", "s3dir")
    assert [c["plugin"] for c in conflict["candidates"]] == ["edgekit_s3dir_p1", "edgekit_s3dir_p2"]
    assert conflict["message"].endswith("block one with EDGEKIT_DISABLE_PLUGINS=edgekit_s3dir_p1")

    broken = {b["plugin"]: b for b in doc["broken"]}
    assert set(broken) == {"edgekit_typo_p", "edgekit_missing_p", "edgekit_syntax_p"}
    typo = broken["edgekit_typo_p"]
    assert (typo["kind"], typo["distribution"]) == ("hooks", "edgekit-typo 0.1.0")
    assert typo["location"] == f"{site / 'edgekit_typo_p.py'}:4"  # the @hookimpl line
    assert typo["error"].startswith(
        "unknown hook edgekit_publisher (did you mean 'edgekit_publishers'?)"
    )
    missing = broken["edgekit_missing_p"]
    assert (missing["kind"], missing["location"]) == (
        "import",
        f"{site / 'edgekit_missing_p.py'}:2",
    )
    assert f"{site / 'edgekit_syntax_p.py'}:1" in broken["edgekit_syntax_p"]["error"]
    # A skipped plugin is not listed as loaded; the good ones are, with their hooks.
    hooks = {p["name"]: p["hooks"] for p in doc["plugins"]}
    assert "edgekit_typo_p" not in hooks
    assert hooks["edgekit_carrier_p"] == ["edgekit_transports"]


def test_table_takes_status_from_the_report_and_warns_once_per_problem(site: Path):
    proc = edgekit_plugins(site)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    rows = [line.split("│") for line in proc.stdout.splitlines() if "│" in line]
    cells = [[cell.strip() for cell in row[1:-1]] for row in rows]
    assert ["publisher", "s3dir", "edgekit-s3dir 0.1.0", "conflict"] in cells
    assert ["publisher", "s3dir", "edgekit-s3dir-fork 2.0", "conflict"] in cells
    assert [
        "transport",
        "carrier",
        "edgekit-carrier 0.1.0",
        "carrier-pigeon-ctl is not installed",
    ] in cells
    assert ["publisher", "oras", "edgekit-oras 0.1.0", "ok"] in cells

    warnings = warnings_of(proc.stderr)
    assert warnings[0] == (
        "warning: two publisher backends are named 's3dir': edgekit_s3dir_p1.S3Dir from "
        "edgekit-s3dir 0.1.0 (plugin 'edgekit_s3dir_p1') and edgekit_s3dir_p2.S3Dir from "
        "edgekit-s3dir-fork 2.0 (plugin 'edgekit_s3dir_p2'); uninstall one, or block one "
        "with EDGEKIT_DISABLE_PLUGINS=edgekit_s3dir_p1"
    )
    typo = site / "edgekit_typo_p.py"
    assert (
        "warning: plugin 'edgekit_typo_p' (edgekit-typo 0.1.0) was skipped: unknown hook "
        "edgekit_publisher (did you mean 'edgekit_publishers'?); docs/hooks.md lists the "
        f"hooks that exist (at {typo}:4)"
    ) in warnings
    assert (
        "warning: plugin 'edgekit_missing_p' (edgekit-missing 0.1.0) was skipped: "
        "ModuleNotFoundError: No module named 'no_such_module' "
        f"(at {site / 'edgekit_missing_p.py'}:2)"
    ) in warnings
    assert len(warnings) == 4  # one conflict, three skipped plugins
    assert proc.stderr.splitlines() == warnings  # nothing else: no second copy from the log
    assert "failed to load" not in proc.stderr


def test_edgekit_debug_adds_the_traceback_of_a_skipped_plugin(site: Path):
    for flags in ((), ("--json",)):
        proc = edgekit_plugins(site, *flags, EDGEKIT_DEBUG="1")
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.count("Traceback (most recent call last)") == 2  # import, syntax
        assert "import no_such_module" in proc.stderr  # the plugin's own failing line
        assert "ModuleNotFoundError: No module named 'no_such_module'" in proc.stderr
        if flags:
            json.loads(proc.stdout)  # stdout is still one JSON document


def test_a_clean_installation_lists_no_problem(tmp_path: Path):
    proc = edgekit_plugins(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    doc = json.loads(edgekit_plugins(tmp_path, "--json").stdout)
    assert doc["broken"] == []
    assert doc["conflicts"] == []
    assert all(b["builtin"] for b in doc["backends"])
    for backend in doc["backends"]:  # without a conflict, the status is why it cannot run
        assert backend["status"] == (backend["unavailable"] or "ok")
