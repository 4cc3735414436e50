"""Boot an installer ISO or a kernel in QEMU and watch its serial console.

Operators use it to try an installer before shipping it (``edgekit iso boot``); the main job
uses it to boot a demo host; the tests use it to prove that what edgekit builds boots on BIOS
and UEFI machines from a CD or as a disk. QEMU runs without KVM when there is none (TCG), so
allow for slow boots. The VM is always killed when the context ends.

::

    with VirtualMachine(iso=Path("dist/iso/installer.iso"), cdroms=[site_iso]) as vm:
        vm.wait_for("edgekit-installer: site=store-0042", timeout=120)

    # Install onto a blank disk, then boot that disk alone.
    target = create_disk(Path("disk.raw"), size_mib=2048)
    with VirtualMachine(iso=installer, cdroms=[site_iso], disks=[target]) as vm:
        vm.wait_exit(timeout=600)
    with VirtualMachine(disk=target) as vm:
        vm.wait_for("edgekit-agent: registered", timeout=300)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

from edgekit.errors import EdgekitError

__all__ = [
    "OVMF_CODE",
    "OVMF_VARS",
    "VirtualMachine",
    "VmError",
    "create_disk",
    "qemu_available",
]

QEMU = "qemu-system-x86_64"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS.fd")

Firmware = Literal["bios", "uefi"]
Media = Literal["cd", "disk"]


class VmError(EdgekitError):
    """The VM could not start, or did not show what was expected in time.

    The message ends with the tail of the serial log, so a failure explains itself.
    """


def qemu_available() -> str | None:
    """Why QEMU cannot run here (a missing package), or None."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed (apt-get install qemu-system-x86)"
    return None


def create_disk(path: Path, *, size_mib: int = 2048) -> Path:
    """A blank (all-zero) raw disk image of ``size_mib`` MiB at ``path``.

    Sparse (``truncate``): it takes no space until the guest writes to it, and the host can
    read it back with ``sfdisk``/``losetup`` (a qcow2 image would need ``qemu-img`` for that).
    """
    if size_mib <= 0:
        raise VmError(f"a disk needs a positive size, not {size_mib} MiB")
    path = Path(path)
    with path.open("wb") as fp:
        fp.truncate(size_mib << 20)
    return path


def _accel() -> str:
    """TCG unless ``EDGEKIT_VM_ACCEL`` says otherwise: nested KVM is often present but
    broken (here it fails on ISOLINUX's real-mode code with an emulation failure)."""
    return os.environ.get("EDGEKIT_VM_ACCEL", "tcg")


