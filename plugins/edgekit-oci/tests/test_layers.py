"""Layers: reproducible tar streams, whiteouts, path safety, compression, progress."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest
from edgekit_oci.image import BaseImage, ImageSpec, build_image
from edgekit_oci.layers import (
    MEDIA_LAYER_GZIP,
    MEDIA_LAYER_ZSTD,
    ContentEntry,
    DirEntry,
    FileEntry,
    LayerSpec,
    OpaqueWhiteoutEntry,
    SymlinkEntry,
    TreeEntry,
    WhiteoutEntry,
    build_layer,
    image_path,
    iter_members,
)
from edgekit_oci.layout import OCILayout
from edgekit_oci.progress import LayerDone, LayerProgress, LayerStarted, ProgressEvent
from hypothesis import given
from hypothesis import strategies as st

from edgekit.errors import BuildError

FILES = {
    "etc/os-release": b"NAME=sample\n",
    "usr/bin/tool": b"\x7fELF" + bytes(range(256)) * 50,
    "usr/share/doc/readme": b"read me\n" * 1000,
    "var/lib/big": os.urandom(3 << 20),  # several 1 MiB chunks through the pipeline
    "a" * 120 + "/long-name-needs-pax": b"pax\n",
    "unicode/naïve.txt": "ünïcødé\n".encode(),
}


def _tar_of(layout: OCILayout, digest: str) -> tarfile.TarFile:
    data = layout.blob_path(digest).read_bytes()
    return tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r:")


def _tree(tmp: Path, make_tree, mtime: int) -> Path:  # type: ignore[no-untyped-def]
    root = make_tree(tmp, FILES, mtime=mtime)
    (root / "usr" / "bin" / "tool").chmod(0o755)
    os.symlink("tool", root / "usr" / "bin" / "alias")
    os.symlink("/etc/shadow", root / "etc" / "outside")
    return root


def test_build_is_reproducible_across_dirs_and_mtimes(
    tmp_path: Path, make_tree, epoch: int, umoci_unpack, skopeo_inspect
) -> None:  # type: ignore[no-untyped-def]
    digests = []
    for i, mtime in enumerate((1_000_000, 1_600_000_000)):
        src = _tree(tmp_path / f"src-{i}" / "deep" / str(i), make_tree, mtime)
        spec = ImageSpec(
            [LayerSpec("rootfs", [TreeEntry(src, "/")])], labels={"io.edgekit.os.name": "x"}
        )
        result = build_image(tmp_path / f"out-{i}", "v1", spec)
        digests.append(result.digest)
        rootfs = umoci_unpack(tmp_path / f"out-{i}", "v1")
        for rel, data in FILES.items():
            assert (rootfs / rel).read_bytes() == data
        assert os.readlink(rootfs / "usr/bin/alias") == "tool"
        assert os.readlink(rootfs / "etc/outside") == "/etc/shadow"  # stored, never followed
        assert (rootfs / "usr/bin/tool").stat().st_mode & 0o777 == 0o755
        info = skopeo_inspect(tmp_path / f"out-{i}", "v1")
        assert info["Architecture"] == "amd64"
        assert info["Labels"] == {"io.edgekit.os.name": "x"}
    assert digests[0] == digests[1]


def test_tar_and_gzip_headers_are_normalised(tmp_path: Path, make_tree, epoch: int) -> None:  # type: ignore[no-untyped-def]
    src = _tree(tmp_path / "src", make_tree, 12345)
    layout = OCILayout.create(tmp_path / "img")
    res = build_layer(layout, LayerSpec("l", [TreeEntry(src, "/opt/app")]))
    blob = layout.blob_path(res.descriptor.digest).read_bytes()
    assert blob[:3] == b"\x1f\x8b\x08"
    assert blob[3] == 0  # FLG: no FNAME, no FEXTRA, no comment
    assert blob[4:8] == b"\0\0\0\0"  # gzip MTIME 0
    raw = gzip.decompress(blob)
    assert res.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert res.descriptor.media_type == MEDIA_LAYER_GZIP
    with _tar_of(layout, res.descriptor.digest) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[:2] == ["opt", "opt/app"]  # implied parents first
    assert names == sorted(names, key=lambda n: n.split("/"))
    assert len(names) == len(set(names))
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", epoch)
        assert not m.name.startswith("/")
    assert "opt/app/" + "a" * 120 + "/long-name-needs-pax" in names


def test_default_epoch_is_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    layout = OCILayout.create(tmp_path / "img")
    res = build_layer(layout, LayerSpec("l", [ContentEntry(b"x", "/f")]))
    with _tar_of(layout, res.descriptor.digest) as tar:
        assert [m.mtime for m in tar.getmembers()] == [0]


def test_bad_source_date_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    layout = OCILayout.create(tmp_path / "img")
    with pytest.raises(BuildError, match="SOURCE_DATE_EPOCH"):
        build_layer(layout, LayerSpec("l", [ContentEntry(b"x", "/f")]))


def test_whiteouts_hide_base_files(tmp_path: Path, make_tree, epoch: int, umoci_unpack) -> None:  # type: ignore[no-untyped-def]
    base_src = make_tree(
        tmp_path / "base",
        {"etc/motd": b"old", "etc/keep": b"k", "opt/cache/a": b"a", "opt/cache/b": b"b"},
    )
    out = tmp_path / "out"
    build_image(out, "base", ImageSpec([LayerSpec("base", [TreeEntry(base_src, "/")])]))
    top = ImageSpec(
        [
            LayerSpec(
                "changes",
                [
                    WhiteoutEntry("/etc/motd"),
                    OpaqueWhiteoutEntry("/opt/cache"),
                    ContentEntry(b"new", "/opt/cache/c"),
                    DirEntry("/srv/data", mode=0o700),
                    SymlinkEntry("/usr/bin/sh", "busybox"),
                ],
            )
        ],
        base=BaseImage(out, "base"),
    )
    build_image(out, "top", top)
    rootfs = umoci_unpack(out, "top")
    assert not (rootfs / "etc/motd").exists()
    assert (rootfs / "etc/keep").read_bytes() == b"k"
    assert sorted(p.name for p in (rootfs / "opt/cache").iterdir()) == ["c"]
    assert (rootfs / "srv/data").stat().st_mode & 0o777 == 0o700
    assert os.readlink(rootfs / "usr/bin/sh") == "busybox"
    base_rootfs = umoci_unpack(out, "base")
    assert (base_rootfs / "etc/motd").read_bytes() == b"old"  # base image untouched


@pytest.mark.parametrize(
    "entry",
    [
        lambda src: FileEntry(src / "f", "../escape"),
        lambda src: FileEntry(src / "f", "/usr/../../escape"),
        lambda src: TreeEntry(src, "/opt/../.."),
        lambda src: SymlinkEntry("a/../../b", "x"),
        lambda src: WhiteoutEntry("/.."),
        lambda src: ContentEntry(b"", "/etc/\0bad"),
    ],
)
def test_paths_escaping_the_root_are_rejected(tmp_path: Path, entry) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(BuildError, match=r"escapes the image root|NUL"):
        entry(tmp_path)


def test_symlinked_directory_in_tree_is_not_followed(tmp_path: Path, make_tree) -> None:  # type: ignore[no-untyped-def]
    outside = make_tree(tmp_path / "outside", {"secret": b"do not copy"})
    src = make_tree(tmp_path / "src", {"ok": b"fine"})
    os.symlink(outside, src / "escape")
    layout = OCILayout.create(tmp_path / "img")
    res = build_layer(layout, LayerSpec("l", [TreeEntry(src, "/")]))
    with _tar_of(layout, res.descriptor.digest) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"ok", "escape"}
    assert members["escape"].issym()
    assert members["escape"].linkname == str(outside)


def test_whiteout_names_in_sources_are_rejected(tmp_path: Path, make_tree) -> None:  # type: ignore[no-untyped-def]
    src = make_tree(tmp_path / "src", {"etc/.wh.passwd": b""})
    layout = OCILayout.create(tmp_path / "img")
    with pytest.raises(BuildError, match="reserves for whiteouts"):
        build_layer(layout, LayerSpec("l", [TreeEntry(src, "/")]))


def test_duplicate_paths_are_rejected(tmp_path: Path, make_tree) -> None:  # type: ignore[no-untyped-def]
    src = make_tree(tmp_path / "src", {"etc/hosts": b"a"})
    layout = OCILayout.create(tmp_path / "img")
    spec = LayerSpec("l", [TreeEntry(src, "/"), ContentEntry(b"b", "/etc/hosts")])
    with pytest.raises(BuildError, match=r"duplicate path /etc/hosts"):
        build_layer(layout, spec)
    conflict = LayerSpec("l", [ContentEntry(b"a", "/x"), ContentEntry(b"b", "/x/y")])
    with pytest.raises(BuildError, match="not a directory"):
        build_layer(layout, conflict)


def test_special_files_are_rejected(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "pipe")
    layout = OCILayout.create(tmp_path / "img")
    with pytest.raises(BuildError, match="FIFO"):
        build_layer(layout, LayerSpec("l", [TreeEntry(src, "/")]))


def test_zstd_layer(tmp_path: Path, make_tree, epoch: int, skopeo_inspect) -> None:  # type: ignore[no-untyped-def]
    src = _tree(tmp_path / "src", make_tree, 5)
    out = tmp_path / "img"
    spec = ImageSpec([LayerSpec("l", [TreeEntry(src, "/")], compression="zstd", level=3)])
    result = build_image(out, "z", spec)
    layer = result.images[0].layers[0]
    assert layer.descriptor.media_type == MEDIA_LAYER_ZSTD
    blob = OCILayout.open(out).blob_path(layer.descriptor.digest)
    raw = subprocess.run(
        ["zstd", "-dc", str(blob)], capture_output=True, check=True, timeout=60
    ).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == layer.diff_id
    listing = subprocess.run(
        ["tar", "-t"], input=raw, capture_output=True, check=True, timeout=60
    ).stdout.decode()
    assert "var/lib/big" in listing.splitlines()
    info = skopeo_inspect(out, "z")
    assert info["Layers"] == [layer.descriptor.digest]


def test_unknown_compression_and_level(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="unknown layer compression"):
        LayerSpec("l", [], compression="lz4")  # type: ignore[arg-type]
    layout = OCILayout.create(tmp_path / "img")
    with pytest.raises(BuildError, match="level 12 is out of range"):
        build_layer(layout, LayerSpec("l", [ContentEntry(b"", "/f")], level=12))


def test_progress_events(tmp_path: Path, make_tree) -> None:  # type: ignore[no-untyped-def]
    src = make_tree(tmp_path / "src", {"big": os.urandom(20 << 20), "small": b"s"})
    layout = OCILayout.create(tmp_path / "img")
    events: list[ProgressEvent] = []
    res = build_layer(layout, LayerSpec("l", [TreeEntry(src, "/")]), progress=events.append)
    assert events[0] == LayerStarted("l", (20 << 20) + 1)
    steps = [e.bytes_done for e in events if isinstance(e, LayerProgress)]
    assert steps == sorted(steps)
    assert steps[-1] == (20 << 20) + 1
    assert len(steps) >= 2
    assert events[-1] == LayerDone("l", res.descriptor.digest, res.descriptor.size, False)


def test_file_changed_during_build_is_an_error(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 100)
    layout = OCILayout.create(tmp_path / "img")
    events: list[ProgressEvent] = []

    def shrink(event: ProgressEvent) -> None:
        events.append(event)
        if isinstance(event, LayerStarted):
            (src / "f").write_bytes(b"x")  # after the walk, before the read

    with pytest.raises(BuildError, match="shrank"):
        build_layer(layout, LayerSpec("l", [TreeEntry(src, "/")]), progress=shrink)
    assert list((layout.path / "blobs" / "sha256").iterdir()) == []
    assert not [p for p in (layout.path / "blobs").iterdir() if p.name.startswith(".tmp")]


@pytest.mark.parametrize("size", [100, (1 << 20) - 512])
def test_file_grown_during_build_is_an_error(tmp_path: Path, size: int) -> None:
    """Growth is seen by the read asking one byte past the end (a 100-byte file) and by the
    probe read after a file that ends exactly where a 1 MiB block does."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x" * size)
    layout = OCILayout.create(tmp_path / "img")

    def grow(event: ProgressEvent) -> None:
        if isinstance(event, LayerStarted):
            with open(src / "f", "ab") as f:  # after the walk, before the read
                f.write(b"y")

    with pytest.raises(BuildError, match="grew while the layer was being built"):
        build_layer(layout, LayerSpec("l", [TreeEntry(src, "/")]), progress=grow)
    assert list((layout.path / "blobs" / "sha256").iterdir()) == []
    assert not [p for p in (layout.path / "blobs").iterdir() if p.name.startswith(".tmp")]


