"""The usual ``values: |`` form of a k8s pack reaches the Kubernetes configuration written
into the image (issue 15 item 4: it used to be dropped because text values were never
parsed). A real forge run with the built-in oci builder on a scratch base; the image is
unpacked with umoci, independent of edgekit, and the file read back. Nothing boots."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ruamel.yaml import YAML

from edgekit.forge import Forge
from edgekit.plugins.manager import PluginManager

FORGE = """\
name: values
backends: {publisher: oras}
profiles:
  - name: p
    version: 1.0.0
    packs:
      - {name: os, layer: os, version: "1"}
      - name: edge-k3s
        layer: k8s
        version: "1.30.4"
        source: {path: ./k3s}
        values: |
          # as written in a Palette pack: text, with comments
          write-kubeconfig-mode: "0644"
          node-label:
            - edge=true
          disable: [traefik]
images:
  - name: img
    profile: p
    base: scratch
    os: {distribution: debian, version: "12"}
    kubernetes: {distribution: k3s, version: "1.30.4"}
    repo: edge/img
registry: {target: "oci:registry"}
"""


def test_text_values_of_the_k8s_pack_are_the_config_in_the_built_image(
    tmp_path: Path,
    umoci_unpack,  # type: ignore[no-untyped-def]
) -> None:
    (tmp_path / "k3s").write_text("#!/bin/sh\necho k3s stand-in\n")
    (tmp_path / "edgeforge.yaml").write_text(FORGE)
    plugins = PluginManager(disabled="")
    plugins.load_all()
    forge = Forge.load(tmp_path / "edgeforge.yaml", plugins=plugins)
    result = forge.run()

    manifest = json.loads(result.manifest_path.read_text())
    [built] = [a for a in manifest["artifacts"] if a["name"] == "provider-image/img"]
    rootfs = umoci_unpack(result.manifest_path.parent / built["path"], built["reference"])
    config = rootfs / "etc/rancher/k3s/config.yaml"
    assert YAML(typ="safe").load(config.read_text()) == {
        "write-kubeconfig-mode": "0644",
        "node-label": ["edge=true"],
        "disable": ["traefik"],
    }
    assert os.stat(config).st_mode & 0o777 == 0o600
