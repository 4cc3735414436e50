"""Benchmark edgekit-oci layer builds against ``tar -c | gzip -6``, ``pigz -6`` and ``zstd``.

Generates a tree of mixed files under /tmp (many small text files, medium files, large
compressible files, large random files), then, in the same run and interleaved:

* edgekit gzip-6 layer build vs ``tar -c | gzip -6`` and ``tar -c | pigz -6`` (all cores);
* edgekit zstd-3 layer build vs ``tar -c | zstd -3 -T0`` (all cores) and ``-T1``;
* the fair references: the same shell pipelines (``zstd -3 -T0``, ``pigz -6``) also hashing
  both streams with sha256, as edgekit must (the tar stream's sha256 is the layer's diff_id,
  the compressed stream's is its digest), through ``tee`` into ``openssl dgst -sha256``;
* peak RSS of each build (child process, ``wait4`` rusage; VmHWM for edgekit);
* each edgekit build in a fresh interpreter with its bytecode cached (as installed), so
  wall times include start-up; the build-only time is printed as well;
* rebuild of an image (big layer + small overlay layer, with the layer cache) after one
  overlay file changed.

Usage: python benchmarks/bench_layers.py [--size-mb 500] [--reps 3] [--keep]
       [--workers N] [--root /tmp/edgekit-bench] [--only gzip|zstd] [--baseline SRC_DIR]

``--baseline`` also builds each layer with the ``edgekit_oci`` package found in SRC_DIR
(e.g. another checkout's ``plugins/edgekit-oci/src``), interleaved, to compare versions.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH_ROOT = Path("/tmp/edgekit-bench")
LABELS = {
    "ek_gz": "edgekit layer, gzip -6",
    "base_gz": "baseline layer, gzip -6",
    "tar_gz": "tar -c | gzip -6",
    "tar_pigz": "tar -c | pigz -6",
    "tar_pigz_h": "tar -c | pigz -6, both streams hashed",
    "sha_gz": "sha256 of the .tar and .tar.gz (openssl)",
    "ek_zst": "edgekit layer, zstd -3",
    "base_zst": "baseline layer, zstd -3",
    "tar_zst_mt": "tar -c | zstd -3 -T0",
    "tar_zst_mt_h": "tar -c | zstd -3 -T0, both streams hashed",
    "sha_zst": "sha256 of the .tar and .tar.zst (openssl)",
    "tar_zst": "tar -c | zstd -3 -T1",
}
#: (edgekit run, reference run, what the ratio is called)
RATIOS = (
    ("ek_gz", "tar_gz", "gzip / tar|gzip -6"),
    ("ek_gz", "tar_pigz", "gzip / tar|pigz -6"),
    ("ek_gz", "tar_pigz_h", "gzip / tar|pigz -6, both streams hashed"),
    ("ek_zst", "tar_zst_mt", "zstd / tar|zstd -3 -T0"),
    ("ek_zst", "tar_zst_mt_h", "zstd / tar|zstd -3 -T0, both streams hashed"),
    ("ek_zst", "tar_zst", "zstd / tar|zstd -3 -T1"),
    ("base_gz", "tar_gz", "baseline gzip / tar|gzip -6"),
    ("base_gz", "tar_pigz", "baseline gzip / tar|pigz -6"),
    ("base_zst", "tar_zst_mt", "baseline zstd / tar|zstd -3 -T0"),
)
_WORDS = [
    *[
        "edge",
        "cluster",
        "profile",
        "kubernetes",
        "node",
        "pack",
        "layer",
        "image",
        "registry",
        "token",
        "host",
        "agent",
    ],
    *[
        "install",
        "upgrade",
        "rollback",
        "kernel",
        "initrd",
        "boot",
        "config",
        "value",
        "stage",
        "network",
        "proxy",
    ],
    *[
        "lorem",
        "ipsum",
        "dolor",
        "sit",
        "amet",
        "consectetur",
        "adipiscing",
        "elit",
        "sed",
        "do",
        "eiusmod",
        "tempor",
    ],
]


def _text(rng: random.Random, size: int) -> bytes:
    """Compressible text-like bytes (roughly 3-4x with gzip -6)."""
    lines = []
    total = 0
    while total < size:
        line = " ".join(rng.choices(_WORDS, k=rng.randint(4, 14))) + f" {rng.random():.6f}\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:size]


def generate_tree(root: Path, size_mb: int, seed: int = 42) -> dict[str, int]:
    """A deterministic mixed tree of about ``size_mb`` MiB; returns counts by kind."""
    marker = root / ".complete"
    if marker.exists() and json.loads(marker.read_text()).get("size_mb") == size_mb:
        return dict(json.loads(marker.read_text())["counts"])
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(seed)
    budget = size_mb << 20
    counts = {"small": 0, "medium": 0, "large_text": 0, "large_random": 0}
    # Shares of the budget: 18% small files, 10% medium, 32% large text, 40% large random.
    text_block = _text(rng, 4 << 20)

    def text_of(size: int) -> bytes:
        start = rng.randrange(0, len(text_block) - min(size, len(text_block)) + 1)
        out = bytearray()
        while len(out) < size:
            out += text_block[start : start + size - len(out)]
            start = 0
        return bytes(out)

    used = 0
    i = 0
    while used < budget * 0.18:
        size = rng.randint(200, 16 << 10)
        d = root / "usr" / "share" / f"pkg{i // 200:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"file{i:05d}.txt").write_bytes(text_of(size))
        used += size
        i += 1
        counts["small"] += 1
    j = 0
    while used < budget * 0.28:
        size = rng.randint(64 << 10, 1 << 20)
        d = root / "usr" / "lib" / f"mod{j // 50:02d}"
        d.mkdir(parents=True, exist_ok=True)
        data = text_of(size // 2) + os.urandom(size - size // 2)
        (d / f"lib{j:04d}.so").write_bytes(data)
        used += size
        j += 1
        counts["medium"] += 1
    (root / "opt" / "data").mkdir(parents=True, exist_ok=True)
    k = 0
    while used < budget * 0.60:
        size = 40 << 20
        with open(root / "opt" / "data" / f"text{k}.log", "wb") as f:
            for _ in range(size // len(text_block)):
                f.write(text_block)
        used += size
        k += 1
        counts["large_text"] += 1
    m = 0
    while used < budget:
        size = min(50 << 20, budget - used)
        with open(root / "opt" / "data" / f"blob{m}.bin", "wb") as f:
            for _ in range(size >> 20):
                f.write(os.urandom(1 << 20))
        used += size
        m += 1
        counts["large_random"] += 1
    for n in range(20):
        os.symlink(f"../share/pkg000/file{n:05d}.txt", root / "usr" / f"link{n}")
    marker.write_text(json.dumps({"size_mb": size_mb, "counts": counts}))
    return counts


def _child_build(args: argparse.Namespace) -> None:
    """Runs in a child process: build one layer, print its JSON result."""
    from edgekit_oci.layers import LayerSpec, TreeEntry, build_layer
    from edgekit_oci.layout import OCILayout

    layout = OCILayout.create(args.out)
    spec = LayerSpec("bench", [TreeEntry(args.tree, "/")], compression=args.compression)
    start = time.perf_counter()
    result = build_layer(layout, spec, source_date_epoch=0, workers=args.workers)
    elapsed = time.perf_counter() - start
    # VmHWM: peak RSS of this process's own memory map (ru_maxrss would also count the
    # parent's map at fork time).
    status = Path("/proc/self/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({"seconds": elapsed, "size": result.descriptor.size, "vmhwm_kib": hwm}))


def _timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int, str]:
    """Wall seconds, CPU seconds (user+sys, waited-for descendants included), peak RSS (KiB)
    and stdout of a child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed with {proc.returncode}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, out