@given(
    st.lists(
        st.lists(st.sampled_from(["a", "b", "a-b", "a.b", "0", "~", "é", "\udcff", "a b"]),
                 min_size=1, max_size=4).map("/".join),
        max_size=30,
    )
)  # fmt: skip
def test_member_order_is_by_path_components(names: list[str]) -> None:
    """The cheap sort key orders names exactly as their component lists do."""
    from edgekit_oci.layers import _sort_key

    assert sorted(names, key=_sort_key) == sorted(names, key=lambda n: n.split("/"))


def test_failed_image_build_leaves_no_layout(tmp_path: Path, make_tree) -> None:  # type: ignore[no-untyped-def]
    src = make_tree(tmp_path / "src", {"a": b"a"})
    out_parent = tmp_path / "outputs"
    out_parent.mkdir()
    spec = ImageSpec(
        [
            LayerSpec("ok", [TreeEntry(src, "/")]),
            LayerSpec("broken", [FileEntry(tmp_path / "missing", "/x")]),
        ]
    )
    with pytest.raises(BuildError, match="missing"):
        build_image(out_parent / "img", "v1", spec)
    assert list(out_parent.iterdir()) == []
    (tmp_path / "not-a-dir").write_text("")
    with pytest.raises(BuildError, match="cannot write OCI layout"):
        build_image(tmp_path / "not-a-dir" / "img", "v1", spec)


