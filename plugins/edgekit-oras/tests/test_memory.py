"""Streaming: pushing a large file keeps the pushing process's peak RSS small."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from edgekit_oras.testing import RegistryServer

CHILD = textwrap.dedent(
    """
    import json, resource, sys
    from edgekit_oras.client import ConnectionOptions
    from edgekit_oras.engine import push_artifact
    from edgekit_oras import mediatypes as mt

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = push_artifact(sys.argv[1], sys.argv[2], artifact_type=mt.ISO,
                      options=ConnectionOptions(plain_http=True))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kib": before, "peak_kib": peak, "uploaded": r.uploaded_bytes}))
    """
)


def test_push_1gib_file_peak_rss_below_100mib(registry: RegistryServer, tmp_path: Path) -> None:
    iso = tmp_path / "big.iso"
    size = 1 << 30
    # Sparse: costs no disk or time to create; still 1 GiB of bytes to hash and send.
    with iso.open("wb") as f:
        f.truncate(size)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(iso), f"{registry.host}/edge/iso:big"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["uploaded"] == size + 2  # the file and the empty config
    assert report["peak_kib"] < 100 * 1024, report
