"""A complete third-party image builder: one layer made by GNU tar, in an OCI image layout.

Install it (``pip install -e examples/plugin-tarball``) and select it in a forge file::

    backends:
      imageBuilder: tarball

Each image is its overlays, its packs' local sources (under ``/opt/edgekit/packs/<pack>/``)
and the files plugins add (such as the agent), as one uncompressed layer, for the image's
one architecture. What edgekit needs back: the layout
``request.layout`` with the image tagged ``request.tag``, and an ``Artifact`` whose
``digest`` is that manifest's. (An image for the installer ISO must also hold the kernel
and initrd at ``/boot/vmlinuz`` and ``/boot/initrd``: give them as overlays.)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from edgekit.errors import BuildError
from edgekit.plugins import Artifact, BuildContext, ImageBuilder, ImageBuildRequest, hookimpl

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest[7:]).write_bytes(data)
    return digest, len(data)


class TarballBuilder(ImageBuilder):
    """Stages the image's files in a directory and packs them with GNU tar."""

    name = "tarball"
    description = "one reproducible layer packed by GNU tar (one architecture)"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return None if shutil.which("tar") else "GNU tar is not installed"

    def build_image(self, request: ImageBuildRequest, ctx: BuildContext) -> Artifact:
        image = request.image
        if len(image.arch) != 1:
            raise BuildError(f"image {image.name!r}: the tarball builder builds one arch")
        arch = image.arch[0].value
        ctx.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=ctx.cache_dir) as work:
            stage = Path(work) / "rootfs"
            stage.mkdir()
            files = {
                f"/opt/edgekit/packs/{p.name}/{Path(p.source.path).name}": ctx.resolve(
                    p.source.path
                )
                for p in request.profile.packs
                if p.source is not None and p.source.path and not (p.source.url or p.source.oci)
            }
            files.update({o.target: ctx.resolve(o.source) for o in image.overlays})
            files.update(request.extra_files.get(arch, {}))
            for target, source in files.items():
                dest = stage / target.lstrip("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                if source.is_dir():
                    shutil.copytree(source, dest, dirs_exist_ok=True)
                else:
                    shutil.copy2(source, dest)
            epoch = ctx.source_date_epoch or 0
            layer = subprocess.run(
                ["tar", "--sort=name", f"--mtime=@{epoch}", "--owner=0", "--group=0",
                 "--numeric-owner", "--format=posix", "--pax-option=delete=atime,delete=ctime",
                 "-C", str(stage), "-cf", "-", "."],
                check=True, capture_output=True,
            ).stdout  # fmt: skip
        layout = request.layout
        shutil.rmtree(layout, ignore_errors=True)  # a rebuild replaces the image
        (layout / "blobs" / "sha256").mkdir(parents=True)
        (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        layer_digest, layer_size = _blob(layout, layer)
        config = {
            "architecture": arch,
            "os": "linux",
            "config": {"Labels": {"org.opencontainers.image.ref.name": request.reference}},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }
        config_digest, config_size = _blob(layout, json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": layer_size,
                }
            ],
        }
        digest, size = _blob(layout, json.dumps(manifest, sort_keys=True).encode())
        tagged = {"org.opencontainers.image.ref.name": request.tag}
        index = {
            "schemaVersion": 2,
            "manifests": [
                {"mediaType": MANIFEST, "digest": digest, "size": size, "annotations": tagged}
            ],
        }
        (layout / "index.json").write_text(json.dumps(index))
        ctx.report(1, 1, unit="items", message=f"packed {image.name}")
        return Artifact(
            name=f"provider-image/{image.name}",
            kind="provider-image",
            path=layout,
            digest=digest,
            size=size,
            media_type=MANIFEST,
            reference=request.tag,
        )


@hookimpl
def edgekit_image_builders() -> list[type[ImageBuilder]]:
    return [TarballBuilder]
