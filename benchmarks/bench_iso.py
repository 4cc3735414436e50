"""Installer ISO build time and memory: edgekit's pycdlib backend against xorriso.

Generates a 1 GiB payload under a temporary directory (one 768 MiB file, 256 files of
1 MiB), then builds the same installer ISO (kernel, initrd, ISOLINUX, GRUB EFI image,
user-data, payload) with ``backend="pycdlib"`` and with ``backend="xorriso"``
(``xorriso -as mkisofs`` on the same staged tree), and runs ``xorriso -as mkisofs -R`` alone
on the payload for reference. The child prints its phase times (staging, the backend's
write, the SHA-256), so the write phases can be compared directly. Each build runs in a
child process whose peak RSS is sampled from ``VmHWM``. Best of ``--runs``.

    python benchmarks/bench_iso.py [--runs 3] [--size-mib 1024] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

CHILD = r"""
import json, sys, time
from pathlib import Path
import edgekit_iso.build as build
from edgekit_iso.spec import InstallerIsoSpec
work, backend, dest = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
phases = {}
def timed(name, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - start
    return wrapper
# Phases: staging (initrd, EFI image, menus), the backend's write, the checksum.
build._stage = timed("stage", build._stage)
build._write_pycdlib = timed("write", build._write_pycdlib)
build._write_xorriso = timed("write", build._write_xorriso)
build._sha256 = timed("sha256", build._sha256)
spec = InstallerIsoSpec.from_image_tree(
    work / "tree", "#cloud-config\n", files={"/payload": work / "payload"}, source_date_epoch=0
)
start = time.perf_counter()
result = build.build_installer_iso(spec, dest, backend=backend)
phases["total"] = time.perf_counter() - start
print(json.dumps({"size": result.size, "phases": phases}))
"""


def make_inputs(work: Path, size_mib: int) -> None:
    """A fake image tree (kernel + gzip'd cpio initrd) and the payload, from /dev/urandom."""
    from edgekit.cpio import CpioEntry, write_initrd_gz

    (work / "tree" / "boot").mkdir(parents=True)
    (work / "tree" / "boot" / "vmlinuz").write_bytes(os.urandom(8 << 20))
    write_initrd_gz([CpioEntry.file("init", os.urandom(2 << 20))], work / "tree/boot/initrd")
    payload = work / "payload"
    small = min(256, size_mib // 4)
    (payload / "small").mkdir(parents=True)
    with open(payload / "big.bin", "wb") as fp:
        for _ in range(size_mib - small):
            fp.write(os.urandom(1 << 20))
    for i in range(small):
        (payload / "small" / f"part-{i:04d}.bin").write_bytes(os.urandom(1 << 20))


def _hwm_kib(pid: int) -> int:
    """The process's peak RSS so far (VmHWM; 0 once it has exited)."""
    try:
        with open(f"/proc/{pid}/status") as fp:
            for line in fp:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def timed_child(argv: list[str]) -> tuple[float, int, str]:
    """(seconds, peak RSS in KiB, stdout) of one child process.

    ru_maxrss from wait4 is useless here: Linux carries the forking parent's high-water
    mark across exec. VmHWM belongs to the child's own address space, so it is sampled
    every 5 ms until the child exits.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _hwm_kib(proc.pid))
        time.sleep(0.005)
    elapsed = time.perf_counter() - start
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed: {err[-2000:]}")
    return elapsed, peak, out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--keep", type=Path, help="use (and keep) this work directory")
    args = parser.parse_args()

    work: Path = args.keep or Path(tempfile.mkdtemp(prefix="edgekit-bench-iso-"))
    try:
        if not (work / "payload").is_dir():
            t = time.perf_counter()
            make_inputs(work, args.size_mib)
            print(f"payload: {args.size_mib} MiB generated in {time.perf_counter() - t:.1f} s")
        out = work / "out"
        out.mkdir(exist_ok=True)

        def edgekit(backend: str) -> Callable[[str], list[str]]:
            return lambda dest: [sys.executable, "-c", CHILD, str(work), backend, dest]

        def plain_xorriso(dest: str) -> list[str]:
            return ["xorriso", "-as", "mkisofs", "-R", "-iso-level", "3", "-quiet", "-o", dest,
                    str(work / "payload")]  # fmt: skip

        cases: dict[str, Callable[[str], list[str]]] = {
            "edgekit pycdlib": edgekit("pycdlib"),
            "edgekit xorriso": edgekit("xorriso"),
            "xorriso -as mkisofs -R, payload only": plain_xorriso,
        }
        results: dict[str, dict[str, float]] = {}
        for name, argv in cases.items():
            runs: list[tuple[float, int, dict[str, float]]] = []
            for run in range(args.runs):
                dest = out / f"bench-{run}.iso"
                elapsed, rss_kib, stdout = timed_child(argv(str(dest)))
                dest.unlink()
                dest.with_name(dest.name + ".sha256").unlink(missing_ok=True)
                phases = json.loads(stdout)["phases"] if stdout.strip() else {}
                runs.append((elapsed, rss_kib, phases))
            best = min(runs, key=lambda r: r[0])
            results[name] = {
                "seconds": round(best[0], 2),
                "peak_rss_mib": round(max(r[1] for r in runs) / 1024, 1),
                **{f"{k}_s": round(v, 2) for k, v in best[2].items()},
            }
            detail = "".join(f"  {k} {v:.2f} s" for k, v in best[2].items())
            rss = results[name]["peak_rss_mib"]
            print(f"{name:38s} {best[0]:6.2f} s  peak RSS {rss:6.1f} MiB{detail}")

        py, xo = results["edgekit pycdlib"], results["edgekit xorriso"]
        plain = results["xorriso -as mkisofs -R, payload only"]["seconds"]
        ratio = py["seconds"] / xo["seconds"]
        write_ratio = py["write_s"] / xo["write_s"]
        print(f"pycdlib / xorriso, whole build of the same ISO: {ratio:.2f} (goal <= 1.1)")
        print(f"pycdlib / xorriso, write phase on the same staged tree: {write_ratio:.2f}")
        print(f"pycdlib write phase / plain xorriso on the payload: {py['write_s'] / plain:.2f}")
        print(f"pycdlib peak RSS: {py['peak_rss_mib']} MiB (goal <= 64)")
        summary = {
            "size_mib": args.size_mib,
            "runs": args.runs,
            **results,
            "ratio": round(ratio, 2),
            "write_ratio": round(write_ratio, 2),
        }
        print(json.dumps(summary))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
