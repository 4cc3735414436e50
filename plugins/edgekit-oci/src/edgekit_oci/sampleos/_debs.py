"""Resolving, downloading (cached) and reading Debian packages without dpkg."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, BinaryIO

from edgekit.errors import BuildError, SourceError

__all__ = ["deb_members", "download_deb", "package_version", "resolve_dependency"]

_UPDATE_HINT = "run `apt-get update` (as root) and check the Debian sources in /etc/apt"


def _apt(tool: str, args: list[str], *, what: str, cwd: Path | None = None) -> str:
    exe = shutil.which(tool)
    if exe is None:
        raise BuildError(
            f"{tool} not found, needed to {what}: the sample OS is assembled from Debian "
            "packages, so it must be built on a Debian-based host with apt"
        )
    done = subprocess.run(
        [exe, *args], capture_output=True, text=True, cwd=cwd, env={**os.environ, "LC_ALL": "C"}
    )
    if done.returncode != 0:
        detail = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise SourceError(
            f"{tool} {' '.join(args)} failed, needed to {what}: "
            f"{detail[-1] if detail else 'exit ' + str(done.returncode)}; {_UPDATE_HINT}"
        )
    return done.stdout


def resolve_dependency(meta_package: str) -> str:
    """The package a meta package depends on (``linux-image-amd64`` -> ``linux-image-6.1.0-…``)."""
    out = _apt(
        "apt-cache", ["depends", meta_package], what=f"resolve the kernel behind {meta_package}"
    )
    for line in out.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Depends" and value.strip() and not value.strip().startswith("<"):
            return value.strip()
    raise SourceError(f"apt-cache lists no dependency of {meta_package}; {_UPDATE_HINT}")


def package_version(package: str) -> str:
    """The candidate version apt would download for ``package``."""
    out = _apt(
        "apt-cache", ["show", "--no-all-versions", package], what=f"find the version of {package}"
    )
    for line in out.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    raise SourceError(f"apt-cache shows no version of {package}; {_UPDATE_HINT}")


def download_deb(package: str, version: str, arch: str, cache_dir: Path) -> Path:
    """``package`` at ``version`` as a .deb in ``cache_dir``, downloaded only when missing."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    name = f"{package}_{version.replace(':', '%3a')}_{arch}.deb"
    cached = cache_dir / name
    if cached.is_file():
        return cached
    work = Path(tempfile.mkdtemp(prefix=f".{package}.", dir=cache_dir))
    try:
        # apt drops privileges to _apt when it can; a private 0755 dir keeps that working.
        work.chmod(0o755)
        spec = f"{package}:{arch}={version}"
        _apt("apt-get", ["download", spec], what=f"download {spec}", cwd=work)
        got = sorted(work.glob("*.deb"))
        if len(got) != 1:
            raise SourceError(f"apt-get download {spec} produced {len(got)} files, expected one")
        os.replace(got[0], cached)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return cached


def _data_offset(deb: BinaryIO, path: Path) -> int:
    """Offset of the ``data.tar.*`` member in a .deb (an ``ar`` archive)."""
    if deb.read(8) != b"!<arch>\n":
        raise SourceError(f"{path} is not a Debian package (no ar header); delete it to refetch")
    while True:
        head = deb.read(60)
        if len(head) < 60:
            raise SourceError(f"{path} has no data.tar member; delete it to refetch")
        name = head[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(head[48:58].decode("ascii").strip())
        if name.startswith("data.tar"):
            return deb.tell()
        deb.seek(size + (size & 1), os.SEEK_CUR)


def deb_members(
    path: Path, wanted: Callable[[str], bool]
) -> Iterator[tuple[str, tarfile.TarInfo, IO[bytes] | None]]:
    """Stream the members of a .deb's data archive whose normalised path ``wanted`` accepts.

    Paths are yielded without a leading ``./``; the file object (None for non-files) is only
    valid until the next item, as the archive is read in one pass.
    """
    with path.open("rb") as deb:
        deb.seek(_data_offset(deb, path))
        try:
            with tarfile.open(fileobj=deb, mode="r|*") as tar:
                for info in tar:
                    name = info.name.removeprefix("./")
                    if not name or not wanted(name):
                        continue
                    yield name, info, tar.extractfile(info) if info.isfile() else None
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise SourceError(f"cannot read {path}: {exc}; delete it to refetch") from exc
