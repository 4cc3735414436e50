"""Issue 11 item 5: the forge builds the sample provider image in versions that can be
upgraded (v1, v2) and one that must be rolled back (v3), from the real sample OS, and
they differ where the device looks (the version label, /etc/os-release, the digest)."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

from edgekit.testing import UpgradableImage, UpgradableImages


def _blob(image: UpgradableImage, digest: str) -> Path:
    algo, _, hexd = digest.partition(":")
    return image.layout / "blobs" / algo / hexd


def _files(image: UpgradableImage) -> dict[str, bytes]:
    """Every regular file of the image's layers, later layers winning (no whiteouts here)."""
    manifest = json.loads(_blob(image, image.digest).read_text())
    out: dict[str, bytes] = {}
    for layer in manifest["layers"]:
        with tarfile.open(_blob(image, layer["digest"])) as tar:
            for member in tar:
                if member.isfile() and not member.name.startswith("boot/"):
                    data = tar.extractfile(member)
                    assert data is not None
                    out[member.name] = data.read()
                elif member.isfile():
                    out[member.name] = b"<%d bytes>" % member.size
    return out


def test_three_versions_differ_where_the_device_looks(upgradable_images: UpgradableImages) -> None:
    images = (upgradable_images.v1, upgradable_images.v2, upgradable_images.v3)
    assert len({i.digest for i in images}) == 3
    for image in images:
        inspect = json.loads(
            subprocess.run(
                ["skopeo", "inspect", image.oci], capture_output=True, text=True, check=True
            ).stdout
        )
        assert inspect["Digest"] == image.digest  # skopeo, not edgekit, reads the layout
        assert inspect["Labels"]["org.opencontainers.image.version"] == image.version
        files = _files(image)
        # What a slot is made of (docs/installer-iso.md, "What a slot holds").
        assert {"boot/vmlinuz", "boot/initrd", "usr/bin/edgekit-agent"} <= set(files)
        assert "usr/lib/edgekit/agent/registry.sh" in files
        assert f"VERSION={image.version}\n".encode() in files["etc/os-release"]
        assert (b"the broken sample image" in files["init"]) == image.broken
    assert [i.broken for i in images] == [False, False, True]
    # The base layer is the same sample OS in all three: the same kernel and initrd.
    kernels = {_files(i)["boot/vmlinuz"] for i in images}
    assert len(kernels) == 1
    assert (upgradable_images.sample_os / "boot" / "vmlinuz").is_file()
