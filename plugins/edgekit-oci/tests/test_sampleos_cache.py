"""A cached sample OS tree is reused only when an edgekit-oci of the same tree format made
it: a tree from an older one (before the installer's disk tools) is assembled again."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from edgekit_oci import plugin, sampleos

from edgekit.plugins import BuildContext


def test_a_tree_of_an_older_format_is_assembled_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []

    def assemble(tree: Path, **_: object) -> SimpleNamespace:
        # Assembling (downloading Debian packages) is tested in test_sampleos.py; here only
        # whether the cache decides to do it counts.
        calls.append(tree)
        tree.mkdir(parents=True)
        (tree / "fresh").write_text("new tree")
        return SimpleNamespace(kernel_version="6.1.0-test", packages={"busybox-static": "1"})

    monkeypatch.setattr(sampleos, "assemble_sample_os", assemble)
    ctx = BuildContext(base_dir=tmp_path, output_dir=tmp_path, cache_dir=tmp_path / "cache")
    tree = ctx.cache_dir / "sample-os" / "debian-12-amd64"
    tree.mkdir(parents=True)
    (tree / "stale").write_text("from an older edgekit-oci")
    (tree / plugin.SAMPLE_OS_MARKER).write_text(json.dumps({"kernel": "6.1.0-old"}))

    assert plugin._sample_os_tree("debian-12", "amd64", ctx) == tree
    assert calls == [tree]
    assert not (tree / "stale").exists()
    marker = json.loads((tree / plugin.SAMPLE_OS_MARKER).read_text())
    assert marker["format"] == plugin.SAMPLE_OS_FORMAT

    plugin._sample_os_tree("debian-12", "amd64", ctx)  # now current: reused
    assert calls == [tree]
