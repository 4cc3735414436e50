"""How a plugin author tests a backend with edgekit.testing (the fixtures load automatically)."""

from pathlib import Path

import edgekit_mirror

from edgekit.plugins import BuildContext
from edgekit.plugins.interfaces import RegistryOptions


def test_mirror_publisher_copies_artifacts(edgekit_plugins, register_plugin, tmp_path: Path):
    register_plugin(edgekit_mirror, name="mirror")
    publisher = edgekit_plugins.publisher("mirror")
    iso = tmp_path / "site.iso"
    iso.write_bytes(b"\0" * 4096)
    ctx = BuildContext(base_dir=tmp_path, output_dir=tmp_path, cache_dir=tmp_path / "cache")

    result = publisher.push_artifact(
        iso,
        str(tmp_path / "mirror"),
        "application/vnd.edgekit.site-iso.v1",
        ctx,
        RegistryOptions(),
    )

    assert (tmp_path / "mirror" / "site.iso").read_bytes() == iso.read_bytes()
    assert result.size == 4096
    assert result.digest.startswith("sha256:")
