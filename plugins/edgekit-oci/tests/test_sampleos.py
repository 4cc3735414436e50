"""The sample OS: assembled from real Debian packages, checked on disk and booted in QEMU."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from edgekit_oci.sampleos import BOOT_HOOK_DIR, SampleOsInfo, assemble_sample_os
from edgekit_oci.sampleos._debs import download_deb
from edgekit_oci.sampleos._kmod import load_order, modinfo

from edgekit.cpio import CpioEntry, append_to_initrd
from edgekit.errors import BuildError, ConfigError, SourceError
from edgekit.vm import VirtualMachine

EPOCH = "1700000000"
BOOT_TIMEOUT = 90  # TCG boots take 7-12 s; a hung boot must not hang the suite


@pytest.fixture(scope="session")
def deb_cache() -> Path:
    """Downloaded .debs, kept across sessions (the kernel package is ~70 MB)."""
    root = Path(os.environ.get("EDGEKIT_TEST_CACHE", "/tmp/edgekit-test-cache"))
    return root / "debs"


@pytest.fixture(scope="session")
def sample_os(tmp_path_factory: pytest.TempPathFactory, deb_cache: Path) -> SampleOsInfo:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", EPOCH)
        return assemble_sample_os(tmp_path_factory.mktemp("sampleos") / "root", cache_dir=deb_cache)


def tree_digest(root: Path) -> dict[str, tuple[int, int, str]]:
    """path -> (mode, mtime, sha256 of the contents or the link target) for the whole tree."""
    out: dict[str, tuple[int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            st = path.lstat()
            if path.is_symlink():
                what = "-> " + os.readlink(path)
            elif path.is_file():
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                what = "dir"
            out[path.relative_to(root).as_posix()] = (st.st_mode, int(st.st_mtime), what)
    return out


def cpio_list(initrd: Path) -> list[str]:
    done = subprocess.run(
        ["cpio", "-t", "--quiet"],
        input=gzip.decompress(initrd.read_bytes()),
        capture_output=True,
        check=True,
    )
    return done.stdout.decode().split()


# --- the tree -------------------------------------------------------------------------------


def test_tree_has_kernel_initrd_busybox_and_hook_dir(sample_os: SampleOsInfo) -> None:
    root = sample_os.root
    assert sample_os.kernel == root / "boot/vmlinuz"
    assert 4_000_000 < sample_os.kernel_size == sample_os.kernel.stat().st_size < 20_000_000
    # 1.9 MB before the installer's disk tools (glibc, sfdisk, mke2fs, mkfs.fat), 4.6 MB with.
    assert 500_000 < sample_os.initrd_size == sample_os.initrd.stat().st_size < 8_000_000
    assert sample_os.kernel.read_bytes()[0x202:0x206] == b"HdrS"  # x86 bzImage boot header
    assert sample_os.kernel_version.endswith("-amd64")
    assert sample_os.packages["busybox-static"]
    assert sample_os.packages[f"linux-image-{sample_os.kernel_version}"]
    assert (root / "bin/busybox").stat().st_mode & 0o777 == 0o755
    assert os.readlink(root / "bin/sh") == "/bin/busybox"
    assert os.readlink(root / "sbin/insmod") == "/bin/busybox"
    assert (root / BOOT_HOOK_DIR).is_dir()
    assert list((root / BOOT_HOOK_DIR).iterdir()) == []
    assert os.access(root / "init", os.X_OK)
    assert os.access(root / "etc/udhcpc/default.script", os.X_OK)
    assert os.readlink(root / "usr/share/udhcpc/default.script") == "/etc/udhcpc/default.script"
    assert (root.stat().st_mode & 0o777) == 0o755
    release = dict(
        line.split("=", 1) for line in (root / "etc/os-release").read_text().splitlines()
    )
    assert release["ID"] == "edgekit-sample"
    assert release["VERSION_ID"] == "12"
    assert "NOT production" in release["PRETTY_NAME"]


def test_disk_tools_run_with_the_libraries_in_the_tree(sample_os: SampleOsInfo) -> None:
    """sfdisk, mke2fs and mkfs.fat replace busybox's applets and find every library they
    link in the tree (run on the host through the tree's own loader and library dir)."""
    root = sample_os.root
    libdir = root / "lib/x86_64-linux-gnu"
    assert os.readlink(root / "lib64/ld-linux-x86-64.so.2") == (
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    )
    for tool, args, expect in (
        ("sbin/sfdisk", ["--version"], "util-linux"),
        ("sbin/mke2fs", ["-V"], "mke2fs 1."),
        ("sbin/mkfs.fat", ["--help"], "mkfs.fat"),
    ):
        path = root / tool
        assert not path.is_symlink()
        assert path.read_bytes()[:4] == b"\x7fELF"
        done = subprocess.run(
            [str(libdir / "ld-linux-x86-64.so.2"), "--inhibit-cache", "--library-path",
             str(libdir), str(path), *args],
            capture_output=True, text=True, env={"LC_ALL": "C"},
        )  # fmt: skip
        assert expect in done.stdout + done.stderr, (tool, done)
    assert os.readlink(root / "sbin/mkfs.vfat") == "mkfs.fat"
    assert sample_os.packages["e2fsprogs"]
    kdir = root / "lib/modules" / sample_os.kernel_version
    loaded = (kdir / "modules.edgekit-load").read_text().split()
    assert any(m.endswith("/ext4.ko") for m in loaded)


def test_modules_are_uncompressed_and_ordered_by_dependencies(sample_os: SampleOsInfo) -> None:
    kdir = sample_os.root / "lib/modules" / sample_os.kernel_version
    names = [m.rsplit("/", 1)[-1] for m in sample_os.modules]
    wanted = "ata_piix ahci sr_mod cdrom isofs virtio_blk virtio_scsi virtio_net e1000 vfat"
    for needed in wanted.split():
        assert f"{needed}.ko" in names
    for mod in sample_os.modules:
        assert (kdir / mod).read_bytes()[:4] == b"\x7fELF"  # busybox insmod cannot read .ko.xz
    assert (kdir / "modules.edgekit-load").read_text().split() == list(sample_os.modules)
    position = {m: i for i, m in enumerate(sample_os.modules)}
    deps = {}
    for line in (kdir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    assert set(deps) == set(sample_os.modules)
    assert "kernel/drivers/ata/libata.ko" in deps["kernel/drivers/ata/ata_piix.ko"]
    for mod, needs in deps.items():
        assert all(position[d] < position[mod] for d in needs), mod


def test_initrd_is_the_tree_without_boot_plus_console(sample_os: SampleOsInfo) -> None:
    listed = cpio_list(sample_os.initrd)
    assert listed == sorted(listed, key=lambda p: p.split("/"))
    assert "init" in listed
    assert "dev/console" in listed
    assert "bin/busybox" in listed
    assert BOOT_HOOK_DIR in listed
    assert f"lib/modules/{sample_os.kernel_version}/modules.edgekit-load" in listed
    assert not [p for p in listed if p == "boot" or p.startswith("boot/")]


def test_assembling_again_gives_an_identical_tree(
    sample_os: SampleOsInfo, deb_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "again"
    dest.mkdir()
    (dest / "stale").write_text("replaced atomically")
    # A damaged module index (cached beside the kernel .deb) is rebuilt, not trusted.
    (index,) = deb_cache.glob("linux-image-*.deb.index.json")
    index.write_text('{"format": 1, "deb_size": "truncated')
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    again = assemble_sample_os(dest, cache_dir=deb_cache)
    assert json.loads(index.read_text())["kver"] == sample_os.kernel_version
    assert not (dest / "stale").exists()
    assert again.initrd_sha256 == sample_os.initrd_sha256
    assert tree_digest(dest) == tree_digest(sample_os.root)
    assert {mtime for _, mtime, _ in tree_digest(dest).values()} == {int(EPOCH)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]  # no temp leftovers


# --- errors ---------------------------------------------------------------------------------


def test_arm64_is_refused_with_the_multiarch_reason(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"dpkg --add-architecture arm64"):
        assemble_sample_os(tmp_path / "os", arch="arm64", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "os").exists()


def test_unknown_release_and_arch_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="release"):
        assemble_sample_os(tmp_path / "os", release="debian-9", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="arch"):
        assemble_sample_os(tmp_path / "os", arch="sparc", cache_dir=tmp_path)


def test_missing_apt_is_a_build_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH entry: no apt-cache, no apt-get
    with pytest.raises(BuildError, match="apt-cache not found"):
        assemble_sample_os(tmp_path / "os", cache_dir=tmp_path / "cache")


def test_failed_download_names_the_package_and_apt_get_update(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"busybox-static.*apt-get update") as caught:
        download_deb("busybox-static", "0.0-not-a-version", "amd64", tmp_path)
    assert isinstance(caught.value, BuildError)
    assert list(tmp_path.iterdir()) == []  # no partial download left behind


def test_load_order_puts_dependencies_first_and_reports_bad_graphs() -> None:
    deps = {"a": ["b", "c"], "b": ["c"], "c": [], "x": ["y"], "y": ["x"]}
    assert load_order(["a"], deps, builtin=[]) == ["c", "b", "a"]
    assert load_order(["a"], deps, builtin=["c"]) == ["b", "a"]
    with pytest.raises(BuildError, match="cycle: x -> y -> x"):
        load_order(["x"], deps, builtin=[])
    with pytest.raises(BuildError, match=r"nope \(needed by a\) is not in the kernel"):
        load_order(["a"], {"a": ["nope"]}, builtin=[])


def test_modinfo_reads_real_modules_and_rejects_other_files(sample_os: SampleOsInfo) -> None:
    kdir = sample_os.root / "lib/modules" / sample_os.kernel_version
    info = modinfo((kdir / "kernel/drivers/scsi/sr_mod.ko").read_bytes(), "sr_mod.ko")
    assert info["name"] == ["sr_mod"]
    assert {"cdrom", "scsi_mod"} <= set(info["depends"][0].split(","))
    with pytest.raises(BuildError, match="not a 64-bit little-endian ELF"):
        modinfo(b"#!/bin/sh\n", "init")


# --- booting --------------------------------------------------------------------------------


def boot(info: SampleOsInfo, initrd: Path, log: Path, *qemu_args: str, append: str = "") -> str:
    """Boot ``info.kernel`` with ``initrd`` under TCG until it powers off; return the log."""
    started = time.monotonic()
    with VirtualMachine(
        kernel=info.kernel,
        initrd=initrd,
        append=append,
        network=False,
        serial_log=log,
        extra_args=qemu_args,
    ) as vm:
        text = vm.wait_exit(timeout=BOOT_TIMEOUT)
    print(f"boot took {time.monotonic() - started:.1f}s")
    return text


def with_hooks(info: SampleOsInfo, dest: Path, hooks: dict[str, str]) -> Path:
    """The sample initrd with a second (uncompressed) archive adding boot.d hooks.

    Hooks named with a leading digit are executable; others are plain files /init skips.
    The base is first given a size of 4n+1 with zero bytes (which the kernel skips), so
    the boot also proves append_to_initrd's alignment: unaligned, the kernel rejects the
    second archive ("invalid magic at start of compressed archive").
    """
    entries = []
    for name, body in hooks.items():
        mode = 0o755 if name[:1].isdigit() else 0o644
        entries.append(CpioEntry.file(f"{BOOT_HOOK_DIR}/{name}", body.encode(), mode))
    base = info.initrd.read_bytes()
    unaligned = dest.with_name(dest.name + ".base")
    unaligned.write_bytes(base + b"\0" * ((1 - len(base)) % 4))
    assert unaligned.stat().st_size % 4 == 1
    return append_to_initrd(unaligned, entries, dest)


@pytest.fixture
def test_iso(tmp_path: Path) -> Path:
    content = tmp_path / "iso"
    content.mkdir()
    (content / "hello.txt").write_text("greetings from the test CD\n")
    iso = tmp_path / "test.iso"
    subprocess.run(
        ["xorriso", "-as", "mkisofs", "-V", "TESTLBL", "-o", str(iso), str(content)],
        check=True,
        capture_output=True,
    )
    return iso


@pytest.mark.qemu
def test_boot_runs_appended_hooks_in_order_and_reads_a_cd(
    sample_os: SampleOsInfo, tmp_path: Path, test_iso: Path
) -> None:
    initrd = with_hooks(
        sample_os,
        tmp_path / "initrd",
        {
            "10-hello": '#!/bin/sh\necho "HELLO-MARKER from $(uname -r)"\n',
            "05-first": "#!/bin/sh\necho FIRST-MARKER\nexit 3\n",
            "20-cdrom": (
                "#!/bin/sh\n"
                "dev=$(/usr/libexec/edgekit/find-label TESTLBL 30) || exit 1\n"
                'echo "found TESTLBL on $dev"\n'
                "mkdir -p /mnt/cd && mount -t iso9660 -o ro $dev /mnt/cd\n"
                "cat /mnt/cd/hello.txt\n"
            ),
            "30-nic": "#!/bin/sh\nreadlink /sys/class/net/eth0/device/driver\n",
            "README": "not executable, so not run\n",
        },
    )
    log = boot(
        sample_os,
        initrd,
        tmp_path / "serial.log",
        "-cdrom", str(test_iso), "-nic", "user,model=e1000",
    )  # fmt: skip
    lines = [line.strip() for line in log.splitlines()]
    hooks = [line for line in lines if line.startswith("edgekit-init: running ")]
    names = ("05-first", "10-hello", "20-cdrom", "30-nic")
    assert hooks == [f"edgekit-init: running {n}" for n in names], log
    assert "edgekit-init: 05-first: FIRST-MARKER" in lines, log
    assert "edgekit-init: 05-first exited 3" in lines, log
    assert f"edgekit-init: 10-hello: HELLO-MARKER from {sample_os.kernel_version}" in lines, log
    assert "edgekit-init: 20-cdrom: found TESTLBL on /dev/sr0" in lines, log
    assert "edgekit-init: 20-cdrom: greetings from the test CD" in lines, log
    nic = [line for line in lines if line.startswith("edgekit-init: 30-nic: ")]
    assert nic[0].endswith("/e1000"), log  # QEMU's usual default NIC model
    assert f"edgekit-init: loaded {len(sample_os.modules)} kernel modules" in lines, log
    assert not [line for line in lines if "insmod" in line and "failed" in line], log
    assert "edgekit-init: hooks done" in lines, log
    assert "Initramfs unpacking failed" not in log, log


@pytest.mark.qemu
def test_boot_gets_a_dhcp_lease_on_virtio_net(sample_os: SampleOsInfo, tmp_path: Path) -> None:
    initrd = with_hooks(
        sample_os,
        tmp_path / "initrd",
        {
            "50-dhcp": (
                "#!/bin/sh\n"
                "timeout 30 udhcpc -i eth0 -n -q -t 10\n"
                "ip -4 addr show dev eth0\n"
                "readlink /sys/class/net/eth0/device/driver\n"
            )
        },
    )
    log = boot(
        sample_os,
        initrd,
        tmp_path / "serial.log",
        "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0",
    )  # fmt: skip
    assert "udhcpc: eth0 bound 10.0.2.15/24" in log, log
    assert "inet 10.0.2.15/24" in log, log
    assert "virtio_net" in log, log
    assert "edgekit-init: hooks done" in log, log


@pytest.mark.qemu
def test_edgekit_shell_drops_to_a_shell_on_the_console(sample_os: SampleOsInfo) -> None:
    """With ``edgekit.shell=1`` /init runs hooks, then a shell; leaving it powers off."""
    cmd = [
        "qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-no-reboot",
        "-display", "none", "-monitor", "none", "-serial", "stdio",
        "-kernel", str(sample_os.kernel), "-initrd", str(sample_os.initrd),
        "-append", "console=ttyS0 panic=-1 quiet edgekit.shell=1",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None
    assert proc.stdout is not None
    seen: list[str] = []
    # Reading the console blocks; a timer kills a guest that goes quiet, ending the read.
    watchdog = threading.Timer(BOOT_TIMEOUT, proc.kill)
    watchdog.start()
    try:
        for raw in proc.stdout:
            seen.append(raw.decode(errors="replace").rstrip("\r\n"))
            if "starting a shell" in seen[-1]:
                # The sum is computed by the guest shell, so the marker cannot be an echo.
                proc.stdin.write(b"echo SHELL-$((20 + 22))\nexit\n")
                proc.stdin.flush()
        proc.wait(timeout=BOOT_TIMEOUT)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = "\n".join(seen)
    assert "SHELL-42" in log, log
    assert "edgekit-init: powering off" in log, log
