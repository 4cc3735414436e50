"""Slot A's ``edgekit.cpio.gz``: the provider image's own layers, as a repave builds it.

The agent's ``stage_payload`` (edgekit_agent's ``slots.sh``, docs/agent.md "Repave: stage,
then install") fills a slot from an image's layers: the first layer holding
``boot/vmlinuz`` is the base (its kernel and initrd are the slot's ``vmlinuz`` and
``initrd``; its files are inside that initrd), and every later layer is extracted over one
tree, its whiteouts applied after it, the tree packed into ``edgekit.cpio.gz`` together with
``10-edgekit-persistent`` when the image has none. The installer builds slot A the same way
here, from the embedded OCI layout, so a freshly installed host runs what a repave of the
same image would give it (docs/installer-iso.md, "What a slot holds").

The rules, matching ``stage_payload`` (later wins; one tree for all upper layers):

- layers before the base are ignored, as are the base's own files;
- ``DIR/.wh.NAME`` removes ``NAME`` (and what is under it) once its layer is extracted;
  an opaque marker ``DIR/.wh..wh..opq`` hides what the layers below put in ``DIR`` (the
  OCI image-spec's rule; the agent's ``apply_opaque`` empties ``DIR`` before it extracts
  the layer, so a directory that holds the layer's own entries only because they lie
  under it comes back with mode 0755, as tar creates it);
- files, directories and symbolic links are kept with their permission bits; owners become
  root and every timestamp the build's ``SOURCE_DATE_EPOCH``, so equal inputs give equal
  bytes;
- absolute or ``..`` member names, hard links, device nodes and FIFOs are refused (a slot
  is built on the build host: nothing a layer says may write outside the tree).

File contents are streamed from the layer tars into numbered files in a temporary directory
(never under their member names, so no symlink of a layer is ever followed); only the index
of paths is held in memory. Every blob is checked against its digest while it is read.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO, Literal

from edgekit.cpio import CpioEntry, write_initrd_gz
from edgekit.errors import BuildError

__all__ = ["build_slot_overlay", "image_layers"]

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
#: The layer media types the agent applies (registry.sh: ``*tar+gzip | *tar.gzip | *tar``).
_LAYER_SUFFIXES = ("tar+gzip", "tar.gzip", "tar")
_BASE_NAMES = {"boot/vmlinuz", "./boot/vmlinuz"}
_INITRD_NAMES = {"boot/initrd", "./boot/initrd"}
_OPAQUE = ".wh..wh..opq"
_CHUNK = 1 << 20


@dataclass
class _Node:
    kind: Literal["file", "dir", "symlink"]
    mode: int
    data: Path | None = None
    target: str | None = None


def image_layers(layout: Path) -> list[tuple[str, str]]:
    """(digest, media type) of every layer of the layout's first manifest, in order.

    A manifest that lists no layers gives ``[]``; an unreadable layout raises BuildError.
    """
    index_path = layout / "index.json"
    try:
        index = json.loads(index_path.read_text())
        digest = str(index["manifests"][0]["digest"])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise BuildError(
            f"{index_path}: not an OCI layout index naming a manifest ({exc})"
        ) from exc
    manifest_path = _blob(layout, digest, "the manifest")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise BuildError(f"{manifest_path}: the manifest is not JSON ({exc})") from exc
    if not isinstance(manifest, dict) or "manifests" in manifest:
        raise BuildError(f"{manifest_path}: an image index, not an image manifest")
    layers = manifest.get("layers") or []
    out: list[tuple[str, str]] = []
    for n, layer in enumerate(layers):
        if not isinstance(layer, dict) or not isinstance(layer.get("digest"), str):
            raise BuildError(f"{manifest_path}: layers[{n}] names no digest")
        out.append((layer["digest"], str(layer.get("mediaType", "unknown"))))
    return out


def _blob(layout: Path, digest: str, what: str) -> Path:
    if not _DIGEST.fullmatch(digest):
        raise BuildError(f"{layout}: {what} has an unsupported digest {digest!r}")
    path = layout / "blobs" / "sha256" / digest.removeprefix("sha256:")
    if not path.is_file():
        raise BuildError(f"{layout}: {what} {digest} is missing ({path})")
    return path


class _HashingReader:
    """A file object that hashes what is read through it (tarfile reads it as a stream)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.digest.update(data)
        return data


