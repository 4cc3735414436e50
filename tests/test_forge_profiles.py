"""Several versions of one profile in a forge file, and ``Forge.publish_profiles(hub)``: the
model's rules, the converter's paths and lines, the pipeline, a real hub and the CLI."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from cli_runner import edgekit

from edgekit import config, model
from edgekit.errors import ConfigError
from edgekit.forge import Forge
from edgekit.forge.profiles import ProfilePublication, publish_profiles
from edgekit.hub import HubRequestError, HubServer
from edgekit.model import ClusterProfile, ImageSpec, KubernetesMatrix, OsSpec, Pack, ProfileRef
from edgekit.model._base import ModelValueError
from edgekit.model.forge import AmbiguousProfileError, ProfileSet

API_KEY = "eka_forge-profiles-admin-key-0123456789abcdef"


def profile(version: str, k3s: str = "1.30.4", name: str = "retail") -> ClusterProfile:
    return ClusterProfile(name, version, (Pack.os("os", "12"), Pack.k8s("k3s", k3s)))


def image(name: str, ref: str) -> ImageSpec:
    return ImageSpec(
        name=name,
        profile=ref,
        os=OsSpec("debian", "12"),
        kubernetes=KubernetesMatrix(model.K8sDistribution.K3S, "1.30.4"),
        repo=f"edge/{name}",
    )


V1, V11, KIOSK = profile("1.0.0"), profile("1.1.0", "1.31.0"), profile("1.0.0", name="kiosk")


# -- the model --------------------------------------------------------------------------------
def test_versions_side_by_side_and_images_say_which() -> None:
    f = model.Forge(
        name="demo",
        profiles=(V1, V11, KIOSK),
        images=(image("old", "retail@1.0.0"), image("new", "retail@1.1.0"), image("k", "kiosk")),
    )
    assert f.profile("retail", "1.1.0") is V11
    assert f.profile("retail@1.0.0") is V1
    assert f.profile(ProfileRef("kiosk", "1.0.0")) is KIOSK
    assert f.profile("kiosk") is KIOSK  # one version: the name alone is enough
    with pytest.raises(AmbiguousProfileError) as ambiguous:
        f.profile("retail")
    assert isinstance(ambiguous.value, KeyError)
    assert str(ambiguous.value) == (
        "profile 'retail' has several versions in this file (1.0.0, 1.1.0): "
        "say which, e.g. 'retail@1.1.0'"
    )
    with pytest.raises(KeyError):
        f.profile("retail", "9.9.9")


def test_ambiguous_and_unknown_references_and_repeated_versions() -> None:
    with pytest.raises(ModelValueError) as e:
        model.Forge(
            name="demo",
            profiles=(V1, V11, profile("1.0.0", "1.29.0")),
            images=(image("a", "retail"), image("b", "retail@2.0.0"), image("c", "nope@1.0.0")),
        )
    assert e.value.problems == (
        (
            ("profiles", 2),
            "Forge.profiles[2]: profile retail@1.0.0 is used more than once (also "
            "profiles[0]): a name and version must be unique together",
        ),
        (
            ("images", 0, "profile"),
            "Forge.images[0]['profile']: profile 'retail' has several versions in this file "
            "(1.0.0, 1.1.0, 1.0.0): say which, e.g. 'retail@1.0.0'",
        ),
        (
            ("images", 1, "profile"),
            "Forge.images[1]['profile']: 'retail@2.0.0' is not a profile of this file "
            "(retail has versions 1.0.0, 1.1.0, 1.0.0)",
        ),
        (
            ("images", 2, "profile"),
            "Forge.images[2]['profile']: 'nope@1.0.0' is not a profile of this file "
            "(profiles: retail)",
        ),
    )
    with pytest.raises(ModelValueError, match="is not NAME or NAME@VERSION"):
        image("x", "retail@")


def test_a_single_version_file_reads_as_before() -> None:
    f = model.Forge(name="demo", profiles=(V1, KIOSK), images=(image("img", "retail"),))
    profiles = f.profile_set()
    assert list(profiles) == ["retail", "kiosk"]
    assert dict(profiles) == {"retail": V1, "kiosk": KIOSK}
    assert profiles["retail"] is V1
    assert "retail@1.0.0" in profiles
    assert "retail@2.0.0" not in profiles


def test_profile_set_keys_and_lookups() -> None:
    profiles = ProfileSet((V1, V11, KIOSK))
    assert list(profiles) == ["retail@1.0.0", "retail@1.1.0", "kiosk"]
    assert list(profiles.values()) == [V1, V11, KIOSK]
    assert len(profiles) == 3
    assert profiles.versions("retail") == ("1.0.0", "1.1.0")
    assert profiles[ProfileRef("retail", "1.1.0")] is V11
    assert "retail" not in profiles  # ambiguous: not a key
    assert profiles.get("retail") is None
    assert repr(profiles) == "ProfileSet(retail@1.0.0, retail@1.1.0, kiosk)"


# -- the converter: paths and lines ----------------------------------------------------------
FORGE_TWO_VERSIONS = """\
name: demo
profiles:
  - name: retail
    version: 1.0.0
    packs: [{name: os, layer: os, version: "12"}, {name: k3s, layer: k8s, version: "1.30.4"}]
  - name: retail
    version: 1.1.0
    packs: [{name: os, layer: os, version: "12"}, {name: k3s, layer: k8s, version: "1.31.0"}]
  - name: retail
    version: 1.1.0
    packs: [{name: os, layer: os, version: "12"}, {name: k3s, layer: k8s, version: "1.31.1"}]
