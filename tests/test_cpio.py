"""edgekit.cpio against GNU cpio: what we write, cpio reads back exactly."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit.cpio import (
    CpioEntry,
    append_to_initrd,
    newc_from_tree,
    write_initrd_gz,
    write_newc,
)
from edgekit.errors import BuildError

pytestmark = pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio not installed")


def _archive(entries: list[CpioEntry], **kw: int) -> bytes:
    buf = io.BytesIO()
    n = write_newc(entries, buf, **kw)
    assert n == len(buf.getvalue())
    return buf.getvalue()


def _cpio(args: list[str], data: bytes, cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["cpio", "--quiet", *args], input=data, capture_output=True, cwd=cwd, check=True
    )
    return done.stdout.decode()


def _sample(tmp_path: Path) -> list[CpioEntry]:
    big = tmp_path / "big.bin"
    with big.open("wb") as f:  # 3 MiB + 3 bytes: several chunks and an odd padding
        for i in range(3):
            f.write(bytes([i]) * (1 << 20))
        f.write(b"end")
    return [
        CpioEntry.file("/etc/edgekit/boot.d/10-hello", b"#!/bin/sh\necho hi\n", 0o755),
        CpioEntry.file("bin/busybox", big, 0o755),
        CpioEntry.symlink("bin/sh", "busybox"),
        CpioEntry.dir("tmp", 0o1777),
        CpioEntry.device("dev/console", 5, 1, 0o600),
        CpioEntry.file("empty", b""),
    ]


def test_gnu_cpio_lists_sorted_members_with_parents(tmp_path: Path) -> None:
    data = _archive(_sample(tmp_path))
    assert _cpio(["-t"], data).split() == [
        "bin",
        "bin/busybox",
        "bin/sh",
        "dev",
        "dev/console",
        "empty",
        "etc",
        "etc/edgekit",
        "etc/edgekit/boot.d",
        "etc/edgekit/boot.d/10-hello",
        "tmp",
    ]
    listing = _cpio(["-tv"], data)
    assert "crw-------" in listing
    assert "drwxrwxrwt" in listing
    assert "bin/sh -> busybox" in listing
    assert data.endswith(b"TRAILER!!!\0\0\0\0")
    assert len(data) % 4 == 0


def test_gnu_cpio_extracts_contents_modes_and_links(tmp_path: Path) -> None:
    entries = [e for e in _sample(tmp_path) if e.kind != "chardev"]
    out = tmp_path / "out"
    out.mkdir()
    _cpio(["-i", "-d", "--no-absolute-filenames"], _archive(entries), cwd=out)
    assert (out / "etc/edgekit/boot.d/10-hello").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert os.stat(out / "etc/edgekit/boot.d/10-hello").st_mode & 0o777 == 0o755
    assert _sha(out / "bin/busybox") == _sha(tmp_path / "big.bin")
    assert os.readlink(out / "bin/sh") == "busybox"
    assert (out / "empty").read_bytes() == b""


def test_two_writes_are_byte_identical_and_mtime_is_fixed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    first = _archive(_sample(tmp_path))
    assert first == _archive(list(reversed(_sample(tmp_path))))
    assert _mtimes(first) == {0}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert _mtimes(_archive(_sample(tmp_path))) == {1700000000}
    assert _mtimes(_archive(_sample(tmp_path), mtime=42)) == {42}


def test_bad_entries_raise_build_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BuildError, match="twice"):
        _archive([CpioEntry.file("a", b"1"), CpioEntry.file("/a", b"2")])
    with pytest.raises(BuildError, match="not a directory"):
        _archive([CpioEntry.file("a", b"1"), CpioEntry.file("a/b", b"2")])
    with pytest.raises(BuildError, match="leaves the archive root"):
        CpioEntry.file("../etc/passwd", b"")
    with pytest.raises(BuildError, match="cannot read"):
        _archive([CpioEntry.file("x", tmp_path / "missing")])
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(BuildError, match="SOURCE_DATE_EPOCH"):
        _archive([CpioEntry.file("a", b"1")])


def test_tree_round_trip_and_gzip_initrd(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/tool").write_bytes(b"tool")
    (tree / "usr/bin/tool").chmod(0o750)
    (tree / "usr/bin/alias").symlink_to("tool")
    (tree / "emptydir").mkdir()
    entries = list(newc_from_tree(tree))
    assert [e.path for e in entries] == ["emptydir", "usr", "usr/bin", "usr/bin/alias",
                                         "usr/bin/tool"]  # fmt: skip
    first = write_initrd_gz(entries, tmp_path / "initrd")
    second = write_initrd_gz(newc_from_tree(tree), tmp_path / "initrd2")
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes()[4:8] == b"\0\0\0\0"  # gzip MTIME field
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    out = tmp_path / "out"
    out.mkdir()
    _cpio(["-i", "-d"], gzip.decompress(first.read_bytes()), cwd=out)
    assert (out / "usr/bin/tool").read_bytes() == b"tool"
    assert os.stat(out / "usr/bin/tool").st_mode & 0o777 == 0o750
    assert os.readlink(out / "usr/bin/alias") == "tool"
    assert (out / "emptydir").is_dir()


def test_failed_initrd_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(BuildError):
        write_initrd_gz([CpioEntry.file("x", tmp_path / "missing")], tmp_path / "initrd")
    assert list(tmp_path.iterdir()) == []


def test_concatenated_archives_are_each_readable(tmp_path: Path) -> None:
    """GNU cpio stops at the first trailer; the second archive starts on a 4-byte boundary."""
    one = _archive([CpioEntry.file("a", b"1")])
    two = _archive([CpioEntry.file("b", b"22")])
    assert len(one) % 4 == 0
    assert _cpio(["-t"], one + two).split() == ["a"]
    assert _cpio(["-t"], (one + two)[len(one) :]).split() == ["b"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mtimes(archive: bytes) -> set[int]:
    """The mtime field of every member except the trailer."""
    found: set[int] = set()
    pos = 0
    while True:
        assert archive[pos : pos + 6] == b"070701"
        fields = [int(archive[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name = archive[pos + 110 : pos + 110 + namesize - 1]
        if name == b"TRAILER!!!":
            return found
        found.add(fields[5])
        pos += 110 + namesize
        pos += -pos % 4
        pos += filesize
        pos += -pos % 4


def test_append_to_initrd_aligns_the_second_archive(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.write_bytes(b"\x1f\x8b not really gzip, 27 byte")  # odd length on purpose
    out = append_to_initrd(base, [CpioEntry.file("etc/extra", b"x")], tmp_path / "joined")
    data = out.read_bytes()
    start = 28  # next multiple of 4 after 27 bytes
    assert data[:27] == base.read_bytes()
    assert data[27:start] == b"\0"
    assert _cpio(["-t"], data[start:]).split() == ["etc", "etc/extra"]
    in_place = append_to_initrd(out, [CpioEntry.file("more", b"y")], out)
    assert in_place.read_bytes().startswith(data)
    with pytest.raises(BuildError, match="base initrd"):
        append_to_initrd(tmp_path / "missing", [], tmp_path / "never")
    assert not (tmp_path / "never").exists()


_names = st.text(alphabet="abcxyz019-_.", min_size=1, max_size=12).filter(
    lambda n: n not in (".", "..")
)


@settings(max_examples=40, deadline=None)
@given(
    files=st.dictionaries(
        st.lists(_names, min_size=1, max_size=3).map("/".join),
        st.tuples(st.binary(max_size=300), st.sampled_from([0o600, 0o644, 0o755, 0o4755])),
        max_size=8,
    )
)
def test_any_set_of_files_round_trips_through_gnu_cpio(
    files: dict[str, tuple[bytes, int]],
) -> None:
    # A file may not also be another file's parent directory.
    paths = set(files)
    files = {p: v for p, v in files.items() if not any(q.startswith(p + "/") for q in paths)}
    entries = [CpioEntry.file(p, data, mode) for p, (data, mode) in files.items()]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        _cpio(["-i", "-d"], _archive(entries), cwd=out)
        for path, (data, mode) in files.items():
            assert (out / path).read_bytes() == data
            assert os.stat(out / path).st_mode & 0o7777 == mode
