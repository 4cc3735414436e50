"""Provider images, the image matrix and the forge spec's cross-references."""

from __future__ import annotations

import attrs
import pytest

from edgekit.model import (
    Arch,
    ClusterProfile,
    Forge,
    ImageSpec,
    IsoSpec,
    K8sDistribution,
    KubernetesMatrix,
    KubernetesSpec,
    ModelValueError,
    OsSpec,
    Overlay,
    Pack,
    ProviderImage,
    Registration,
    RegistrySpec,
    SampleOsBase,
)
from edgekit.plugins import Publisher, RegistryOptions


def image(**kw: object) -> ProviderImage:
    args: dict[str, object] = {
        "name": "ubuntu",
        "profile": "retail",
        "os": OsSpec("ubuntu", "22.04"),
        "kubernetes": KubernetesSpec(K8sDistribution.K3S, "1.30.4"),
        "registry": "ttl.sh",
        "repo": "ubuntu",
        "custom_tag": "demo",
    }
    args.update(kw)
    return ProviderImage(**args)  # type: ignore[arg-type]


def test_reference_follows_canvos() -> None:
    assert image().reference_for("v4.2.3") == "ttl.sh/ubuntu:k3s-1.30.4-v4.2.3-demo"
    assert image().reference_for("4.2.3") == "ttl.sh/ubuntu:k3s-1.30.4-v4.2.3-demo"


def test_reference_without_custom_tag() -> None:
    assert image(custom_tag="").reference_for("0.1.0") == "ttl.sh/ubuntu:k3s-1.30.4-v0.1.0"


def test_reference_plus_becomes_underscore() -> None:
    img = image(kubernetes=KubernetesSpec(K8sDistribution.RKE2, "1.30.4+rke2r1"))
    assert img.reference_for("0.1.0") == "ttl.sh/ubuntu:rke2-1.30.4_rke2r1-v0.1.0-demo"


def test_reference_override() -> None:
    assert image(reference="r.io/x/y:z").reference_for("1") == "r.io/x/y:z"


def test_rules_reported_together() -> None:
    with pytest.raises(ModelValueError) as e:
        image(arch=(), remove=("relative",), repo="", overlays=())
    assert [p for p, _ in e.value.problems] == [("arch",), ("remove", 0), ("repo",)]


def test_overlay_target_absolute() -> None:
    with pytest.raises(ModelValueError, match=r"Overlay.target: 'etc/x' is not an absolute"):
        Overlay("./x", "etc/x")


def test_k8s_version() -> None:
    with pytest.raises(ModelValueError, match=r"KubernetesSpec.version: 'latest'"):
        KubernetesSpec(K8sDistribution.K3S, "latest")


def test_sample_os() -> None:
    with pytest.raises(ModelValueError, match=r"'alpine' is not one of debian-12"):
        SampleOsBase("alpine")


def test_matrix_needs_version_or_versions() -> None:
    with pytest.raises(ModelValueError, match=r"exactly one of version or versions"):
        KubernetesMatrix(K8sDistribution.K3S)
    with pytest.raises(ModelValueError, match=r"exactly one of version or versions"):
        KubernetesMatrix(K8sDistribution.K3S, "1.30.4", ("1.31.0",))


def spec(**kw: object) -> ImageSpec:
    args: dict[str, object] = {
        "name": "sample",
        "profile": "retail",
        "os": OsSpec("debian", "12"),
        "kubernetes": KubernetesMatrix(K8sDistribution.K3S, versions=("1.30.4", "1.31.0")),
        "arch": (Arch.AMD64, Arch.ARM64),
        "repo": "edgekit/sample",
    }
    args.update(kw)
    return ImageSpec(**args)  # type: ignore[arg-type]


def retail() -> ClusterProfile:
    return ClusterProfile("retail", "1.0.0", (Pack.os("os", "12"), Pack.k8s("k3s", "1.30.4")))


