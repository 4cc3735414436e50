"""The contract suites of edgekit.testing catch what they promise to catch: a publisher that
returns the wrong digest for an image, one that does not claim its target, one that takes
any option, fail them (the built-ins pass them in plugins/*/tests/test_*_contract.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BUGGY = """
import hashlib, shutil
from pathlib import Path
import pytest
from edgekit.plugins import Publisher, PullResult, PushResult
from edgekit.testing import PublisherContract


class Sloppy(Publisher):
    name = "sloppy"

    @classmethod
    def options_problems(cls, options):
        return []  # the bug: every option accepted, even misspelt ones

    def push_image(self, request, ctx):
        dest = Path(request.target.rpartition(":")[0])
        shutil.copytree(request.layout, dest, dirs_exist_ok=True)
        index = (dest / "index.json").read_bytes()  # the bug: not the manifest's digest
        return PushResult(str(dest), "sha256:" + hashlib.sha256(index).hexdigest(), "x", 1)

    def push_artifact(self, request, ctx):
        dest = Path(request.target.rpartition(":")[0])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(request.path, dest / request.path.name)
        return PushResult(str(dest / request.path.name), "sha256:" + "0" * 64, "x", 1)

    def pull(self, request, ctx):
        shutil.copyfile(request.reference, request.dest / Path(request.reference).name)
        return PullResult(request.reference, "sha256:" + "0" * 64, "x", 1, request.dest)


class TestSloppy(PublisherContract):
    backend_class = Sloppy
    pulls_images = False

    @pytest.fixture
    def target(self, tmp_path):
        return str(tmp_path / "out")  # not oci: nor host/repo, and Sloppy claims nothing
"""


def test_a_buggy_publisher_fails_the_contract(tmp_path: Path) -> None:
    (tmp_path / "test_sloppy.py").write_text(BUGGY)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        timeout=300,
    )
    failed = sorted(
        line.split("::")[-1].split(" ")[0]
        for line in proc.stdout.splitlines()
        if line.startswith("FAILED")
    )
    assert failed == [
        "test_checks_its_options",
        "test_claims_its_target",
        "test_push_an_image_byte_exact",
    ], proc.stdout
    assert "3 passed" in proc.stdout  # the rest: the plugin checks, an artifact, referrers
