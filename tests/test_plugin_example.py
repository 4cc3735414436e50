"""The plugin example in docs/writing-plugins.md is real: it is the file the tests run."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin-mirror"


def test_docs_show_the_example_verbatim():
    doc = (ROOT / "docs" / "writing-plugins.md").read_text()
    for name in ("edgekit_mirror.py", "test_edgekit_mirror.py", "pyproject.toml"):
        assert (EXAMPLE / name).read_text() in doc, f"docs/writing-plugins.md lacks {name}"


def test_example_plugin_test_passes_with_the_testing_kit():
    env = {**os.environ, "PYTHONPATH": str(EXAMPLE)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE)],
        capture_output=True,
        text=True,
        env=env,
        cwd=EXAMPLE,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "8 passed" in proc.stdout