def test_expand_one_per_version() -> None:
    images = spec().expand()
    assert [(i.name, i.kubernetes.version, i.arch) for i in images] == [
        ("sample-1.30.4", "1.30.4", (Arch.AMD64, Arch.ARM64)),
        ("sample-1.31.0", "1.31.0", (Arch.AMD64, Arch.ARM64)),
    ]
    single = spec(kubernetes=KubernetesMatrix(K8sDistribution.K3S, "1.30.4")).expand()
    assert [i.name for i in single] == ["sample"]


def test_forge_expand_images_and_defaults() -> None:
    f = Forge(name="demo", profiles=(retail(),), images=(spec(),))
    assert len(f.expand_images()) == 2
    assert f.output == "./dist"
    assert f.registry == RegistrySpec("oci:registry")
    assert (f.backends.image_builder.name, f.backends.iso_assembler.name) == ("oci", "pycdlib")
    assert (f.backends.publisher.name, f.backends.transport.name) == ("oras", "http")


def test_forge_cross_references() -> None:
    with pytest.raises(ModelValueError) as e:
        Forge(
            name="demo",
            profiles=(retail(), retail()),
            images=(spec(profile="nope"),),
            iso=IsoSpec("installer", image="missing"),
        )
    assert e.value.problems == (
        (
            ("profiles", 1),
            "Forge.profiles[1]: profile retail@1.0.0 is used more than once (also profiles[0]): "
            "a name and version must be unique together",
        ),
        (
            ("images", 0, "profile"),
            "Forge.images[0]['profile']: 'nope' is not a profile of this file (profiles: retail)",
        ),
        (("iso", "image"), "Forge.iso['image']: 'missing' is not an images entry (images: sample)"),
    )


def test_iso_arch_must_be_built() -> None:
    with pytest.raises(ModelValueError, match=r"is not built for arm64"):
        Forge(
            name="demo",
            profiles=(retail(),),
            images=(spec(arch=(Arch.AMD64,)),),
            iso=IsoSpec("installer", image="sample", arch=Arch.ARM64),
        )


@pytest.mark.parametrize("label", ["cos_live", "A" * 33, "", "COS LIVE"])
def test_volume_label(label: str) -> None:
    with pytest.raises(ModelValueError, match=r"IsoSpec.volume_label"):
        IsoSpec("x", "y", volume_label=label)


def test_iso_defaults() -> None:
    iso = IsoSpec("x", "y")
    assert (iso.volume_label, iso.kernel_path, iso.initrd_path) == (
        "COS_LIVE",
        "/boot/vmlinuz",
        "/boot/initrd",
    )


@pytest.mark.parametrize(
    ("target", "ok"),
    [
        ("oci:./dist/registry", True),
        ("127.0.0.1:5000/edgekit", True),
        ("registry.example.com/a/b", True),
        ("oci:", False),
        ("localhost:5000", False),
        ("http://x/y", False),
    ],
)
def test_registry_target(target: str, ok: bool) -> None:
    # The model keeps any target: which exist is the selected publisher's to say, at plan
    # time; a publisher that claims no scheme of its own keeps the built-in grammar.
    assert RegistrySpec(target).target == target
    problems = Publisher.target_problems(target, RegistryOptions())
    assert (problems == []) is ok
    if not ok:
        assert [p.path for p in problems] == ["target"]


def test_registry_target_must_not_be_blank() -> None:
    with pytest.raises(ModelValueError, match=r"RegistrySpec.target"):
        RegistrySpec(" ")


def test_registry_layout_path() -> None:
    assert RegistrySpec().layout_path == "registry"
    assert not RegistrySpec("localhost:5000/x", plain_http=True).is_layout


def test_registration_token_env_is_a_name() -> None:
    with pytest.raises(ModelValueError, match=r"not the token itself"):
        Registration("http://hub", token_env="s3cr3t-token-value!")
    assert attrs.evolve(Registration("http://hub"), token_env="MY_TOKEN").token_env == "MY_TOKEN"