@contextmanager
def _layer(layout: Path, digest: str, media_type: str) -> Iterator[tarfile.TarFile]:
    """The layer as a streamed tar; its digest is checked once it has been read to the end."""
    if not media_type.endswith(_LAYER_SUFFIXES):
        raise BuildError(
            f"layer {digest} is {media_type}: only gzip'd or plain tar layers can be applied "
            "(the agent could not repave with it either)"
        )
    path = _blob(layout, digest, "layer")
    with path.open("rb") as raw:
        reader = _HashingReader(raw)
        try:
            # The reader has only read(), all a stream mode needs (less than IO[bytes]).
            with tarfile.open(fileobj=reader, mode="r|*") as tar:  # type: ignore[call-overload]
                yield tar
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BuildError(f"layer {digest}: cannot read it as a tar ({exc})") from exc
        while reader.read(_CHUNK):
            pass  # the rest of the blob (tar padding) counts for the digest too
        got = f"sha256:{reader.digest.hexdigest()}"
        if got != digest:
            raise BuildError(f"layer {digest} does not match its digest (got {got}); {path}")


def _find_base(layout: Path, layers: list[tuple[str, str]]) -> int:
    """The index of the first layer holding boot/vmlinuz (stage_payload's base)."""
    for n, (digest, media_type) in enumerate(layers):
        names: set[str] = set()
        with _layer(layout, digest, media_type) as tar:
            for member in tar:
                if member.name in _BASE_NAMES or member.name in _INITRD_NAMES:
                    names.add(member.name.removeprefix("./"))
        if "boot/vmlinuz" in names:
            if "boot/initrd" not in names:
                raise BuildError(f"layer {digest} has boot/vmlinuz but no boot/initrd")
            return n
    raise BuildError(f"no layer of {layout} holds boot/vmlinuz: not a bootable provider image")


class _Tree:
    """The upper layers extracted over each other: an index of paths, contents on disk."""

    def __init__(self, store: Path) -> None:
        self.nodes: dict[str, _Node] = {}
        self._store = store
        self._count = 0

    def _remove(self, path: str) -> None:
        old = self.nodes.get(path)
        if old is None:
            return
        names = [path]
        if old.kind == "dir":  # only a directory needs the scan (files replace in O(1))
            prefix = path + "/"
            names += [p for p in self.nodes if p.startswith(prefix)]
        for name in names:
            node = self.nodes.pop(name)
            if node.data is not None and node.data.parent == self._store:
                node.data.unlink(missing_ok=True)  # only our copies: never a payload file

    def parents(self, path: str, where: str) -> None:
        """Create missing parent directories (0755, as tar does); refuse a non-directory."""
        parts = PurePosixPath(path).parts
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            node = self.nodes.get(parent)
            if node is None:
                self.nodes[parent] = _Node("dir", 0o755)
            elif node.kind != "dir":
                raise BuildError(f"{where}: {path} lies under {parent}, which is a {node.kind}")

    def put(self, path: str, node: _Node, where: str) -> None:
        self.parents(path, where)
        old = self.nodes.get(path)
        if node.kind == "dir" and old is not None and old.kind == "dir":
            old.mode = node.mode  # a directory again: its contents stay, its mode is the new one
            return
        if old is not None:
            self._remove(path)
        self.nodes[path] = node

    def store(self, source: IO[bytes]) -> Path:
        self._count += 1
        dest = self._store / f"{self._count:08d}"
        with dest.open("wb") as out:
            shutil.copyfileobj(source, out, _CHUNK)
        return dest

    def opaque(self, directory: str, kept: set[str]) -> None:
        """``directory``'s lower contents hidden: every node under it goes except ``kept``
        (what this layer put so far) and their parents, which count as created by tar."""
        prefix = directory + "/" if directory else ""
        parents = {str(p) for k in kept for p in PurePosixPath(k).parents if str(p) != "."}
        for path in [p for p in self.nodes if p.startswith(prefix) and p not in kept]:
            if path in parents:
                self.nodes[path].mode = 0o755  # gone, then made again for a child of it
            elif path in self.nodes and path != directory:
                self._remove(path)

    def whiteout(self, directory: str, name: str) -> None:
        self._remove(f"{directory}/{name}" if directory else name)

    def entries(self) -> list[CpioEntry]:
        out: list[CpioEntry] = []
        for path, node in self.nodes.items():
            if node.kind == "dir":
                out.append(CpioEntry.dir(path, node.mode))
            elif node.kind == "symlink":
                assert node.target is not None
                out.append(CpioEntry.symlink(path, node.target))
            else:
                assert node.data is not None
                out.append(CpioEntry.file(path, node.data, node.mode))
        return out


