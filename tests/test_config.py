"""The converter: strictness, problem paths and lines, kinds, dumps and the bad corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit import config
from edgekit.config import parse_user_data
from edgekit.errors import ConfigError, Problem
from edgekit.model import (
    Arch,
    BootEntry,
    Cluster,
    ClusterProfile,
    EdgeHost,
    Forge,
    Layer,
    Pack,
    RegistrationToken,
    SampleOsBase,
    ScratchBase,
    Secret,
    Site,
    UserData,
)

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
QUICKSTART = ROOT / "examples" / "quickstart" / "edgeforge.yaml"


def problems(exc: pytest.ExceptionInfo[ConfigError]) -> list[tuple[str, str, int | None]]:
    return [(p.path, p.message, p.line) for p in exc.value.problems]


# --- the quick start ----------------------------------------------------------------------


def test_quickstart_loads() -> None:
    forge = config.load(QUICKSTART, Forge)
    assert forge.name == "quickstart"
    (profile,) = forge.profiles
    assert profile.name == "retail"
    assert (profile.os_pack.name, profile.os_pack.version) == ("sample-os", "12")
    k8s = profile.k8s_pack
    assert k8s.name == "edge-k3s"
    assert k8s.source is not None
    assert k8s.source.path == "./k3s-placeholder"
    assert [p.layer for p in profile.packs] == [Layer.OS, Layer.K8S, Layer.CNI]
    (image,) = forge.expand_images()
    assert image.base == SampleOsBase("debian-12")
    assert image.arch == (Arch.AMD64,)
    assert image.reference_for("0.1.0") == "localhost/edgekit/sample:k3s-1.30.4-v0.1.0-quickstart"
    assert forge.iso is not None
    assert forge.iso.image == "sample"
    assert forge.iso.default_entry is BootEntry.INSTALL
    assert isinstance(forge.iso.user_data, UserData)
    ud = forge.iso.inline_user_data
    assert ud is not None
    assert ud.install is not None
    assert ud.install.poweroff is True
    assert [s.name for s in forge.sites] == ["store-0042", "store-0043"]
    assert forge.registry.target == "oci:registry"
    assert forge.registration is not None
    assert forge.registration.endpoint == "http://10.0.2.2:8080"


# --- good documents round-trip in YAML and JSON ---------------------------------------------

GOOD = sorted(
    [
        *ROOT.glob("examples/*.yaml"),
        QUICKSTART,
        *DATA.glob("good/*.yaml"),
        *DATA.glob("good/*.json"),
    ]
)


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_good_documents_round_trip(path: Path, tmp_path: Path) -> None:
    obj = config.load(path)
    for fmt in ("yaml", "json"):
        text = config.dump(obj, fmt, reveal_secrets=True)  # type: ignore[arg-type]
        assert config.loads(text, type(obj), format=fmt) == obj  # type: ignore[arg-type]
    out = config.dump_file(obj, tmp_path / "copy.yaml", reveal_secrets=True)
    assert config.load(out) == obj
    assert config.load(config.dump_file(obj, tmp_path / "copy.json", reveal_secrets=True)) == obj


# --- the bad corpus: every problem, its path, its message and its line -------------------------

BAD: dict[str, list[tuple[str, str, int | None]]] = {
    "forge-unknown-keys.yaml": [
        ("$.images[0].custom_tag", "unknown key 'custom_tag'; did you mean 'customTag'?", 14),
        ("$.iso.volumelabel", "did you mean 'volumeLabel'?", 18),
        ("$.colour", "unknown key 'colour'", 19),
    ],
    "forge-unquoted-numbers.yaml": [
        ("$.profiles[0].packs[0].version", 'got the number 12; quote it ("12")', 8),
        (
            "$.profiles[0].packs[1].version",
            'got 1.10 which YAML reads as the number 1.1; quote it ("1.10")',
            11,
        ),
        ("$.images[0].os.version", 'quote it ("22.04")', 15),
        ("$.images[0].customTag", "got the boolean true; quote it", 18),
    ],
    "forge-bad-enums.yaml": [
        (
            "$.profiles[0].packs[0].layer",
            "'oss' is not one of: os, k8s, cni, csi, addon; did you mean 'os'?",
            6,
        ),
        ("$.images[0].kubernetes.distribution", "did you mean 'k3s'?", 12),
        ("$.images[0].arch[1]", "'x86_64' is not one of: amd64, arm64", 13),
        ("$.images[0].compression", "'xz' is not one of: gzip, zstd", 14),
    ],
    "forge-cross-references.yaml": [
        ("$.sites", "name 'store-1' is used more than once", 17),
        ("$.images[0].profile", "'retial' is not a profile of this file (profiles: retail)", 10),
        ("$.iso.image", "'image' is not an images entry (images: img)", 16),
    ],
    "forge-rules-beside-shape-errors.yaml": [
        # sites failed to load, yet the cross-reference rule that does not need them reports
        ("$.images[0].profile", "'retial' is not a profile of this file", 11),
        ("$.sites[0].tags.floor", "expected a string, got the number 3", 17),
    ],
    "forge-missing-keys.yaml": [
        ("$.profiles[0].version", "required key is missing", 3),
        ("$.profiles[0].packs[0].version", "required key is missing", 5),
        ("$.images[0].os", "required key is missing", 8),
    ],
    "forge-bad-base.yaml": [
        (
            "$.images[0].base",
            "expected scratch, {layout: PATH, tag: TAG}, {ref: REGISTRY/REPO:TAG} or "
            "{sampleOs: debian-12}",
            13,
        ),
        (
            "$.images[0].overlays[0].target",
            "Overlay.target: 'etc/edgekit' is not an absolute path",
            16,
        ),
        # the entry's own rules still run on the fields that loaded
        ("$.images[0].remove[1]", "ImageSpec.remove[1]: 'tmp' is not an absolute path", 17),
    ],
    "forge-strict-scalars.yaml": [
        ("$.sites[0].name", "Site.name: 'Store_42' is not a DNS label", 9),
        ("$.sites[0].tags.floor", 'expected a string, got the number 3; quote it ("3")', 10),
        ("$.sites[0].network.dnsServers", "expected a list, got the string '8.8.8.8'", 12),
        (
            "$.sites[0].network.interfaces.eth0.gateway",
            "10.0.1.1 is outside the interface's subnet 10.0.0.0/24",
            14,
        ),
        ("$.registry.plainHttp", "expected true or false, got the string 'yes'", 4),
        ("$.registration.tokenEnv", "not the token itself", 7),
    ],
    "profile-two-os.yaml": [
        ("$.version", "'1.0' is not a semantic version", 4),
        ("$.packs", "exactly one os pack is required, found 2", 5),
        ("$.packs", "exactly one k8s pack is required, found 0", 5),
        ("$.packs", "pack name 'os' is used more than once", 5),
    ],
    "pack-source.yaml": [
        ("$.source.url", "exactly one of url, path or oci is required, got url, path", 6),
        ("$.source.url", "'ftp://example.com/k3s.tgz' is not an http(s) URL", 6),
        ("$.source.sha256", "required with url", 5),
    ],
    "cluster-rules.yaml": [
        ("$.controlPlane", "2 control-plane hosts need two-node mode (twoNode: true)", 4),
        ("$.workers", "host 'h2' is in pools 'cp' and 'w'; a host may be in one pool only", 10),
        ("$.vip", "10.0.20.1 is outside h1's subnet 10.0.10.0/24", 9),
        ("$.vip", "10.0.20.1 is outside h2's subnet 10.0.10.0/24", 9),
        ("$.overlayCidr", "'100.64.0.0/40' is not a network in CIDR form", 14),
    ],
    "cluster-shapes.yaml": [
        ("$.controlPlane.hosts[0].staticIp", "'10.0.10.21' needs a prefix length", 7),
        ("$.controlPlane.taints[0].effect", "did you mean 'NoSchedule'?", 9),
        ("$.workers[0].hosts[0].nicName", "unknown key 'nicName'", 12),
        (
            "$.workers[0].updateStrategy",
            "not one of: RollingUpdateScaleOut, RollingUpdateScaleIn",
            13,
        ),
        ("$.twoNode", "expected true or false, got the number 1", 14),
    ],
    "host-bad.yaml": [
        ("$.mac", "'00:11:22:33:44' is not a MAC address", 3),
        ("$.address", "'10.0.0' is not an IP address", 4),
    ],
    "syntax-error.yaml": [("$", "invalid YAML: mapping values are not allowed here", 4)],
    "kind-mismatch.yaml": [("$.apiVersion", "expected 'edgekit/v1', got 'edgekit/v2'", 1)],
    "user-data-bad.yaml": [
        # A secret is never quoted back, whatever its type (issue 9).
        ("$.stylus.site.edgeHostToken", "got a number; quote the value (it is secret)", 4),
        ("$.stylus.site.projectUid", "give projectName or projectUid, not both", 6),
        ("$.install.reboot", "expected true or false, got the string 'yes'", 8),
        ("$.stages.initramfs[0].users.kairos.groups", "expected a list, got the string 'sudo'", 12),
    ],
}


def test_corpus_is_complete() -> None:
    assert sorted(BAD) == sorted(p.name for p in (DATA / "bad").glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_document(name: str) -> None:
    path = DATA / "bad" / name
    with pytest.raises(ConfigError) as e:
        config.load(path)
    got = e.value.problems
    # Problems come in file order (by line; one object's problems in rule order).
    expected = sorted(BAD[name], key=lambda e: (e[2] is None, e[2] or 0))
    assert len(got) == len(expected), "\n".join(map(str, got))
    for p, (path_, fragment, line) in zip(got, expected, strict=True):
        assert (p.path, p.line) == (path_, line), str(p)
        assert fragment in p.message, str(p)
        assert p.source == str(path)
    assert str(path) in str(e.value)


# --- strictness --------------------------------------------------------------------------


def test_bool_is_not_a_string_or_int() -> None:
    with pytest.raises(ConfigError) as e:
        config.structure({"uid": True, "name": "n", "labels": {"a": False}}, EdgeHost)
    assert [p.path for p in e.value.problems] == ["$.uid", "$.labels.a"]


def test_int_is_strict() -> None:
    base = {"name": "t", "value": "s"}
    for bad in ("3", 3.0, True):
        with pytest.raises(ConfigError, match="expected an integer"):
            config.structure({**base, "maxHosts": bad}, RegistrationToken)
    assert config.structure({**base, "maxHosts": 3}, RegistrationToken).max_hosts == 3


def test_yaml_11_booleans_are_strings() -> None:
    # ruamel reads YAML 1.2: "yes"/"no"/"on" are strings, never booleans.
    ud = parse_user_data("install: {device: no}\n")
    assert ud.install is not None
    assert ud.install.device == "no"


def test_list_where_string_expected() -> None:
    with pytest.raises(ConfigError) as e:
        config.loads("name: [a]\n", Site)
    assert problems(e) == [("$.name", "expected a string, got a list", 1)]


def test_mapping_expected() -> None:
    with pytest.raises(ConfigError) as e:
        config.loads("name: a\nnetwork: dhcp\n", Site)
    assert problems(e) == [("$.network", "expected a mapping, got the string 'dhcp'", 2)]


def test_single_arch_string() -> None:
    doc = QUICKSTART.read_text().replace("arch: amd64", "arch: [amd64, arm64]")
    forge = config.loads(doc, Forge)
    assert forge.images[0].arch == (Arch.AMD64, Arch.ARM64)


def test_scratch_base() -> None:
    doc = (
        QUICKSTART.read_text().replace("sampleOs: debian-12", "").replace("base:", "base: scratch")
    )
    assert config.loads(doc, Forge).images[0].base == ScratchBase()
    assert config.unstructure(ScratchBase()) == "scratch"
    img = config.loads(doc, Forge).images[0]
    assert config.loads(config.dump(img), type(img)) == img


def test_all_problems_of_a_list_at_once() -> None:
    data = {"name": "p", "version": "1.0.0", "packs": [{"name": "a"}, {"layer": 1}, "x"]}
    with pytest.raises(ConfigError) as e:
        config.structure(data, ClusterProfile)
    assert [p.path for p in e.value.problems] == [
        "$.packs[0].layer",
        "$.packs[0].version",
        "$.packs[1].name",
        "$.packs[1].layer",
        "$.packs[1].version",
        "$.packs[2]",
    ]


def test_json_has_no_lines() -> None:
    with pytest.raises(ConfigError) as e:
        config.loads('{"name": 1}', Site, format="json", source="s.json")
    assert e.value.problems == (
        Problem("$.name", 'expected a string, got the number 1; quote it ("1")', None, "s.json"),
    )


def test_json_syntax_error() -> None:
    with pytest.raises(ConfigError) as e:
        config.loads('{"name":\n }', Site, format="json")
    assert e.value.problems[0].line == 2
    assert "invalid JSON" in e.value.problems[0].message


def test_duplicate_yaml_key() -> None:
    with pytest.raises(ConfigError) as e:
        config.loads("name: a\nname: b\n", Site)
    assert e.value.problems[0].line == 2
    assert "duplicate" in e.value.problems[0].message


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.load("/nonexistent/edgeforge.yaml")


# --- kinds -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        ({"kind": "Forge"}, "forge"),
        ({"images": []}, "forge"),
        ({"stylus": {}}, "user-data"),
        ({"controlPlane": {}}, "cluster"),
        ({"packs": []}, "profile"),
        ({"layer": "os"}, "pack"),
        ({"uid": "x"}, "host"),
        ({"name": "x", "network": {}}, "site"),
        ({"kind": "EdgeHost"}, "host"),
    ],
)
def test_detect_kind(data: dict[str, object], kind: str) -> None:
    assert config.detect_kind(data) == kind
    assert kind in config.KINDS


def test_detect_kind_errors() -> None:
    with pytest.raises(ConfigError, match="did you mean 'Cluster'"):
        config.detect_kind({"kind": "Clustr"})
    with pytest.raises(ConfigError, match="cannot tell what kind"):
        config.detect_kind({"name": "x"})


def test_detect_kind_of_file() -> None:
    assert config.detect_kind_of_file(QUICKSTART) == "forge"
    assert config.detect_kind_of_file(ROOT / "examples" / "user-data.yaml") == "user-data"


def test_kind_checked_against_class() -> None:
    with pytest.raises(ConfigError) as e:
        config.loads("kind: Site\nname: x\n", Cluster)
    assert problems(e)[0] == ("$.kind", "expected kind 'Cluster', got 'Site'", 1)


def test_load_without_class_uses_kind() -> None:
    assert isinstance(config.loads("kind: Site\nname: store-1\n"), Site)
    assert isinstance(config.loads("name: n\nlayer: os\nversion: '1'\n"), Pack)


# --- secrets -----------------------------------------------------------------------------


def test_secrets_redacted_unless_revealed() -> None:
    token = RegistrationToken("t", Secret("hunter2"), project="p")
    assert config.unstructure(token)["value"] == "***"
    assert "hunter2" not in config.dump(token)
    assert "hunter2" not in config.dump(token, "json")
    assert config.unstructure(token, reveal_secrets=True)["value"] == "hunter2"
    text = config.dump(token, reveal_secrets=True)
    assert config.loads(text, RegistrationToken) == token


def test_redacted_secret_does_not_load() -> None:
    with pytest.raises(ConfigError, match="redacted"):
        config.loads(config.dump(RegistrationToken("t", Secret("x"))), RegistrationToken)


def test_token_value_not_in_errors() -> None:
    with pytest.raises(ConfigError) as e:
        config.structure({"name": "bad name", "value": "hunter2", "maxHosts": 0}, RegistrationToken)
    assert "hunter2" not in str(e.value)


# --- dumps ---------------------------------------------------------------------------------


def test_camel_case_keys_and_defaults_omitted() -> None:
    forge = config.load(QUICKSTART, Forge)
    data = config.unstructure(forge)
    assert data["images"][0]["customTag"] == "quickstart"
    assert "volumeLabel" not in data["iso"]  # the default is not written
    json.dumps(data)  # plain JSON types only


def test_dump_file_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "site.yaml"
    target.write_text("old\n")

    class Boom:
        pass

    with pytest.raises(Exception):  # noqa: B017, PT011 - any failure must leave the old file
        config.dump_file(Boom(), target)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["site.yaml"]
    config.dump_file(Site("store-1"), target)
    assert config.load(target, Site) == Site("store-1")


def test_user_data_file_has_header(tmp_path: Path) -> None:
    path = config.dump_file(parse_user_data("install: {poweroff: true}\n"), tmp_path / "ud.yaml")
    assert path.read_text().startswith("#cloud-config\n")


def test_inline_user_data_checked_in_place() -> None:
    doc = QUICKSTART.read_text().replace("poweroff: true", "poweroff: 1\n      reboot: yes")
    with pytest.raises(ConfigError) as e:
        config.loads(doc, Forge, source="edgeforge.yaml")
    got = [(p.path, p.line) for p in e.value.problems]
    assert got == [("$.iso.userData.install.poweroff", 53), ("$.iso.userData.install.reboot", 54)]
    assert "expected true or false, got the number 1" in e.value.problems[0].message


def test_inline_user_data_refuses_a_token() -> None:
    doc = QUICKSTART.read_text().replace(
        "  userData:\n", "  userData:\n    stylus: {site: {edgeHostToken: s3cret}}\n"
    )
    with pytest.raises(ConfigError) as e:
        config.loads(doc, Forge)
    (p,) = e.value.problems
    assert p.path == "$.iso.userData.stylus.site.edgeHostToken"
    assert "registration.tokenEnv" in p.message
    assert "s3cret" not in str(e.value)


def test_documents_carry_kind() -> None:
    text = config.dump(Site("store-1"))
    assert text.startswith("apiVersion: edgekit/v1\nkind: Site\n")
    assert config.loads(text) == Site("store-1")
    assert "kind" not in config.dump(UserData())


def test_parse_values() -> None:
    assert config.parse_values("") == {}
    assert config.parse_values("a: {b: 1}\n") == {"a": {"b": 1}}
