"""Boot the installer ISO in QEMU (TCG): BIOS and UEFI, as a CD and as a disk.

Each boot must show the installer finding the right user-data by volume label and printing
the site name and the install plan, refusing the install (these machines have no disk),
then the sample OS powering off.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
from edgekit_iso.build import Backend, build_installer_iso
from edgekit_iso.spec import BootMenu, InstallerIsoSpec
from installer_iso_support import (
    DEB_CACHE,
    IMAGE_REF,
    SITE_USER_DATA,
    USER_DATA,
    boot,
    oci_layout,
    run,
)

pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module")
def sample_os(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgekit_oci.sampleos import assemble_sample_os

    root = tmp_path_factory.mktemp("sampleos") / "root"
    assemble_sample_os(root, cache_dir=DEB_CACHE)
    return root


@pytest.fixture(scope="module")
def base_spec(sample_os: Path, tmp_path_factory: pytest.TempPathFactory) -> InstallerIsoSpec:
    layout = oci_layout(tmp_path_factory.mktemp("layout") / "layout")
    return InstallerIsoSpec.from_image_tree(
        sample_os, USER_DATA, oci_layout_dir=layout, boot_menu=BootMenu(timeout_s=1)
    )


@pytest.fixture(scope="module")
def isos(base_spec: InstallerIsoSpec, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("isos")
    return {
        backend: build_installer_iso(base_spec, out / f"{backend}.iso", backend=backend).path
        for backend in ("pycdlib", "xorriso")
    }


def _assert_installer_ran(log: str, *, source: str, site: str, device: str) -> None:
    assert "edgekit-installer: user-data from " + source in log, log
    assert f"edgekit-installer: site={site}" in log, log
    assert f"install plan: device={device} image={IMAGE_REF}" in log, log
    # These machines have no disk to install onto: the named device is refused, in one
    # line, and the boot goes on (tests/test_install_disk.py installs onto a real one).
    assert f"edgekit-installer: refusing to install: install.device {device} does not exist" in (
        log
    ), log
    assert "edgekit-init: 50-edgekit-installer exited 1" in log, log
    assert "edgekit-init: hooks done" in log, log


MATRIX = [
    (backend, firmware, media)
    for backend in ("pycdlib", "xorriso")
    for firmware in ("bios", "uefi")
    for media in ("cd", "disk")
]


@pytest.mark.parametrize(("backend", "firmware", "media"), MATRIX)
def test_boots_and_reads_user_data_from_the_installer_iso(
    isos: dict[str, Path], tmp_path: Path, backend: Backend, firmware: str, media: str
) -> None:
    log = boot(isos[backend], tmp_path / "serial.log", firmware=firmware, media=media)
    _assert_installer_ran(log, source="installer (/dev/", site="store-installer-042",
                          device="/dev/vda")  # fmt: skip
    if media == "cd":
        assert "user-data from installer (/dev/sr" in log
    else:
        # Booted as a disk there is no CD drive: the label found a disk (or its partition).
        assert "user-data from installer (/dev/sd" in log
    if firmware == "uefi":
        assert "GRUB" in log
    else:
        assert "ISOLINUX" in log
    assert "edgekit-installer: mode=auto" in log


@pytest.mark.parametrize("backend", ["pycdlib", "xorriso"])
def test_site_iso_user_data_wins(isos: dict[str, Path], tmp_path: Path, backend: Backend) -> None:
    site = tmp_path / "site.iso"
    try:
        from edgekit_iso.siteiso import write_site_iso

        write_site_iso(site, user_data=SITE_USER_DATA)
    except ImportError:  # the site ISO writer is another module; fall back to xorriso
        (tmp_path / "cidata").mkdir()
        (tmp_path / "cidata" / "user-data").write_text(SITE_USER_DATA)
        (tmp_path / "cidata" / "meta-data").write_text("instance-id: site\n")
        run(["xorriso", "-as", "mkisofs", "-R", "-V", "cidata", "-o", str(site),
             str(tmp_path / "cidata")])  # fmt: skip
    log = boot(
        isos[backend], tmp_path / "serial.log", firmware="bios", media="cd", extra_cds=(site,)
    )
    _assert_installer_ran(log, source="cidata (/dev/sr", site="store-site-777", device="/dev/sdb")


def test_manual_default_entry(base_spec: InstallerIsoSpec, tmp_path: Path) -> None:
    spec = attrs.evolve(base_spec, boot_menu=BootMenu(default="manual", timeout_s=1))
    iso = build_installer_iso(spec, tmp_path / "manual.iso").path
    log = boot(iso, tmp_path / "serial.log", firmware="bios", media="cd")
    # The manual entry makes the screen /dev/console, so the serial line shows the kernel's
    # messages (first console=) but not the hooks' output: check the command line and that
    # no automatic install plan was printed.
    cmdline = next(line for line in log.splitlines() if "Kernel command line:" in line)
    assert "edgekit.mode=manual" in cmdline, log
    assert "install plan" not in log


def test_serial_console_entry(base_spec: InstallerIsoSpec, tmp_path: Path) -> None:
    spec = attrs.evolve(base_spec, boot_menu=BootMenu(default="serial", timeout_s=1))
    iso = build_installer_iso(spec, tmp_path / "serial.iso", backend="xorriso").path
    log = boot(iso, tmp_path / "serial.log", firmware="uefi", media="cd")
    cmdline = next(line for line in log.splitlines() if "Kernel command line:" in line)
    assert "console=tty0" not in cmdline, log
    _assert_installer_ran(
        log, source="installer (/dev/sr", site="store-installer-042", device="/dev/vda"
    )