def _child_env(work: Path) -> dict[str, str]:
    """The children's environment: bytecode cached (in ``work``, not in the source tree), as
    in an installed package. With ``PYTHONDONTWRITEBYTECODE`` set, as some shells and CI
    set it, every start-up would compile edgekit's sources again (~0.15 s of CPU here)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return env


def warm_start_up(work: Path, source: Path | None) -> None:
    """Import what a child build imports once, so every timed start-up finds the bytecode."""
    env = _child_env(work)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")])
    code = "import edgekit_oci.layers, edgekit_oci.layout"
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


def edgekit_build(
    tree: Path, out: Path, compression: str, workers: int | None, source: Path | None = None
) -> dict[str, float]:
    """One layer build in a child process (wall time includes interpreter start-up), with
    the ``edgekit_oci`` package from ``source`` if given (put first on ``PYTHONPATH``)."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, __file__, "--child", "--tree", str(tree), "--out", str(out)]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    env = _child_env(out.parent)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")])
    wall, cpu, rss, stdout = _timed([*cmd, "--compression", compression], env)
    data = json.loads(stdout)
    return {
        "wall": wall,
        "cpu": cpu,
        "rss_kib": min(rss, data["vmhwm_kib"]),
        "size": data["size"],
        "inner": data["seconds"],
    }


