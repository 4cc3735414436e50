"""Benchmark: push a 1 GiB umoci-built image to a local docker-registry, edgekit vs skopeo.

Measures, each side on a fresh registry storage:
  * edgekit ``push_layout`` time / ``skopeo copy oci:... docker://...`` time  (goal <= 1.2)
  * edgekit peak RSS while pushing (goal <= 100 MiB): ``VmHWM`` of a child process (its
    ``ru_maxrss`` is printed too, but after vfork+exec it includes the parent's high-water)
  * pushing the same image again: blob bytes uploaded (goal 0) and time (goal < 1 s)
  * peak RSS pushing a 2 GiB ISO as an artifact (sparse file, still 2 GiB of bytes sent)

Run:  python benchmarks/bench_push.py [--size-mib 1024] [--workdir /tmp/edgekit-bench-push]
The test image is cached in the workdir (building it gzips 1 GiB once).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekit_oras.testing import RegistryServer

CHILD_PUSH = textwrap.dedent(
    """
    import json, resource, sys, time
    from edgekit_oras.client import ConnectionOptions
    from edgekit_oras.engine import push_layout, push_artifact
    from edgekit import oci_types as mt
    opts = ConnectionOptions(plain_http=True)
    start = time.perf_counter()
    if sys.argv[1] == "layout":
        r = push_layout(sys.argv[2], "bench", sys.argv[3], options=opts)
    else:
        r = push_artifact(sys.argv[2], sys.argv[3], artifact_type=mt.ISO, options=opts)
    seconds = time.perf_counter() - start
    status = open("/proc/self/status").read()
    peak = next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmHWM:"))
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_kib": peak, "ru_maxrss_kib": maxrss,
                      "uploaded": r.uploaded_bytes,
                      "skipped": r.skipped_blobs, "digest": r.digest}))
    """
)


def build_image(workdir: Path, size_mib: int) -> Path:
    """A layout tagged ``bench`` with one layer holding *size_mib* MiB of random data."""
    layout = workdir / f"layout-{size_mib}"
    if (layout / "index.json").exists() and "bench" in (layout / "index.json").read_text():
        return layout
    tree = workdir / "tree"
    (tree / "data").mkdir(parents=True, exist_ok=True)
    with (tree / "data" / "random.bin").open("wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(1 << 20))
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{layout}:bench"], check=True)
    subprocess.run(["umoci", "insert", "--image", f"{layout}:bench", str(tree), "/"], check=True)
    (tree / "data" / "random.bin").unlink()
    return layout


def edgekit_push(kind: str, source: Path, target: str) -> dict[str, Any]:
    """Run one edgekit push in a child process; its JSON report (seconds, peak_kib, ...)."""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD_PUSH, kind, str(source), target],
        capture_output=True,
        text=True,
        check=True,
    )
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


@contextlib.contextmanager
def fresh_registry(workdir: Path) -> Iterator[RegistryServer]:
    """A registry on empty storage under *workdir*, removed afterwards."""
    shutil.rmtree(workdir, ignore_errors=True)
    try:
        with RegistryServer("plain", workdir=workdir) as reg:
            yield reg
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--iso-mib", type=int, default=2048)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/edgekit-bench-push"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    layout = build_image(args.workdir, args.size_mib)
    results: dict[str, Any] = {"image_mib": args.size_mib}

    with fresh_registry(args.workdir / "reg-skopeo") as reg:
        start = time.perf_counter()
        subprocess.run(
            [
                "skopeo", "copy", "-q", "--dest-tls-verify=false",
                f"oci:{layout}:bench", f"docker://{reg.host}/bench/os:v1",
            ],
            check=True,
        )  # fmt: skip
        results["skopeo_seconds"] = round(time.perf_counter() - start, 2)
    with fresh_registry(args.workdir / "reg-edgekit") as reg:
        first = edgekit_push("layout", layout, f"{reg.host}/bench/os:v1")
        again = edgekit_push("layout", layout, f"{reg.host}/bench/os:v1")
    results["edgekit_seconds"] = round(first["seconds"], 2)
    results["ratio_edgekit_over_skopeo"] = round(first["seconds"] / results["skopeo_seconds"], 3)
    results["edgekit_peak_rss_mib"] = round(first["peak_kib"] / 1024, 1)
    results["edgekit_ru_maxrss_mib"] = round(first["ru_maxrss_kib"] / 1024, 1)
    results["edgekit_uploaded_bytes"] = first["uploaded"]
    results["repush_seconds"] = round(again["seconds"], 3)
    results["repush_uploaded_bytes"] = again["uploaded"]
    results["repush_skipped_blobs"] = again["skipped"]

    iso = args.workdir / "big.iso"
    with iso.open("wb") as f:
        f.truncate(args.iso_mib << 20)
    with fresh_registry(args.workdir / "reg-iso") as reg:
        pushed = edgekit_push("artifact", iso, f"{reg.host}/bench/iso:v1")
    iso.unlink()
    results["iso_mib"] = args.iso_mib
    results["iso_push_seconds"] = round(pushed["seconds"], 2)
    results["iso_peak_rss_mib"] = round(pushed["peak_kib"] / 1024, 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
