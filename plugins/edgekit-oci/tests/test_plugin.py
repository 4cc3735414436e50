"""The image builders as the pipeline uses them (through the plugin system), with bases and
pack sources from a real docker-registry on 127.0.0.1 (fixtures from edgekit_oras.testing)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import attrs
import pytest
from edgekit_oras import ConnectionOptions, push_artifact, push_layout

from edgekit import model
from edgekit.errors import BuildError
from edgekit.plugins import BuildContext, SelectedBackend
from edgekit.plugins.interfaces import ImageBuildRequest
from edgekit.plugins.manager import PluginManager


def run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr}"
    return proc.stdout


@pytest.fixture
def plugins() -> PluginManager:
    pm = PluginManager(disabled="")
    pm.load_all()
    return pm


@pytest.fixture
def k3s(tmp_path: Path) -> Path:
    path = tmp_path / "k3s"
    path.write_text("#!/bin/sh\necho k3s stand-in\n")
    return path


def profile(source: model.PackSource) -> model.ClusterProfile:
    return model.ClusterProfile(
        name="p",
        version="1.0.0",
        packs=(
            model.Pack("os", model.Layer.OS, "1"),
            model.Pack("edge-k3s", model.Layer.K8S, "1.30.4", source=source),
        ),
    )


def request(
    tmp_path: Path,
    source: model.PackSource,
    insecure: frozenset[str] = frozenset({"127.0.0.1"}),
    **image: object,
) -> tuple[ImageBuildRequest, BuildContext]:
    img = model.ProviderImage(
        name="img",
        profile="p",
        os=model.OsSpec("debian", "12"),
        kubernetes=model.KubernetesSpec(model.K8sDistribution.K3S, "1.30.4"),
        repo="edge/img",
        **image,  # type: ignore[arg-type]
    )
    req = ImageBuildRequest(
        image=img,
        profile=profile(source),
        layout=tmp_path / "out",
        tag="v1",
        reference="localhost/edge/img:v1",
        insecure_registries=insecure,
    )
    # The builder pulls with the run's selected publisher, from the run's manager.
    ctx = BuildContext(
        base_dir=tmp_path,
        output_dir=tmp_path,
        cache_dir=tmp_path / "cache",
        plugins=PluginManager(disabled="1"),
        selected={"publisher": SelectedBackend("oras")},
    )
    return req, ctx


def unpack(layout: Path, tag: str, dest: Path) -> Path:
    run("umoci", "unpack", "--image", f"{layout}:{tag}", str(dest))
    return dest / "rootfs"


def test_base_image_from_a_registry(plugins, registry, k3s: Path, tmp_path: Path):
    base = tmp_path / "base"
    tree = tmp_path / "tree" / "etc"
    tree.mkdir(parents=True)
    (tree / "base-marker").write_text("from the registry\n")
    run("umoci", "init", "--layout", str(base))
    run("umoci", "new", "--image", f"{base}:v1")
    run("umoci", "insert", "--image", f"{base}:v1", str(tmp_path / "tree"), "/")
    ref = f"{registry.host}/bases/tiny:v1"
    push_layout(base, "v1", ref, options=ConnectionOptions(plain_http=True))

    req, ctx = request(
        tmp_path,
        model.PackSource(path=str(k3s)),
        insecure=frozenset({registry.host}),
        base=model.RefBase(ref),
    )
    art = plugins.image_builder("oci").build_image(req, ctx)
    info = json.loads(run("skopeo", "inspect", f"oci:{req.layout}:v1"))
    assert info["Digest"] == art.digest
    rootfs = unpack(req.layout, "v1", tmp_path / "bundle")
    assert (rootfs / "etc" / "base-marker").read_text() == "from the registry\n"
    assert (rootfs / "usr" / "local" / "bin" / "k3s").read_text() == k3s.read_text()


def test_base_registry_over_tls_is_refused_when_it_speaks_plain_http(
    plugins, registry, k3s: Path, tmp_path: Path
):
    req, ctx = request(
        tmp_path,
        model.PackSource(path=str(k3s)),
        base=model.RefBase(f"{registry.host}/bases/tiny:v1"),
    )  # insecure_registries names 127.0.0.1, not 127.0.0.1:PORT: TLS is required
    with pytest.raises(Exception, match=registry.host):
        plugins.image_builder("oci").build_image(req, ctx)
    assert not req.layout.exists()


def test_kubernetes_from_an_oci_artifact(plugins, registry, k3s: Path, tmp_path: Path):
    ref = f"{registry.host}/packs/k3s:1.30.4"
    push_artifact(
        k3s,
        ref,
        artifact_type="application/vnd.edgekit.k8s.v1",
        options=ConnectionOptions(plain_http=True),
    )
    insecure = frozenset({registry.host})
    req, ctx = request(tmp_path, model.PackSource(oci=ref), insecure=insecure)
    plugins.image_builder("oci").build_image(req, ctx)
    rootfs = unpack(req.layout, "v1", tmp_path / "bundle")
    assert (rootfs / "usr" / "local" / "bin" / "k3s").read_text() == k3s.read_text()

    (tmp_path / "two").mkdir()
    missing, ctx2 = request(
        tmp_path / "two", model.PackSource(oci=ref, path="nope"), insecure=insecure
    )
    with pytest.raises(BuildError, match="has no 'nope'; it holds: k3s"):
        plugins.image_builder("oci").build_image(missing, ctx2)


def test_multi_arch_image_is_an_index(plugins, k3s: Path, tmp_path: Path):
    req, ctx = request(
        tmp_path,
        model.PackSource(path=str(k3s)),
        arch=(model.Arch.AMD64, model.Arch.ARM64),
    )
    art = plugins.image_builder("oci").build_image(req, ctx)
    assert art.media_type == "application/vnd.oci.image.index.v1+json"
    raw = json.loads(run("skopeo", "inspect", "--raw", f"oci:{req.layout}:v1"))
    assert sorted(m["platform"]["architecture"] for m in raw["manifests"]) == ["amd64", "arm64"]
    for arch in ("amd64", "arm64"):
        info = json.loads(run("skopeo", "--override-arch", arch, "inspect", f"oci:{req.layout}:v1"))
        assert info["Architecture"] == arch
        assert info["Labels"]["io.edgekit.kubernetes.version"] == "1.30.4"


def test_buildah_backend_builds_the_same_tree(plugins, k3s: Path, tmp_path: Path):
    overlay = tmp_path / "motd"
    overlay.write_text("hello\n")
    trees = {}
    for name in ("oci", "buildah"):
        req, ctx = request(
            tmp_path / name,
            model.PackSource(path=str(k3s)),
            overlays=(model.Overlay(str(overlay), "/etc/motd"),),
        )
        (tmp_path / name).mkdir()
        plugins.image_builder(name).build_image(req, ctx)
        rootfs = unpack(req.layout, "v1", tmp_path / name / "bundle")
        trees[name] = {
            p.relative_to(rootfs).as_posix(): p.read_bytes()
            for p in rootfs.rglob("*")
            if p.is_file()
        }
    assert trees["buildah"]["etc/motd"] == b"hello\n"
    assert trees["oci"] == {k: v for k, v in trees["buildah"].items() if k in trees["oci"]}
    assert set(trees["oci"]) <= set(trees["buildah"])


def test_base_images_are_pulled_with_the_selected_publisher_of_the_run(
    plugins, k3s: Path, tmp_path: Path
):
    """Not the process-wide manager's 'oras': the publisher the run selected, from the
    manager the run was given (issue 15)."""
    from edgekit.errors import PublishError
    from edgekit.plugins import Publisher, PullRequest, hookimpl

    asked: list[PullRequest] = []

    class Recording(Publisher):
        name = "recording"

        def push_image(self, request, ctx):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        def push_artifact(self, request, ctx):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        def pull(self, request, ctx):  # type: ignore[no-untyped-def]
            asked.append(request)
            raise PublishError("the recording publisher has nothing")

    class Plugin:
        @hookimpl
        def edgekit_publishers(self) -> list[type[Publisher]]:
            return [Recording]

    manager = PluginManager(disabled="1")
    manager.register(Plugin(), name="recording")
    req, ctx = request(tmp_path, model.PackSource(path=str(k3s)), base=model.RefBase("r.test/b:v1"))
    ctx = attrs.evolve(ctx, plugins=manager, selected={"publisher": SelectedBackend("recording")})
    with pytest.raises(PublishError, match="the recording publisher has nothing"):
        manager.image_builder("oci").build_image(req, ctx)
    assert [(r.reference, r.tag is not None) for r in asked] == [("r.test/b:v1", True)]