class VirtualMachine:
    """One QEMU guest: boot from ``iso`` (as a CD or a disk), from ``kernel``/``initrd``, or
    from an installed ``disk`` (a raw image, virtio, written in place).

    ``cdroms`` are extra CD drives (site ISOs); ``disks`` are extra virtio disks (raw
    images, written in place: install targets, see :func:`create_disk`), which the firmware
    tries only after the boot medium; ``network`` gives the guest a virtio NIC on QEMU's
    user network, where the host's 127.0.0.1 is reachable as 10.0.2.2.
    """

    def __init__(
        self,
        *,
        iso: Path | None = None,
        kernel: Path | None = None,
        initrd: Path | None = None,
        disk: Path | None = None,
        disks: Sequence[Path] = (),
        append: str = "",
        firmware: Firmware = "bios",
        media: Media = "cd",
        cdroms: Sequence[Path] = (),
        network: bool = True,
        memory_mib: int = 512,
        uuid: str | None = None,
        serial_log: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        if sum(p is not None for p in (iso, kernel, disk)) != 1:
            raise ValueError("give one of iso, kernel (with initrd) or disk")
        iso, kernel, initrd, disk = (
            p.resolve() if p is not None else None for p in (iso, kernel, initrd, disk)
        )
        cdroms = [Path(cd).resolve() for cd in cdroms]
        disks = [Path(d).resolve() for d in disks]
        for path in (iso, kernel, initrd, disk, *cdroms, *disks):
            if path is not None and not path.is_file():
                raise VmError(f"{path}: no such file")
        reason = qemu_available()
        if reason:
            raise VmError(reason)
        if firmware == "uefi" and not OVMF_CODE.exists():
            raise VmError(f"UEFI boots need {OVMF_CODE} (apt-get install ovmf)")
        self._workdir = Path(tempfile.mkdtemp(prefix="edgekit-vm-"))
        self.serial_log = serial_log or self._workdir / "serial.log"
        self.serial_log.touch()
        argv = [
            QEMU, "-m", str(memory_mib), "-nographic", "-nodefaults", "-no-reboot",
            "-monitor", "none", "-serial", f"file:{self.serial_log}",
            "-accel", _accel(),
        ]  # fmt: skip
        if firmware == "uefi":
            vars_copy = self._workdir / "OVMF_VARS.fd"
            shutil.copyfile(OVMF_VARS, vars_copy)  # a fresh NVRAM per boot
            argv += [
                "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                "-drive", f"if=pflash,format=raw,file={vars_copy}",
            ]  # fmt: skip
        index = 0
        if iso is not None and not disks:
            if media == "cd":
                argv += ["-drive", f"file={iso},media=cdrom,readonly=on,if=ide,index={index}"]
            else:  # a USB stick or disk: the hybrid image written raw; never modified
                argv += ["-drive", f"file={iso},format=raw,if=ide,index={index},snapshot=on"]
            index += 1
        elif iso is not None:
            # With install targets attached, the boot order is explicit: a blank disk is
            # skipped by the firmware, but one with a partition table would be tried first.
            device = "ide-cd" if media == "cd" else "ide-hd"
            opts = "media=cdrom,readonly=on" if media == "cd" else "format=raw,snapshot=on"
            argv += ["-drive", f"file={iso},{opts},if=none,id=boot0",
                     "-device", f"{device},drive=boot0,bus=ide.{index // 2},unit={index % 2},"
                     "bootindex=0"]  # fmt: skip
            index += 1
        elif disk is not None:
            argv += ["-drive", f"file={disk},format=raw,if=none,id=boot0",
                     "-device", "virtio-blk-pci,drive=boot0,bootindex=0"]  # fmt: skip
        else:
            if initrd is None:
                raise ValueError("a kernel boot needs an initrd")
            argv += ["-kernel", str(kernel), "-initrd", str(initrd)]
            argv += ["-append", f"console=ttyS0 panic=-1 {append}".strip()]
        for n, target in enumerate(disks, start=1):
            argv += ["-drive", f"file={target},format=raw,if=none,id=disk{n}",
                     "-device", f"virtio-blk-pci,drive=disk{n},bootindex={n}"]  # fmt: skip
        for cd in cdroms:
            argv += ["-drive", f"file={cd},media=cdrom,readonly=on,if=ide,index={index}"]
            index += 1
        if network:
            argv += ["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"]
        if uuid is not None:
            argv += ["-uuid", uuid]
        argv += list(extra_args)
        self.argv = argv
        self._stderr = self._workdir / "qemu.stderr"
        self.proc: subprocess.Popen[bytes] | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> VirtualMachine:
        """Start QEMU (idempotent)."""
        if self.proc is None:
            with self._stderr.open("wb") as err:
                self.proc = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
                )
        return self

    def stop(self) -> None:
        """Kill QEMU if it still runs, and remove the VM's scratch files."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> VirtualMachine:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --- watching -----------------------------------------------------------------------

    def text(self) -> str:
        """The serial console output so far."""
        try:
            return self.serial_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _failure(self, what: str) -> VmError:
        tail = "\n".join(self.text().splitlines()[-60:])
        err = ""
        if self._stderr.exists():
            err = self._stderr.read_text(errors="replace").strip()
        detail = f"\nqemu: {err}" if err else ""
        return VmError(f"{what}{detail}\n--- serial console (last lines) ---\n{tail}")

    def wait_for(
        self,
        expected: str | re.Pattern[str] | Callable[[str], bool],
        *,
        timeout: float = 300,
    ) -> str:
        """Wait until the serial console shows ``expected`` (text, regex or predicate).

        Returns the console text; raises :class:`VmError` with the log's tail on timeout or
        if QEMU exits first.
        """
        self.start()
        if isinstance(expected, str):
            check: Callable[[str], bool] = lambda text: expected in text  # noqa: E731
            what = repr(expected)
        elif isinstance(expected, re.Pattern):
            pattern = expected
            check = lambda text: pattern.search(text) is not None  # noqa: E731
            what = f"/{pattern.pattern}/"
        else:
            check = expected
            what = getattr(expected, "__name__", "the expected output")
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if check(text):
                return text
            if not self.running:
                text = self.text()  # QEMU may have written its last lines while exiting
                if check(text):
                    return text
                raise self._failure(f"the VM stopped before showing {what}")
            if time.monotonic() > deadline:
                raise self._failure(f"the VM did not show {what} within {timeout:.0f} s")
            time.sleep(0.25)

    def wait_exit(self, *, timeout: float = 300) -> str:
        """Wait until the guest powers off; return the console text."""
        self.start()
        assert self.proc is not None
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise self._failure(f"the VM did not power off within {timeout:.0f} s") from None
        return self.text()
