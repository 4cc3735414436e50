"""Packs, pack sources, cluster profiles and profile diffs."""

from __future__ import annotations

import attrs
import pytest

from edgekit.config import values_from_text
from edgekit.model import (
    ChangeKind,
    ClusterProfile,
    Layer,
    ModelValueError,
    Pack,
    PackSource,
    ProfileRef,
    UpgradeKind,
)

SHA = "a" * 64


def profile(*extra: Pack, os_values: object = None, k8s_version: str = "1.30.4") -> ClusterProfile:
    os_pack = Pack.os("sample-os", "12", values=os_values if os_values is not None else {})
    return ClusterProfile(
        name="retail",
        version="1.0.0",
        packs=(os_pack, Pack.k8s("edge-k3s", k8s_version), *extra),
    )


def messages(exc: pytest.ExceptionInfo[ModelValueError]) -> list[str]:
    return [m for _, m in exc.value.problems]


class TestPackSource:
    def test_named_constructors(self) -> None:
        assert PackSource.from_url("https://x/y.tgz", SHA).url == "https://x/y.tgz"
        assert PackSource.from_path("./dir").path == "./dir"
        src = PackSource.from_oci("ghcr.io/acme/pack:1.0", "charts/x")
        assert (src.oci, src.path) == ("ghcr.io/acme/pack:1.0", "charts/x")

    def test_exactly_one(self) -> None:
        with pytest.raises(ModelValueError) as e:
            PackSource()
        assert messages(e) == [
            "PackSource.url: exactly one of url, path or oci is required, got none"
        ]
        with pytest.raises(ModelValueError, match=r"got url, path"):
            PackSource(url="https://x", sha256=SHA, path="p")

    def test_url_needs_sha256(self) -> None:
        with pytest.raises(ModelValueError) as e:
            PackSource(url="https://x")
        assert e.value.problems[0][0] == ("sha256",)
        assert "required with url" in messages(e)[0]

    @pytest.mark.parametrize("bad", ["A" * 64, "a" * 63, "g" * 64])
    def test_sha256_format(self, bad: str) -> None:
        with pytest.raises(ModelValueError, match=r"64 lowercase hex"):
            PackSource(url="https://x", sha256=bad)

    def test_bad_values_reported_together(self) -> None:
        with pytest.raises(ModelValueError) as e:
            PackSource(url="ftp://x", sha256="nope")
        assert [p for p, _ in e.value.problems] == [("url",), ("sha256",)]
        assert "'ftp://x'" in messages(e)[0]

    def test_oci_reference(self) -> None:
        with pytest.raises(ModelValueError, match=r"is not an OCI reference"):
            PackSource(oci="not a ref")


class TestProfile:
    def test_os_and_k8s(self) -> None:
        p = profile(Pack("flannel", Layer.CNI, "0.25"))
        assert p.os_pack.name == "sample-os"
        assert p.k8s_pack.name == "edge-k3s"
        assert [x.name for x in p.packs] == ["sample-os", "edge-k3s", "flannel"]
        assert p.ref == ProfileRef("retail", "1.0.0")

    def test_needs_one_os_one_k8s(self) -> None:
        with pytest.raises(ModelValueError) as e:
            ClusterProfile("p", "1.0.0", (Pack("a", Layer.CNI, "1"),))
        assert messages(e) == [
            "ClusterProfile.packs: exactly one os pack is required, found 0",
            "ClusterProfile.packs: exactly one k8s pack is required, found 0",
        ]
        with pytest.raises(ModelValueError, match=r"exactly one os pack is required, found 2"):
            profile(Pack.os("other-os", "1"))

    def test_unique_pack_names(self) -> None:
        with pytest.raises(ModelValueError, match=r"pack name 'edge-k3s' is used more than once"):
            profile(Pack("edge-k3s", Layer.CNI, "1"))

    @pytest.mark.parametrize("version", ["1.0", "v1.0.0", "01.0.0", "1.0.0-", ""])
    def test_semver(self, version: str) -> None:
        with pytest.raises(ModelValueError, match=r"ClusterProfile.version: .* is not a semantic"):
            attrs.evolve(profile(), version=version)

    def test_semver_ok(self) -> None:
        assert attrs.evolve(profile(), version="1.2.3-rc.1+build.5").version == "1.2.3-rc.1+build.5"

    def test_evolve_revalidates(self) -> None:
        with pytest.raises(ModelValueError, match=r"not a valid name"):
            attrs.evolve(profile(), name="bad name")


