"""Read-only access to OCI image layouts, with the standard library only.

The pipeline uses it to take files (the kernel and initrd) out of a provider image that a
backend built, without the core depending on any backend. Writing layouts is the image
builder's job (``edgekit-oci``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any, cast

from edgekit.errors import BuildError

__all__ = ["blob_path", "extract_files", "find_manifest", "read_index", "resolve_tag"]

INDEX_MEDIA_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
REF_NAME = "org.opencontainers.image.ref.name"


def blob_path(layout: Path, digest: str) -> Path:
    """Path of a blob in a layout, from its ``sha256:<hex>`` digest."""
    algo, _, hexdigest = digest.partition(":")
    valid_hex = len(hexdigest) == 64 and all(c in "0123456789abcdef" for c in hexdigest)
    if algo != "sha256" or not valid_hex:
        raise BuildError(f"invalid digest {digest!r} in {layout}")
    return layout / "blobs" / algo / hexdigest


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return cast("dict[str, Any]", json.loads(path.read_bytes()))
    except FileNotFoundError:
        raise BuildError(f"{path} is missing: not an OCI image layout?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BuildError(f"{path} is not valid JSON: {exc}") from None


def read_index(layout: Path) -> dict[str, Any]:
    """The layout's ``index.json``."""
    return _read_json(layout / "index.json")


def resolve_tag(layout: Path, tag: str) -> dict[str, Any]:
    """The descriptor tagged ``tag`` in the layout's index."""
    index = read_index(layout)
    tags = []
    for desc in index.get("manifests", []):
        name = desc.get("annotations", {}).get(REF_NAME)
        tags.append(name)
        if name == tag:
            return cast("dict[str, Any]", desc)
    known = ", ".join(sorted(t for t in tags if t)) or "none"
    raise BuildError(f"no image tagged {tag!r} in {layout} (tags: {known})")


def find_manifest(layout: Path, tag: str, arch: str = "amd64") -> dict[str, Any]:
    """The image manifest for ``arch`` under ``tag`` (descending into an image index)."""
    desc = resolve_tag(layout, tag)
    doc = _read_json(blob_path(layout, desc["digest"]))
    if doc.get("mediaType", desc.get("mediaType")) in INDEX_MEDIA_TYPES:
        for child in doc.get("manifests", []):
            if child.get("platform", {}).get("architecture") == arch:
                return _read_json(blob_path(layout, child["digest"]))
        raise BuildError(f"image {tag!r} in {layout} has no {arch} variant")
    return doc


def _open_layer(path: Path, media_type: str) -> IO[bytes]:
    raw = path.open("rb")
    if media_type.endswith(("+gzip", ".tar.gzip")):
        return cast("IO[bytes]", gzip.GzipFile(fileobj=raw))
    if media_type.endswith("+zstd"):
        try:
            import zstandard
        except ImportError:
            raw.close()
            raise BuildError("reading zstd layers needs the 'zstandard' package") from None
        return cast("IO[bytes]", zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
    return raw


def _norm(name: str) -> str:
    return "/" + posixpath.normpath("/" + name).lstrip("/")


def extract_files(
    layout: Path, tag: str, paths: Iterable[str], dest: Path, arch: str = "amd64"
) -> Mapping[str, Path]:
    """Copy files out of an image's merged filesystem into ``dest``.

    Layers are read top-down, so the newest version of each file wins and whiteouts hide
    older ones; symlinks inside the image are followed (within the image). Returns
    image path -> extracted host path; raises :class:`BuildError` naming the paths not found.
    """
    manifest = find_manifest(layout, tag, arch)
    requested = [_norm(p) for p in paths]
    wanted = set(requested)
    found: dict[str, Path] = {}
    hidden: set[str] = set()
    aliases: dict[str, str] = {}  # symlink in the image -> what it points at
    dest.mkdir(parents=True, exist_ok=True)
    for _ in range(8):  # at most this many symlink hops
        links: dict[str, str] = {}
        for layer in reversed(manifest.get("layers", [])):
            if not wanted - found.keys() - hidden:
                break
            with _open_layer(blob_path(layout, layer["digest"]), layer["mediaType"]) as fh:
                _scan_layer(fh, wanted, found, hidden, links, dest)
        if not links:
            break
        for link, target in links.items():
            resolved = _norm(posixpath.join(posixpath.dirname(link), target))
            aliases[link] = resolved
            wanted.add(resolved)
    result: dict[str, Path] = {}
    missing: list[str] = []
    for path in requested:
        current = path
        for _ in range(9):
            if current in found or current not in aliases:
                break
            current = aliases[current]
        if current in found:
            result[path] = found[current]
        else:
            missing.append(path)
    if missing:
        raise BuildError(f"image {tag!r} ({arch}) in {layout} has no {', '.join(missing)}")
    return result


def _scan_layer(
    fh: IO[bytes],
    wanted: set[str],
    found: dict[str, Path],
    hidden: set[str],
    links: dict[str, str],
    dest: Path,
) -> None:
    layer_hidden: set[str] = set()
    with tarfile.open(fileobj=fh, mode="r|") as tar:
        for member in tar:
            name = _norm(member.name)
            base = posixpath.basename(name)
            if base.startswith(".wh."):
                parent = posixpath.dirname(name)
                target = parent if base == ".wh..wh..opq" else posixpath.join(parent, base[4:])
                for w in wanted:
                    if (w == target or w.startswith(target.rstrip("/") + "/")) and w not in found:
                        layer_hidden.add(w)
                continue
            if name not in wanted or name in found or name in hidden:
                continue
            if member.issym():
                links[name] = member.linkname
                hidden.add(name)
                continue
            if not member.isfile():
                continue
            src = tar.extractfile(member)
            assert src is not None
            fd, tmp = tempfile.mkstemp(dir=dest, prefix=".extract-")
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            target_path = dest / hashlib.sha256(name.encode()).hexdigest()[:16]
            target_path = target_path.with_name(posixpath.basename(name) + "-" + target_path.name)
            os.replace(tmp, target_path)
            found[name] = target_path
    hidden |= layer_hidden
