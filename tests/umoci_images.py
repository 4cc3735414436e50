"""A small OCI image built by independent tools (umoci, skopeo), for the distribution tests."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def tool(*argv: str) -> str:
    """Run an external tool; its stdout, or a failed assertion with its stderr."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr}"
    return proc.stdout


def umoci_layout(tmp_path: Path) -> tuple[Path, str]:
    """An OCI layout under ``tmp_path`` with one small image tagged v1; (layout, digest)."""
    lay = tmp_path / "layout"
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "motd").write_text("hello from umoci\n")
    tool("umoci", "init", "--layout", str(lay))
    tool("umoci", "new", "--image", f"{lay}:v1")
    tool("umoci", "insert", "--image", f"{lay}:v1", str(tree), "/")
    return lay, json.loads(tool("skopeo", "inspect", f"oci:{lay}:v1"))["Digest"]
