"""A complete third-party edgekit backend: a publisher that mirrors into a plain directory.

Install it (``pip install -e examples/plugin-mirror``) and select it in a forge file::

    backends:
      publisher: {name: mirror, options: {index: true}}
    registry:
      target: /srv/mirror      # or ./mirror: inside the output directory

A target is a directory (absolute, ``./``, ``../`` or ``~``): this publisher claims those,
and leaves ``oci:PATH`` and ``host/repo`` to the others. ``<target>/<repo>:<tag>`` (where
edgekit publishes) lands in ``<target>/<repo>/<tag>/``: an image as its OCI layout, a file
under its own name. With ``index: true`` each push appends ``<digest> <tag>/<file>`` to
``<target>/<repo>/INDEX``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgekit.errors import Problem
from edgekit.plugins import (
    BuildContext,
    Publisher,
    PullRequest,
    PullResult,
    PushArtifactRequest,
    PushImageRequest,
    PushResult,
    RegistryOptions,
    hookimpl,
)

DIRECTORY_PREFIXES = ("/", "./", "../", "~")


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def _place(target: str, ctx: BuildContext) -> Path:
    """The directory of ``<dir>/<repo>:<tag>``: ``<dir>/<repo>/<tag>``; a relative
    ``<dir>`` is inside the output directory, as an ``oci:`` layout's is."""
    where, _, tag = target.rpartition(":")
    if not where or "/" in tag:  # no tag: the target itself
        where, tag = target, ""
    path = Path(where).expanduser()
    path = path if path.is_absolute() else ctx.output_dir / path
    return path / tag if tag else path


class MirrorPublisher(Publisher):
    """Copies images (whole OCI layouts) and artifacts (files) into a directory."""

    name = "mirror"
    description = "copy images and artifacts into a plain directory"

    @classmethod
    def target_problems(cls, target: str, registry: RegistryOptions) -> list[Problem]:
        if not target.startswith(DIRECTORY_PREFIXES):
            return [Problem("target", f"{target!r} is not a directory (/PATH, ./PATH or ~/PATH)")]
        if registry.plain_http or registry.ca_cert is not None:
            return [Problem("plainHttp", "a directory has no plainHttp or caCert")]
        return []

    @classmethod
    def options_problems(cls, options: Mapping[str, Any]) -> list[Problem]:
        problems = []
        for key, value in options.items():
            if key != "index":
                problems.append(Problem(str(key), "unknown option; the mirror takes: index"))
            elif not isinstance(value, bool):
                problems.append(Problem("index", f"must be true or false, not {value!r}"))
        return problems

    def _record(self, ctx: BuildContext, tag_dir: Path, dest: Path, digest: str) -> None:
        # The backend's own option, from the forge file (part of its steps' cache keys).
        if self.options(ctx).get("index"):
            with (tag_dir.parent / "INDEX").open("a") as fh:
                fh.write(f"{digest} {dest.relative_to(tag_dir.parent)}\n")

    def push_image(self, request: PushImageRequest, ctx: BuildContext) -> PushResult:
        dest = _place(request.target, ctx)
        shutil.copytree(request.layout, dest, dirs_exist_ok=True)
        ctx.report(1, 1, unit="items", message=f"mirrored {request.tag}")
        index = json.loads((dest / "index.json").read_text())
        # The digest edgekit expects is the tagged manifest's: the image is copied byte-exact.
        [manifest] = [
            m
            for m in index["manifests"]
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == request.tag
        ]
        self._record(ctx, dest, dest, manifest["digest"])
        return PushResult(str(dest), manifest["digest"], manifest["mediaType"], manifest["size"])

    def push_artifact(self, request: PushArtifactRequest, ctx: BuildContext) -> PushResult:
        tag_dir = _place(request.target, ctx)
        dest = tag_dir / request.path.name
        tag_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(request.path, dest)
        digest = _digest(dest)
        self._record(ctx, tag_dir, dest, digest)
        return PushResult(str(dest), digest, request.artifact_type, dest.stat().st_size)

    def pull(self, request: PullRequest, ctx: BuildContext) -> PullResult:
        dest = (
            request.dest / Path(request.reference).name if request.dest.is_dir() else request.dest
        )
        shutil.copyfile(request.reference, dest)
        size = dest.stat().st_size
        return PullResult(str(dest), _digest(dest), "application/octet-stream", size, dest)


@hookimpl
def edgekit_publishers() -> list[type[Publisher]]:
    return [MirrorPublisher]
