"""A buildah backend: the same ImageSpec rendered as a build context plus Containerfile.

Each :class:`~edgekit_oci.layers.LayerSpec` becomes a staging directory in the context that
mirrors the image paths of its entries, copied in with one ``COPY layerN/ /`` (one layer
per spec, symlinks preserved). Whiteouts have no Containerfile form but ``RUN rm``, which
needs a shell in the base image. Buildah runs daemonless (``--storage-driver vfs
--isolation chroot``) with its storage in a temporary directory, and the result is pushed
to ``oci:DEST:TAG``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import attrs

from edgekit.errors import BuildError

from .image import ImageSpec
from .layers import (
    ContentEntry,
    DirEntry,
    FileEntry,
    OpaqueWhiteoutEntry,
    SymlinkEntry,
    TreeEntry,
    WhiteoutEntry,
    image_path,
    resolve_source_date_epoch,
)
from .layout import Descriptor, OCILayout

__all__ = ["BuildahResult", "build_with_buildah", "render_context"]


@attrs.frozen
class BuildahResult:
    """The image buildah wrote into the layout."""

    layout: Path
    tag: str
    descriptor: Descriptor
    containerfile: str


def _stage_path(stage: Path, target: str) -> Path:
    rel = image_path(target)
    if not rel:
        return stage
    dest = stage / rel
    for parent in reversed(dest.relative_to(stage).parents):
        p = stage / parent
        if not p.exists():
            p.mkdir(mode=0o755)
            p.chmod(0o755)  # the umask must not leak into the image
    return dest


def _copy_tree(source: Path, dest: Path) -> None:
    dest.mkdir(exist_ok=True)
    shutil.copystat(source, dest)
    with os.scandir(source) as it:
        for item in it:
            target = dest / item.name
            if item.is_symlink():
                os.symlink(os.readlink(item.path), target)
            elif item.is_dir(follow_symlinks=False):
                _copy_tree(Path(item.path), target)
            elif item.is_file(follow_symlinks=False):
                shutil.copy2(item.path, target, follow_symlinks=False)
            else:
                raise BuildError(f"{item.path} is a device, FIFO or socket")


def render_context(spec: ImageSpec, context: Path) -> str:
    """Fill ``context`` with staging dirs and a ``Containerfile``; returns its text."""
    if spec.base is None:
        lines = ["FROM scratch"]
    else:
        lines = [f"FROM oci:{spec.base.layout.resolve()}:{spec.base.tag}"]
    for i, layer in enumerate(spec.layers):
        removals: list[str] = []
        stage = context / f"layer{i}"
        stage.mkdir(mode=0o755)
        stage.chmod(0o755)
        staged = False
        for entry in layer.entries:
            if isinstance(entry, WhiteoutEntry):
                removals.append("/" + image_path(entry.target))
                continue
            if isinstance(entry, OpaqueWhiteoutEntry):
                path = "/" + image_path(entry.target)
                removals.append(f"{path}/* {path}/.[!.]* {path}/..?*")
                continue
            staged = True
            dest = _stage_path(stage, entry.target)
            if isinstance(entry, TreeEntry):
                _copy_tree(entry.source.resolve(), dest)
            elif isinstance(entry, FileEntry):
                shutil.copyfile(entry.source, dest)
                mode = entry.mode if entry.mode is not None else os.stat(entry.source).st_mode
                dest.chmod(mode & 0o7777)
            elif isinstance(entry, ContentEntry):
                dest.write_bytes(entry.content)
                dest.chmod(entry.mode)
            elif isinstance(entry, SymlinkEntry):
                os.symlink(entry.link, dest)
            elif isinstance(entry, DirEntry):
                dest.mkdir(exist_ok=True)
                dest.chmod(entry.mode)
        if removals:
            if spec.base is None:
                raise BuildError(
                    f"layer {layer.name}: whiteouts need 'RUN rm' in a Containerfile, "
                    "which needs a base image with a shell (this build is FROM scratch)"
                )
            # Globs that match nothing stay literal; rm -f ignores them.
            lines.append("RUN rm -rf " + " ".join(removals))
        if staged:
            lines.append(f"COPY layer{i}/ /")
    for key, value in sorted(spec.labels.items()):
        lines.append(f"LABEL {json.dumps(key)}={json.dumps(value)}")
    text = "\n".join(lines) + "\n"
    (context / "Containerfile").write_text(text)
    return text


def _run(cmd: list[str], timeout: float) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise BuildError("buildah is not installed (apt-get install buildah)") from None
    except subprocess.TimeoutExpired:
        raise BuildError(f"{shlex.join(cmd[:4])} timed out after {timeout:.0f}s") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise BuildError(f"{shlex.join(cmd[:4])} … failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def build_with_buildah(
    dest: str | os.PathLike[str],
    tag: str,
    spec: ImageSpec,
    *,
    source_date_epoch: int | None = None,
    timeout: float = 600.0,
) -> BuildahResult:
    """Build ``spec`` with buildah and push it to the OCI layout ``dest`` under ``tag``."""
    epoch = resolve_source_date_epoch(source_date_epoch)
    dest_path = Path(dest)
    with tempfile.TemporaryDirectory(prefix="edgekit-buildah-") as tmp_name:
        tmp = Path(tmp_name)
        context = tmp / "context"
        context.mkdir()
        text = render_context(spec, context)
        storage = [
            "--root",
            str(tmp / "storage"),
            "--runroot",
            str(tmp / "run"),
            "--storage-driver",
            "vfs",
        ]
        iidfile = tmp / "iid"
        _run(
            [
                "buildah",
                *storage,
                "bud",
                "--isolation",
                "chroot",
                "--layers",
                "--timestamp",
                str(epoch),
                "--arch",
                spec.architecture,
                "--os",
                spec.os,
                "--iidfile",
                str(iidfile),
                "-f",
                str(context / "Containerfile"),
                str(context),
            ],
            timeout,
        )
        image_id = iidfile.read_text().strip()
        dest_path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest_path.name}.tmp-", dir=dest_path.parent))
        try:
            if (dest_path / "oci-layout").exists():
                shutil.rmtree(staging)
                staging = dest_path  # buildah adds to an existing layout itself
            _run(["buildah", *storage, "push", image_id, f"oci:{staging}:{tag}"], timeout)
            if staging != dest_path:
                os.rename(staging, dest_path)
        except BaseException:
            if staging != dest_path:
                shutil.rmtree(staging, ignore_errors=True)
            raise
        # buildah keeps files it copied out of a base in its storage: drop the vfs tree as root.
        _run(["buildah", *storage, "rm", "--all"], timeout)
        _run(["buildah", *storage, "rmi", "--all", "--force"], timeout)
    layout = OCILayout.open(dest_path)
    return BuildahResult(dest_path, tag, layout.resolve(tag), text)
