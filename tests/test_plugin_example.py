"""The plugin examples in docs/writing-plugins.md are real: they are the files the tests run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {
    # example directory -> its files shown verbatim in the docs, and its tests' count
    "plugin-mirror": (("edgekit_mirror.py", "test_edgekit_mirror.py", "pyproject.toml"), 8),
    "plugin-tarball": (("edgekit_tarball.py", "test_edgekit_tarball.py"), 4),
}


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_docs_show_the_example_verbatim(example: str):
    doc = (ROOT / "docs" / "writing-plugins.md").read_text()
    for name in EXAMPLES[example][0]:
        text = (ROOT / "examples" / example / name).read_text()
        assert text in doc, f"docs/writing-plugins.md lacks {example}/{name}"


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_example_plugin_tests_pass_with_the_testing_kit(example: str):
    where = ROOT / "examples" / example
    env = {**os.environ, "PYTHONPATH": str(where)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(where)],
        capture_output=True,
        text=True,
        env=env,
        cwd=where,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{EXAMPLES[example][1]} passed" in proc.stdout
