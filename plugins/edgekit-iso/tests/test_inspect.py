"""inspect_iso on images made by xorriso, genisoimage, pycdlib and edgekit's site ISO writer."""

from __future__ import annotations

import json
import random
import re
import shutil
import struct
import subprocess
import uuid
import zlib
from pathlib import Path
from typing import Any

import pycdlib
import pytest
from edgekit_iso.inspect import inspect_iso
from edgekit_iso.siteiso import write_site_iso

from edgekit.errors import EdgekitError, SourceError

ISOLINUX = Path("/usr/lib/ISOLINUX/isolinux.bin")
ISOHDPFX = Path("/usr/lib/ISOLINUX/isohdpfx.bin")
LDLINUX = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
CONFIG = "#cloud-config\nstylus:\n  site:\n    name: Zürich-1 東京\n"


def run(*cmd: str | Path, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=120, cwd=cwd
    )
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}): {proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An installer-like tree: isolinux, a FAT EFI image and /config.yaml."""
    root = tmp_path_factory.mktemp("tree")
    (root / "isolinux").mkdir()
    shutil.copy(ISOLINUX, root / "isolinux" / "isolinux.bin")
    shutil.copy(LDLINUX, root / "isolinux" / "ldlinux.c32")
    (root / "isolinux" / "isolinux.cfg").write_text("default live\n")
    (root / "config.yaml").write_text(CONFIG)
    run("mkfs.vfat", "-C", root / "efi.img", "2880")
    run("mmd", "-i", root / "efi.img", "::/EFI", "::/EFI/BOOT")
    return root


@pytest.fixture(scope="module")
def hybrid_iso(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("iso") / "installer.iso"
    run("xorriso", "-as", "mkisofs", "-o", out, "-V", "COS_LIVE", "-J", "-r",
        "-b", "isolinux/isolinux.bin", "-c", "boot.cat", "-no-emul-boot",
        "-boot-load-size", "4", "-boot-info-table",
        "-eltorito-alt-boot", "-e", "efi.img", "-no-emul-boot",
        "-isohybrid-mbr", ISOHDPFX, "-isohybrid-gpt-basdat", tree)  # fmt: skip
    return out


def xorriso_report(path: Path) -> str:
    return run("xorriso", "-indev", path, "-report_el_torito", "plain",
               "-report_system_area", "plain")  # fmt: skip


def test_hybrid_installer_iso(hybrid_iso: Path, tree: Path) -> None:
    info = inspect_iso(hybrid_iso)
    assert info.path == hybrid_iso
    assert info.size == hybrid_iso.stat().st_size
    assert info.volume_label == "COS_LIVE"
    assert info.joliet_label == "COS_LIVE"
    assert info.volume_sectors * 2048 <= info.size
    assert info.rock_ridge
    assert info.joliet
    assert info.user_data_path == "/config.yaml"
    assert info.user_data == CONFIG

    # Files and sizes as in the source tree (plus xorriso's visible boot catalog).
    expected = {
        "/" + str(p.relative_to(tree)): p.stat().st_size for p in tree.rglob("*") if p.is_file()
    }
    assert {f.path: f.size for f in info.files if f.path != "/boot.cat"} == expected
    assert info.boot_catalog == "/boot.cat"

    bios, efi = info.boot_entries
    assert (bios.platform, bios.emulation, bios.bootable) == ("bios", "no-emulation", True)
    assert bios.image_path == "/isolinux/isolinux.bin"
    assert bios.load_size == 4
    assert (efi.platform, efi.platform_id, efi.emulation) == ("efi", 0xEF, "no-emulation")
    assert efi.image_path == "/efi.img"

    # xorriso's own reading of the catalog and the system area agrees.
    report = xorriso_report(hybrid_iso)
    for n, entry, pltf in ((1, bios, "BIOS"), (2, efi, "UEFI")):
        assert re.search(
            rf"El Torito boot img : +{n} +{pltf} +y +none +0x{entry.load_segment:04x} +0x00 +"
            rf"{entry.load_size} +{entry.load_rba}$",
            report,
            re.M,
        ), report
    assert info.is_hybrid
    assert info.hybrid.mbr_signature
    assert [(p.number, p.type, p.bootable) for p in info.hybrid.mbr_partitions] == [
        (1, 0x00, True),
        (2, 0xEF, False),
    ]
    gpt = info.hybrid.gpt
    assert gpt is not None
    assert gpt.header_crc_valid
    assert gpt.entries_crc_valid
    assert gpt.backup_valid
    assert [p.name for p in gpt.partitions] == ["ISOHybrid", "ISOHybrid1"]
    assert gpt.disk_guid.replace("-", "") == _xorriso_guid(report, "GPT disk GUID")
    for p in gpt.partitions:
        start_size = re.search(rf"GPT start and size : +{p.number} +(\d+) +(\d+)", report)
        assert start_size is not None
        assert (p.first_lba, p.last_lba + 1 - p.first_lba) == tuple(
            int(x) for x in start_size.groups()
        )

    # The dict is JSON and carries everything.
    data = json.loads(json.dumps(info.to_dict()))
    assert data["path"] == str(hybrid_iso)
    assert data["is_hybrid"] is True
    assert data["boot_entries"][1]["platform"] == "efi"
    assert data["hybrid"]["gpt"]["header_crc_valid"] is True
    assert data["user_data"] == CONFIG


def _xorriso_guid(report: str, key: str) -> str:
    """xorriso prints GUIDs as raw bytes in hex: turn them into the textual (mixed-endian) form."""
    m = re.search(rf"{key} +: +([0-9a-f]{{32}})", report)
    assert m is not None
    raw = bytes.fromhex(m.group(1))
    return uuid.UUID(bytes_le=raw).hex


def _corrupt(src: Path, dest: Path, offset: int) -> Path:
    data = bytearray(src.read_bytes())
    data[offset] ^= 0xFF
    dest.write_bytes(bytes(data))
    return dest


def test_gpt_crcs_are_recomputed(hybrid_iso: Path, tmp_path: Path) -> None:
    raw = hybrid_iso.read_bytes()
    header = raw[512:1024]
    entries_lba = struct.unpack_from("<Q", header, 72)[0]
    # A byte in the first partition's name: only the entry array CRC breaks.
    bad_entries = inspect_iso(_corrupt(hybrid_iso, tmp_path / "e.iso", entries_lba * 512 + 60))
    assert bad_entries.hybrid.gpt is not None
    assert bad_entries.hybrid.gpt.header_crc_valid
    assert not bad_entries.hybrid.gpt.entries_crc_valid
    # A byte in the header's disk GUID: only the header CRC breaks.
    bad_header = inspect_iso(_corrupt(hybrid_iso, tmp_path / "h.iso", 512 + 60))
    assert bad_header.hybrid.gpt is not None
    assert not bad_header.hybrid.gpt.header_crc_valid
    assert bad_header.hybrid.gpt.entries_crc_valid
    # The backup header at the end of the image.
    alternate = struct.unpack_from("<Q", header, 32)[0]
    bad_backup = inspect_iso(_corrupt(hybrid_iso, tmp_path / "b.iso", alternate * 512 + 60))
    assert bad_backup.hybrid.gpt is not None
    assert not bad_backup.hybrid.gpt.backup_valid
    assert bad_backup.hybrid.gpt.header_crc_valid
    # Sanity: the CRC we compare against is the one zlib computes over the stored header.
    zeroed = header[:16] + b"\0\0\0\0" + header[20:92]
    assert zlib.crc32(zeroed) == struct.unpack_from("<I", header, 16)[0]


def test_bios_only_iso_is_not_hybrid(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "bios.iso"
    run("xorriso", "-as", "mkisofs", "-o", out, "-V", "BIOSONLY", "-r",
        "-b", "isolinux/isolinux.bin", "-c", "boot.cat", "-no-emul-boot",
        "-boot-load-size", "4", "-boot-info-table", tree)  # fmt: skip
    info = inspect_iso(out)
    assert info.volume_label == "BIOSONLY"
    assert not info.joliet
    assert info.joliet_label is None
    assert [(e.platform, e.image_path) for e in info.boot_entries] == [
        ("bios", "/isolinux/isolinux.bin")
    ]
    assert not info.is_hybrid
    assert info.hybrid.gpt is None
    assert not info.hybrid.mbr_signature


def test_pycdlib_made_hybrid(tree: Path, tmp_path: Path) -> None:
    """pycdlib writes El Torito and isohybrid differently from xorriso (no GPT by default)."""
    iso: Any = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident="PYCD", joliet=3, rock_ridge="1.09")
    iso.add_directory("/ISOLINUX", rr_name="isolinux", joliet_path="/isolinux")
    iso.add_file(str(tree / "isolinux" / "isolinux.bin"), "/ISOLINUX/ISOLINUX.BIN;1",
                 rr_name="isolinux.bin", joliet_path="/isolinux/isolinux.bin")  # fmt: skip
    iso.add_file(str(tree / "config.yaml"), "/CONFIG.YAML;1", rr_name="config.yaml",
                 joliet_path="/config.yaml")  # fmt: skip
    iso.add_eltorito("/ISOLINUX/ISOLINUX.BIN;1", bootcatfile="/BOOT.CAT;1", boot_load_size=4,
                     boot_info_table=True)  # fmt: skip
    iso.add_isohybrid()
    out = tmp_path / "pycd.iso"
    iso.write(str(out))
    iso.close()
    info = inspect_iso(out)
    assert info.volume_label == "PYCD"
    assert [(e.platform, e.load_size, e.image_path) for e in info.boot_entries] == [
        ("bios", 4, "/isolinux/isolinux.bin")
    ]
    assert info.hybrid.mbr_signature
    assert info.is_hybrid
    assert info.user_data == CONFIG


def test_site_iso(tmp_path: Path) -> None:
    site = write_site_iso(tmp_path / "site-9.iso", user_data="#cloud-config\nhostname: ö\n")
    info = inspect_iso(site.path)
    assert info.volume_label == "cidata"
    assert info.joliet_label == "cidata"
    assert info.rock_ridge
    assert info.joliet
    assert info.boot_entries == ()
    assert info.boot_catalog is None
    assert not info.is_hybrid
    assert [(f.path, f.size) for f in info.files] == [
        ("/meta-data", len(b"instance-id: site-9\nlocal-hostname: site-9\n")),
        ("/user-data", len("#cloud-config\nhostname: ö\n".encode())),
    ]
    assert info.user_data_path == "/user-data"
    assert info.user_data == "#cloud-config\nhostname: ö\n"
    assert info.volume_sectors * 2048 == site.size


def test_genisoimage_cidata_plain_and_joliet_only(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "user-data").write_text("#cloud-config\n")
    (src / "meta-data").write_text("instance-id: g\n")
    joliet = tmp_path / "joliet.iso"
    run("genisoimage", "-quiet", "-o", joliet, "-V", "cidata", "-J", src)
    info = inspect_iso(joliet)
    assert (info.joliet, info.rock_ridge) == (True, False)
    assert [f.path for f in info.files] == ["/meta-data", "/user-data"]
    assert info.user_data == "#cloud-config\n"

    (src / "config.yaml").write_text(CONFIG)
    plain = tmp_path / "plain.iso"
    run("genisoimage", "-quiet", "-o", plain, "-V", "PLAIN", src)
    info = inspect_iso(plain)
    assert (info.joliet, info.rock_ridge) == (False, False)
    assert "/CONFIG.YAM" in [f.path for f in info.files]
    # Plain ISO9660 has only 8.3 upper-case names: /config.yaml cannot be recognised.
    assert info.user_data_path is None


def test_enhanced_descriptor_before_joliet(tree: Path, tmp_path: Path) -> None:
    """genisoimage -iso-level 4 puts an ISO 9660:1999 descriptor (also type 2) before Joliet's."""
    out = tmp_path / "level4.iso"
    run("genisoimage", "-quiet", "-o", out, "-V", "LEVEL4", "-J", "-iso-level", "4", tree)
    assert out.read_bytes()[17 * 2048 : 17 * 2048 + 7] == b"\x02CD001\x02"
    info = inspect_iso(out)
    assert info.joliet
    assert info.joliet_label == "LEVEL4"
    assert info.user_data == CONFIG


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p, "no such file"),
        (lambda p: (p.mkdir(), p)[1], "is a directory"),
        (lambda p: (p.write_bytes(b""), p)[1], "not an ISO9660 image"),
        (lambda p: (p.write_bytes(b"MZ" + bytes(100_000)), p)[1], "no CD001"),
    ],
    ids=["missing", "directory", "empty", "zeros"],
)
def test_not_an_iso(tmp_path: Path, make: Any, message: str) -> None:
    path = make(tmp_path / "thing.iso")
    with pytest.raises(SourceError, match=message) as exc:
        inspect_iso(path)
    assert str(path) in str(exc.value)
    assert isinstance(exc.value, EdgekitError)


def test_truncated_iso(hybrid_iso: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.iso"
    short.write_bytes(hybrid_iso.read_bytes()[: 17 * 2048 + 100])
    with pytest.raises(SourceError, match=r"short\.iso"):
        inspect_iso(short)
    half = tmp_path / "half.iso"
    half.write_bytes(hybrid_iso.read_bytes()[: 20 * 2048])
    with pytest.raises(SourceError, match=r"half\.iso"):
        inspect_iso(half)


def test_damaged_images_give_source_errors_or_results(hybrid_iso: Path, tmp_path: Path) -> None:
    """Random byte damage in the metadata never escapes as anything but a SourceError."""
    site = write_site_iso(tmp_path / "site.iso", user_data="#cloud-config\n").path
    originals = [hybrid_iso.read_bytes(), site.read_bytes()]
    rng = random.Random(20261124)
    ok, errors = 0, []
    damaged = tmp_path / "damaged.iso"
    for _ in range(300):
        data = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(0, 60 * 2048)] = rng.randrange(256)
        damaged.write_bytes(bytes(data))
        try:
            inspect_iso(damaged)
        except SourceError as exc:
            errors.append(str(exc))
        else:
            ok += 1
    assert ok
    assert errors
    assert all(str(damaged) in e for e in errors)
