"""How a plugin author tests a backend with edgekit.testing (the fixtures load automatically)."""

from pathlib import Path
from typing import ClassVar

import edgekit_mirror
import pytest

from edgekit.forge import Forge
from edgekit.plugins import BuildContext, PluginManager, PushArtifactRequest
from edgekit.testing import PublisherContract


class TestMirrorContract(PublisherContract):
    """edgekit's publisher contract, run against this publisher."""

    backend_class = edgekit_mirror.MirrorPublisher
    valid_options: ClassVar[dict[str, bool]] = {"index": True}
    pulls_images = False  # it mirrors images; it pulls files back

    @pytest.fixture
    def target(self, tmp_path: Path) -> str:
        return str(tmp_path / "mirror")


def test_mirror_publisher_copies_artifacts(edgekit_plugins, register_plugin, tmp_path: Path):
    register_plugin(edgekit_mirror, name="mirror")
    publisher = edgekit_plugins.publisher("mirror")
    iso = tmp_path / "site.iso"
    iso.write_bytes(b"\0" * 4096)
    ctx = BuildContext(base_dir=tmp_path, output_dir=tmp_path, cache_dir=tmp_path / "cache")
    request = PushArtifactRequest(
        iso, f"{tmp_path}/mirror/sites:store-1", "application/vnd.edgekit.site-iso.v1"
    )

    result = publisher.push_artifact(request, ctx)

    copy = tmp_path / "mirror" / "sites" / "store-1" / "site.iso"
    assert copy.read_bytes() == iso.read_bytes()
    assert result.size == 4096
    assert result.digest.startswith("sha256:")


FORGE = """
name: mirrored
backends:
  publisher: {name: mirror, options: {index: true}}
sites:
  - {name: store-1}
  - {name: store-2}
registry:
  target: ./mirror
"""


def test_a_forge_run_publishes_into_the_directory(tmp_path: Path):
    (tmp_path / "edgeforge.yaml").write_text(FORGE)
    plugins = PluginManager(disabled="1")  # the built-ins (the site ISO assembler) and ...
    plugins.register(edgekit_mirror, name="mirror")  # ... this plugin
    forge = Forge.load(tmp_path / "edgeforge.yaml", output_dir=tmp_path / "dist", plugins=plugins)

    result = forge.run()

    sites = tmp_path / "dist" / "mirror" / "sites"
    for site in ("store-1", "store-2"):
        published = result.artifacts[f"published-site-iso/{site}"]
        assert published.path.read_bytes() == (sites / site / f"{site}.iso").read_bytes()
    assert len((sites / "INDEX").read_text().splitlines()) == 2
    assert not (tmp_path / "dist" / "oci:").exists()
