"""Cluster rules: control-plane sizes, pools, VIP, overlay, and host checks."""

from __future__ import annotations

import attrs
import pytest

from edgekit.model import (
    Arch,
    Cluster,
    ClusterProfile,
    EdgeHost,
    HostState,
    ModelValueError,
    Pack,
    Pool,
    PoolHost,
    ProfileRef,
    UpdateStrategy,
)

REF = ProfileRef("retail", "1.0.0")


def pool(name: str, *uids: str, ips: tuple[str, ...] = (), arch: Arch = Arch.AMD64) -> Pool:
    hosts = tuple(
        PoolHost(uid, static_ip=ips[i] if i < len(ips) else None) for i, uid in enumerate(uids)
    )
    return Pool(name, hosts, arch=arch)


def cluster(cp: Pool, *workers: Pool, **kw: object) -> Cluster:
    return Cluster("store-1", REF, cp, workers, **kw)  # type: ignore[arg-type]


def test_single_node_constructor() -> None:
    profile = ClusterProfile("retail", "1.0.0", (Pack.os("o", "1"), Pack.k8s("k", "1.30.4")))
    host = EdgeHost("h1", arch=Arch.ARM64)
    c = Cluster.single_node("store-1", profile, host, ntp_servers=("pool.ntp.org",))
    assert c.profile == REF
    assert c.control_plane.size == 1
    assert c.control_plane.arch is Arch.ARM64
    assert c.control_plane.hosts[0].uid == "h1"
    assert c.ntp_servers == ("pool.ntp.org",)
    assert c.control_plane.update_strategy is UpdateStrategy.ROLLING_UPDATE_SCALE_OUT


@pytest.mark.parametrize("n", [1, 3, 5])
def test_odd_control_planes(n: int) -> None:
    uids = [f"h{i}" for i in range(n)]
    vip = "10.0.0.100" if n > 1 else None
    assert cluster(pool("cp", *uids), vip=vip).control_plane.size == n


def test_even_control_plane_rejected() -> None:
    with pytest.raises(ModelValueError, match=r"4 control-plane hosts: use 1 or an odd number"):
        cluster(pool("cp", "a", "b", "c", "d"), vip="10.0.0.1")


def test_two_nodes_need_two_node() -> None:
    with pytest.raises(ModelValueError, match=r"2 control-plane hosts need two-node mode"):
        cluster(pool("cp", "a", "b"), vip="10.0.0.1")
    assert cluster(pool("cp", "a", "b"), vip="10.0.0.1", two_node=True).two_node
    with pytest.raises(ModelValueError, match=r"two-node mode needs exactly 2 control-plane hosts"):
        cluster(pool("cp", "a"), two_node=True)


def test_vip_required_for_multi_node() -> None:
    with pytest.raises(ModelValueError) as e:
        cluster(pool("cp", "a", "b", "c"))
    assert e.value.problems == ((("vip",), "Cluster.vip: required for a control plane of 3 hosts"),)


def test_vip_inside_static_subnet() -> None:
    ips = ("10.0.10.21/24", "10.0.10.22/24", "10.0.10.23/24")
    assert cluster(pool("cp", "a", "b", "c", ips=ips), vip="10.0.10.100").vip == "10.0.10.100"
    with pytest.raises(ModelValueError, match=r"10.0.11.100 is outside a's subnet 10.0.10.0/24"):
        cluster(pool("cp", "a", "b", "c", ips=ips), vip="10.0.11.100")


def test_host_in_one_pool_only() -> None:
    with pytest.raises(ModelValueError, match=r"host 'b' is in pools 'w1' and 'w2'"):
        cluster(pool("cp", "a"), pool("w1", "b"), pool("w2", "b"))


def test_pool_names_unique() -> None:
    with pytest.raises(ModelValueError, match=r"pool name 'w' is used more than once"):
        cluster(pool("cp", "a"), pool("w", "b"), pool("w", "c"))


def test_pool_rules() -> None:
    with pytest.raises(ModelValueError, match=r"a pool needs at least one host"):
        Pool("p", ())
    with pytest.raises(ModelValueError, match=r"host 'a' is listed more than once"):
        pool("p", "a", "a")
    assert pool("p", "a", "b").size == 2


def test_overlay_and_static_ip() -> None:
    with pytest.raises(ModelValueError, match=r"Cluster.overlay_cidr: '100.64.0.0/33'"):
        cluster(pool("cp", "a"), overlay_cidr="100.64.0.0/33")
    assert cluster(pool("cp", "a"), overlay_cidr="100.64.192.0/23").overlay_cidr
    with pytest.raises(ModelValueError, match=r"PoolHost.static_ip: '10.0.0.1' needs a prefix"):
        PoolHost("a", static_ip="10.0.0.1")


def test_problems_reported_together() -> None:
    with pytest.raises(ModelValueError) as e:
        Cluster("Bad_Name", REF, pool("cp", "a", "b", "c", "d"), overlay_cidr="x")
    assert [p for p, _ in e.value.problems] == [
        ("name",),
        ("control_plane",),
        ("vip",),
        ("overlay_cidr",),
    ]


def test_evolve() -> None:
    c = cluster(pool("cp", "a"))
    c2 = attrs.evolve(c, workers=(pool("w", "b"),))
    assert [p.name for p in c2.pools] == ["cp", "w"]


def test_check_hosts() -> None:
    c = cluster(pool("cp", "a"), pool("w", "b", "c", "d", arch=Arch.ARM64))
    hosts = {
        "a": EdgeHost("a", state=HostState.READY),
        "b": EdgeHost("b", arch=Arch.ARM64, state=HostState.IN_USE),
        "c": EdgeHost("c", arch=Arch.AMD64),
    }
    problems = c.check_hosts(hosts)
    assert [(p.path, p.message) for p in problems] == [
        ("$.workers[0].hosts[0].uid", "host 'b' is in_use; it must be registered or ready"),
        (
            "$.workers[0].hosts[1].uid",
            "host 'c' is amd64 but pool 'w' is arm64; a pool has one architecture",
        ),
        ("$.workers[0].hosts[2].uid", "host 'd' is not registered"),
    ]
    assert cluster(pool("cp", "a")).check_hosts(hosts) == []