def shell_pipeline(tree: Path, out: Path, compressor: str) -> dict[str, float]:
    """``tar -c | <compressor>`` timed the same way."""
    out.unlink(missing_ok=True)
    script = f"tar -C {tree} -cf - . | {compressor} > {out}"
    wall, cpu, rss, _ = _timed(["bash", "-o", "pipefail", "-c", script])
    return {"wall": wall, "cpu": cpu, "rss_kib": rss, "size": out.stat().st_size}


def hashed_pipeline(tree: Path, out: Path, compressor: str) -> dict[str, float]:
    """``tar -c | <compressor>`` doing the work a layer build must do: sha256 of the tar
    stream (the diff_id) and of the compressed stream (the digest), both while it runs.

    The hashes use ``openssl dgst``: the libcrypto hashlib uses, with the CPU's SHA
    instructions (coreutils 9.1's ``sha256sum`` has its own code, ~6x slower here, which
    would make the reference unfairly slow). The tar stream's hash reads a FIFO that
    ``tee`` feeds; bash waits for it as for the pipeline's own members, so its CPU time is
    counted (a ``>(...)`` process substitution would not be waited for).
    """
    out.unlink(missing_ok=True)
    fifo = out.with_name(out.name + ".fifo")
    sums = out.with_name(out.name + ".sha256")
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo)
    sha = "openssl dgst -sha256 -r"
    script = (
        f"{sha} < {fifo} > {sums}.tar & "
        f"tar -C {tree} -cf - . | tee {fifo} | {compressor} | tee {out} | {sha} > {sums}; "
        "status=$?; wait $! || exit 1; exit $status"
    )
    try:
        wall, cpu, rss, _ = _timed(["bash", "-o", "pipefail", "-c", script])
        digests = [Path(f"{sums}.tar").read_text().split()[0], sums.read_text().split()[0]]
    finally:
        fifo.unlink(missing_ok=True)
    if [len(d) for d in digests] != [64, 64]:
        raise SystemExit(f"hashed pipeline {compressor!r} gave no digests: {digests}")
    return {"wall": wall, "cpu": cpu, "rss_kib": rss, "size": out.stat().st_size}


def hash_files(files: list[Path]) -> dict[str, float]:
    """The two sha256 passes alone (``openssl dgst`` over the tar and the compressed file,
    from the page cache): the CPU time a reference pipeline would add to match edgekit."""
    wall, cpu, rss, _ = _timed(["openssl", "dgst", "-sha256", "-r", *map(str, files)])
    return {"wall": wall, "cpu": cpu, "rss_kib": rss, "size": sum(f.stat().st_size for f in files)}


