"""Site ISO throughput: edgekit's writer against xorriso, genisoimage and pycdlib, and
publishing a fleet to a real registry.

Writes N site ISOs (``cidata``, ``/user-data`` of ~1-2 KiB of realistic, varying
``#cloud-config`` plus ``/meta-data``) with one process and with a ProcessPoolExecutor(2),
then K of the same sites with ``xorriso -as mkisofs``, ``genisoimage`` and pycdlib, and
extrapolates their per-ISO time to N. Peak RSS is read from getrusage (self, and the pool
workers as reaped children).

Then it starts a ``docker-registry`` on 127.0.0.1 (as the tests do) and publishes the N
ISOs as one fleet index (``edgekit_oras.fleet``), in a fresh process so its peak RSS is
its own; publishes them again unchanged (bytes sent must be 0) and with one site changed;
and pushes P of them the previous way, one artifact per site in sequence
(``engine.push_artifact``, tag ``sites:<site>``), extrapolated to N.

    python benchmarks/bench_site_isos.py [--sites 1000] [--compare 50] [--out DIR]
                                         [--publish-compare 100] [--publish-only]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import io
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pycdlib
from edgekit_iso.siteiso import iso_bytes, make_meta_data, write_site_isos


def user_data(i: int) -> str:
    """A plausible Palette site user-data of 1-2 KiB, different for every site."""
    rng = random.Random(i)
    token = hashlib.sha256(f"token-{i}".encode()).hexdigest()
    keys = "\n".join(
        f"        - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{rng.randbytes(24).hex()} ops{k}@site"
        for k in range(rng.randint(1, 7))
    )
    ntp = "\n".join(
        f"        server ntp{j}.site-{i}.example iburst" for j in range(rng.randint(1, 4))
    )
    return (
        "#cloud-config\n"
        "stylus:\n"
        "  site:\n"
        f"    edgeHostToken: {token}\n"
        f"    name: store-{i:05d}\n"
        "    paletteEndpoint: api.spectrocloud.example\n"
        "    projectName: retail-edge\n"
        "    tags:\n"
        f"      region: eu-{rng.choice(['west', 'central', 'north'])}-{rng.randint(1, 9)}\n"
        f"      store: '{i:05d}'\n"
        "    network:\n"
        f"      httpProxy: http://proxy-{i % 40}.corp.example:3128\n"
        "      noProxy: 10.0.0.0/8,.svc,.cluster.local\n"
        "    registrationURL: https://register.example/edge\n"
        "  includeTui: false\n"
        "install:\n"
        "  poweroff: true\n"
        "users:\n"
        "  - name: kairos\n"
        "    passwd: '!'\n"
        "    ssh_authorized_keys:\n"
        f"{keys}\n"
        "stages:\n"
        "  initramfs:\n"
        "    - name: Configure hostname\n"
        f"      hostname: store-{i:05d}\n"
        "  network:\n"
        "    - name: Time servers\n"
        "      files:\n"
        "        - path: /etc/chrony/sources.d/site.sources\n"
        "          permissions: 0644\n"
        "          content: |\n"
        f"{ntp}\n"
        "    - name: Site labels\n"
        "      commands:\n"
        f"        - echo 'site=store-{i:05d} rack={rng.randint(1, 40)}' > /etc/site-labels\n"
    )


def peak_rss_mib() -> tuple[float, float]:
    """Peak RSS of this process and of its largest reaped child, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def stage(root: Path, i: int) -> Path:
    """A directory holding site *i*'s user-data and meta-data, for the external tools."""
    src = root / f"src-{i:05d}"
    src.mkdir()
    (src / "user-data").write_text(user_data(i))
    (src / "meta-data").write_text(make_meta_data(f"site-{i:05d}"))
    return src


def run_tool(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


def pycdlib_site(files: dict[str, bytes], out: Path | None) -> None:
    """*files* as an ISO written by pycdlib to *out* (None: into memory)."""
    iso: Any = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident="cidata", joliet=3, rock_ridge="1.09")
    for name, data in files.items():
        iso.add_fp(io.BytesIO(data), len(data), f"/{name.upper().replace('-', '_')}.;1",
                   rr_name=name, joliet_path=f"/{name}")  # fmt: skip
    if out is None:
        iso.write_fp(io.BytesIO())
    else:
        iso.write(str(out))
    iso.close()


