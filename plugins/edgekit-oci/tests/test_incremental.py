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

    # A touch without a content change: keys are content-true (issue 14), so it is a hit
    # (it used to be a make-like miss giving the same bytes).
    os.utime(trees[1] / "a.conf", ns=(1, 1))
    fourth: list[ProgressEvent] = []
    r4 = build_image(tmp_path / "out4", "v1", spec, cache=cache, progress=fourth.append)
    assert _cached(fourth)["overlay"] is True
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


@pytest.fixture(params=["settled", "fresh"])
def settle(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``settled``: stat data may vouch for digests at once (as for files older than 3 s);
    ``fresh``: the default, where files changed moments ago are hashed on every build."""
    import edgekit_oci.digests as digests

    if request.param == "settled":
        monkeypatch.setattr(digests, "_SETTLED_NS", -(10**12))
    return str(request.param)


def test_content_change_keeping_size_and_mtime_rebuilds(
    tmp_path: Path, trees: tuple[Path, Path], epoch: int, settle: str, umoci_unpack
) -> None:  # type: ignore[no-untyped-def]
    cache = LayerCache(tmp_path / "cache")
    spec = _spec(*trees)
    r1 = build_image(tmp_path / "out1", "v1", spec, cache=cache)
    target = trees[1] / "b.conf"
    before = target.stat()
    target.write_bytes(b"b=9\n")  # same size
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # same mtime
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    events: list[ProgressEvent] = []
    r2 = build_image(tmp_path / "out2", "v1", spec, cache=cache, progress=events.append)
    assert _cached(events) == {"os": True, "overlay": False, "config": True}
    assert r2.images[0].layers[1].descriptor.digest != r1.images[0].layers[1].descriptor.digest
    rootfs = umoci_unpack(tmp_path / "out2", "v1")
    assert (rootfs / "etc/edgekit/b.conf").read_bytes() == b"b=9\n"


def test_stat_shortcut_skips_hashing_only_when_everything_matches(
    tmp_path: Path, trees: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, settle: str
) -> None:
    import edgekit_oci.digests as digests

    hashed: list[str] = []
    real = digests.hash_file

    def counting(f: digests.FileToHash, started_ns: int) -> digests.FileDigest:
        hashed.append(Path(f.path).name)
        return real(f, started_ns)

    monkeypatch.setattr(digests, "hash_file", counting)
    cache = LayerCache(tmp_path / "cache")
    layer = LayerSpec("overlay", [TreeEntry(trees[1], "/etc")])
    build_image(tmp_path / "a", "v", ImageSpec([layer]), cache=cache)
    assert sorted(hashed) == ["a.conf", "b.conf"]
    hashed.clear()
    events: list[ProgressEvent] = []
    build_image(tmp_path / "b", "v", ImageSpec([layer]), cache=cache, progress=events.append)
    assert _cached(events) == {"overlay": True}
    # Settled files are vouched for by their stat; fresh ones are hashed again.
    assert sorted(hashed) == ([] if settle == "settled" else ["a.conf", "b.conf"])
    hashed.clear()
    # ctime moves on any change, even a chmod back to the same mode: hashed again.
    (trees[1] / "a.conf").chmod((trees[1] / "a.conf").stat().st_mode)
    build_image(tmp_path / "c", "v", ImageSpec([layer]), cache=cache)
    assert "a.conf" in hashed


def test_file_edited_between_hashing_and_streaming_is_not_recorded(
    tmp_path: Path, trees: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, settle: str
) -> None:
    """The blob holds what was read; a record under the old content's key would be a lie."""
    import edgekit_oci.layers as layers

    real = layers._file_digests
    target = trees[1] / "a.conf"

    def edit_after_hashing(*args, **kwargs):  # type: ignore[no-untyped-def]
        result = real(*args, **kwargs)
        st = target.stat()
        target.write_bytes(b"a=7\n")
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        return result

    monkeypatch.setattr(layers, "_file_digests", edit_after_hashing)
    cache = LayerCache(tmp_path / "cache")
    layer = LayerSpec("overlay", [TreeEntry(trees[1], "/etc")])
    r1 = build_image(tmp_path / "a", "v", ImageSpec([layer]), cache=cache)
    assert cache.keys() == []
    monkeypatch.setattr(layers, "_file_digests", real)
    events: list[ProgressEvent] = []
    r2 = build_image(tmp_path / "b", "v", ImageSpec([layer]), cache=cache, progress=events.append)
    assert _cached(events) == {"overlay": False}
    assert r2.digest == r1.digest  # the first build did contain the edited content
    assert len(cache.keys()) == 1


@pytest.mark.parametrize(("compression", "module", "attr", "other"), [
    ("gzip", "zlib", "ZLIB_RUNTIME_VERSION", "1.2.11"),
    ("zstd", "zstandard", "ZSTD_VERSION", (1, 4, 8)),
    ("gzip", "edgekit_oci.layers", "GZIP_CHUNK", 256 << 10),  # a build with other framing
    ("zstd", "edgekit_oci.layers", "ZSTD_JOB", 8 << 20),
])  # fmt: skip
def test_a_cache_filled_with_another_compression_library_is_not_used(
    tmp_path: Path,
    trees: tuple[Path, Path],
    epoch: int,
    monkeypatch: pytest.MonkeyPatch,
    compression: str,
    module: str,
    attr: str,
    other: object,
) -> None:
    """The compressed bytes depend on zlib's or libzstd's version and on the framing: a
    cache shared by two environments or versions (another venv, a restored CI cache, the
    tests' shared cache) must not give one the other's blob."""
    import importlib

    cache = LayerCache(tmp_path / "cache")
    spec = ImageSpec([LayerSpec("os", [TreeEntry(trees[0], "/")], compression=compression)])  # type: ignore[arg-type]
    with monkeypatch.context() as m:
        m.setattr(importlib.import_module(module), attr, other)
        build_image(tmp_path / "out1", "v1", spec, cache=cache)
    events: list[ProgressEvent] = []
    build_image(tmp_path / "out2", "v1", spec, cache=cache, progress=events.append)
    assert _cached(events) == {"os": False}
    events.clear()
    build_image(tmp_path / "out3", "v1", spec, cache=cache, progress=events.append)
    assert _cached(events) == {"os": True}
