"""A complete third-party edgekit backend: a publisher that mirrors into a plain directory.

Install it (``pip install -e examples/plugin-mirror``) and select it with
``backends: {publisher: mirror}`` in a forge file, with ``registry.target: /some/dir``.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Mapping
from pathlib import Path

from edgekit.plugins import BuildContext, Publisher, hookimpl
from edgekit.plugins.interfaces import PushResult, RegistryOptions


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


class MirrorPublisher(Publisher):
    """Copies images (whole OCI layouts) and artifacts (files) into a directory."""

    name = "mirror"
    description = "copy images and artifacts into a plain directory"

    def push_image(
        self, layout: Path, tag: str, target: str, ctx: BuildContext, options: RegistryOptions
    ) -> PushResult:
        dest = Path(target) / tag
        shutil.copytree(layout, dest, dirs_exist_ok=True)
        ctx.report(1, 1, unit="items", message=f"mirrored {tag}")
        index = (dest / "index.json").read_bytes()
        return PushResult(
            str(dest),
            f"sha256:{hashlib.sha256(index).hexdigest()}",
            "application/vnd.oci.image.index.v1+json",
            len(index),
        )

    def push_artifact(
        self,
        path: Path,
        target: str,
        artifact_type: str,
        ctx: BuildContext,
        options: RegistryOptions,
        *,
        annotations: Mapping[str, str] | None = None,
        subject: str | None = None,
    ) -> PushResult:
        dest = Path(target) / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
        return PushResult(str(dest), _digest(dest), artifact_type, dest.stat().st_size)

    def pull(
        self,
        reference: str,
        dest: Path,
        ctx: BuildContext,
        options: RegistryOptions,
        *,
        tag: str | None = None,
    ) -> PushResult:
        shutil.copyfile(reference, dest)
        return PushResult(str(dest), _digest(dest), "application/octet-stream", dest.stat().st_size)


@hookimpl
def edgekit_publishers() -> list[type[Publisher]]:
    return [MirrorPublisher]
