"""Where each Kubernetes distribution expects its binaries and configuration.

:func:`kubernetes_layer` turns a distribution name, version, source (file or directory)
and pack values into a :class:`~edgekit_oci.layers.LayerSpec`. An agent hook adds the
edgekit agent's entries to the same layer (the agent arrives later).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from edgekit.errors import BuildError

from .layers import (
    Compression,
    ContentEntry,
    FileEntry,
    LayerEntry,
    LayerSpec,
    TreeEntry,
)

__all__ = ["KNOWN_DISTRIBUTIONS", "AgentHook", "kubernetes_entries", "kubernetes_layer"]

#: Gets (distribution, version) and returns extra entries for the edgekit agent.
AgentHook = Callable[[str, str], Sequence[LayerEntry]]

_VERSION_RE = re.compile(r"^v?\d+\.\d+\.\d+([-+][0-9A-Za-z.+-]+)?$")
_KUBEADM_BINARIES = ("kubeadm", "kubelet", "kubectl")


def _render_yaml(values: Mapping[str, Any]) -> bytes:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    buf = io.StringIO()
    yaml.dump(_plain(values), buf)
    return buf.getvalue().encode()


def _plain(value: Any) -> Any:
    """Mappings and sequences as dicts and lists, so any Mapping renders as YAML."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _single_binary(name: str, source: Path, dest_dir: str) -> list[LayerEntry]:
    """``source`` is the binary itself, or a directory that holds it."""
    path = source / name if source.is_dir() else source
    if not path.is_file():
        raise BuildError(
            f"{name} source {source}: expected the {name} binary or a directory with it"
        )
    return [FileEntry(path, f"{dest_dir}/{name}", mode=0o755)]


def _k3s(version: str, source: Path, values: Mapping[str, Any]) -> list[LayerEntry]:
    return [
        *_single_binary("k3s", source, "/usr/local/bin"),
        ContentEntry(_render_yaml(values), "/etc/rancher/k3s/config.yaml", mode=0o600),
    ]


def _rke2(version: str, source: Path, values: Mapping[str, Any]) -> list[LayerEntry]:
    # rke2's tarball unpacks to bin/, lib/, share/; installs with INSTALL_RKE2_TAR_PREFIX
    # put it under /opt/rke2 on read-only-/usr systems, which is what immutable images need.
    entries: list[LayerEntry]
    if source.is_dir():
        if not (source / "bin" / "rke2").is_file():
            raise BuildError(f"rke2 source {source}: expected bin/rke2 inside the directory")
        entries = [TreeEntry(source, "/opt/rke2")]
    else:
        entries = [FileEntry(source, "/opt/rke2/bin/rke2", mode=0o755)]
    entries.append(ContentEntry(_render_yaml(values), "/etc/rancher/rke2/config.yaml", mode=0o600))
    return entries


def _kubeadm(version: str, source: Path, values: Mapping[str, Any]) -> list[LayerEntry]:
    entries: list[LayerEntry] = []
    if source.is_dir():
        missing = [b for b in _KUBEADM_BINARIES if not (source / b).is_file()]
        if missing:
            raise BuildError(f"kubeadm source {source}: missing {', '.join(missing)}")
        entries += [FileEntry(source / b, f"/usr/bin/{b}", mode=0o755) for b in _KUBEADM_BINARIES]
    else:
        entries.append(FileEntry(source, f"/usr/bin/{source.name}", mode=0o755))
    config = {
        "apiVersion": "kubeadm.k8s.io/v1beta3",
        "kind": "ClusterConfiguration",
        "kubernetesVersion": "v" + version.removeprefix("v"),
        **_plain(values),
    }
    entries.append(ContentEntry(_render_yaml(config), "/etc/kubernetes/kubeadm-config.yaml"))
    return entries


_PLACERS: dict[str, Callable[[str, Path, Mapping[str, Any]], list[LayerEntry]]] = {
    "k3s": _k3s,
    "rke2": _rke2,
    "kubeadm": _kubeadm,
}
KNOWN_DISTRIBUTIONS: tuple[str, ...] = tuple(sorted(_PLACERS))


def kubernetes_entries(
    distribution: str,
    version: str,
    source: str | Path,
    values: Mapping[str, Any] | None = None,
    *,
    agent: AgentHook | None = None,
) -> list[LayerEntry]:
    """Layer entries placing ``distribution`` where it expects to live, plus agent entries."""
    placer = _PLACERS.get(distribution)
    if placer is None:
        raise BuildError(
            f"unknown Kubernetes distribution {distribution!r}; "
            f"known: {', '.join(KNOWN_DISTRIBUTIONS)}"
        )
    if not _VERSION_RE.match(version):
        raise BuildError(
            f"{distribution} version {version!r} is not a version like 1.30.4 or 1.30.4+k3s1"
        )
    src = Path(source)
    if not src.exists():
        raise BuildError(f"{distribution} source {src} does not exist")
    entries = placer(version, src, values or {})
    if agent is not None:
        entries.extend(agent(distribution, version))
    return entries


def kubernetes_layer(
    distribution: str,
    version: str,
    source: str | Path,
    values: Mapping[str, Any] | None = None,
    *,
    agent: AgentHook | None = None,
    compression: Compression = "gzip",
) -> LayerSpec:
    """A layer named ``kubernetes-<distribution>-<version>`` with :func:`kubernetes_entries`."""
    entries = kubernetes_entries(distribution, version, source, values, agent=agent)
    return LayerSpec(f"kubernetes-{distribution}-{version}", entries, compression=compression)