images:
  - name: img
    profile: retail
    os: {distribution: debian, version: "12"}
    kubernetes: {distribution: k3s, version: "1.30.4"}
    repo: edge/img
"""


def test_file_problems_are_path_addressed_with_lines(tmp_path: Path) -> None:
    path = tmp_path / "edgeforge.yaml"
    path.write_text(FORGE_TWO_VERSIONS)
    with pytest.raises(ConfigError) as e:
        config.load(path)
    got = [(p.path, p.line) for p in e.value.problems]
    assert got == [("$.profiles[2]", 9), ("$.images[0].profile", 14)]
    assert "retail@1.1.0 is used more than once" in e.value.problems[0].message
    assert "say which, e.g. 'retail@1.1.0'" in e.value.problems[1].message
    # Without the repeated version, and saying which version: it loads, and round-trips.
    lines = FORGE_TWO_VERSIONS.splitlines()
    fixed = "\n".join(lines[:8] + lines[11:]).replace("profile: retail", "profile: retail@1.1.0")
    path.write_text(fixed)
    spec = config.load(path)
    assert isinstance(spec, model.Forge)
    assert [p.version for p in spec.profiles] == ["1.0.0", "1.1.0"]
    assert spec.images[0].profile == "retail@1.1.0"
    again = config.structure(config.unstructure(spec), model.Forge)
    assert again == spec


# -- the pipeline -----------------------------------------------------------------------------
PIPELINE_FORGE = """\
name: demo
profiles:
  - name: retail
    version: 1.0.0
    packs:
      - {name: os, layer: os, version: "12"}
      - {name: k3s, layer: k8s, version: "1.30.4", source: {path: ./k8s}}
  - name: retail
    version: 1.1.0
    packs:
      - {name: os, layer: os, version: "12"}
      - {name: k3s, layer: k8s, version: "1.31.0", source: {path: ./k8s}}
images:
  - name: old
    profile: retail@1.0.0
    os: {distribution: debian, version: "12"}
    kubernetes: {distribution: k3s, version: "1.30.4"}
    repo: edge/old
  - name: new
    profile: retail@1.1.0
    os: {distribution: debian, version: "12"}
    kubernetes: {distribution: k3s, version: "1.31.0"}
    repo: edge/new
