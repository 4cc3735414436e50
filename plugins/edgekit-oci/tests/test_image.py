"""Images: config, manifest, base images, multi-arch indexes, checked with skopeo and umoci."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from edgekit_oci.image import BaseImage, ImageSpec, build_image, build_multiarch, provider_labels
from edgekit_oci.layers import ContentEntry, LayerSpec
from edgekit_oci.layout import MEDIA_INDEX, MEDIA_MANIFEST, OCILayout, Platform

from edgekit.errors import BuildError

LABELS = provider_labels(
    os_name="sample",
    os_version="1.0",
    k8s_distribution="k3s",
    k8s_version="1.30.4+k3s1",
    edgekit_version="0.1.0",
    profile_name="edge-basic",
    profile_version="2.0.0",
)


def _layer(name: str, text: str) -> LayerSpec:
    return LayerSpec(name, [ContentEntry(text.encode(), f"/etc/{name}")])


def test_config_and_manifest(tmp_path: Path, epoch: int, skopeo_inspect, umoci_unpack) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "img"
    spec = ImageSpec(
        [_layer("one", "1"), _layer("two", "2")],
        labels=LABELS,
        annotations={"org.opencontainers.image.title": "provider"},
    )
    result = build_image(out, "k3s-1.30.4", spec)
    layout = OCILayout.open(out)
    desc, manifest = layout.read_manifest("k3s-1.30.4")
    assert desc.digest == result.digest
    assert manifest["mediaType"] == MEDIA_MANIFEST
    assert manifest["annotations"]["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    assert manifest["annotations"]["org.opencontainers.image.title"] == "provider"
    config = layout.read_config("k3s-1.30.4")
    assert config["architecture"] == "amd64"
    assert config["os"] == "linux"
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert config["config"]["Labels"] == LABELS
    assert config["rootfs"] == {
        "type": "layers",
        "diff_ids": [layer.diff_id for layer in result.images[0].layers],
    }
    assert [h["created_by"] for h in config["history"]] == [
        "edgekit layer one",
        "edgekit layer two",
    ]
    info = skopeo_inspect(out, "k3s-1.30.4")
    assert info["Labels"]["io.edgekit.kubernetes.distribution"] == "k3s"
    assert info["Layers"] == [layer["digest"] for layer in manifest["layers"]]
    rootfs = umoci_unpack(out, "k3s-1.30.4")
    assert (rootfs / "etc/one").read_text() == "1"
    assert (rootfs / "etc/two").read_text() == "2"


def test_base_from_another_layout(tmp_path: Path, epoch: int, umoci_unpack) -> None:  # type: ignore[no-untyped-def]
    base = build_image(
        tmp_path / "base", "os", ImageSpec([_layer("os", "os")], labels={"io.edgekit.os.name": "b"})
    )
    result = build_image(
        tmp_path / "provider",
        "p",
        ImageSpec([_layer("k8s", "k")], base=BaseImage(tmp_path / "base", "os"), labels=LABELS),
    )
    layout = OCILayout.open(tmp_path / "provider")
    _, manifest = layout.read_manifest("p")
    config = layout.read_config("p")
    assert len(manifest["layers"]) == 2
    assert manifest["annotations"]["org.opencontainers.image.base.digest"] == base.digest
    assert config["rootfs"]["diff_ids"][0] == base.images[0].layers[0].diff_id
    assert len(config["history"]) == 2
    assert config["config"]["Labels"]["io.edgekit.os.name"] == "sample"  # caller overrides
    rootfs = umoci_unpack(tmp_path / "provider", "p")
    assert sorted(p.name for p in (rootfs / "etc").iterdir()) == ["k8s", "os"]
    assert result.images[0].layers[0].name == "k8s"


def test_base_must_match_arch(tmp_path: Path) -> None:
    build_image(tmp_path / "base", "os", ImageSpec([_layer("os", "os")], architecture="arm64"))
    with pytest.raises(BuildError, match="is linux/arm64, not linux/amd64"):
        build_image(
            tmp_path / "out",
            "p",
            ImageSpec([_layer("x", "x")], base=BaseImage(tmp_path / "base", "os")),
        )
    assert not (tmp_path / "out").exists()
    with pytest.raises(BuildError, match="no tag 'nope'"):
        build_image(
            tmp_path / "out",
            "p",
            ImageSpec([_layer("x", "x")], base=BaseImage(tmp_path / "base", "nope")),
        )


def test_multiarch_index(tmp_path: Path, epoch: int, skopeo_inspect, umoci_unpack) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "img"
    specs = [
        ImageSpec([_layer("arch", arch)], architecture=arch, labels=LABELS)
        for arch in ("amd64", "arm64")
    ]
    result = build_multiarch(out, "multi", specs)
    raw = skopeo_inspect(out, "multi", "--raw")
    assert raw["mediaType"] == MEDIA_INDEX
    assert [m["platform"] for m in raw["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux"},
    ]
    assert [m["digest"] for m in raw["manifests"]] == [i.descriptor.digest for i in result.images]
    layout = OCILayout.open(out)
    assert layout.tags() == ["multi"]
    arm_config = layout.read_config("multi", Platform("arm64"))
    assert arm_config["architecture"] == "arm64"
    arm = skopeo_inspect(out, "multi", "--override-arch", "arm64")
    assert arm["Architecture"] == "arm64"
    # Each per-arch manifest unpacks (umoci takes tags, so tag the arm64 one).
    layout.tag(result.images[1].descriptor, "multi-arm64")
    rootfs = umoci_unpack(out, "multi-arm64")
    assert (rootfs / "etc/arch").read_text() == "arm64"
    # Same inputs, same index digest.
    again = build_multiarch(tmp_path / "img2", "multi", specs)
    assert again.digest == result.digest
    stored = (out / "blobs" / "sha256" / result.digest.removeprefix("sha256:")).read_bytes()
    assert json.loads(stored)["manifests"][1]["platform"]["architecture"] == "arm64"


def test_multiarch_rejects_duplicate_platforms(tmp_path: Path) -> None:
    spec = ImageSpec([_layer("a", "a")])
    with pytest.raises(BuildError, match="same platform"):
        build_multiarch(tmp_path / "img", "t", [spec, spec])
    with pytest.raises(BuildError, match="no image specs"):
        build_multiarch(tmp_path / "img", "t", [])
    assert not (tmp_path / "img").exists()


def test_labels_must_be_strings() -> None:
    with pytest.raises(BuildError, match="strings to strings"):
        ImageSpec([], labels={"version": 1.3})  # type: ignore[dict-item]


def test_building_into_existing_layout_adds_tags(tmp_path: Path) -> None:
    build_image(tmp_path / "img", "a", ImageSpec([_layer("a", "a")]))
    build_image(tmp_path / "img", "b", ImageSpec([_layer("b", "b")]))
    assert OCILayout.open(tmp_path / "img").tags() == ["a", "b"]
