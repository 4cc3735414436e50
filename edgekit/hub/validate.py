"""Request bodies checked against the core model (:mod:`edgekit.model`), problems at JSON paths.

The server first checks JSON types (a string where a string belongs); then it builds the
model objects, whose own rules (names, MACs, addresses, VIP, pool sizes, architectures,
host availability) are reported with the path of the request field that broke them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from edgekit.errors import Problem
from edgekit.model import (
    Arch,
    Cluster,
    EdgeHost,
    HostState,
    ModelValueError,
    Pool,
    PoolHost,
    ProfileRef,
    RegistrationToken,
    Secret,
    Taint,
    TaintEffect,
    UpdateStrategy,
)

__all__ = ["ClusterPlan", "check_cluster", "check_host", "check_token", "edge_host"]


def _problems(exc: ModelValueError, paths: Mapping[str, str], default: str) -> list[Problem]:
    """A model error's problems, each at the request path of the attribute it names."""
    out = []
    for sub, message in exc.problems:
        out.append(Problem(paths.get(str(sub[0]), default), message))
    return out


def check_host(
    *,
    uid: str,
    site: str | None,
    arch: str,
    mac: str | None,
    address: str | None,
    tags: Mapping[str, str],
) -> tuple[EdgeHost | None, list[Problem]]:
    """A registering host as a model :class:`EdgeHost` (MAC normalised), or its problems."""
    problems: list[Problem] = []
    try:
        arch_value = Arch(arch)
    except ValueError:
        choices = ", ".join(a.value for a in Arch)
        problems.append(Problem("$.arch", f"{arch!r} is not one of {choices}"))
        arch_value = Arch.AMD64  # to check the other fields too
    try:
        host = EdgeHost(
            uid=uid, site=site, arch=arch_value, mac=mac, address=address, labels=dict(tags)
        )
    except ModelValueError as exc:
        paths = {
            "uid": "$.hostUid",
            "site": "$.site",
            "mac": "$.macAddress",
            "address": "$.hostAddress",
            "labels": "$.tags",
        }
        problems += _problems(exc, paths, "$")
        return None, problems
    return (None if problems else host), problems


def check_token(
    *,
    name: str,
    project: str | None,
    site: str | None,
    expires_at: datetime,
    max_hosts: int | None,
) -> list[Problem]:
    """Problems the model's :class:`RegistrationToken` finds in a token to create."""
    try:
        RegistrationToken(
            name=name,
            value=Secret("placeholder"),  # the real secret is made after validation
            project=project or "default",
            site=site,
            expires_at=expires_at,
            max_hosts=max_hosts,
        )
    except ModelValueError as exc:
        paths = {
            "name": "$.metadata.name",
            "project": "$.spec.defaultProjectUid",
            "site": "$.spec.site",
            "expires_at": "$.spec.expiry",
            "max_hosts": "$.spec.maxHosts",
        }
        return _problems(exc, paths, "$.spec")
    return []


def edge_host(
    uid: str,
    *,
    site: str | None,
    arch: str | None,
    mac: str | None,
    address: str | None,
    tags: Mapping[str, str],
    state: str,
) -> EdgeHost:
    """A stored host as a model :class:`EdgeHost` (stored hosts were validated on entry)."""
    return EdgeHost(
        uid=uid,
        site=site,
        arch=Arch(arch) if arch else Arch.AMD64,
        mac=mac,
        address=address,
        labels=dict(tags),
        state=HostState(state),
    )


@attrs.frozen
class ClusterPlan:
    """A validated cluster and, per model pool, the index of its ``machinePoolConfig`` entry."""

    cluster: Cluster
    pool_index: tuple[int, ...]


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _type(
    problems: list[Problem], path: str, value: Any, kind: type | tuple[type, ...], what: str
) -> bool:
    """Record a problem unless ``value`` is None or of ``kind``; True when it is usable."""
    if value is None:
        return False
    if (isinstance(value, bool) and kind is int) or not isinstance(value, kind):
        problems.append(Problem(path, f"must be {what}"))
        return False
    return True


_POOL_PATHS = {
    "name": "poolConfig.name",
    "hosts": "cloudConfig.edgeHosts",
    "arch": "poolConfig.archType",
    "labels": "poolConfig.labels",
    "taints": "poolConfig.taints",
    "update_strategy": "poolConfig.updateStrategy.type",
}
_HOST_PATHS = {"uid": "hostUid", "static_ip": "staticIP", "name": "hostName", "nic": "nicName"}
_CHECK_PATH = re.compile(r"^\$\.(controlPlane|workers\[(\d+)\])\.hosts\[(\d+)\]\.uid$")