def timed(label: str, n: int, fn: Any) -> float:
    """Run *fn* once and print its time per ISO; dirty pages of earlier runs are synced first."""
    os.sync()
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    print(f"{label:<44} {n:>5} ISOs  {elapsed:8.3f} s  {elapsed / n * 1000:8.3f} ms/ISO")
    return elapsed / n


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--compare", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None, help="keep the images here")
    parser.add_argument(
        "--publish-compare", type=int, default=100, help="sites pushed the previous way"
    )
    parser.add_argument("--publish-only", action="store_true", help="skip the writer figures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-site-isos-") as tmp:
        root = args.out or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        if not args.publish_only:
            bench(root, args.sites, args.compare)
        bench_publish(root / "publish", args.sites, args.publish_compare)
    return 0


def _fleet_publish(target: str, isos: list[tuple[str, Path, str]]) -> tuple[float, int, float]:
    """In a fresh process: publish the fleet; (seconds, bytes sent, peak RSS MiB)."""
    from edgekit_oras.client import ConnectionOptions
    from edgekit_oras.fleet import push_site_isos

    start = time.perf_counter()
    done = push_site_isos(isos, target, options=ConnectionOptions(plain_http=True))
    elapsed = time.perf_counter() - start
    return elapsed, done.uploaded_bytes, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_publish(root: Path, n: int, p: int) -> None:
    """Publish *n* site ISOs to a real registry: the fleet index vs one push per site."""
    import multiprocessing

    from edgekit_oras.client import ConnectionOptions
    from edgekit_oras.engine import push_artifact
    from edgekit_oras.testing import RegistryServer

    (root / "sites").mkdir(parents=True)
    (root / "changed").mkdir()
    results = write_site_isos(
        (root / "sites" / f"store-{i:05d}.iso", user_data(i), None) for i in range(n)
    )
    isos = [(r.path.stem, r.path, f"sha256:{r.sha256}") for r in results]
    size = sum(r.size for r in results)
    print(f"\npublishing {n} site ISOs ({size / 2**20:.0f} MiB) to docker-registry on 127.0.0.1")
    spawn = multiprocessing.get_context("spawn")
    with RegistryServer("plain", workdir=root / "registry") as registry:
        target = f"{registry.host}/fleet/sites:bench"
        os.sync()
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as ex:
            first, sent, rss = ex.submit(_fleet_publish, target, isos).result()
        print(f"  fleet index, first publish     {first:8.2f} s  {sent / 2**20:7.1f} MiB sent")
        print(f"  peak RSS of the publishing process: {rss:.0f} MiB")
        again, sent_again, _ = _fleet_publish(target, isos)
        print(f"  fleet index, unchanged again   {again:8.2f} s  {sent_again} bytes sent")
        changed = write_site_isos(
            [(root / "changed" / "store-00007.iso", user_data(7) + "# changed\n", None)]
        )
        edited = [*isos[:7], ("store-00007", changed[0].path, f"sha256:{changed[0].sha256}")]
        edited += isos[8:]
        one, sent_one, _ = _fleet_publish(target, edited)
        print(f"  fleet index, one site changed  {one:8.2f} s  {sent_one / 1024:7.1f} KiB sent")

        options = ConnectionOptions(plain_http=True)
        os.sync()
        start = time.perf_counter()
        for site, path, _digest in isos[:p]:
            push_artifact(
                path,
                f"{registry.host}/fleet/sites:{site}",
                artifact_type="application/vnd.edgekit.site-iso.v1",
                annotations={"dev.edgekit.site": site},
                options=options,
            )
        old = (time.perf_counter() - start) / p * n
        print(f"  previous way, one push per site ({p}, extrapolated) {old:8.2f} s")
    print(f"  previous way / fleet index: x{old / first:.1f}")
    if n == 1000:
        ok = first <= 5.0 and rss <= 100 and sent_again == 0
        print(f"  goal (<= 5 s, <= 100 MiB, re-publish 0 bytes): {'met' if ok else 'MISSED'}")


