"""edgekit.oci.Layout: the one implementation of layout blobs, index and tags."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edgekit.errors import BuildError, PublishError
from edgekit.oci import MEDIA_MANIFEST, REF_NAME, Layout, canonical_json, resolve_tag


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _leftovers(layout: Layout) -> list[Path]:
    return list(layout.path.rglob(".tmp-*"))


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    lay = Layout(tmp_path / "img")
    lay.ensure()
    return lay


def test_ensure_and_require(tmp_path: Path) -> None:
    lay = Layout(tmp_path / "img")
    assert not lay.exists()
    with pytest.raises(BuildError, match="not an OCI image layout"):
        lay.require()
    lay.ensure()
    lay.ensure()  # idempotent
    lay.require()
    assert json.loads((lay.path / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert lay.read_index()["manifests"] == []
    (lay.path / "oci-layout").write_text('{"imageLayoutVersion": "9"}')
    with pytest.raises(BuildError, match="unsupported imageLayoutVersion"):
        lay.require()
    (tmp_path / "file").write_text("x")
    with pytest.raises(BuildError, match="cannot create OCI layout"):
        Layout(tmp_path / "file" / "img").ensure()


def test_digests_are_validated(layout: Layout) -> None:
    for bad in ("sha256:abc", "md5:" + "0" * 64, "sha256:" + "A" * 64, "sha256:../" + "0" * 61):
        with pytest.raises(BuildError, match="invalid digest"):
            layout.blob_path(bad)


def test_streamed_blob_is_verified_and_atomic(layout: Layout) -> None:
    data = b"hello blob"
    digest = _digest(data)
    assert layout.write_stream(iter([b"hello ", b"blob"]), digest, len(data)) == (digest, 10)
    assert layout.blob_path(digest).read_bytes() == data
    assert layout.has_blob(digest)
    assert layout.has_blob(digest, 10)
    assert not layout.has_blob(digest, 11)
    inode = layout.blob_path(digest).stat().st_ino
    assert layout.write_bytes(data) == (digest, 10)  # existing blob: no-op
    assert layout.write_stream([data]) == (digest, 10)
    assert layout.blob_path(digest).stat().st_ino == inode
    with pytest.raises(BuildError, match=r"digest mismatch.*corrupt or tampered"):
        layout.write_stream([b"other"], digest)
    with pytest.raises(BuildError, match="digest mismatch"):
        layout.write_bytes(b"other", digest)
    with pytest.raises(BuildError, match="got 5 bytes, expected 6"):
        layout.write_stream([b"other"], _digest(b"other"), 6)
    assert _leftovers(layout) == []
    assert [p.name for p in (layout.path / "blobs" / "sha256").iterdir()] == [digest[7:]]


def test_oversized_stream_stops_at_once(layout: Layout) -> None:
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        for i in range(100):
            sent.append(i)
            yield b"x" * 10

    with pytest.raises(BuildError, match="more than the expected 25 bytes"):
        layout.write_stream(chunks(), _digest(b"x" * 25), 25)
    assert len(sent) == 3
    assert _leftovers(layout) == []


def test_blob_with_wrong_size_is_replaced(layout: Layout) -> None:
    data = b"complete content"
    digest = _digest(data)
    layout.blob_path(digest).write_bytes(b"trunc")  # e.g. a crash in another tool
    layout.write_bytes(data)
    assert layout.read_blob(digest) == data


def test_reads_verify_content(layout: Layout) -> None:
    digest, _ = layout.write_bytes(b'{"a":1}')
    assert layout.read_json(digest) == {"a": 1}
    layout.blob_path(digest).write_bytes(b'{"a":2}')
    with pytest.raises(BuildError, match="corrupt"):
        layout.read_blob(digest)
    with pytest.raises(BuildError, match="is missing from layout"):
        layout.open_blob(_digest(b"absent"))


def test_tags_lookup_and_untag(layout: Layout) -> None:
    m1 = layout.write_bytes(canonical_json({"schemaVersion": 2, "n": 1}))
    m2 = layout.write_bytes(canonical_json({"schemaVersion": 2, "n": 2}))
    d1 = {"mediaType": MEDIA_MANIFEST, "digest": m1[0], "size": m1[1]}
    d2 = {"mediaType": MEDIA_MANIFEST, "digest": m2[0], "size": m2[1]}
    layout.add_manifest(d1)
    assert layout.lookup() == d1  # the only entry
    layout.add_manifest(d1)  # an untagged descriptor is kept once
    layout.add_manifest({**d1, "annotations": {REF_NAME: "old", "x": "y"}}, "v1")
    layout.add_manifest(d1, "latest")
    layout.add_manifest(d2, "latest")  # moves the tag
    assert layout.tags() == ["latest", "v1"]
    assert layout.lookup("latest")["digest"] == m2[0]
    assert layout.lookup("v1")["annotations"] == {REF_NAME: "v1", "x": "y"}
    assert layout.lookup(digest=m2[0])["digest"] == m2[0]
    assert len(layout.read_index()["manifests"]) == 3
    index_bytes = (layout.path / "index.json").read_bytes()
    assert index_bytes == canonical_json(layout.read_index())
    with pytest.raises(BuildError, match="holds 3 images: name a tag"):
        layout.lookup()
    with pytest.raises(BuildError, match=r"no image tagged 'nope' in .* \(tags: latest, v1\)"):
        layout.lookup("nope")
    with pytest.raises(BuildError, match="no manifest"):
        layout.lookup(digest=_digest(b"absent"))
    layout.untag("v1")
    assert layout.tags() == ["latest"]
    with pytest.raises(BuildError, match="no tag 'v1'"):
        layout.untag("v1")
    assert resolve_tag(layout.path, "latest")["digest"] == m2[0]
    assert _leftovers(layout) == []


def test_error_classes_are_per_subclass(tmp_path: Path) -> None:
    class Mismatch(PublishError):
        pass

    class PublishLayout(Layout):
        error = PublishError
        mismatch_error = Mismatch
        missing_tag = "tag {tag!r} not found ({tags})"

    lay = PublishLayout(tmp_path / "img")
    with pytest.raises(PublishError, match="not an OCI image layout"):
        lay.require()
    lay.ensure()
    with pytest.raises(Mismatch):
        lay.write_stream([b"a"], _digest(b"b"))
    with pytest.raises(PublishError, match=r"tag 'x' not found \(none\)"):
        lay.lookup("x")


def _tag_many(path: str, prefix: str) -> None:
    lay = Layout(path)
    for i in range(20):
        digest, size = lay.write_bytes(canonical_json({"p": prefix, "i": i}))
        lay.add_manifest(
            {"mediaType": MEDIA_MANIFEST, "digest": digest, "size": size}, f"{prefix}{i}"
        )


def test_concurrent_taggers_lose_no_tags(layout: Layout) -> None:
    # The lock is a flock per open directory: it serialises threads as well as processes.
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda prefix: _tag_many(str(layout.path), prefix), "abc"))
    assert len(layout.tags()) == 60
    assert _leftovers(layout) == []
