"""OCI layout: files on disk, blobs, tags, atomic staging."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from edgekit_oci.layout import (
    MEDIA_CONFIG,
    MEDIA_MANIFEST,
    REF_NAME,
    OCILayout,
    canonical_json,
    staged_layout,
)

from edgekit.errors import BuildError


def _leftovers(layout: OCILayout) -> list[Path]:
    return list(layout.path.rglob(".tmp-*"))


def test_create_writes_marker_and_empty_index(tmp_path: Path) -> None:
    layout = OCILayout.create(tmp_path / "img")
    assert json.loads((layout.path / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout.path / "index.json").read_text())
    assert index["schemaVersion"] == 2
    assert index["manifests"] == []
    assert (layout.path / "blobs" / "sha256").is_dir()
    assert OCILayout.create(layout.path).path == layout.path  # re-create = open
    assert layout.tags() == []


def test_open_rejects_non_layout(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="not an OCI image layout"):
        OCILayout.open(tmp_path)


def test_blob_writes_are_content_addressed_and_idempotent(tmp_path: Path) -> None:
    layout = OCILayout.create(tmp_path / "img")
    data = b"hello blob"
    digest, size = layout.write_blob(data)
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert size == len(data)
    assert layout.blob_path(digest).read_bytes() == data
    assert layout.write_blob(data) == (digest, size)  # existing blob: no-op
    streamed = layout.write_blob_stream(iter([b"hello ", b"blob"]), digest)
    assert streamed == (digest, size)
    assert _leftovers(layout) == []


def test_stream_digest_mismatch_leaves_nothing(tmp_path: Path) -> None:
    layout = OCILayout.create(tmp_path / "img")
    wrong = "sha256:" + "0" * 64
    with pytest.raises(BuildError, match="digest mismatch"):
        layout.write_blob_stream(iter([b"abc"]), wrong)
    assert list((layout.path / "blobs" / "sha256").iterdir()) == []
    assert _leftovers(layout) == []


def test_read_blob_detects_corruption(tmp_path: Path) -> None:
    layout = OCILayout.create(tmp_path / "img")
    digest, _ = layout.write_blob(b"original")
    layout.blob_path(digest).write_bytes(b"tampered")
    with pytest.raises(BuildError, match="corrupt"):
        layout.read_blob(digest)


def test_json_is_stored_byte_exact(tmp_path: Path) -> None:
    layout = OCILayout.create(tmp_path / "img")
    doc = {"b": 1, "a": {"z": "ü", "y": [1, 2]}}
    desc = layout.write_json(doc, MEDIA_CONFIG)
    stored = layout.blob_path(desc.digest).read_bytes()
    assert stored == canonical_json(doc) == '{"a":{"y":[1,2],"z":"ü"},"b":1}'.encode()
    assert desc.size == len(stored)
    assert desc.digest == "sha256:" + hashlib.sha256(stored).hexdigest()


def test_tag_untag_resolve(tmp_path: Path) -> None:
    layout = OCILayout.create(tmp_path / "img")
    m1 = layout.write_json({"schemaVersion": 2, "n": 1}, MEDIA_MANIFEST)
    m2 = layout.write_json({"schemaVersion": 2, "n": 2}, MEDIA_MANIFEST)
    layout.tag(m1, "v1")
    layout.tag(m1, "latest")
    layout.tag(m2, "latest")  # retag replaces, does not duplicate
    assert layout.tags() == ["latest", "v1"]
    assert layout.resolve("latest").digest == m2.digest
    assert layout.resolve("v1").annotations[REF_NAME] == "v1"
    assert layout.resolve(m1.digest).digest == m1.digest
    manifests = json.loads((layout.path / "index.json").read_text())["manifests"]
    assert len(manifests) == 2
    layout.untag("v1")
    assert layout.tags() == ["latest"]
    assert layout.has_blob(m1.digest)  # untag keeps blobs
    with pytest.raises(BuildError, match="no tag 'v1'"):
        layout.resolve("v1")
    with pytest.raises(BuildError, match="no tag"):
        layout.untag("v1")
    with pytest.raises(BuildError, match="invalid tag"):
        layout.tag(m1, "bad/tag")
    with pytest.raises(BuildError, match="not in the layout"):
        layout.tag(type(m1)(MEDIA_MANIFEST, "sha256:" + "1" * 64, 3), "ghost")
    assert _leftovers(layout) == []


def test_staged_layout_renames_on_success(tmp_path: Path) -> None:
    dest = tmp_path / "out" / "img"
    with staged_layout(dest) as layout:
        assert layout.path != dest
        desc = layout.write_json({"x": 1}, MEDIA_MANIFEST)
        layout.tag(desc, "t")
    assert layout.path == dest
    assert OCILayout.open(dest).tags() == ["t"]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["img"]


def test_staged_layout_failure_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "img"

    def build() -> None:
        with staged_layout(dest) as layout:
            layout.write_blob(b"partial")
            raise RuntimeError("build failed half way")

    with pytest.raises(RuntimeError):
        build()
    assert list(tmp_path.iterdir()) == []


def test_staged_layout_refuses_non_layout_directory(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "precious.txt").write_text("keep me")
    with pytest.raises(BuildError, match="not an OCI layout"), staged_layout(tmp_path / "img"):
        pass
    assert (tmp_path / "img" / "precious.txt").read_text() == "keep me"


def test_staged_layout_under_a_file_is_a_build_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with (
        pytest.raises(BuildError, match="cannot write OCI layout"),
        staged_layout(tmp_path / "file" / "img"),
    ):
        pass


_TAG_MANY = """
import sys
from edgekit_oci.layout import MEDIA_MANIFEST, OCILayout
layout = OCILayout.open(sys.argv[1])
for i in range(30):
    desc = layout.write_json({"p": sys.argv[2], "i": i}, MEDIA_MANIFEST)
    layout.tag(desc, f"{sys.argv[2]}-{i}")
