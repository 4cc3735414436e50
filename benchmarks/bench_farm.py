"""A build farm's figures: N site ISOs by ``Forge.run()`` on 1 process against a Dask
``LocalCluster`` of 2 worker processes (docs/build-farm.md).

A fleet forge file (N sites from an inventory CSV, the built-in ``pycdlib`` assembler, the
registration token in every user-data) is built three times into fresh output directories,
the site ISO steps only (``kinds=["site-iso"]``):

* ``local``: the default executor (a thread pool of 2 in this process);
* ``cluster``: ``executor=client.get_executor()`` on a LocalCluster of 2 workers
  (``processes=True``, 1 thread each, 127.0.0.1), started before the clock starts;
* and the manifests of the two are compared byte for byte.

It prints the speed-up (local time / cluster time), the time spent inside the tasks (Dask's
task stream), the overhead per task (worker-slot time not spent inside a task: ``(cluster
time x workers - time inside tasks) / tasks``), the round trip of an empty Dask task, and
peak RSS of this process and of each worker (getrusage).

    python benchmarks/bench_farm.py [--sites 10000] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from distributed import Client, LocalCluster, get_task_stream

from edgekit.forge import Forge
from edgekit.plugins.interfaces import Progress

FLEET = """\
apiVersion: edgekit/v1
kind: Forge
name: bench
siteInventory: ./sites.csv
registration:
  endpoint: "http://10.0.2.2:8080"
  project: bench
  tokenEnv: BENCH_TOKEN
"""


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def noop() -> None:
    return None


def build(project: Path, out: Path, executor: Any = None) -> tuple[float, int, bytes]:
    """(seconds, tasks, manifest bytes) of building the site ISOs into ``out``."""
    chunks: list[int] = []

    def events(e: Any) -> None:
        if isinstance(e, Progress) and e.step == "site-iso/*":
            chunks.append(e.done)

    forge = Forge.load(project / "edgeforge.yaml", output_dir=out)
    start = time.perf_counter()
    forge.run(executor=executor, kinds=["site-iso"], events=events)
    took = time.perf_counter() - start
    return took, len(chunks), (out / "manifest.json").read_bytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sites", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=None, help="work here (kept)")
    args = parser.parse_args()
    os.environ.setdefault("SOURCE_DATE_EPOCH", "1700000000")
    os.environ["BENCH_TOKEN"] = "ekt_bench-token-0123456789abcdef"
    root = args.out or Path(tempfile.mkdtemp(prefix="bench-farm-"))
    project = root / "project"
    project.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"store-{i:05d},city=c{i % 97}\n" for i in range(args.sites))
    (project / "sites.csv").write_text("name,tags\n" + rows)
    (project / "edgeforge.yaml").write_text(FLEET)
    print(f"{args.sites} site ISOs; {os.cpu_count()} CPU(s); load {os.getloadavg()[0]:.2f}")

    out = root / "out"
    local, local_tasks, local_manifest = build(project, out)
    local_peak = peak_mib()
    print(
        f"1 process:   {local:7.2f} s  {args.sites / local:8.0f} ISOs/s  "
        f"{local_tasks} task(s)  peak RSS {local_peak:.0f} MiB"
    )
    shutil.rmtree(out)

    started = time.perf_counter()
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        print(f"cluster start: {time.perf_counter() - started:.2f} s (not counted below)")
        client.submit(noop, pure=False).result()  # the workers' first import, not counted
        t0 = time.perf_counter()
        for fut in [client.submit(noop, pure=False) for _ in range(200)]:
            fut.result()
        round_trip = (time.perf_counter() - t0) / 200
        with get_task_stream(client) as stream:
            took, tasks, manifest = build(project, out, client.get_executor())
        workers = client.run(peak_mib)
        computing = sum(
            s["stop"] - s["start"]
            for t in stream.data
            if t["key"].startswith("BuildSiteIsos")
            for s in t["startstops"]
            if s["action"] == "compute"
        )
    speedup = local / took
    # Worker-slot time not spent inside a task: sending, scheduling, waiting, imbalance.
    overhead = (took * 2 - computing) / max(tasks, 1)
    print(
        f"2 workers:   {took:7.2f} s  {args.sites / took:8.0f} ISOs/s  "
        f"{tasks} task(s)  peak RSS here {peak_mib():.0f} MiB, workers "
        + ", ".join(f"{v:.0f}" for v in workers.values())
        + " MiB"
    )
    print(f"speed-up (1 process / 2 workers): {speedup:.2f}x")
    print(
        f"inside tasks: {computing:.2f} s of worker time "
        f"({computing / args.sites * 1000:.2f} ms a site; 1 process: "
        f"{local / args.sites * 1000:.2f} ms a site of wall time)"
    )
    print(
        f"overhead per task: {overhead * 1000:.1f} ms "
        f"({overhead * tasks / (took * 2) * 100:.0f}% of worker time); "
        f"empty Dask task round trip {round_trip * 1000:.2f} ms"
    )
    same = manifest == local_manifest
    print(f"manifests byte for byte equal: {same}")
    if args.out is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
