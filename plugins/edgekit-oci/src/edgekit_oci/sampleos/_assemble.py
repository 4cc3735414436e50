"""assemble_sample_os: a small bootable OS tree built offline from Debian packages."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path

import attrs

from edgekit.cpio import CpioEntry, default_mtime, newc_from_tree, write_initrd_gz
from edgekit.errors import BuildError, ConfigError

from ._debs import deb_members, download_deb, package_version, resolve_dependency
from ._kmod import load_order, modinfo, module_name
from ._tools import TOOL_PACKAGES, install_tools

__all__ = [
    "BOOT_HOOK_DIR",
    "DEFAULT_MODULES",
    "OPTIONAL_MODULES",
    "SampleOsInfo",
    "assemble_sample_os",
]

#: Where /init looks for hooks; the installer and the agent add files here (see docs).
BOOT_HOOK_DIR = "etc/edgekit/boot.d"
#: Drivers for a CD drive (IDE, AHCI, virtio), disks and the virtio-net and e1000 NICs.
DEFAULT_MODULES: tuple[str, ...] = (
    "ata_piix",
    "ahci",
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "sd_mod",
    "sr_mod",
    "isofs",
    "virtio_net",
    "e1000",
    # The installed system's filesystems (COS_STATE, COS_OEM, COS_PERSISTENT are ext4 with
    # metadata checksums, which need the crc32c hash).
    "ext4",
    "crc32c_generic",
)
#: Loaded when the kernel has them: reading an EFI system partition.
OPTIONAL_MODULES: tuple[str, ...] = ("vfat", "nls_cp437", "nls_iso8859_1", "nls_ascii")

_RELEASES = {"debian-12": "12"}
_ARCHES = ("amd64", "arm64")
_BUSYBOX_PACKAGE = "busybox-static"


@attrs.frozen
class SampleOsInfo:
    """What :func:`assemble_sample_os` built."""

    root: Path
    arch: str
    release: str
    #: ``uname -r`` of the kernel, e.g. ``6.1.0-56-amd64``.
    kernel_version: str
    kernel: Path
    initrd: Path
    kernel_size: int
    initrd_size: int
    initrd_sha256: str
    #: Debian package name -> version, for every package the tree was made from.
    packages: dict[str, str]
    #: Module paths under ``/lib/modules/<kernel_version>/`` in the order /init loads them.
    modules: tuple[str, ...]


def assemble_sample_os(
    dest: Path,
    *,
    arch: str = "amd64",
    cache_dir: Path,
    release: str = "debian-12",
    extra_modules: Sequence[str] = (),
) -> SampleOsInfo:
    """Write the sample OS root tree into ``dest`` (replaced atomically) and describe it.

    The kernel and busybox come from the host's apt sources (``apt-get download``), cached
    in ``cache_dir`` by name and version. Equal inputs give a byte-identical tree;
    every timestamp is ``$SOURCE_DATE_EPOCH`` (or 0).
    """
    if release not in _RELEASES:
        raise ConfigError.single(
            "release", f"unknown sample OS release {release!r}; known: {', '.join(_RELEASES)}"
        )
    if arch not in _ARCHES:
        raise ConfigError.single("arch", f"unknown architecture {arch!r}; known: amd64, arm64")
    _check_host(arch, release)
    mtime = default_mtime()
    cache_dir = Path(cache_dir)
    dest = Path(dest)

    kernel_pkg = resolve_dependency(f"linux-image-{arch}")
    versions = {kernel_pkg: package_version(kernel_pkg)}
    versions[_BUSYBOX_PACKAGE] = package_version(_BUSYBOX_PACKAGE)
    for tool_pkg in TOOL_PACKAGES:
        versions[tool_pkg] = package_version(tool_pkg)
    debs = {name: download_deb(name, ver, arch, cache_dir) for name, ver in versions.items()}

    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        work.chmod(0o755)  # it becomes the image's / (mkdtemp makes it 0700)
        kver, modules = _install_kernel(debs[kernel_pkg], work, (*DEFAULT_MODULES, *extra_modules))
        _install_busybox(debs[_BUSYBOX_PACKAGE], work)
        install_tools(debs, work)
        _install_files(work, release)
        initrd = work / "boot" / "initrd"
        write_initrd_gz(_initrd_entries(work), initrd, mtime=mtime)
        _set_mtimes(work, mtime)
        _replace_dir(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    initrd = dest / "boot" / "initrd"
    return SampleOsInfo(
        root=dest,
        arch=arch,
        release=release,
        kernel_version=kver,
        kernel=dest / "boot" / "vmlinuz",
        initrd=initrd,
        kernel_size=(dest / "boot" / "vmlinuz").stat().st_size,
        initrd_size=initrd.stat().st_size,
        initrd_sha256=hashlib.sha256(initrd.read_bytes()).hexdigest(),
        packages=versions,
        modules=modules,
    )


def _check_host(arch: str, release: str) -> None:
    native = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    if arch != native:
        # busybox's applet list is read by running it, and apt only serves a foreign
        # architecture after `dpkg --add-architecture`; neither holds on a plain host.
        raise BuildError(
            f"cannot assemble a {arch} sample OS on this {native} host: Debian {arch} packages "
            f"are only downloadable with multiarch (`dpkg --add-architecture {arch} && "
            "apt-get update`) and busybox must run to list its applets; build it on a "
            f"{arch} machine"
        )
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        text = ""
    fields = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )
    want = _RELEASES[release]
    if (
        fields.get("ID", "").strip('"') != "debian"
        or fields.get("VERSION_ID", "").strip('"') != want
    ):
        raise BuildError(
            f"the {release} sample OS takes its packages from the host's apt sources, so it "
            f"must be built on Debian {want}; this host's /etc/os-release says "
            f"ID={fields.get('ID', '?')} VERSION_ID={fields.get('VERSION_ID', '?')}"
        )


@attrs.frozen
class _KernelIndex:
    """What the first pass over a kernel package learns; cached beside the .deb."""

    kver: str
    #: module name -> path in the package
    paths: dict[str, str]
    #: module name -> names of the modules it depends on
    depends: dict[str, list[str]]
    builtin: list[str]


def _kernel_index(deb: Path) -> _KernelIndex:
    """Read (or load from the cache) every module's dependencies; the package has no
    modules.dep, and reading all ~4000 modules is most of the assembly time."""
    cache = deb.with_name(deb.name + ".index.json")
    stamp = deb.stat().st_size
    try:
        raw = json.loads(cache.read_text())
        if raw.get("deb_size") == stamp and raw.get("format") == 1:
            return _KernelIndex(raw["kver"], raw["paths"], raw["depends"], raw["builtin"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # missing or unreadable: rebuild it
    depends: dict[str, list[str]] = {}
    paths: dict[str, str] = {}
    builtin: list[str] = []
    kver = ""
    for name, _info, fobj in deb_members(deb, _is_kernel_file):
        assert fobj is not None
        if name.startswith("boot/vmlinuz-"):
            kver = name.removeprefix("boot/vmlinuz-")
        elif name.endswith("/modules.builtin"):
            builtin = [module_name(line) for line in fobj.read().decode().split()]
        else:
            meta = modinfo(fobj.read(), f"{deb.name}:{name}")
            mod = meta.get("name", [module_name(name)])[0].replace("-", "_")
            paths[mod] = name
            depends[mod] = [
                d.replace("-", "_") for d in ",".join(meta.get("depends", [])).split(",") if d
            ]
    if not kver:
        raise BuildError(f"{deb.name} holds no /boot/vmlinuz-*: not a Linux kernel package")
    index = _KernelIndex(kver, paths, depends, sorted(builtin))
    fd, tmp = tempfile.mkstemp(prefix=f".{cache.name}.", dir=cache.parent)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump({"format": 1, "deb_size": stamp, **attrs.asdict(index)}, out, sort_keys=True)
        os.replace(tmp, cache)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return index


def _install_kernel(deb: Path, root: Path, wanted: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """Put vmlinuz and the needed modules (with a modules.dep) into ``root``."""
    index = _kernel_index(deb)
    kver, paths, depends, builtin = index.kver, index.paths, index.depends, index.builtin
    present = [m for m in OPTIONAL_MODULES if m in depends or m in builtin]
    order = load_order([*wanted, *present], depends, builtin)
    prefix = f"lib/modules/{kver}/"
    rel = {m: paths[m].removeprefix(prefix) for m in order}
    needed = {paths[m] for m in order}

    # Second pass: copy only what is needed, stopping once all of it is out.
    (root / "boot").mkdir(parents=True)
    vmlinuz = f"boot/vmlinuz-{kver}"
    missing = {*needed, vmlinuz}
    for name, _info, fobj in deb_members(deb, lambda n: n in missing):
        assert fobj is not None
        target = root / "boot" / "vmlinuz" if name == vmlinuz else root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            shutil.copyfileobj(fobj, out)
        target.chmod(0o644)
        missing.discard(name)
        if not missing:
            break
    if missing:
        raise BuildError(f"{deb.name} lacks {', '.join(sorted(missing))}; delete it to refetch")

    moddir = root / prefix
    # modules.dep lists every module's full dependency chain, nearest first, so busybox
    # modprobe works in hooks; modules.edgekit-load is the flat order /init uses.
    lines = []
    for mod in sorted(order, key=lambda m: rel[m]):
        chain = [d for d in load_order([mod], depends, builtin) if d != mod]
        lines.append(f"{rel[mod]}: {' '.join(rel[d] for d in reversed(chain))}".rstrip())
    (moddir / "modules.dep").write_text("\n".join(lines) + "\n")
    (moddir / "modules.builtin").write_text("".join(f"{name}\n" for name in sorted(builtin)))
    (moddir / "modules.edgekit-load").write_text("".join(f"{rel[m]}\n" for m in order))
    return kver, tuple(rel[m] for m in order)


def _is_kernel_file(name: str) -> bool:
    return (
        name.startswith("boot/vmlinuz-")
        or name.endswith("/modules.builtin")
        or (name.startswith("lib/modules/") and name.endswith(".ko"))
    )


def _install_busybox(deb: Path, root: Path) -> None:
    busybox = root / "bin" / "busybox"
    busybox.parent.mkdir(parents=True, exist_ok=True)
    for _name, _info, fobj in deb_members(deb, lambda n: n == "bin/busybox"):
        assert fobj is not None
        with busybox.open("wb") as out:
            shutil.copyfileobj(fobj, out)
    if not busybox.is_file():
        raise BuildError(f"{deb.name} holds no /bin/busybox")
    busybox.chmod(0o755)
    done = subprocess.run([busybox, "--list-full"], capture_output=True, text=True)
    if done.returncode != 0:
        raise BuildError(f"{deb.name}: busybox --list-full failed: {done.stderr.strip()}")
    for applet in sorted(done.stdout.split()):
        link = root / applet
        # /linuxrc and the binary itself are not applets to link; /init is ours.
        if applet in ("bin/busybox", "linuxrc", "init") or link.exists():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")


def _install_files(root: Path, release: str) -> None:
    data = resources.files(__package__).joinpath("data")
    for src, dst, mode in (
        ("init", "init", 0o755),
        # Debian's busybox runs /etc/udhcpc/default.script (upstream: /usr/share/udhcpc/).
        ("default.script", "etc/udhcpc/default.script", 0o755),
        ("find-label", "usr/libexec/edgekit/find-label", 0o755),
    ):
        target = root / dst
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.joinpath(src).read_bytes())
        target.chmod(mode)
    (root / "usr/share/udhcpc").mkdir(parents=True)
    (root / "usr/share/udhcpc/default.script").symlink_to("/etc/udhcpc/default.script")
    version = _RELEASES[release]
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc" / "os-release").write_text(
        "ID=edgekit-sample\n"
        "ID_LIKE=debian\n"
        'NAME="edgekit sample OS"\n'
        f"VERSION_ID={version}\n"
        f'PRETTY_NAME="edgekit sample OS {version} (demos and tests only, NOT production)"\n'
    )
    (root / BOOT_HOOK_DIR).mkdir(parents=True)
    for empty in ("dev", "proc", "sys", "run", "tmp", "mnt", "root", "var/lib"):
        (root / empty).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "root").chmod(0o700)


def _initrd_entries(root: Path) -> Iterator[CpioEntry]:
    """The whole tree but /boot, plus /dev/console (the kernel writes init's output there)."""
    for entry in newc_from_tree(root):
        if entry.path != "boot" and not entry.path.startswith("boot/"):
            yield entry
    yield CpioEntry.device("dev/console", 5, 1, 0o600)


def _set_mtimes(root: Path, mtime: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in [*filenames, *dirnames]:
            os.utime(Path(dirpath) / name, (mtime, mtime), follow_symlinks=False)
    os.utime(root, (mtime, mtime))


def _replace_dir(new: Path, dest: Path) -> None:
    """Move ``new`` to ``dest``; an existing ``dest`` is swapped out first, then removed."""
    old: Path | None = None
    if dest.exists() or dest.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
        os.replace(dest, old / "tree")
    os.replace(new, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
