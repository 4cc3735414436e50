"""Kubernetes placement: each distribution's files land where it expects them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from edgekit_oci.image import ImageSpec, build_image
from edgekit_oci.kubernetes import KNOWN_DISTRIBUTIONS, kubernetes_entries, kubernetes_layer
from edgekit_oci.layers import ContentEntry, LayerEntry
from ruamel.yaml import YAML

from edgekit.errors import BuildError

VALUES = {"write-kubeconfig-mode": "0644", "node-label": ["edge=true"], "disable": ["traefik"]}


def _yaml(path: Path) -> object:
    return YAML(typ="safe").load(path.read_text())


def _binary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"#!/bin/sh\necho fake\n")
    path.chmod(0o644)  # placement must make it executable
    return path


def test_k3s_placement(tmp_path: Path, umoci_unpack) -> None:  # type: ignore[no-untyped-def]
    k3s = _binary(tmp_path / "dl" / "k3s-amd64")
    layer = kubernetes_layer("k3s", "1.30.4+k3s1", k3s, VALUES)
    assert layer.name == "kubernetes-k3s-1.30.4+k3s1"
    build_image(tmp_path / "img", "k3s", ImageSpec([layer]))
    rootfs = umoci_unpack(tmp_path / "img", "k3s")
    binary = rootfs / "usr/local/bin/k3s"
    assert binary.read_bytes() == k3s.read_bytes()
    assert os.stat(binary).st_mode & 0o777 == 0o755
    config = rootfs / "etc/rancher/k3s/config.yaml"
    assert _yaml(config) == VALUES
    assert os.stat(config).st_mode & 0o777 == 0o600


def test_rke2_placement_from_tarball_tree(tmp_path: Path, umoci_unpack) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "rke2"
    _binary(src / "bin" / "rke2").chmod(0o755)
    _binary(src / "share" / "rke2" / "rke2-cis-sysctl.conf")
    layer = kubernetes_layer("rke2", "v1.30.4+rke2r1", src, {"cni": "canal"})
    build_image(tmp_path / "img", "rke2", ImageSpec([layer]))
    rootfs = umoci_unpack(tmp_path / "img", "rke2")
    assert (rootfs / "opt/rke2/bin/rke2").is_file()
    assert (rootfs / "opt/rke2/share/rke2/rke2-cis-sysctl.conf").is_file()
    assert _yaml(rootfs / "etc/rancher/rke2/config.yaml") == {"cni": "canal"}


def test_kubeadm_placement(tmp_path: Path, umoci_unpack) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "bins"
    for name in ("kubeadm", "kubelet", "kubectl"):
        _binary(src / name)
    values = {"networking": {"podSubnet": "10.244.0.0/16"}}
    layer = kubernetes_layer("kubeadm", "1.30.4", src, values)
    build_image(tmp_path / "img", "kubeadm", ImageSpec([layer]))
    rootfs = umoci_unpack(tmp_path / "img", "kubeadm")
    for name in ("kubeadm", "kubelet", "kubectl"):
        assert os.stat(rootfs / "usr/bin" / name).st_mode & 0o777 == 0o755
    assert _yaml(rootfs / "etc/kubernetes/kubeadm-config.yaml") == {
        "apiVersion": "kubeadm.k8s.io/v1beta3",
        "kind": "ClusterConfiguration",
        "kubernetesVersion": "v1.30.4",
        "networking": {"podSubnet": "10.244.0.0/16"},
    }
    (src / "kubectl").unlink()
    with pytest.raises(BuildError, match="missing kubectl"):
        kubernetes_entries("kubeadm", "1.30.4", src)


def test_unknown_distribution_lists_known(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="unknown Kubernetes distribution 'nodeadm'") as info:
        kubernetes_entries("nodeadm", "1.30.0", tmp_path)
    for name in KNOWN_DISTRIBUTIONS:
        assert name in str(info.value)
    assert set(KNOWN_DISTRIBUTIONS) == {"k3s", "kubeadm", "rke2"}


def test_bad_version_and_missing_source(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="not a version"):
        kubernetes_entries("k3s", "latest", tmp_path)
    with pytest.raises(BuildError, match="does not exist"):
        kubernetes_entries("k3s", "1.30.4", tmp_path / "nope")
    with pytest.raises(BuildError, match="expected the k3s binary"):
        kubernetes_entries("k3s", "1.30.4", tmp_path)  # a directory without k3s


def test_agent_hook_adds_entries(tmp_path: Path, umoci_unpack) -> None:  # type: ignore[no-untyped-def]
    k3s = _binary(tmp_path / "k3s")
    seen: list[tuple[str, str]] = []

    def agent(distribution: str, version: str) -> list[LayerEntry]:
        seen.append((distribution, version))
        return [ContentEntry(b"agent", "/usr/local/bin/edgekit-agent", mode=0o755)]

    layer = kubernetes_layer("k3s", "1.30.4", k3s, agent=agent)
    assert seen == [("k3s", "1.30.4")]
    build_image(tmp_path / "img", "t", ImageSpec([layer]))
    rootfs = umoci_unpack(tmp_path / "img", "t")
    assert (rootfs / "usr/local/bin/edgekit-agent").read_bytes() == b"agent"
    assert _yaml(rootfs / "etc/rancher/k3s/config.yaml") == {}
