"""What an operator's QA pass over the build side found: each test is one defect, fixed.

Real parts: the CLI as a subprocess (``cli_runner``), a real docker-registry on 127.0.0.1
(the ``registry`` fixture of edgekit_oras.testing), a real FIFO, real forge files.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import cli_runner

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