def _member_path(name: str, where: str) -> str | None:
    """The tree path of a member (``./etc/x`` and ``etc/x`` alike); None for the root."""
    if name.startswith("/"):
        raise BuildError(f"{where}: an absolute member name")
    parts = [p for p in PurePosixPath(name).parts if p != "."]
    if ".." in parts:
        raise BuildError(f"{where}: a member name that leaves the tree ('..')")
    return "/".join(parts) or None


def _apply_layer(tree: _Tree, layout: Path, digest: str, media_type: str) -> None:
    whiteouts: list[tuple[str, str]] = []
    put: set[str] = set()  # what this layer put, which its opaque markers never hide
    with _layer(layout, digest, media_type) as tar:
        for member in tar:
            where = f"layer {digest}, member {member.name!r}"
            path = _member_path(member.name, where)
            if path is None:
                continue
            if member.islnk():
                raise BuildError(f"{where}: a hard link (to {member.linkname!r}) is not supported")
            if member.ischr() or member.isblk():
                raise BuildError(f"{where}: a device node cannot be carried in a slot")
            if member.isfifo():
                raise BuildError(f"{where}: a FIFO cannot be carried in a slot")
            parent, _, base = path.rpartition("/")
            if base.startswith(".wh."):
                # Extracted, then removed by apply_whiteouts: its directories stay.
                tree.parents(path, where)
                if base == _OPAQUE:
                    tree.opaque(parent, put)
                else:
                    whiteouts.append((parent, base.removeprefix(".wh.")))
                continue
            mode = member.mode & 0o7777
            if member.isdir():
                tree.put(path, _Node("dir", mode), where)
            elif member.issym():
                tree.put(path, _Node("symlink", 0o777, target=member.linkname), where)
            elif member.isreg():
                source = tar.extractfile(member)
                assert source is not None  # a regular member always has a body
                tree.put(path, _Node("file", mode, data=tree.store(source)), where)
            else:
                raise BuildError(f"{where}: an unsupported member type {member.type!r}")
            put.add(path)
    for directory, name in whiteouts:
        tree.whiteout(directory, name)


def build_slot_overlay(
    *,
    layout: Path | None,
    persist_hook: tuple[str, bytes],
    payload_files: Mapping[str, Path],
    dest: Path,
    work: Path,
    epoch: int,
) -> Path:
    """Write ``dest`` (``edgekit.cpio.gz``): the image's upper layers, the hook, the payload.

    ``persist_hook`` is (path, contents): added (0755) when the image has no such file, as
    stage_payload does. Each installer payload file is added only where the image has
    nothing at its path: the image's own copy (say, of the agent) is what a repave of the
    same image would install, so it wins. Without a layout, or with a layout whose manifest
    lists no layers, the archive holds only the hook and the payload.
    """
    for inner, host in payload_files.items():
        if not host.is_file():
            raise BuildError(f"installer file {host} (for {inner}) does not exist")
    store = work / "slot-tree"
    store.mkdir()
    try:
        tree = _Tree(store)
        layers = image_layers(layout) if layout is not None else []
        if layers and layout is not None:
            base = _find_base(layout, layers)
            for digest, media_type in layers[base + 1 :]:
                _apply_layer(tree, layout, digest, media_type)
        hook_path, hook_data = persist_hook
        existing = tree.nodes.get(hook_path)
        if existing is None:
            hook_file = store / "persist-hook"
            hook_file.write_bytes(hook_data)
            tree.put(hook_path, _Node("file", 0o755, data=hook_file), "the persistence hook")
        elif existing.kind != "file":
            raise BuildError(f"the image's {hook_path} is a {existing.kind}, not the boot hook")
        for inner, host in sorted(payload_files.items()):
            path = _member_path(inner, f"installer file {inner}")
            if path is None or path in tree.nodes:
                continue  # the image has this path: its own copy wins
            mode = 0o755 if "/boot.d/" in f"/{path}" else 0o644
            tree.put(path, _Node("file", mode, data=host), f"installer file {inner}")
        write_initrd_gz(tree.entries(), dest, mtime=epoch)
    finally:
        shutil.rmtree(store, ignore_errors=True)
    return dest