def bench(root: Path, n: int, k: int) -> None:
    """Run every measurement in *root* and print the figures."""
    sizes = [len(user_data(i).encode()) for i in range(n)]
    print(f"user-data: {min(sizes)}-{max(sizes)} bytes, mean {sum(sizes) / n:.0f}")

    def batch(sub: str) -> list[tuple[Path, str, None]]:
        (root / sub).mkdir()
        return [(root / sub / f"site-{i:05d}.iso", user_data(i), None) for i in range(n)]

    per: dict[str, float] = {}
    serial, with_sha, pooled, threaded = batch("serial"), batch("sha"), batch("pool"), batch("thr")
    per["edgekit, one process"] = timed(
        "edgekit write_site_isos, one process", n, lambda: write_site_isos(serial)
    )
    print(f"  peak RSS after the serial run: {peak_rss_mib()[0]:.0f} MiB")
    per["edgekit, one process, .sha256 files"] = timed(
        "edgekit, one process, with .sha256 files",
        n,
        lambda: write_site_isos(with_sha, sha256_file=True),
    )

    def in_pool() -> None:
        with concurrent.futures.ProcessPoolExecutor(2) as ex:
            write_site_isos(pooled, executor=ex)

    per["edgekit, ProcessPoolExecutor(2)"] = timed(
        "edgekit, ProcessPoolExecutor(2) incl. start", n, in_pool
    )
    print(f"  peak RSS of a pool worker: {peak_rss_mib()[1]:.0f} MiB")

    def in_threads() -> None:
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            write_site_isos(threaded, executor=ex, chunk_size=50)

    per["edgekit, ThreadPoolExecutor(4)"] = timed(
        "edgekit, ThreadPoolExecutor(4), chunks of 50", n, in_threads
    )
    same = all(a[0].read_bytes() == b[0].read_bytes() for a, b in zip(serial, pooled, strict=True))
    print(f"edgekit images: {serial[0][0].stat().st_size // 1024} KiB each; pool == serial: {same}")

    srcs = [stage(root, i) for i in range(k)]
    contents = [{n: (s / n).read_bytes() for n in ("user-data", "meta-data")} for s in srcs]

    def tool_loop(tool: str) -> None:
        (root / tool).mkdir()
        for s in srcs:
            out = str(root / tool / f"{s.name}.iso")
            cmd = ["xorriso", "-as", "mkisofs"] if tool == "xorriso" else [tool]
            files = [str(s / "user-data"), str(s / "meta-data")]
            run_tool([*cmd, "-quiet", "-o", out, "-V", "cidata", "-J", "-r", *files])

    def pycdlib_loop() -> None:
        (root / "pycdlib").mkdir()
        for s, files in zip(srcs, contents, strict=True):
            pycdlib_site(files, root / "pycdlib" / f"{s.name}.iso")

    def pycdlib_memory_loop() -> None:
        for files in contents:
            pycdlib_site(files, None)

    def edgekit_memory_loop() -> None:
        for files in contents:
            iso_bytes(files)

    per["xorriso -as mkisofs"] = timed(
        "xorriso -as mkisofs -J -r (one process each)", k, lambda: tool_loop("xorriso")
    )
    per["genisoimage"] = timed(
        "genisoimage -J -r (one process each)", k, lambda: tool_loop("genisoimage")
    )
    per["pycdlib"] = timed("pycdlib new/add_fp/write to a file", k, pycdlib_loop)

    def edgekit_k_loop() -> None:
        (root / "edgekit-k").mkdir()
        write_site_isos(
            (root / "edgekit-k" / f"{s.name}.iso", files["user-data"], files["meta-data"])
            for s, files in zip(srcs, contents, strict=True)
        )

    per[f"edgekit, the same {k} sites"] = timed(
        f"edgekit write_site_isos, the same {k} sites", k, edgekit_k_loop
    )
    edgekit_mem = timed("edgekit iso_bytes, in memory only", k, edgekit_memory_loop)
    pycdlib_mem = timed("pycdlib write_fp to BytesIO, in memory only", k, pycdlib_memory_loop)
    xorriso_size = (root / "xorriso" / f"{srcs[0].name}.iso").stat().st_size
    print(f"xorriso images: {xorriso_size // 1024} KiB each")

    base = per["edgekit, one process"]
    print(f"\nextrapolated to {n} site ISOs, and time relative to edgekit in one process:")
    for label, seconds in per.items():
        print(f"  {label:<40} {seconds * n:8.2f} s   x{seconds / base:7.2f}")
    print(
        f"image generation alone (no file system): edgekit {edgekit_mem * 1e6:.0f} us, "
        f"pycdlib {pycdlib_mem * 1e6:.0f} us per ISO (x{pycdlib_mem / edgekit_mem:.0f})"
    )
    own, child = peak_rss_mib()
    print(f"peak RSS: benchmark process {own:.0f} MiB, largest child {child:.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())
