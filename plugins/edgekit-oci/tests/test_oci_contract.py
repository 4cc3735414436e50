"""The image builders pass edgekit's image-builder contract (scratch base, a local pack)."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgekit_oci.plugin import BuildahImageBuilder, OciImageBuilder

from edgekit import model
from edgekit.plugins import ImageBuildRequest
from edgekit.testing import ImageBuilderContract


def _request(tmp_path: Path) -> ImageBuildRequest:
    k3s = tmp_path / "k3s"
    k3s.write_text("#!/bin/sh\necho k3s stand-in\n")
    profile = model.ClusterProfile(
        name="p",
        version="1.0.0",
        packs=(
            model.Pack("os", model.Layer.OS, "1"),
            model.Pack(
                "edge-k3s", model.Layer.K8S, "1.30.4", source=model.PackSource(path=str(k3s))
            ),
        ),
    )
    image = model.ProviderImage(
        name="img",
        profile="p",
        os=model.OsSpec("debian", "12"),
        kubernetes=model.KubernetesSpec(model.K8sDistribution.K3S, "1.30.4"),
        repo="edge/img",
    )
    return ImageBuildRequest(
        image=image,
        profile=profile,
        layout=tmp_path / "out" / "images" / "img",
        tag="v1",
        reference="localhost/edge/img:v1",
    )


class TestOci(ImageBuilderContract):
    backend_class = OciImageBuilder

    @pytest.fixture
    def build_request(self, tmp_path: Path) -> ImageBuildRequest:
        return _request(tmp_path)


class TestBuildah(ImageBuilderContract):
    backend_class = BuildahImageBuilder

    @pytest.fixture
    def build_request(self, tmp_path: Path) -> ImageBuildRequest:
        return _request(tmp_path)