def test_iter_members_dry_run(tmp_path: Path) -> None:
    spec = LayerSpec("l", [ContentEntry(b"", "/a/b/c"), WhiteoutEntry("/d/e")])
    assert list(iter_members(spec)) == [
        ("/a", "dir"),
        ("/a/b", "dir"),
        ("/a/b/c", "file"),
        ("/d", "dir"),
        ("/d/.wh.e", "file"),
    ]


@given(st.lists(st.sampled_from(["a", "b", ".", "..", "", "c.d", "x y"]), max_size=6))
def test_image_path_never_escapes(parts: list[str]) -> None:
    path = "/".join(parts)
    try:
        norm = image_path(path)
    except BuildError:
        assert ".." in parts
        return
    assert ".." not in norm.split("/")
    assert not norm.startswith("/")
    assert "" not in norm.split("/") or norm == ""


@given(
    name=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=130
    ),
    kind=st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE]),
    mode=st.integers(0, 0o7777),
    size=st.one_of(st.integers(0, 1 << 20), st.just(8**11 - 1), st.just(8**11 + 5)),
    link=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF), max_size=110),
    mtime=st.sampled_from([0, 1_700_000_000, 8**11 + 1]),
)
def test_fast_tar_header_matches_tarfile(
    name: str, kind: bytes, mode: int, size: int, link: str, mtime: int
) -> None:
    from edgekit_oci.layers import _header, _Member, _tarfile_header

    member = _Member(name, kind, mode, size=size, linkname=link if kind == tarfile.SYMTYPE else "")
    assert _header(member, mtime) == _tarfile_header(member, mtime)


