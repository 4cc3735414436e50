"""The buildah backend builds the same file tree as the native engine (both unpacked by umoci)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest
from edgekit_oci.containerfile import build_with_buildah, render_context
from edgekit_oci.image import BaseImage, ImageSpec, build_image
from edgekit_oci.layers import (
    ContentEntry,
    DirEntry,
    FileEntry,
    LayerSpec,
    OpaqueWhiteoutEntry,
    SymlinkEntry,
    TreeEntry,
    WhiteoutEntry,
)

from edgekit.errors import BuildError

BUSYBOX = Path("/bin/busybox")
# Mount points and files buildah's RUN step leaves in the image (not part of the spec).
RUN_ARTIFACTS = {"/dev", "/proc", "/sys", "/run", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf"}


def _snapshot(rootfs: Path) -> dict[str, tuple[str, int, str]]:
    """path -> (kind, permission bits, content sha256 or link target); mtimes ignored."""
    out: dict[str, tuple[str, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(rootfs):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = "/" + str(p.relative_to(rootfs))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), "")
            else:
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
                out[rel] = ("file", stat.S_IMODE(st.st_mode), digest)
    return out


@pytest.fixture
def overlay_src(tmp_path: Path, make_tree) -> Path:  # type: ignore[no-untyped-def]
    src = make_tree(tmp_path / "overlay", {"conf/a.yaml": b"a: 1\n", "conf/sub/b": b"b"})
    (src / "conf" / "sub" / "b").chmod(0o600)
    os.symlink("a.yaml", src / "conf" / "current")
    return src


def test_buildah_matches_native_from_scratch(
    tmp_path: Path, overlay_src: Path, umoci_unpack, epoch: int
) -> None:  # type: ignore[no-untyped-def]
    tool = tmp_path / "tool"
    tool.write_bytes(b"#!/bin/sh\n")
    spec = ImageSpec(
        [
            LayerSpec(
                "files",
                [TreeEntry(overlay_src, "/etc/app"), FileEntry(tool, "/usr/bin/t", mode=0o755)],
            ),
            LayerSpec(
                "more",
                [
                    ContentEntry(b"x: y\n", "/etc/app.yaml", mode=0o640),
                    SymlinkEntry("/usr/bin/u", "t"),
                    DirEntry("/var/lib/app", mode=0o700),
                ],
            ),
        ],
        labels={"io.edgekit.os.name": "sample"},
    )
    build_image(tmp_path / "native", "v1", spec)
    result = build_with_buildah(tmp_path / "buildah", "v1", spec)
    assert "COPY layer0/ /" in result.containerfile
    native = _snapshot(umoci_unpack(tmp_path / "native", "v1"))
    built = _snapshot(umoci_unpack(tmp_path / "buildah", "v1"))
    assert built == native
    assert native["/etc/app/conf/sub/b"][1] == 0o600
    assert native["/usr/bin/u"] == ("link", 0, "t")


@pytest.mark.skipif(not BUSYBOX.is_file(), reason="busybox-static provides the base's shell")
def test_buildah_matches_native_with_whiteouts(
    tmp_path: Path, umoci_unpack, epoch: int, make_tree
) -> None:  # type: ignore[no-untyped-def]
    base_files = make_tree(
        tmp_path / "base", {"etc/motd": b"hi", "etc/keep": b"k", "opt/c/a": b"a", "opt/c/.h": b"h"}
    )
    base = ImageSpec(
        [
            LayerSpec(
                "base",
                [
                    TreeEntry(base_files, "/"),
                    FileEntry(BUSYBOX, "/bin/busybox", mode=0o755),
                    SymlinkEntry("/bin/sh", "busybox"),
                    SymlinkEntry("/bin/rm", "busybox"),
                ],
            )
        ]
    )
    build_image(tmp_path / "base-img", "base", base)
    top = ImageSpec(
        [
            LayerSpec(
                "changes",
                [
                    WhiteoutEntry("/etc/motd"),
                    OpaqueWhiteoutEntry("/opt/c"),
                    ContentEntry(b"new", "/etc/new"),
                ],
            )
        ],
        base=BaseImage(tmp_path / "base-img", "base"),
    )
    build_image(tmp_path / "native", "top", top)
    build_with_buildah(tmp_path / "buildah", "top", top)
    native = _snapshot(umoci_unpack(tmp_path / "native", "top"))
    built = _snapshot(umoci_unpack(tmp_path / "buildah", "top"))
    extra = set(built) - set(native)
    assert extra <= RUN_ARTIFACTS, extra
    assert {k: v for k, v in built.items() if k not in extra} == native
    assert "/etc/motd" not in native
    assert "/opt/c/a" not in native
    assert "/opt/c" in native


def test_whiteouts_from_scratch_are_refused(tmp_path: Path) -> None:
    spec = ImageSpec([LayerSpec("w", [WhiteoutEntry("/etc/motd")])])
    context = tmp_path / "ctx"
    context.mkdir()
    with pytest.raises(BuildError, match="needs a base image with a shell"):
        render_context(spec, context)
    assert shutil.which("buildah") is not None
