"""One reference per provider image: what ``plan()`` shows, what the manifest records and
where the image really is are the same string (issue 15 item 5).

Against a real docker-registry (the ``registry`` fixture of ``edgekit_oras.testing``) and a
local layout, through the built-in ``oras`` publisher; the image is made by umoci and looked
up afterwards with skopeo, both independent of edgekit.
"""

from __future__ import annotations

import json
from pathlib import Path

import edgekit_oras.plugin
import pytest
from umoci_images import tool

from edgekit.forge import Forge
from edgekit.model import K8sDistribution, KubernetesSpec, OsSpec, ProviderImage
from edgekit.oci_ref import published_reference
from edgekit.plugins import BuildContext, ImageBuilder, PluginManager, hookimpl
from edgekit.plugins.interfaces import Artifact, ImageBuildRequest

FORGE = """
name: ref
backends: {{imageBuilder: umoci}}
profiles:
  - name: p
    version: 1.0.0
    packs:
      - {{name: os, layer: os, version: "1"}}
      - {{name: k8s, layer: k8s, version: "1.30.4", source: {{path: ./k8s}}}}
images:
  - name: retail
    profile: p
    os: {{distribution: debian, version: "12"}}
    kubernetes: {{distribution: k3s, version: "1.30.4"}}
    registry: {registry}
    repo: edge/retail
registry: {{target: "{target}"{plain}}}
"""


class UmociBuilder(ImageBuilder):
    """An image builder that leaves the building to umoci (one small file in one layer)."""

    name = "umoci"

    def build_image(self, request: ImageBuildRequest, ctx: BuildContext) -> Artifact:
        lay, tree = request.layout, request.layout.parent / "tree"
        (tree / "etc").mkdir(parents=True, exist_ok=True)
        (tree / "etc" / "motd").write_text(f"{request.image.name}\n")
        tool("umoci", "init", "--layout", str(lay))
        tool("umoci", "new", "--image", f"{lay}:{request.tag}")
        tool("umoci", "insert", "--image", f"{lay}:{request.tag}", str(tree), "/")
        digest = json.loads(tool("skopeo", "inspect", f"oci:{lay}:{request.tag}"))["Digest"]
        return Artifact(
            name=f"provider-image/{request.image.name}",
            kind="provider-image",
            path=lay,
            digest=digest,
            size=1,
            media_type="application/vnd.oci.image.manifest.v1+json",
            reference=request.tag,
        )


class UmociPlugin:
    @hookimpl
    def edgekit_image_builders(self) -> list[type[ImageBuilder]]:
        return [UmociBuilder]


@pytest.fixture
def plugins(edgekit_plugins: PluginManager, register_plugin: object) -> PluginManager:
    register_plugin(UmociPlugin(), name="umoci")  # type: ignore[operator]
    register_plugin(edgekit_oras.plugin, name="oras")  # type: ignore[operator]  # the real one
    return edgekit_plugins


def run_forge(project: Path, plugins: PluginManager, target: str, registry: str) -> tuple[str, str]:
    """(the reference plan() shows, the one the manifest records) after a real run.

    For a registry the manifest pins the reference to the digest pushed
    (``REF:TAG@sha256:...``); the part before ``@`` must be the plan's, character for
    character."""
    (project / "k8s").mkdir(parents=True, exist_ok=True)
    (project / "k8s" / "k3s").write_text("placeholder")
    (project / "edgeforge.yaml").write_text(
        FORGE.format(
            target=target,
            registry=registry,
            plain="" if target.startswith("oci:") else ", plainHttp: true",
        )
    )
    forge = Forge.load(project / "edgeforge.yaml", plugins=plugins, output_dir=project / "dist")
    planned = forge.published_reference("retail")
    assert planned is not None
    assert planned in forge.plan().step("publish/provider-image/retail").summary
    forge.run()
    manifest = json.loads((project / "dist" / "manifest.json").read_text())
    [published] = [
        a for a in manifest["artifacts"] if a["name"] == "published-provider-image/retail"
    ]
    assert published["reference"] in (planned, f"{planned}@{published['digest']}")
    return planned, published["digest"]


def test_plan_manifest_and_registry_agree(registry, plugins: PluginManager, tmp_path: Path):
    # The user's case: a namespace in the target and the same namespace in the repo.
    target = f"{registry.host}/edge"
    planned, digest = run_forge(tmp_path / "p", plugins, target, registry.host)
    assert planned == f"{registry.host}/edge/edge/retail:k3s-1.30.4-v0.1.0"
    found = json.loads(tool("skopeo", "inspect", "--tls-verify=false", f"docker://{planned}"))
    assert found["Name"] == planned.rpartition(":")[0]
    assert found["Digest"] == digest
    # Nothing was pushed anywhere else: the repository the image's own fields name is empty.
    catalog = json.loads(tool("curl", "-sf", f"http://{registry.host}/v2/_catalog"))
    assert catalog["repositories"] == ["edge/edge/retail"]


def test_a_layout_target_is_made_absolute_in_plan_and_manifest(
    plugins: PluginManager, tmp_path: Path
):
    planned, digest = run_forge(tmp_path / "p", plugins, "oci:registry", "localhost")
    layout = (tmp_path / "p" / "dist" / "registry").resolve()
    assert planned == f"oci:{layout}:k3s-1.30.4-v0.1.0"
    assert json.loads(tool("skopeo", "inspect", planned))["Digest"] == digest


def test_the_rule():
    assert published_reference("r.example.com", "edge/retail", "t") == "r.example.com/edge/retail:t"
    assert published_reference("r.example.com/ns/", "/x/", "t") == "r.example.com/ns/x:t"
    assert published_reference("oci:/l", "sites", "s1", layout_tag="site-s1") == "oci:/l:site-s1"
    assert published_reference("oci:/l", "edge/retail", "t") == "oci:/l:t"


@pytest.mark.parametrize(
    "reference",
    [
        "quay.example.com/team/img:1.0",
        "quay.example.com:8443/team/img:1.0",
        f"quay.example.com/team/img@sha256:{'a' * 64}",
        f"quay.example.com/team/img:1.0@sha256:{'a' * 64}",
    ],
)
def test_an_image_with_a_full_reference_keeps_its_repository(reference: str):
    image = ProviderImage(
        "img",
        "p",
        OsSpec("debian", "12"),
        KubernetesSpec(K8sDistribution.K3S, "1.30.4"),
        reference=reference,
    )
    assert image.published_reference("127.0.0.1:5000", "0.1.0") == (
        "127.0.0.1:5000/team/img:k3s-1.30.4-v0.1.0"
    )