@pytest.mark.parametrize("workers", [None, 8])
@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_memory_stays_bounded(tmp_path: Path, compression: str, workers: int | None) -> None:
    """A 512 MiB file streams through in a child process whose peak RSS stays small,
    with every core of this machine and with more workers than it has."""
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "disk.img", "wb") as f:
        f.truncate(512 << 20)  # sparse: cheap to create and to read, still 512 MiB of tar
    # VmHWM is the high-water mark of this process's own memory map; ru_maxrss would also
    # count the (large) pytest process the child was forked from.
    code = (
        "import re, sys\n"
        "from edgekit_oci.layers import LayerSpec, TreeEntry, build_layer\n"
        "from edgekit_oci.layout import OCILayout\n"
        "r = build_layer(OCILayout.create(sys.argv[2]),"
        " LayerSpec('big', [TreeEntry(sys.argv[1], '/')], compression=sys.argv[3]))\n"
        "status = open('/proc/self/status').read()\n"
        "print(r.descriptor.size, re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "EDGEKIT_LAYER_WORKERS"}
    if workers is not None:
        env["EDGEKIT_LAYER_WORKERS"] = str(workers)
    proc = subprocess.run(
        [sys.executable, "-c", code, str(src), str(tmp_path / "img"), compression],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env=env,
    )
    size, hwm_kib = map(int, proc.stdout.split())
    assert size > 0
    print(f"{compression}: peak RSS {hwm_kib} KiB")
    assert hwm_kib < 100 * 1024, f"peak RSS {hwm_kib} KiB"


def test_write_failure_is_a_build_error_and_leaves_nothing(tmp_path: Path) -> None:
    """A full disk (simulated with RLIMIT_FSIZE in a child) fails cleanly."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "random").write_bytes(os.urandom(4 << 20))
    code = (
        "import resource, signal, sys\n"
        "from edgekit.errors import BuildError\n"
        "from edgekit_oci.layers import LayerSpec, TreeEntry, build_layer\n"
        "from edgekit_oci.layout import OCILayout\n"
        "layout = OCILayout.create(sys.argv[2])\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))\n"
        "try:\n"
        "    build_layer(layout, LayerSpec('l', [TreeEntry(sys.argv[1], '/')]))\n"
        "except BuildError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    img = tmp_path / "img"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(src), str(img)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr
    assert "cannot write layer l" in proc.stdout
    assert "too large" in proc.stdout.lower()
    assert [p.name for p in (img / "blobs").rglob("*")] == ["sha256"]


def test_parallel_gzip_is_valid_and_independent_of_threads(tmp_path: Path, make_tree) -> None:  # type: ignore[no-untyped-def]
    src = make_tree(
        tmp_path / "src",
        {"text": b"edge kubernetes layer " * 400_000, "random": os.urandom(5 << 20), "tiny": b"t"},
    )
    digests = set()
    for workers in (1, 4):
        layout = OCILayout.create(tmp_path / f"img-{workers}")
        res = build_layer(layout, LayerSpec("l", [TreeEntry(src, "/")]), workers=workers)
        digests.add(res.descriptor.digest)
        blob = layout.blob_path(res.descriptor.digest)
        subprocess.run(["gzip", "-t", str(blob)], check=True, timeout=60)  # CRC and size
        raw = subprocess.run(
            ["gzip", "-dc", str(blob)], capture_output=True, check=True, timeout=60
        ).stdout
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == res.diff_id
        assert gzip.decompress(blob.read_bytes()) == raw  # one member, Python agrees
        assert blob.read_bytes().count(b"\x1f\x8b\x08") >= 1
    assert len(digests) == 1


def _one_gzip_member(data: bytes) -> bool:
    """True when ``data`` is exactly one gzip member (nothing after its trailer)."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    d.decompress(data)
    return d.eof and d.unused_data == b""


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_same_bytes_with_1_and_4_workers(
    tmp_path: Path, make_tree, epoch: int, compression: str, skopeo_inspect, umoci_unpack
) -> None:  # type: ignore[no-untyped-def]
    """Whole images built with 1 and 4 compression workers have the same digests."""
    src = _tree(tmp_path / "src", make_tree, 5)
    (src / "var/lib/more").write_bytes(b"layer text " * 300_000 + os.urandom(3 << 20))
    results = []
    for workers in (1, 4):
        spec = ImageSpec([LayerSpec("l", [TreeEntry(src, "/")], compression=compression)])
        results.append(build_image(tmp_path / f"img-{workers}", "v1", spec, workers=workers))
    layers = [r.images[0].layers[0] for r in results]
    assert layers[0].descriptor == layers[1].descriptor
    assert layers[0].diff_id == layers[1].diff_id
    assert results[0].digest == results[1].digest
    blob = OCILayout.open(tmp_path / "img-4").blob_path(layers[1].descriptor.digest)
    if compression == "gzip":
        assert _one_gzip_member(blob.read_bytes())
        umoci_unpack(tmp_path / "img-4", "v1")  # checks the diff_id against the content
    else:
        subprocess.run(["zstd", "-tq", str(blob)], check=True, timeout=60)
        raw = subprocess.run(
            ["zstd", "-dc", str(blob)], capture_output=True, check=True, timeout=60
        ).stdout
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == layers[1].diff_id
    assert skopeo_inspect(tmp_path / "img-4", "v1")["Layers"] == [layers[1].descriptor.digest]


def test_zstd_multithreaded_framing_is_always_used() -> None:
    """libzstd's single-threaded mode frames differently: one worker must still be MT."""
    import zstandard
    from edgekit_oci import compress

    data = (b"edge kubernetes layer " * 50_000 + os.urandom(1 << 20)) * 6
    outputs = set()
    for workers in (1, 2, 4, 8):
        c = compress.zstd_compressor(3, workers)
        outputs.add(c.compress(data) + c.flush())
    for threads in (1, 2, 3, 4):  # zstd_threads() gives 2 or more: 1 and 3 checked here
        params = zstandard.ZstdCompressionParameters.from_level(
            3, threads=threads, job_size=compress.ZSTD_JOB, write_content_size=False
        )
        c = zstandard.ZstdCompressor(compression_params=params).compressobj()
        outputs.add(c.compress(data) + c.flush())
    (out,) = outputs
    single = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(data)
    assert out != single  # the reason threads=0 is never used
    assert zstandard.ZstdDecompressor().decompressobj().decompress(out) == data


@pytest.mark.parametrize("workers", [0, -1, 1.5, "2", True])
def test_bad_worker_count_is_a_build_error(tmp_path: Path, workers: object) -> None:
    spec = ImageSpec([LayerSpec("l", [ContentEntry(b"x", "/f")])])
    with pytest.raises(BuildError, match="workers must be a positive integer"):
        build_image(tmp_path / "img", "v1", spec, workers=workers)  # type: ignore[arg-type]
    assert not (tmp_path / "img").exists()


def test_worker_count_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekit_oci.compress import resolve_workers

    monkeypatch.delenv("EDGEKIT_LAYER_WORKERS", raising=False)
    assert resolve_workers() == (os.cpu_count() or 1)
    monkeypatch.setenv("EDGEKIT_LAYER_WORKERS", "3")
    assert resolve_workers() == 3
    assert resolve_workers(2) == 2
    monkeypatch.setenv("EDGEKIT_LAYER_WORKERS", "many")
    with pytest.raises(BuildError, match="EDGEKIT_LAYER_WORKERS='many' is not an integer"):
        build_layer(OCILayout.create(tmp_path / "img"), LayerSpec("l", [ContentEntry(b"", "/f")]))


@pytest.mark.parametrize("seed", range(5))
def test_blocks_do_not_depend_on_how_the_stream_is_written(seed: int) -> None:
    """Block boundaries decide gzip's bytes: any mix of copied writes and in-place reads
    of the same stream gives the same blocks."""
    import random

    from edgekit_oci.compress import _Blocks

    class Capture(_Blocks):
        def __init__(self) -> None:
            super().__init__(1000)
            self.blocks: list[bytes] = []

        def _emit(self, block: bytearray, n: int) -> None:
            self.blocks.append(bytes(block[:n]))

    rng = random.Random(seed)
    data = rng.randbytes(25_500)
    out = Capture()
    pos = 0
    while pos < len(data):
        step = rng.choice([1, 7, 512, 999, 1000, 1001, 3500])
        piece = data[pos : pos + step]
        if rng.random() < 0.5:
            out.write(piece)
        else:  # as stream_tar reads files: into the free space, at most what is left
            while piece:
                space = out.space()
                assert len(space) > 0
                n = min(len(space), len(piece), rng.choice([1, 300, 5000]))
                space[:n] = piece[:n]
                out.commit(n)
                piece = piece[n:]
        pos += step
    assert [len(c) for c in out.blocks] == [1000] * 25
    out._finish()
    assert [len(c) for c in out.blocks] == [1000] * 25 + [500]
    assert b"".join(out.blocks) == data


@pytest.mark.parametrize("block", [4096, 1 << 20, 3 << 20])
def test_zstd_bytes_do_not_depend_on_how_the_input_is_fed(
    monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    """The zstd layer path hands libzstd blocks of any size: its multi-threaded output
    depends on the fixed job size only, so it equals one-shot compression of the stream."""
    import io

    from edgekit_oci import compress

    data = (b"edge kubernetes layer " * 60_000 + os.urandom(700_001)) * 5
    one_shot = compress.zstd_compressor(3, 2)
    expected = one_shot.compress(data) + one_shot.flush()
    monkeypatch.setattr(compress, "_ZSTD_BLOCK", block)
    for workers in (1, 4):
        sink = io.BytesIO()
        z = compress.open_compressor("zstd", 3, sink, workers)
        pos = 0
        for step in (10, 512, 100_000, 2_000_000, len(data)):
            z.write(data[pos : pos + step])
            pos += step
        z.close()
        assert sink.getvalue() == expected
        assert z.diff_hash.hexdigest() == hashlib.sha256(data).hexdigest()


def test_hash_stage_error_reaches_the_producer() -> None:
    """A failure on a helper thread (hashing, writing) is raised to the producer."""
    from edgekit_oci.compress import _Stage

    seen: list[int] = []

    def fn(item: int) -> None:
        if item == 3:
            raise OSError(28, "No space left on device")
        seen.append(item)

    def produce() -> None:
        stage: _Stage[int] = _Stage("test-stage", fn, 2)
        try:
            for i in range(100):
                stage.put(i)
            stage.close()
        except BaseException:
            stage.abandon()
            raise

    with pytest.raises(OSError, match="No space left"):
        produce()
    assert seen == [0, 1, 2]
