"""Layer cache: unchanged layers come from the cache, a changed file rebuilds one layer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from edgekit_oci.cache import LayerCache
from edgekit_oci.image import ImageSpec, build_image
from edgekit_oci.layers import ContentEntry, LayerSpec, TreeEntry
from edgekit_oci.progress import LayerDone, ProgressEvent


def _spec(base: Path, overlay: Path) -> ImageSpec:
    return ImageSpec(
        [
            LayerSpec("os", [TreeEntry(base, "/")]),
            LayerSpec("overlay", [TreeEntry(overlay, "/etc/edgekit")]),
            LayerSpec("config", [ContentEntry(b"k: v\n", "/etc/edgekit.yaml")]),
        ]
    )


def _cached(events: list[ProgressEvent]) -> dict[str, bool]:
    return {e.layer: e.cached for e in events if isinstance(e, LayerDone)}


@pytest.fixture
def trees(tmp_path: Path, make_tree) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    base = make_tree(tmp_path / "base", {f"usr/lib/f{i}": os.urandom(4096) for i in range(50)})
    overlay = make_tree(tmp_path / "overlay", {"a.conf": b"a=1\n", "b.conf": b"b=1\n"})
    return base, overlay


def test_unchanged_layers_come_from_cache(
    tmp_path: Path, trees: tuple[Path, Path], epoch: int, umoci_unpack
) -> None:  # type: ignore[no-untyped-def]
    cache = LayerCache(tmp_path / "cache")
    spec = _spec(*trees)
    first: list[ProgressEvent] = []
    r1 = build_image(tmp_path / "out1", "v1", spec, cache=cache, progress=first.append)
    assert _cached(first) == {"os": False, "overlay": False, "config": False}
    assert [layer.cached for layer in r1.images[0].layers] == [False, False, False]

    second: list[ProgressEvent] = []
    r2 = build_image(tmp_path / "out2", "v1", spec, cache=cache, progress=second.append)
    assert _cached(second) == {"os": True, "overlay": True, "config": True}
    assert r2.digest == r1.digest
    umoci_unpack(tmp_path / "out2", "v1")  # blobs linked in from the cache are complete

    # Change one overlay file: only the overlay layer is rebuilt.
    (trees[1] / "b.conf").write_bytes(b"b=2\n")
    third: list[ProgressEvent] = []
    r3 = build_image(tmp_path / "out3", "v1", spec, cache=cache, progress=third.append)
    assert _cached(third) == {"os": True, "overlay": False, "config": True}
    assert r3.digest != r1.digest
    assert r3.images[0].layers[0].descriptor == r1.images[0].layers[0].descriptor
    rootfs = umoci_unpack(tmp_path / "out3", "v1")
    assert (rootfs / "etc/edgekit/b.conf").read_bytes() == b"b=2\n"

    # A touch without a content change is a cheap (make-like) miss, same bytes out.
    os.utime(trees[1] / "a.conf", ns=(1, 1))
    fourth: list[ProgressEvent] = []
    r4 = build_image(tmp_path / "out4", "v1", spec, cache=cache, progress=fourth.append)
    assert _cached(fourth)["overlay"] is False
    assert r4.digest == r3.digest


def test_no_cache_forces_full_build(tmp_path: Path, trees: tuple[Path, Path], epoch: int) -> None:
    cache = LayerCache(tmp_path / "cache")
    spec = _spec(*trees)
    r1 = build_image(tmp_path / "out1", "v1", spec, cache=cache)
    events: list[ProgressEvent] = []
    r2 = build_image(
        tmp_path / "out2", "v1", spec, cache=cache, no_cache=True, progress=events.append
    )
    assert _cached(events) == {"os": False, "overlay": False, "config": False}
    assert r2.digest == r1.digest


def test_options_are_part_of_the_key(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    cache = LayerCache(tmp_path / "cache")
    layer = LayerSpec("os", [TreeEntry(trees[0], "/")])
    build_image(tmp_path / "a", "v", ImageSpec([layer]), cache=cache, source_date_epoch=1)
    events: list[ProgressEvent] = []
    build_image(
        tmp_path / "b",
        "v",
        ImageSpec([layer]),
        cache=cache,
        source_date_epoch=2,
        progress=events.append,
    )
    assert _cached(events) == {"os": False}
    zstd = LayerSpec("os", layer.entries, compression="zstd")
    events.clear()
    build_image(
        tmp_path / "c",
        "v",
        ImageSpec([zstd]),
        cache=cache,
        source_date_epoch=2,
        progress=events.append,
    )
    assert _cached(events) == {"os": False}
    assert len(cache.keys()) == 3


def test_cache_records_and_damage(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    cache = LayerCache(tmp_path / "cache")
    layer = LayerSpec("os", [TreeEntry(trees[0], "/")])
    r1 = build_image(tmp_path / "a", "v", ImageSpec([layer]), cache=cache)
    (key,) = cache.keys()
    record = json.loads((cache.path / "layers" / f"{key}.json").read_text())
    built = r1.images[0].layers[0]
    assert record == {
        "digest": built.descriptor.digest,
        "diff_id": built.diff_id,
        "size": built.descriptor.size,
        "media_type": built.descriptor.media_type,
    }
    # A record whose blob went missing is a miss, and the rebuild repairs it.
    cache.blob_path(built.descriptor.digest).unlink()
    events: list[ProgressEvent] = []
    build_image(tmp_path / "b", "v", ImageSpec([layer]), cache=cache, progress=events.append)
    assert _cached(events) == {"os": False}
    assert cache.lookup(key) is not None


def test_prune_drops_least_recently_used(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path / "cache")
    results = []
    for i in range(3):
        layer = LayerSpec(f"l{i}", [ContentEntry(os.urandom(200_000), "/blob")])
        results.append(build_image(tmp_path / f"img{i}", "v", ImageSpec([layer]), cache=cache))
    keys = cache.keys()
    assert len(keys) == 3
    stamps = {k: (cache.path / "layers" / f"{k}.json").stat().st_mtime_ns for k in keys}
    oldest = min(stamps, key=lambda k: stamps[k])
    for n, k in enumerate(sorted(keys, key=lambda k: stamps[k])):
        os.utime(cache.path / "layers" / f"{k}.json", ns=(n * 10**9, n * 10**9))
    sizes = [r.images[0].layers[0].descriptor.size for r in results]
    dropped = cache.prune(max_bytes=sum(sizes) - 1)
    assert dropped == [oldest]
    assert len(cache.keys()) == 2
    blobs = {p.name for p in (cache.path / "blobs" / "sha256").iterdir()}
    assert len(blobs) == 2
    assert len(cache.prune(0)) == 2
    assert cache.keys() == []
    assert list((cache.path / "blobs" / "sha256").iterdir()) == []
    # Built images keep their own (hard-linked) copies.
    assert all((tmp_path / f"img{i}" / "index.json").exists() for i in range(3))
