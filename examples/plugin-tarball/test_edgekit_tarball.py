"""The image builder example: edgekit's contract, then a real forge run that publishes it."""

import json
import tarfile
from pathlib import Path

import edgekit_tarball
import pytest

from edgekit import model
from edgekit.plugins import ImageBuildRequest
from edgekit.testing import ImageBuilderContract


class TestTarballContract(ImageBuilderContract):
    backend_class = edgekit_tarball.TarballBuilder

    @pytest.fixture
    def build_request(self, tmp_path: Path) -> ImageBuildRequest:
        (tmp_path / "motd").write_text("hello\n")
        image = model.ProviderImage(
            name="img",
            profile="p",
            os=model.OsSpec("debian", "12"),
            kubernetes=model.KubernetesSpec(model.K8sDistribution.K3S, "1.30.4"),
            repo="edge/img",
            overlays=(model.Overlay(str(tmp_path / "motd"), "/etc/motd"),),
        )
        return ImageBuildRequest(
            image=image,
            profile=model.ClusterProfile(
                name="p",
                version="1.0.0",
                packs=(
                    model.Pack("os", model.Layer.OS, "12"),
                    model.Pack("k3s", model.Layer.K8S, "1.30.4"),
                ),
            ),
            layout=tmp_path / "layout",
            tag="v1",
            reference="localhost/edge/img:v1",
        )


FORGE = """
name: packed
backends: {imageBuilder: tarball}
profiles:
  - name: p
    version: 1.0.0
    packs:  # this builder packs overlays only; the packs say what the image is
      - {name: os, layer: os, version: "12"}
      - {name: k3s, layer: k8s, version: 1.30.4, source: {path: ./k3s}}
images:
  - name: img
    profile: p
    os: {distribution: debian, version: "12"}
    kubernetes: {distribution: k3s, version: 1.30.4}
    repo: edge/img
    overlays:
      - {source: ./motd, target: /etc/motd}
registry: {target: "oci:published"}
"""


def test_a_forge_run_builds_and_publishes_the_image(forge_project):
    forge_project.register(edgekit_tarball, name="tarball")
    forge_project.write("motd", "hello from the forge\n")
    forge_project.write("k3s", "#!/bin/sh\necho k3s stand-in\n")

    result = forge_project.run(FORGE)

    built = next(a for n, a in result.artifacts.items() if n.startswith("provider-image/"))
    published = next(a for n, a in result.artifacts.items() if n.startswith("published-"))
    assert published.digest == built.digest  # pushed byte-exact by the oras publisher
    index = json.loads((forge_project.output / "published" / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [built.digest]
    blobs = built.path / "blobs" / "sha256"
    manifest = json.loads((blobs / built.digest[7:]).read_text())
    layer = blobs / manifest["layers"][0]["digest"][7:]
    with tarfile.open(layer) as tar:
        motd = tar.extractfile("./etc/motd")
        assert motd is not None
        assert motd.read() == b"hello from the forge\n"
        assert "./opt/edgekit/packs/k3s/k3s" in tar.getnames()