"""


def test_the_pipeline_builds_each_image_from_its_version(tmp_path: Path) -> None:
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "k3s").write_text("placeholder")
    (tmp_path / "edgeforge.yaml").write_text(PIPELINE_FORGE)
    forge = Forge.load(tmp_path / "edgeforge.yaml")
    assert list(forge.profiles) == ["retail@1.0.0", "retail@1.1.0"]
    assert forge.profiles[forge.images["new"].profile].version == "1.1.0"
    plan = forge.plan()
    steps = {s.id: s for s in plan.steps}
    assert {"provider-image/old", "provider-image/new"} <= set(steps)
    assert steps["provider-image/old"].key != steps["provider-image/new"].key


# -- publishing to a hub ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    with HubServer(tmp_path_factory.mktemp("hub") / "hub.db", api_key=API_KEY) as server:
        yield server


def test_forge_publish_profiles_is_idempotent_and_all_or_nothing(
    hub: HubServer, tmp_path: Path
) -> None:
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "k3s").write_text("placeholder")
    (tmp_path / "edgeforge.yaml").write_text(PIPELINE_FORGE)
    forge = Forge.load(tmp_path / "edgeforge.yaml")
    admin = hub.client()

    first = forge.publish_profiles(admin)
    assert isinstance(first, ProfilePublication)
    assert [(v.ref, v.outcome) for v in first] == [
        ("retail@1.0.0", "published"),
        ("retail@1.1.0", "published"),
    ]
    assert [p.version for p in admin.profiles.list("retail")] == ["1.0.0", "1.1.0"]
    assert {v.digest for v in first} == {p.digest for p in admin.profiles.list("retail")}
    html = first._repr_html_()
    assert html.startswith("<table")
    assert "<td" in html
    assert "published" in html
    assert "2 published, 0 unchanged" in str(first)

    again = forge.publish_profiles(admin)
    assert [v.outcome for v in again] == ["unchanged", "unchanged"]
    assert [v.digest for v in again] == [v.digest for v in first]
    assert again.to_json()["items"][0]["outcome"] == "unchanged"

    # Other content under a published version, beside a new version: a 409 naming the
    # changed version and what differs, and the new version is not published either.
    same, published = forge.spec.profiles
    changed = attrs.evolve(published, packs=(published.packs[0], Pack.k8s("k3s", "1.31.9")))
    new = profile("2.0.0")
    with pytest.raises(HubRequestError) as refused:
        publish_profiles(admin, [same, changed, new])
    assert (refused.value.status, refused.value.code) == (409, "ProfileVersionExists")
    [problem] = refused.value.problems
    assert problem.path == "$.profiles[1]"
    assert "retail@1.1.0 is published with other content" in problem.message
    assert "1.31.0 -> 1.31.9" in problem.message
    assert "source" in problem.message  # every difference is named
    assert [p.version for p in admin.profiles.list("retail")] == ["1.0.0", "1.1.0"]


def _edgekit(hub: HubServer, *args: str) -> subprocess.CompletedProcess[str]:
    return edgekit(*args, env={"EDGEKIT_HUB_URL": hub.url, "EDGEKIT_HUB_API_KEY": API_KEY})


def test_cli_profile_publish_of_several_versions(hub: HubServer, tmp_path: Path) -> None:
    forge = tmp_path / "edgeforge.yaml"
    config.dump_file(
        model.Forge(
            name="cli", profiles=(profile("3.0.0", name="cli"), profile("3.1.0", name="cli"))
        ),
        forge,
    )
    first = _edgekit(hub, "profile", "publish", str(forge), "--json")
    assert first.returncode == 0, first.stderr
    rows = json.loads(first.stdout)
    assert [(r["version"], r["outcome"]) for r in rows] == [
        ("3.0.0", "published"),
        ("3.1.0", "published"),
    ]
    again = _edgekit(hub, "profile", "publish", str(forge))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[1].startswith("profile cli@3.1.0 published (sha256:")
    assert again.stdout.splitlines()[1].endswith(", unchanged: already in the hub)")

    config.dump_file(
        model.Forge(
            name="cli",
            profiles=(profile("3.0.0", "1.29.0", name="cli"), profile("3.2.0", name="cli")),
        ),
        forge,
    )
    refused = _edgekit(hub, "profile", "publish", str(forge))
    assert refused.returncode == 1
    assert "409 ProfileVersionExists" in refused.stderr
    assert "$.profiles[0]: cli@3.0.0 is published with other content" in refused.stderr
    assert "Traceback" not in refused.stderr
    versions = [p.version for p in hub.client().profiles.list("cli")]
    assert versions == ["3.0.0", "3.1.0"]  # 3.2.0 was not published