def rebuild_after_change(tree: Path, work: Path) -> dict[str, float | bool]:
    """Big layer + small overlay with the cache; change one overlay file; time the rebuild."""
    from edgekit_oci.cache import LayerCache
    from edgekit_oci.image import ImageSpec, build_image
    from edgekit_oci.layers import LayerSpec, TreeEntry
    from edgekit_oci.progress import LayerDone, ProgressEvent

    shutil.rmtree(work, ignore_errors=True)
    overlay = work / "overlay"
    overlay.mkdir(parents=True)
    for n in range(20):
        (overlay / f"conf{n}.yaml").write_text(f"key{n}: value\n")
    cache = LayerCache(work / "cache")
    spec = ImageSpec(
        [
            LayerSpec("os", [TreeEntry(tree, "/")]),
            LayerSpec("overlay", [TreeEntry(overlay, "/etc/edgekit")]),
        ]
    )
    start = time.perf_counter()
    build_image(work / "img1", "v1", spec, cache=cache, source_date_epoch=0)
    first = time.perf_counter() - start
    (overlay / "conf3.yaml").write_text("key3: changed\n")
    events: list[ProgressEvent] = []
    start = time.perf_counter()
    build_image(work / "img2", "v1", spec, cache=cache, source_date_epoch=0, progress=events.append)
    rebuild = time.perf_counter() - start
    cached = {e.layer: e.cached for e in events if isinstance(e, LayerDone)}
    return {
        "first_build_s": first,
        "rebuild_s": rebuild,
        "big_layer_cached": cached["os"],
        "overlay_rebuilt": not cached["overlay"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the generated tree")
    parser.add_argument(
        "--workers", type=int, default=None, help="edgekit compression threads (default: all)"
    )
    parser.add_argument(
        "--root", type=Path, default=BENCH_ROOT, help="scratch directory (default %(default)s)"
    )
    parser.add_argument("--only", choices=["gzip", "zstd"], help="run only one compression")
    parser.add_argument(
        "--baseline", type=Path, help="also build with the edgekit_oci package in this directory"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--compression", default="gzip", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child_build(args)
        return

    for tool in ("tar", "gzip", "pigz", "zstd", "tee", "openssl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed as a reference (apt-get install {tool})")
    tree = args.root / f"tree-{args.size_mb}"
    start = time.perf_counter()
    counts = generate_tree(tree, args.size_mb)
    total = sum(f.stat().st_size for f in tree.rglob("*") if f.is_file() and f.name[0] != ".")
    ready = time.perf_counter() - start
    print(f"tree: {tree} {total / 2**20:.0f} MiB {counts} (ready in {ready:.1f}s)")
    print(f"cpus: {os.cpu_count()}  python: {sys.version.split()[0]}")
    work = args.root / "work"
    work.mkdir(parents=True, exist_ok=True)
    shell_pipeline(tree, work / "warm.tar", "cat")  # page cache warm for everyone
    warm_start_up(work, None)
    if args.baseline is not None:
        warm_start_up(work, args.baseline)

    runs: dict[str, list[dict[str, float]]] = {k: [] for k in LABELS}
    base = args.baseline
    print(f"load average before runs: {os.getloadavg()}")
    for rep in range(args.reps):
        if args.only != "zstd":
            if base is not None:
                runs["base_gz"].append(
                    edgekit_build(tree, work / "b-gz", "gzip", args.workers, base)
                )
            runs["ek_gz"].append(edgekit_build(tree, work / "ek-gz", "gzip", args.workers))
            runs["tar_gz"].append(shell_pipeline(tree, work / "out.tar.gz", "gzip -6"))
            runs["tar_pigz"].append(shell_pipeline(tree, work / "out.tar.gz", "pigz -6"))
            runs["tar_pigz_h"].append(hashed_pipeline(tree, work / "out.tar.gz", "pigz -6"))
            runs["sha_gz"].append(hash_files([work / "warm.tar", work / "out.tar.gz"]))
        if args.only != "gzip":
            if base is not None:
                runs["base_zst"].append(
                    edgekit_build(tree, work / "b-zst", "zstd", args.workers, base)
                )
            runs["ek_zst"].append(edgekit_build(tree, work / "ek-zst", "zstd", args.workers))
            runs["tar_zst_mt"].append(shell_pipeline(tree, work / "out.tar.zst", "zstd -3 -q -T0"))
            runs["tar_zst_mt_h"].append(
                hashed_pipeline(tree, work / "out.tar.zst", "zstd -3 -q -T0")
            )
            runs["sha_zst"].append(hash_files([work / "warm.tar", work / "out.tar.zst"]))
            runs["tar_zst"].append(shell_pipeline(tree, work / "out.tar.zst", "zstd -3 -q -T1"))
        print(
            f"rep {rep + 1}: "
            + "  ".join(f"{k}={v[-1]['wall']:.2f}s" for k, v in runs.items() if v)
        )
    print(f"load average after runs: {os.getloadavg()}")

    def med(key: str, field: str) -> float:
        return statistics.median(r[field] for r in runs[key])

    mib = total / 2**20
    print()
    print(f"{'':42}{'wall s':>8}{'cpu s':>8}{'MiB/s':>8}{'out MiB':>9}{'RSS MiB':>9}")
    for k, label in LABELS.items():
        if not runs[k]:
            continue
        print(
            f"{label:42}{med(k, 'wall'):>8.2f}{med(k, 'cpu'):>8.2f}{mib / med(k, 'wall'):>8.1f}"
            f"{runs[k][-1]['size'] / 2**20:>9.1f}{max(r['rss_kib'] for r in runs[k]) / 1024:>9.1f}"
        )
    for ek, ref, name in RATIOS:
        if not runs[ek] or not runs[ref]:
            continue
        print(
            f"ratio {name}: wall {med(ek, 'wall') / med(ref, 'wall'):.3f}  "
            f"cpu {med(ek, 'cpu') / med(ref, 'cpu'):.3f}  "
            f"size {runs[ek][-1]['size'] / runs[ref][-1]['size']:.4f}  (edgekit / ref, medians)"
        )
    for ek, ref, name in RATIOS:
        if not runs[ek] or not runs[ref] or ek.startswith("base"):
            continue
        print(
            f"ratio {name}, build only (no interpreter start-up): "
            f"wall {med(ek, 'inner') / med(ref, 'wall'):.3f}"
        )
    # The shell's hashed pipelines pay for tee and two more pipes as well as the hashes, so
    # they are the slow bound of "the same work"; the plain pipeline plus the hashes' CPU
    # alone is the fast one (its wall figure assumes the hashes spread over every core).
    cpus = os.cpu_count() or 1
    for ek, ref, sha, name in (
        ("ek_gz", "tar_pigz", "sha_gz", "gzip / tar|pigz -6"),
        ("ek_zst", "tar_zst_mt", "sha_zst", "zstd / tar|zstd -3 -T0"),
    ):
        if not runs[ek] or not runs[ref] or not runs[sha]:
            continue
        print(
            f"ratio {name} plus the two sha256 passes' CPU: "
            f"cpu {med(ek, 'cpu') / (med(ref, 'cpu') + med(sha, 'cpu')):.3f}  "
            f"wall {med(ek, 'wall') / (med(ref, 'wall') + med(sha, 'cpu') / cpus):.3f} "
            f"(estimate: hashes spread over {cpus} cores)"
        )
    # The floor: the reference's CPU plus the two hashes' CPU, spread perfectly over every
    # core, against the reference's wall time. No build doing the work a layer needs can
    # beat it on this machine unless it compresses with less CPU than the reference does,
    # so a goal below it cannot be met here by any implementation.
    for ref, sha, name in (
        ("tar_pigz", "sha_gz", "tar|pigz -6"),
        ("tar_zst_mt", "sha_zst", "tar|zstd -3 -T0"),
    ):
        if not runs[ref] or not runs[sha]:
            continue
        floor = (med(ref, "cpu") + med(sha, "cpu")) / cpus
        print(
            f"floor for a layer build / {name} on {cpus} cores: "
            f"wall {floor / med(ref, 'wall'):.3f} ((its CPU + the hashes' CPU) / cores / its wall)"
        )
    peak = max(r["rss_kib"] for k in ("ek_gz", "ek_zst") for r in runs[k])
    print(f"peak RSS of edgekit builds: {peak / 1024:.1f} MiB")

    if args.only is None:  # the rebuild figure is part of the full run only
        rebuild = rebuild_after_change(tree, work / "rebuild")
        print(
            f"image build (big + overlay, cold cache): {rebuild['first_build_s']:.2f}s; "
            f"rebuild after changing one overlay file: {rebuild['rebuild_s']:.2f}s "
            f"(big layer cached: {rebuild['big_layer_cached']}, "
            f"overlay rebuilt: {rebuild['overlay_rebuilt']})"
        )
    shutil.rmtree(work, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(tree, ignore_errors=True)


if __name__ == "__main__":
    main()
