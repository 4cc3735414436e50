"""Site ISOs, checked by independent readers: xorriso, isoinfo (genisoimage) and pycdlib."""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pycdlib
import pytest
from edgekit_iso.inspect import inspect_iso
from edgekit_iso.siteiso import (
    MIN_SECTORS,
    SECTOR,
    SiteIsoItem,
    SiteIsoResult,
    iso_bytes,
    make_meta_data,
    write_site_iso,
    write_site_isos,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from edgekit.errors import BuildError, ConfigError, EdgekitError

USER_DATA = {
    "empty": "",
    "one-byte": "x",
    "2047": "#cloud-config\n" + "a" * (2047 - 14),
    "2048": "#cloud-config\n" + "b" * (2048 - 14),
    "2049": "#cloud-config\n" + "c" * (2049 - 14),
    "100KiB": "#cloud-config\nwrite_files:\n" + "  - content: " + "d" * (100 * 1024 - 40) + "\n",
    "unicode": "#cloud-config\nstylus:\n  site:\n    name: Zürich-Ωmega 東京 🚀\n",
}


def run(*cmd: str | Path) -> str:
    """Run a tool; a non-zero exit fails the test with its stderr."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}): {proc.stderr}"
    return proc.stdout


def run_bytes(*cmd: str | Path) -> bytes:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, timeout=60)
    assert proc.returncode == 0, f"{cmd} failed: {proc.stderr!r}"
    return proc.stdout


def pvd_info(path: Path) -> str:
    return run("xorriso", "-indev", path, "-pvd_info")


def pycdlib_read(path: Path, **facade: str) -> bytes:
    iso: Any = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        buf = io.BytesIO()
        iso.get_file_from_iso_fp(buf, **facade)
        return buf.getvalue()
    finally:
        iso.close()


def check_iso(path: Path, files: dict[str, bytes], *, label: str = "cidata") -> None:
    """Every independent reader sees *files* (name -> bytes) and *label* in the image at *path*."""
    size = path.stat().st_size
    assert size % SECTOR == 0
    assert size >= MIN_SECTORS * SECTOR

    # isoinfo (genisoimage): descriptors, both name trees, and each file's bytes.
    info = run("isoinfo", "-d", "-i", path)
    assert f"Volume id: {label}\n" in info
    assert f"Volume size is: {size // SECTOR}\n" in info
    assert "Joliet with UCS level 3 found" in info
    assert "Rock Ridge signatures version 1 found" in info
    assert "No errors found" in run("isovfy", "-i", path)  # genisoimage's structure checker
    rr_listing = run("isoinfo", "-R", "-l", "-i", path)
    joliet_listing = run("isoinfo", "-J", "-l", "-i", path)
    for name, data in files.items():
        assert re.search(
            rf"-r--r--r-- +1 +0 +0 +{len(data)} .* {re.escape(name)} *$", rr_listing, re.M
        )
        assert re.search(rf" {len(data)} .* {re.escape(name)} *$", joliet_listing, re.M)
        assert run_bytes("isoinfo", "-R", "-i", path, "-x", f"/{name}") == data
        assert run_bytes("isoinfo", "-J", "-i", path, "-x", f"/{name}") == data

    # blkid (util-linux): what cloud-init's NoCloud uses to find the volume by label.
    probe = run("blkid", "-p", "-o", "export", path)
    assert f"\nLABEL={label}\n" in probe
    assert "\nTYPE=iso9660\n" in probe

    # xorriso: loads the tree without a single warning and extracts the exact bytes.
    out = path.parent / f"{path.name}.extracted"
    run("xorriso", "-return_with", "WARNING", "32", "-osirrox", "on", "-indev", path,
        "-extract", "/", out)  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
    for name, data in files.items():
        assert (out / name).read_bytes() == data
    toc = run("xorriso", "-return_with", "WARNING", "32", "-indev", path, "-toc")
    assert f"{size // SECTOR} data blocks" in toc

    # pycdlib, through Rock Ridge, Joliet and plain ISO9660 names.
    iso: Any = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        assert iso.has_rock_ridge()
        assert iso.has_joliet()
        assert iso.pvd.volume_identifier.rstrip(b" ") == label.encode()
        plain = [n for _d, _s, names in iso.walk(iso_path="/") for n in names]
        assert len(plain) == len(files)
        for name, data in files.items():
            for facade in ("rr_path", "joliet_path"):
                buf = io.BytesIO()
                iso.get_file_from_iso_fp(buf, **{facade: f"/{name}"})
                assert buf.getvalue() == data, (facade, name)
    finally:
        iso.close()


@pytest.mark.parametrize("case", sorted(USER_DATA))
def test_site_iso_is_read_by_every_tool(tmp_path: Path, case: str) -> None:
    user_data = USER_DATA[case]
    result = write_site_iso(tmp_path / "site-0042.iso", user_data=user_data)
    assert result.path == tmp_path / "site-0042.iso"
    data = result.path.read_bytes()
    assert result.size == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    meta = b"instance-id: site-0042\nlocal-hostname: site-0042\n"
    check_iso(result.path, {"user-data": user_data.encode(), "meta-data": meta})
    info = inspect_iso(result.path)
    assert info.volume_label == "cidata"
    assert info.user_data_path == "/user-data"
    assert info.user_data == user_data
    assert not info.boot_entries
    assert not info.is_hybrid


def test_identical_input_gives_identical_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    a = write_site_iso(
        tmp_path / "a.iso", user_data="#cloud-config\n", meta_data="instance-id: x\n"
    )
    time.sleep(1.1)  # a clock-dependent writer would now differ
    b = write_site_iso(
        tmp_path / "b.iso", user_data="#cloud-config\n", meta_data="instance-id: x\n"
    )
    assert a.sha256 == b.sha256
    assert a.path.read_bytes() == b.path.read_bytes()
    assert "Creation Time: 1970010100000000" in pvd_info(a.path)


def test_source_date_epoch_dates_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # 2023-11-14 22:13:20 UTC
    r = write_site_iso(tmp_path / "s.iso", user_data="#cloud-config\n")
    assert "Creation Time: 2023111422132000" in pvd_info(r.path)
    assert "Nov 14 2023" in run("isoinfo", "-R", "-l", "-i", r.path)
    other = write_site_iso(tmp_path / "t.iso", user_data="#cloud-config\n")
    assert other.sha256 != r.sha256  # meta-data differs (instance-id from the file name)
    explicit = write_site_iso(tmp_path / "s2.iso", user_data="#cloud-config\n",
                              meta_data=make_meta_data("s"), epoch=1700000000)  # fmt: skip
    assert explicit.path.read_bytes() == r.path.read_bytes()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ConfigError, match="SOURCE_DATE_EPOCH"):
        write_site_iso(tmp_path / "u.iso", user_data="")


def test_sha256_file_is_optional_and_checks(tmp_path: Path) -> None:
    write_site_iso(tmp_path / "plain.iso", user_data="#cloud-config\n")
    assert not (tmp_path / "plain.iso.sha256").exists()
    r = write_site_iso(tmp_path / "site-1.iso", user_data="#cloud-config\n", sha256_file=True)
    side = tmp_path / "site-1.iso.sha256"
    assert side.read_text() == f"{r.sha256}  site-1.iso\n"
    check = subprocess.run(
        ["sha256sum", "-c", side.name], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert check.stdout == "site-1.iso: OK\n"


def test_meta_data_defaults_and_validation(tmp_path: Path) -> None:
    assert make_meta_data("Site-7") == "instance-id: Site-7\nlocal-hostname: site-7\n"
    assert make_meta_data("yes", "h1") == 'instance-id: "yes"\nlocal-hostname: h1\n'
    assert make_meta_data("x y", "edge-1.example.com") == (
        'instance-id: "x y"\nlocal-hostname: edge-1.example.com\n'
    )
    # Whatever looks like a number or a boolean to YAML is quoted, so it stays a string.
    assert make_meta_data("0042") == 'instance-id: "0042"\nlocal-hostname: "0042"\n'
    assert make_meta_data("On", "off") == 'instance-id: "On"\nlocal-hostname: "off"\n'
    assert make_meta_data("1e3", "h") == 'instance-id: "1e3"\nlocal-hostname: h\n'
    with pytest.raises(ConfigError, match="not a valid host name"):
        make_meta_data("a b:c")
    with pytest.raises(ConfigError, match="one non-empty line"):
        make_meta_data("two\nlines", "h")
    r = write_site_iso(tmp_path / "store-12", user_data="", meta_data="instance-id: custom\n")
    assert pycdlib_read(r.path, rr_path="/meta-data") == b"instance-id: custom\n"


@settings(max_examples=300, deadline=None)
@given(site=st.text(min_size=1, max_size=40).filter(lambda t: "\n" not in t and "\r" not in t))
def test_meta_data_reads_back_as_strings_under_yaml_1_1(site: str) -> None:
    """cloud-init parses meta-data with YAML 1.1 rules: every value must come back unchanged."""
    yaml = YAML(typ="safe")
    host = "edge-1"
    loaded = yaml.load("%YAML 1.1\n---\n" + make_meta_data(site, host))
    assert loaded == {"instance-id": site, "local-hostname": host}
    if site.isascii() and site.isalnum() and site.lower() == site:
        assert yaml.load("%YAML 1.1\n---\n" + make_meta_data(site))["local-hostname"] == site


def test_text_that_is_not_unicode_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\$\.user_data: is not valid Unicode text"):
        write_site_iso(tmp_path / "a.iso", user_data="bad \udc80 surrogate")
    assert list(tmp_path.iterdir()) == []


def test_bad_label_and_names_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="volume label 'this-label-is-far-too-long'"):
        write_site_iso(tmp_path / "a.iso", user_data="", label="this-label-is-far-too-long")
    with pytest.raises(ConfigError, match="volume label"):
        write_site_iso(tmp_path / "a.iso", user_data="", label="ci/data")
    with pytest.raises(ConfigError, match="file name 'a/b'"):
        iso_bytes({"a/b": b""})
    assert list(tmp_path.iterdir()) == []


def test_network_config(tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    net = "version: 2\nethernets:\n  eth0:\n    addresses: [10.0.7.2/24]\n"
    r = write_site_iso(tmp_path / "store-7.iso", user_data="#cloud-config\n", network_config=net)
    meta = make_meta_data("store-7").encode()
    files = {"meta-data": meta, "network-config": net.encode(), "user-data": b"#cloud-config\n"}
    check_iso(r.path, files)
    # Shapes can be mixed in one batch, also across processes.
    items = [
        SiteIsoItem(tmp_path / "a.iso", "ua", None, "version: 2\n"),
        SiteIsoItem(tmp_path / "b.iso", "ub"),
    ]
    serial = write_site_isos(items)
    (tmp_path / "a.iso").unlink()
    (tmp_path / "b.iso").unlink()
    assert write_site_isos(items, executor=pool, chunk_size=1) == serial
    a_files = {"meta-data": make_meta_data("a").encode(), "network-config": b"version: 2\n"}
    check_iso(tmp_path / "a.iso", {**a_files, "user-data": b"ua"})
    check_iso(tmp_path / "b.iso", {"meta-data": make_meta_data("b").encode(), "user-data": b"ub"})


class _Huge(bytes):
    """Claims to be 4 GiB without allocating it."""

    def __len__(self) -> int:
        return 1 << 32


def test_four_gib_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="over the 4 GiB ISO9660 limit"):
        write_site_iso(tmp_path / "big.iso", user_data=_Huge(b"x"))
    assert list(tmp_path.iterdir()) == []


def test_other_labels_and_files(tmp_path: Path) -> None:
    """iso_bytes is generic: a Talos-style label, network-config, and a multi-sector root."""
    files = {
        "meta-data": b"instance-id: n1\n",
        "network-config": b"version: 2\nethernets:\n  eth0:\n    dhcp4: true\n",
        "user-data": b"#cloud-config\n",
    }
    path = tmp_path / "net.iso"
    path.write_bytes(iso_bytes(files, label="CIDATA"))
    check_iso(path, files, label="CIDATA")

    # 60 files with long names: both root directories spill over several sectors.
    many = {
        f"file-number-{i:03d}-with-a-long-Mixed-Case-name.yaml": bytes([i]) * i for i in range(60)
    }
    path = tmp_path / "many.iso"
    path.write_bytes(iso_bytes(many, label="config-2", epoch=86400))
    check_iso(path, many, label="config-2")


def test_write_is_atomic(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="does not exist"):
        write_site_iso(tmp_path / "missing" / "a.iso", user_data="")
    (tmp_path / "taken.iso").mkdir()  # rename onto a directory fails after the data is written
    with pytest.raises(BuildError, match=r"cannot write .*taken\.iso"):
        write_site_iso(tmp_path / "taken.iso", user_data="#cloud-config\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.iso"]
    assert list((tmp_path / "taken.iso").iterdir()) == []
    # Replacing an existing image is fine and leaves no temporary file either.
    (tmp_path / "old.iso").write_bytes(b"old")
    r = write_site_iso(tmp_path / "old.iso", user_data="new")
    assert r.size == (tmp_path / "old.iso").stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.iso", "taken.iso"]
    assert issubclass(BuildError, EdgekitError)


def fleet(root: Path, n: int) -> list[tuple[Path, str, str | None]]:
    return [
        (
            root / f"site-{i:04d}.iso",
            f"#cloud-config\nstylus:\n  site:\n    name: site-{i:04d}\n    paletteEndpoint: "
            f"api.example.com\n    edgeHostToken: {'t' * (i % 700)}\n",
            None if i % 2 else f"instance-id: custom-{i}\nlocal-hostname: host-{i}\n",
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(2) as ex:
        yield ex


def test_many_serial_and_with_a_process_pool_agree(
    tmp_path: Path, pool: ProcessPoolExecutor
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    serial = write_site_isos(fleet(tmp_path / "a", 120))
    pooled = write_site_isos(fleet(tmp_path / "b", 120), executor=pool, chunk_size=7)
    assert [r.path.name for r in serial] == [f"site-{i:04d}.iso" for i in range(120)]
    assert [r.path.name for r in pooled] == [r.path.name for r in serial]
    assert [r.sha256 for r in pooled] == [r.sha256 for r in serial]
    for r in pooled:
        assert hashlib.sha256(r.path.read_bytes()).hexdigest() == r.sha256
    # Spot-check a few with every tool, including one with generated meta-data.
    items = fleet(tmp_path / "b", 120)
    for i in (0, 1, 119):
        dest, user_data, meta = items[i]
        meta_bytes = (meta or make_meta_data(dest.stem)).encode()
        check_iso(dest, {"user-data": user_data.encode(), "meta-data": meta_bytes})
    items_obj = [SiteIsoItem(tmp_path / "a" / "x.iso", b"raw bytes", b"instance-id: x\n")]
    assert write_site_isos(items_obj, sha256_file=True)[0] == SiteIsoResult(
        tmp_path / "a" / "x.iso",
        hashlib.sha256((tmp_path / "a" / "x.iso").read_bytes()).hexdigest(),
        MIN_SECTORS * SECTOR,
    )
    assert (tmp_path / "a" / "x.iso.sha256").exists()


def test_thousand_site_isos_within_five_seconds(tmp_path: Path) -> None:
    """The speed goal. File creation dominates and the machine is shared: best of two runs."""
    items = fleet(tmp_path, 1000)
    timings = []
    for _ in range(2):
        start = time.perf_counter()
        results = write_site_isos(items)
        timings.append(time.perf_counter() - start)
        if timings[-1] <= 5.0:
            break
    assert len(results) == 1000
    assert len(list(tmp_path.glob("*.iso"))) == 1000
    assert len(list(tmp_path.iterdir())) == 1000  # no temporary files left behind
    assert min(timings) <= 5.0, f"1000 site ISOs took {timings} s"


def test_batch_problems_are_config_errors(tmp_path: Path) -> None:
    items = fleet(tmp_path, 3)
    items.append((tmp_path / "x" / ".." / "site-0001.iso", "", None))
    with pytest.raises(ConfigError, match=r"\$\[3\]\.dest: .* is also the dest of item 1"):
        write_site_isos(items)
    with pytest.raises(ConfigError, match="its name 'Site_1' is not a host name"):
        write_site_isos([(tmp_path / "Site_1.iso", "", None)])
    assert list(tmp_path.iterdir()) == []


def test_errors_in_a_batch_keep_earlier_images(tmp_path: Path) -> None:
    items = fleet(tmp_path, 3)
    items[2] = (tmp_path / "nowhere" / "x.iso", "", None)
    with pytest.raises(BuildError, match="nowhere"):
        write_site_isos(items)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site-0000.iso", "site-0001.iso"]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    user_data=st.binary(max_size=5000),
    meta=st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass")),
)
def test_any_bytes_round_trip_through_pycdlib(
    tmp_path: Path, user_data: bytes, meta: bytes
) -> None:
    path = tmp_path / "h.iso"
    path.write_bytes(iso_bytes({"user-data": user_data, "meta-data": meta}))
    assert os.path.getsize(path) % SECTOR == 0
    assert pycdlib_read(path, rr_path="/user-data") == user_data
    assert pycdlib_read(path, joliet_path="/meta-data") == meta
    assert pycdlib_read(path, iso_path="/USER_DAT.;1") == user_data


def test_progress_is_reported_per_image_and_per_chunk(tmp_path: Path) -> None:
    items = [(tmp_path / f"site-{i}.iso", f"#cloud-config\n# {i}\n", None) for i in range(5)]
    calls: list[tuple[int, int]] = []
    write_site_isos(items, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    calls.clear()
    with ThreadPoolExecutor(2) as pool:
        write_site_isos(
            items, executor=pool, chunk_size=2, progress=lambda d, t: calls.append((d, t))
        )
    assert calls == [(2, 5), (4, 5), (5, 5)]