class TestDiff:
    def test_no_change(self) -> None:
        d = profile().diff(profile())
        assert not d
        assert d.upgrade is UpgradeKind.NONE

    def test_addon_values_in_place(self) -> None:
        a = profile(Pack("app", Layer.ADDON, "1", values={"replicas": 1}))
        b = profile(Pack("app", Layer.ADDON, "1", values={"replicas": 2}))
        d = a.diff(b)
        assert [(c.pack, c.kind, c.keys) for c in d] == [("app", ChangeKind.VALUES, ("replicas",))]
        assert d.upgrade is UpgradeKind.IN_PLACE

    def test_added_removed_addon(self) -> None:
        d = profile(Pack("a", Layer.ADDON, "1")).diff(profile(Pack("b", Layer.CSI, "1")))
        assert {(c.pack, c.kind) for c in d} == {("a", ChangeKind.REMOVED), ("b", ChangeKind.ADDED)}
        assert d.upgrade is UpgradeKind.IN_PLACE

    def test_k8s_version_reboots(self) -> None:
        d = profile().diff(profile(k8s_version="1.31.0"))
        (c,) = d.changes
        assert (c.kind, c.old, c.new, c.upgrade) == (
            ChangeKind.VERSION,
            "1.30.4",
            "1.31.0",
            UpgradeKind.REBOOT,
        )
        assert d.upgrade is UpgradeKind.REBOOT

    def test_os_version_repaves(self) -> None:
        a = profile()
        b = attrs.evolve(a, packs=(Pack.os("sample-os", "13"), a.k8s_pack))
        assert a.diff(b).upgrade is UpgradeKind.REPAVE

    def test_system_uri_repaves(self) -> None:
        d = profile(os_values={"system.uri": "a:1"}).diff(profile(os_values={"system.uri": "a:2"}))
        assert d.upgrade is UpgradeKind.REPAVE
        assert d.changes[0].keys == ("system.uri",)

    def test_system_uri_as_yaml_text_repaves(self) -> None:
        a = profile(os_values=values_from_text("system:\n  uri: a:1\nother: 1\n"))
        b = profile(os_values=values_from_text("system:\n  uri: a:2\nother: 1\n"))
        assert a.diff(b).upgrade is UpgradeKind.REPAVE

    def test_stages_reboot(self) -> None:
        a = profile(os_values={"stages": {"boot": [{"commands": ["a"]}]}})
        b = profile(os_values={"stages": {"boot": [{"commands": ["b"]}]}})
        assert a.diff(b).upgrade is UpgradeKind.REBOOT

    def test_os_other_values_in_place(self) -> None:
        d = profile(os_values={"motd": "a"}).diff(profile(os_values={"motd": "b"}))
        assert d.upgrade is UpgradeKind.IN_PLACE

    def test_most_disruptive_wins(self) -> None:
        a = profile(Pack("app", Layer.ADDON, "1"), os_values={"system.uri": "x:1"})
        b = profile(
            Pack("app", Layer.ADDON, "2"), os_values={"system.uri": "x:2"}, k8s_version="1.31.0"
        )
        d = a.diff(b)
        assert {c.upgrade for c in d} == {
            UpgradeKind.IN_PLACE,
            UpgradeKind.REBOOT,
            UpgradeKind.REPAVE,
        }
        assert d.upgrade is UpgradeKind.REPAVE

    def test_source_change_of_os_repaves(self) -> None:
        a = profile()
        src = PackSource.from_oci("ghcr.io/acme/os:2")
        b = attrs.evolve(a, packs=(attrs.evolve(a.os_pack, source=src), a.k8s_pack))
        (c,) = a.diff(b).changes
        assert (c.kind, c.upgrade) == (ChangeKind.SOURCE, UpgradeKind.REPAVE)


# --- pack values given as YAML text (issue 15, item 4) -------------------------------------


def test_text_values_reach_the_kubernetes_configuration(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from edgekit_oci.kubernetes import kubernetes_entries
    from edgekit_oci.layers import ContentEntry

    from edgekit import config

    profile = config.loads(
        "name: p\nversion: 1.0.0\npacks:\n"
        '  - {name: os, layer: os, version: "1"}\n'
        '  - name: k3s\n    layer: k8s\n    version: "1.30.4"\n'
        "    values: |\n      node-label: [edge=true]\n      write-kubeconfig-mode: '0640'\n",
        ClusterProfile,
    )
    k8s = profile.k8s_pack
    # parsed once, when the document is read; the text is kept for round trips
    assert k8s.values == {"node-label": ["edge=true"], "write-kubeconfig-mode": "0640"}
    assert k8s.values.text is not None
    assert "node-label" in k8s.values.text
    assert "values: |" in config.dump(profile)
    (tmp_path / "k3s").write_text("binary")
    entries = kubernetes_entries("k3s", "1.30.4", tmp_path / "k3s", k8s.values)
    [cfg] = [e for e in entries if isinstance(e, ContentEntry) and e.target.endswith("config.yaml")]
    assert b"write-kubeconfig-mode" in cfg.content
    assert b"edge=true" in cfg.content


def test_text_values_are_checked_when_loaded() -> None:
    from edgekit import config
    from edgekit.errors import ConfigError

    head = 'name: p\nversion: 1.0.0\npacks:\n  - {name: os, layer: os, version: "1"}\n'
    pack = '  - {name: k, layer: k8s, version: "1", values: VALUES}\n'
    with pytest.raises(ConfigError, match=r"\$\.packs\[1\]\.values: values given as YAML text"):
        config.loads(head + pack.replace("VALUES", '"- a"'), ClusterProfile)
    with pytest.raises(ConfigError, match=r"\$\.packs\[1\]\.values: the values text is not"):
        config.loads(head + pack.replace("VALUES", '"a: ["'), ClusterProfile)


def test_text_values_are_refused_in_python_with_the_way_out() -> None:
    with pytest.raises(ModelValueError) as e:
        Pack("app", Layer.ADDON, "1", values="replicas: 2\n")  # type: ignore[arg-type]
    assert "values_from_text" in str(e.value)
    pack = Pack("app", Layer.ADDON, "1", values=values_from_text("replicas: 2  # two\n"))
    assert pack.values == {"replicas": 2}
    assert pack.values.text == "replicas: 2  # two\n"


def test_text_and_mapping_values_that_mean_the_same_are_no_change() -> None:
    a = profile(Pack("app", Layer.ADDON, "1", values=values_from_text("replicas: 2\n")))
    b = profile(Pack("app", Layer.ADDON, "1", values={"replicas": 2}))
    assert a == b
    assert not a.diff(b).changes