def _pool(raw: Any, path: str, problems: list[Problem]) -> tuple[Pool | None, bool]:
    """One ``machinePoolConfig`` entry as a model Pool, and whether it is the control plane."""
    if not isinstance(raw, dict):
        problems.append(Problem(path, "must be an object"))
        return None, False
    before = len(problems)
    cfg = raw.get("poolConfig")
    if not isinstance(cfg, dict):
        problems.append(Problem(f"{path}.poolConfig", "is required (an object)"))
        cfg = {}
    name = cfg.get("name")
    if name is None:
        problems.append(Problem(f"{path}.poolConfig.name", "is required"))
    _type(problems, f"{path}.poolConfig.name", name, str, "a string")
    control_plane = cfg.get("isControlPlane", False)
    _type(problems, f"{path}.poolConfig.isControlPlane", control_plane, bool, "true or false")
    arch_text = cfg.get("archType", "amd64")
    arch = Arch.AMD64
    if _type(problems, f"{path}.poolConfig.archType", arch_text, str, "a string"):
        try:
            arch = Arch(arch_text)
        except ValueError:
            problems.append(
                Problem(
                    f"{path}.poolConfig.archType", f"must be one of amd64, arm64, not {arch_text!r}"
                )
            )
    labels = cfg.get("labels") or {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        problems.append(Problem(f"{path}.poolConfig.labels", "must be an object of strings"))
        labels = {}
    strategy = UpdateStrategy.ROLLING_UPDATE_SCALE_OUT
    strategy_text = _get(cfg, "updateStrategy", "type")
    if _type(problems, f"{path}.poolConfig.updateStrategy.type", strategy_text, str, "a string"):
        try:
            strategy = UpdateStrategy(strategy_text)
        except ValueError:
            choices = ", ".join(s.value for s in UpdateStrategy)
            problems.append(
                Problem(f"{path}.poolConfig.updateStrategy.type", f"must be one of {choices}")
            )
    taints: list[Taint] = []
    raw_taints = cfg.get("taints") or []
    if not isinstance(raw_taints, list):
        problems.append(Problem(f"{path}.poolConfig.taints", "must be a list"))
        raw_taints = []
    for t, raw_taint in enumerate(raw_taints):
        tpath = f"{path}.poolConfig.taints[{t}]"
        key, effect, value = (_get(raw_taint, k) for k in ("key", "effect", "value"))
        if not isinstance(key, str) or not isinstance(effect, str):
            problems.append(Problem(tpath, "needs a string key and effect"))
            continue
        try:
            taints.append(Taint(key, TaintEffect(effect), value if isinstance(value, str) else ""))
        except ValueError:
            choices = ", ".join(e.value for e in TaintEffect)
            problems.append(Problem(f"{tpath}.effect", f"must be one of {choices}"))
    edge_hosts = _get(raw, "cloudConfig", "edgeHosts")
    if not isinstance(edge_hosts, list) or not edge_hosts:
        problems.append(Problem(f"{path}.cloudConfig.edgeHosts", "must list the pool's hosts"))
        edge_hosts = []
    hosts: list[PoolHost] = []
    for h, entry in enumerate(edge_hosts):
        hpath = f"{path}.cloudConfig.edgeHosts[{h}]"
        if not isinstance(entry, dict):
            problems.append(Problem(hpath, "must be an object"))
            continue
        fields = {attr: entry.get(key) for attr, key in _HOST_PATHS.items()}
        if fields["uid"] is None:
            problems.append(Problem(f"{hpath}.hostUid", "is required"))
            continue
        if not all(_type(problems, f"{hpath}.{_HOST_PATHS[a]}", v, str, "a string") or v is None
                   for a, v in fields.items()):  # fmt: skip
            continue
        try:
            hosts.append(
                PoolHost(
                    uid=str(fields["uid"]),
                    static_ip=fields["static_ip"],
                    name=fields["name"],
                    nic=fields["nic"],
                )
            )
        except ModelValueError as exc:
            paths = {a: f"{hpath}.{k}" for a, k in _HOST_PATHS.items()}
            problems += _problems(exc, paths, hpath)
    size = cfg.get("size")
    if _type(problems, f"{path}.poolConfig.size", size, int, "an integer") and size != len(
        edge_hosts
    ):
        problems.append(
            Problem(
                f"{path}.poolConfig.size",
                f"is {size} but the pool lists {len(edge_hosts)} host(s)",
            )
        )
    if len(problems) > before:
        return None, bool(control_plane is True)
    assert isinstance(name, str)
    try:
        pool = Pool(
            name=name,
            hosts=tuple(hosts),
            arch=arch,
            labels=labels,
            taints=tuple(taints),
            update_strategy=strategy,
        )
    except ModelValueError as exc:
        paths = {a: f"{path}.{k}" for a, k in _POOL_PATHS.items()}
        problems += _problems(exc, paths, path)
        return None, bool(control_plane)
    return pool, bool(control_plane)


def check_cluster(
    body: Mapping[str, Any], lookup: Callable[[str], EdgeHost | None]
) -> tuple[ClusterPlan | None, list[Problem]]:
    """A Palette-shaped ``edge-native`` body as a model :class:`Cluster`, checked against the
    registered hosts (``lookup``); on any problem, None and every problem found."""
    problems: list[Problem] = []
    name = _get(body, "metadata", "name")
    if name is None:
        problems.append(Problem("$.metadata.name", "is required"))
    _type(problems, "$.metadata.name", name, str, "a string")
    spec = body.get("spec")
    if not isinstance(spec, dict):
        problems.append(Problem("$.spec", "is required (an object)"))
        return None, problems
    cloud = spec.get("cloudConfig") or {}
    if not isinstance(cloud, dict):
        problems.append(Problem("$.spec.cloudConfig", "must be an object"))
        cloud = {}
    vip = _get(cloud, "controlPlaneEndpoint", "host")
    _type(problems, "$.spec.cloudConfig.controlPlaneEndpoint.host", vip, str, "a string")
    two_node = cloud.get("isTwoNodeCluster", False)
    _type(problems, "$.spec.cloudConfig.isTwoNodeCluster", two_node, bool, "true or false")
    overlay = None
    if _get(cloud, "overlayNetworkConfiguration", "enable") is True:
        overlay = _get(cloud, "overlayNetworkConfiguration", "cidr")
        _type(problems, "$.spec.cloudConfig.overlayNetworkConfiguration.cidr", overlay, str,
              "a string")  # fmt: skip
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("sshKeys", "ntpServers"):
        value = cloud.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.append(Problem(f"$.spec.cloudConfig.{key}", "must be a list of strings"))
            value = []
        lists[key] = tuple(value)
    profile = None
    prof = spec.get("profile")
    if not isinstance(prof, dict) or not all(
        isinstance(prof.get(k), str) for k in ("name", "version")
    ):
        problems.append(Problem("$.spec.profile", "is required: {name, version} (strings)"))
    else:
        try:
            profile = ProfileRef(name=prof["name"], version=prof["version"])
        except ModelValueError as exc:
            paths = {"name": "$.spec.profile.name", "version": "$.spec.profile.version"}
            problems += _problems(exc, paths, "$.spec.profile")
    raw_pools = spec.get("machinePoolConfig")
    if not isinstance(raw_pools, list) or not raw_pools:
        problems.append(Problem("$.spec.machinePoolConfig", "must be a non-empty list of pools"))
        raw_pools = []
    control: list[tuple[int, Pool | None]] = []
    workers: list[tuple[int, Pool | None]] = []
    for p, raw in enumerate(raw_pools):
        pool, is_cp = _pool(raw, f"$.spec.machinePoolConfig[{p}]", problems)
        (control if is_cp else workers).append((p, pool))
    if raw_pools and len(control) != 1:
        problems.append(
            Problem(
                "$.spec.machinePoolConfig",
                f"needs exactly one pool with isControlPlane: true, found {len(control)}",
            )
        )
    if problems:
        return None, problems
    cp_index, cp_pool = control[0]
    assert cp_pool is not None
    assert profile is not None
    worker_pools = tuple(pool for _, pool in workers if pool is not None)
    try:
        cluster = Cluster(
            name=name,
            profile=profile,
            control_plane=cp_pool,
            workers=worker_pools,
            vip=vip,
            two_node=two_node,
            overlay_cidr=overlay,
            ssh_keys=lists["sshKeys"],
            ntp_servers=lists["ntpServers"],
        )
    except ModelValueError as exc:
        paths = {
            "name": "$.metadata.name",
            "vip": "$.spec.cloudConfig.controlPlaneEndpoint.host",
            "control_plane": f"$.spec.machinePoolConfig[{cp_index}].cloudConfig.edgeHosts",
            "workers": "$.spec.machinePoolConfig",
            "two_node": "$.spec.cloudConfig.isTwoNodeCluster",
            "overlay_cidr": "$.spec.cloudConfig.overlayNetworkConfiguration.cidr",
            "profile": "$.spec.profile",
        }
        return None, _problems(exc, paths, "$.spec")
    pool_index = (cp_index, *(i for i, _ in workers))
    hosts = {
        ph.uid: host
        for pool in cluster.pools
        for ph in pool.hosts
        if (host := lookup(ph.uid)) is not None
    }
    for problem in cluster.check_hosts(hosts):
        problems.append(attrs.evolve(problem, path=_body_path(problem.path, pool_index)))
    if problems:
        return None, problems
    return ClusterPlan(cluster, pool_index), []


def _body_path(model_path: str, pool_index: Sequence[int]) -> str:
    """``$.workers[0].hosts[1].uid`` (model) as ``$.spec.machinePoolConfig[2]...hostUid``."""
    match = _CHECK_PATH.match(model_path)
    if match is None:
        return model_path
    model_pool = 0 if match[2] is None else int(match[2]) + 1
    return (
        f"$.spec.machinePoolConfig[{pool_index[model_pool]}].cloudConfig"
        f".edgeHosts[{match[3]}].hostUid"
    )
