"""Property tests: unstructure -> structure, and dump -> load, are the identity."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekit import config
from edgekit.errors import ConfigError
from edgekit.model import (
    Arch,
    Backends,
    BootEntry,
    Cluster,
    ClusterProfile,
    Compression,
    EdgeHost,
    Forge,
    HostState,
    ImageSpec,
    Interface,
    IsoSpec,
    K8sDistribution,
    KubernetesMatrix,
    Layer,
    LayoutBase,
    Network,
    OsSpec,
    Overlay,
    Pack,
    PackSource,
    Pool,
    PoolHost,
    ProfileRef,
    RefBase,
    Registration,
    RegistrationToken,
    RegistrySpec,
    SampleOsBase,
    ScratchBase,
    Secret,
    Site,
    Taint,
    TaintEffect,
    TokenState,
    UpdateStrategy,
    UserData,
)

# --- building blocks ---------------------------------------------------------------------

names = st.from_regex(r"\A[a-z][a-z0-9-]{0,10}[a-z0-9]\Z")
values_text = (st.builds(lambda k, v: f"{k}: {v}\n", names, names) | st.just("")).map(
    config.values_from_text
)
# Lone surrogates and control characters are refused in every string (docs/bad-input.md).
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)
versions = st.builds(
    lambda a, b, c: f"{a}.{b}.{c}", st.integers(0, 40), st.integers(0, 40), st.integers(0, 40)
)
semver = versions
labels = st.dictionaries(names, text, max_size=3)
paths = st.from_regex(r"\A\./[a-z]{1,8}(/[a-z]{1,8})?\Z")
abs_paths = st.from_regex(r"\A/[a-z]{1,8}(/[a-z]{1,8})?\Z")
oci_refs = st.builds(lambda r, t: f"ghcr.io/{r}:{t}", names, names)
hexes = st.from_regex(r"\A[0-9a-f]{64}\Z")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**9), 10**9) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=6,
)

sources = st.one_of(
    st.builds(PackSource.from_url, st.builds(lambda n: f"https://example.com/{n}", names), hexes),
    st.builds(PackSource.from_path, paths),
    st.builds(PackSource.from_oci, oci_refs, st.none() | paths),
)


@st.composite
def profiles(draw: st.DrawFn) -> ClusterProfile:
    n_extra = draw(st.integers(0, 3))
    pack_names = draw(st.lists(names, min_size=2 + n_extra, max_size=2 + n_extra, unique=True))
    layers = [Layer.OS, Layer.K8S] + [
        draw(st.sampled_from([Layer.CNI, Layer.CSI, Layer.ADDON])) for _ in range(n_extra)
    ]
    packs = tuple(
        Pack(
            name=n,
            layer=layer,
            version=draw(versions),
            source=draw(st.none() | sources),
            registry=draw(st.none() | names),
            # Values as YAML text must spell a mapping (checked when loaded); kept as text.
            values=draw(values_text | st.dictionaries(names, json_values, max_size=3)),
        )
        for n, layer in zip(pack_names, draw(st.permutations(layers)), strict=True)
    )
    return ClusterProfile(draw(names), draw(semver), packs, draw(text))


bases = st.one_of(
    st.just(ScratchBase()),
    st.builds(LayoutBase, paths, names),
    st.builds(RefBase, oci_refs),
    st.just(SampleOsBase("debian-12")),
)
arches = st.lists(st.sampled_from(Arch), min_size=1, max_size=2, unique=True).map(tuple)


@st.composite
def image_specs(draw: st.DrawFn, profile: str) -> ImageSpec:
    dist = draw(st.sampled_from(K8sDistribution))
    if draw(st.booleans()):
        k8s = KubernetesMatrix(dist, version=draw(versions))
    else:
        k8s = KubernetesMatrix(
            dist, versions=tuple(draw(st.lists(versions, min_size=1, max_size=3, unique=True)))
        )
    return ImageSpec(
        name=draw(names),
        profile=profile,
        os=OsSpec(draw(names), draw(versions)),
        kubernetes=k8s,
        arch=draw(arches),
        base=draw(bases),
        overlays=tuple(draw(st.lists(st.builds(Overlay, paths, abs_paths), max_size=2))),
        remove=tuple(draw(st.lists(abs_paths, max_size=2))),
        registry=draw(names),
        repo=draw(names),
        custom_tag=draw(st.just("") | names),
        compression=draw(st.sampled_from(Compression)),
        labels=draw(labels),
    )


interfaces = st.one_of(
    st.just(Interface.dhcp()),
    st.builds(
        lambda a, b, gw: Interface.static(f"10.{a}.{b}.5/24", f"10.{a}.{b}.1" if gw else None),
        st.integers(0, 255),
        st.integers(0, 255),
        st.booleans(),
    ),
)
ips = st.builds(lambda a, b: f"10.0.{a}.{b}", st.integers(0, 255), st.integers(1, 254))
networks = st.builds(
    Network,
    http_proxy=st.none() | st.just("http://proxy:3128"),
    https_proxy=st.none() | st.just("https://proxy:3128"),
    no_proxy=st.none() | st.just("10.0.0.0/8"),
    ntp_servers=st.lists(names, max_size=2).map(tuple),
    dns_servers=st.lists(ips, max_size=2).map(tuple),
    interfaces=st.dictionaries(names, interfaces, max_size=2),
)
sites = st.builds(Site, names, labels, networks)


@st.composite
def forges(draw: st.DrawFn) -> Forge:
    profs = draw(st.lists(profiles(), min_size=1, max_size=2, unique_by=lambda p: p.name))
    imgs = draw(
        st.lists(
            image_specs(profs[0].name),
            max_size=2,
            unique_by=lambda i: i.name,
        )
    )
    iso = None
    if imgs and draw(st.booleans()):
        iso = IsoSpec(
            name=draw(names),
            image=imgs[0].name,
            volume_label=draw(st.from_regex(r"\A[A-Z0-9_]{1,32}\Z")),
            arch=imgs[0].arch[0],
            user_data=draw(
                st.none()
                | paths
                | st.just(config.structure({"install": {"poweroff": True}, "xKept": [1]}, UserData))
            ),
            content_bundles=tuple(draw(st.lists(paths, max_size=2))),
            default_entry=draw(st.sampled_from(BootEntry)),
        )
    try:
        return Forge(
            name=draw(names),
            output=draw(paths),
            backends=Backends(draw(names), draw(names), draw(names), draw(names)),
            profiles=tuple(profs),
            images=tuple(imgs),
            iso=iso,
            sites=tuple(draw(st.lists(sites, max_size=2, unique_by=lambda s: s.name))),
            site_inventory=draw(st.none() | paths),
            registry=draw(
                st.just(RegistrySpec())
                | st.builds(RegistrySpec, st.just("127.0.0.1:5000/edgekit"), st.booleans())
            ),
            registration=draw(
                st.none() | st.builds(Registration, st.just("http://10.0.2.2:8080"), names)
            ),
        )
    except ValueError:
        # e.g. two matrix entries expanding to one name: not a valid forge, draw another.
        from hypothesis import reject

        reject()


@st.composite
def clusters(draw: st.DrawFn) -> Cluster:
    uids = draw(st.lists(names, min_size=1, max_size=6, unique=True))
    cp_size = draw(st.sampled_from([n for n in (1, 2, 3, 5) if n <= len(uids)]))
    subnet = draw(st.integers(0, 200))

    def pool(name: str, members: list[str]) -> Pool:
        hosts = tuple(
            PoolHost(
                u,
                static_ip=f"10.1.{subnet}.{i + 10}/24" if draw(st.booleans()) else None,
                name=draw(st.none() | names),
                nic=draw(st.none() | st.just("eth0")),
            )
            for i, u in enumerate(members)
        )
        return Pool(
            name,
            hosts,
            arch=draw(st.sampled_from(Arch)),
            labels=draw(labels),
            taints=tuple(
                draw(
                    st.lists(
                        st.builds(Taint, names, st.sampled_from(TaintEffect), text), max_size=2
                    )
                )
            ),
            update_strategy=draw(st.sampled_from(UpdateStrategy)),
        )

    rest = uids[cp_size:]
    workers = (pool("workers", rest),) if rest else ()
    return Cluster(
        name=draw(names),
        profile=ProfileRef(draw(names), draw(semver)),
        control_plane=pool("control-plane", uids[:cp_size]),
        workers=workers,
        pack_overrides=draw(
            st.dictionaries(names, st.dictionaries(names, json_values, max_size=2), max_size=2)
        ),
        vip=f"10.1.{subnet}.250"
        if cp_size > 1
        else draw(st.none() | st.just(f"10.1.{subnet}.250")),
        two_node=cp_size == 2,
        overlay_cidr=draw(st.none() | st.just("100.64.192.0/23")),
        ssh_keys=tuple(draw(st.lists(text, max_size=2))),
        ntp_servers=tuple(draw(st.lists(names, max_size=2))),
    )


hosts = st.builds(
    EdgeHost,
    uid=names,
    name=names,
    site=st.none() | names,
    arch=st.sampled_from(Arch),
    mac=st.none() | st.from_regex(r"\A([0-9a-f]{2}:){5}[0-9a-f]{2}\Z"),
    address=st.none() | ips,
    labels=labels,
    state=st.sampled_from(HostState),
)
tokens = st.builds(
    RegistrationToken,
    name=names,
    value=st.builds(Secret, text.filter(bool)),
    project=names,
    site=st.none() | names,
    expires_at=st.none()
    | st.datetimes(
        timezones=st.just(UTC), min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)
    ),
    max_hosts=st.none() | st.integers(1, 10_000),
    state=st.sampled_from(TokenState),
)

ANY_OBJECT = st.one_of(forges(), profiles(), clusters(), sites, hosts, tokens)
# EDGEKIT_HYPOTHESIS_EXAMPLES=1000 for a thorough run; the default keeps CI quick.
SETTINGS = settings(
    max_examples=int(os.environ.get("EDGEKIT_HYPOTHESIS_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def identity(obj: Any) -> None:
    data = config.unstructure(obj, reveal_secrets=True)
    assert config.structure(data, type(obj)) == obj


@SETTINGS
@given(ANY_OBJECT)
def test_unstructure_structure_identity(obj: Any) -> None:
    identity(obj)


@SETTINGS
@given(ANY_OBJECT)
def test_yaml_and_json_round_trip(obj: Any) -> None:
    for fmt in ("yaml", "json"):
        text_ = config.dump(obj, fmt, reveal_secrets=True)  # type: ignore[arg-type]
        assert config.loads(text_, type(obj), format=fmt) == obj  # type: ignore[arg-type]


# --- robustness: a damaged document gives a ConfigError, never a crash -----------------------


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        out = [path] if path else []
        for k, v in node.items():
            out += _leaves(v, (*path, k))
        return out
    if isinstance(node, list):
        out = [path]
        for i, v in enumerate(node):
            out += _leaves(v, (*path, i))
        return out
    return [path]


@SETTINGS
@given(st.one_of(forges(), clusters(), profiles()), st.data())
def test_damaged_documents_give_config_errors(obj: Any, data: st.DataObject) -> None:
    doc = config.unstructure(obj, reveal_secrets=True)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _leaves(doc)
        if not paths:
            break
        where = data.draw(st.sampled_from(paths))
        node = doc
        for p in where[:-1]:
            node = node[p]
        node[where[-1]] = data.draw(json_values | st.just("x") | st.just([]))
    problems: tuple[Any, ...] = ()
    try:
        config.structure(doc, type(obj))
    except ConfigError as e:  # anything else escaping is a bug
        problems = tuple(e.problems)
        assert problems
    assert all(p.path.startswith("$") for p in problems)
