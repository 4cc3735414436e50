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
    from edgekit import oci_types as mt

    def hwm():
        status = open("/proc/self/status").read()
        return next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmHWM:"))

    r = push_artifact(sys.argv[1], sys.argv[2], artifact_type=mt.ISO,
                      options=ConnectionOptions(plain_http=True))
    print(json.dumps({"hwm_kib": hwm(), "uploaded": r.uploaded_bytes,
                      "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
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
    # VmHWM is the peak of the child's own memory map. ru_maxrss is reported too, but after a
    # vfork+exec it also counts the parent's (pytest's) high-water mark, so it is no measure.
    assert report["hwm_kib"] < 100 * 1024, report