"""


def test_concurrent_taggers_lose_no_tags(tmp_path: Path) -> None:
    # Separate interpreters, not fork(): a child forked from pytest's threaded process can
    # inherit a lock another thread holds and hang, and multiprocessing then joins it at exit.
    layout = OCILayout.create(tmp_path / "img")
    procs = [
        subprocess.Popen([sys.executable, "-c", _TAG_MANY, str(layout.path), prefix])
        for prefix in ("a", "b", "c")
    ]
    try:
        codes = [p.wait(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert codes == [0, 0, 0]
    assert len(layout.tags()) == 90


def test_gc_keeps_what_tags_reach(tmp_path: Path) -> None:
    from edgekit_oci.image import ImageSpec, build_image, build_multiarch
    from edgekit_oci.layers import ContentEntry, LayerSpec

    def spec(text: str, arch: str = "amd64") -> ImageSpec:
        return ImageSpec([LayerSpec("l", [ContentEntry(text.encode(), "/f")])], architecture=arch)

    out = tmp_path / "img"
    build_image(out, "keep", spec("keep"))
    build_multiarch(out, "multi", [spec("m", "amd64"), spec("m", "arm64")])
    build_image(out, "drop", spec("drop"))
    layout = OCILayout.open(out)
    before = {p.name for p in (out / "blobs" / "sha256").iterdir()}
    assert layout.gc() == []  # everything is tagged
    layout.untag("drop")
    removed = layout.gc()
    assert len(removed) == 3  # the manifest, config and layer only "drop" used
    after = {p.name for p in (out / "blobs" / "sha256").iterdir()}
    assert after == before - {d.removeprefix("sha256:") for d in removed}
    assert layout.referenced() >= {"sha256:" + name for name in after}
    assert layout.read_config("multi", None)["architecture"] == "amd64"
