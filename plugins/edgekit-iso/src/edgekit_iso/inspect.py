"""Inspect an ISO image: label, El Torito boot entries, hybrid MBR/GPT, files and user-data.

The volume descriptors, the El Torito boot catalog, the MBR and the GPT are parsed here from
the bytes (GPT CRCs are recomputed, not trusted), so a broken image is reported rather than
repaired; the directory tree is read with pycdlib, preferring Rock Ridge, then Joliet names.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import attrs
import pycdlib

from edgekit import limits
from edgekit.errors import SourceError

__all__ = [
    "USER_DATA_PATHS",
    "BootEntry",
    "GptInfo",
    "GptPartition",
    "HybridInfo",
    "IsoFile",
    "IsoInfo",
    "MbrPartition",
    "inspect_iso",
]

SECTOR = 2048
#: Where user-data lives, in the order looked for: installer ISOs (Kairos), then site ISOs.
USER_DATA_PATHS = ("/config.yaml", "/user-data")
#: User-data larger than this is not read into :attr:`IsoInfo.user_data`.
MAX_USER_DATA = 16 * 1024 * 1024

_PLATFORMS = {0x00: "bios", 0x01: "ppc", 0x02: "mac", 0xEF: "efi"}
_EMULATIONS = {
    0: "no-emulation",
    1: "floppy-1.2M",
    2: "floppy-1.44M",
    3: "floppy-2.88M",
    4: "hard-disk",
}
_PyCdlib: Any = pycdlib.PyCdlib  # pycdlib is untyped; keep its calls in Any territory
_PyCdlibException: type[Exception] = pycdlib.pycdlibexception.PyCdlibException
# What pycdlib raises on a damaged image: its own exception, or (found by fuzzing the tests'
# images) a low-level one from deep in its parser.
_READ_ERRORS: tuple[type[Exception], ...] = (
    _PyCdlibException,
    struct.error,
    KeyError,
    AttributeError,
    TypeError,
    ValueError,
    IndexError,
    EOFError,
    OSError,  # seeking to a damaged offset
    OverflowError,
)


@attrs.frozen
class IsoFile:
    """A regular file in the image."""

    path: str
    size: int
    #: First 2048-byte sector of its data.
    extent: int


@attrs.frozen
class BootEntry:
    """One El Torito boot entry."""

    #: ``bios``, ``efi``, ``ppc``, ``mac`` or ``0x..`` for other platform ids.
    platform: str
    platform_id: int
    #: Boot indicator 0x88 (bootable) rather than 0x00.
    bootable: bool
    #: ``no-emulation``, ``floppy-1.2M``, ``floppy-1.44M``, ``floppy-2.88M``, ``hard-disk``.
    emulation: str
    #: Sectors the firmware loads, in 512-byte units (0: firmware's choice).
    load_size: int
    load_segment: int
    #: 2048-byte sector where the boot image starts.
    load_rba: int
    #: The file at :attr:`load_rba`, if the image's tree has one (an appended ESP has none).
    image_path: str | None


@attrs.frozen
class MbrPartition:
    """An MBR partition entry with a type or a size."""

    number: int
    type: int
    bootable: bool
    #: First and count of 512-byte sectors.
    start_lba: int
    sectors: int


@attrs.frozen
class GptPartition:
    """A used GPT partition entry (512-byte LBAs)."""

    number: int
    type_guid: str
    guid: str
    first_lba: int
    last_lba: int
    name: str


@attrs.frozen
class GptInfo:
    """The GPT found at LBA 1, with its CRCs checked against the bytes."""

    header_crc_valid: bool
    entries_crc_valid: bool
    #: The backup header at the header's alternate LBA exists and both its CRCs are valid.
    backup_valid: bool
    disk_guid: str
    partitions: tuple[GptPartition, ...]


@attrs.frozen
class HybridInfo:
    """What the first sectors say about booting the image from a disk (USB stick)."""

    mbr_signature: bool
    mbr_partitions: tuple[MbrPartition, ...]
    #: ``None`` when there is no ``EFI PART`` header at LBA 1.
    gpt: GptInfo | None

    @property
    def is_hybrid(self) -> bool:
        """True if the image has a boot signature and a partition table (MBR or GPT)."""
        return self.mbr_signature and (bool(self.mbr_partitions) or self.gpt is not None)


@attrs.frozen
class IsoInfo:
    """Everything :func:`inspect_iso` found."""

    path: Path
    size: int
    #: The primary volume descriptor's volume identifier (trailing spaces removed).
    volume_label: str
    #: The Joliet volume identifier, when there is a Joliet tree.
    joliet_label: str | None
    #: Volume space size in 2048-byte sectors.
    volume_sectors: int
    rock_ridge: bool
    joliet: bool
    #: The boot catalog's path, if El Torito is present and the catalog is a visible file.
    boot_catalog: str | None
    boot_entries: tuple[BootEntry, ...]
    hybrid: HybridInfo
    files: tuple[IsoFile, ...]
    #: Which of :data:`USER_DATA_PATHS` was found, and its text (invalid UTF-8 replaced).
    user_data_path: str | None
    user_data: str | None

    @property
    def is_hybrid(self) -> bool:
        """Bootable from a disk as well as from optical media."""
        return self.hybrid.is_hybrid

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (paths as strings, ``is_hybrid`` included)."""
        out = attrs.asdict(self, value_serializer=_serialize)
        out["is_hybrid"] = self.is_hybrid
        out["hybrid"]["is_hybrid"] = self.hybrid.is_hybrid
        return out


def _serialize(_inst: Any, _field: Any, value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


class _WithoutSystemArea(io.RawIOBase):
    """A read-only view of an ISO whose 32 KiB system area (MBR, GPT) reads as zeros."""

    SYSTEM_AREA = 16 * 2048

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def readinto(self, buffer: Any) -> int:
        start = self._raw.tell()
        view = memoryview(buffer).cast("B")
        data = self._raw.read(len(view))
        n = len(data)
        view[:n] = data
        if start < self.SYSTEM_AREA:
            hidden = min(n, self.SYSTEM_AREA - start)
            view[:hidden] = bytes(hidden)
        return n


def inspect_iso(path: str | Path) -> IsoInfo:
    """Read *path* and describe it; raises :class:`SourceError` if it is missing or not an ISO."""
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO nobody writes to would block forever.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise SourceError(f"cannot inspect {path}: no such file") from None
    except IsADirectoryError:
        raise SourceError(f"cannot inspect {path}: it is a directory, not an ISO image") from None
    except OSError as exc:
        raise SourceError(f"cannot inspect {path}: {exc.strerror}") from None
    mode = os.fstat(fd).st_mode
    # A regular file, or a block device (a USB stick the ISO was written to); a FIFO,
    # socket or character device (/dev/zero) is no image and may never end.
    if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
        os.close(fd)
        kind = "a device" if stat.S_ISCHR(mode) else limits.kind_name(mode)
        raise SourceError(f"cannot inspect {path}: it is {kind}, not an ISO image")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as fp:
        size = fp.seek(0, io.SEEK_END)
        descriptors = _volume_descriptors(fp, path)
        pvd = descriptors.get(1)
        if pvd is None:
            raise SourceError(f"{path} is not an ISO9660 image: no primary volume descriptor")
        svd = descriptors.get(2)
        joliet_label = None
        if svd is not None:
            joliet_label = svd[40:72].decode("utf-16-be", "replace").rstrip(" \x00")
        iso = _PyCdlib()
        try:
            fp.seek(0)
            # pycdlib only reads the tree here; the boot records and the hybrid MBR/GPT are
            # parsed by hand below. Its own isohybrid parser rejects GPT partition types other
            # than basic data (the EFI System partition of every hybrid installer ISO).
            iso.open_fp(_WithoutSystemArea(fp))
        except _READ_ERRORS as exc:
            raise SourceError(f"{path} is not a readable ISO9660 image: {_why(exc)}") from None
        try:
            rock_ridge = bool(iso.has_rock_ridge())
            joliet = bool(iso.has_joliet())
            facade = "rr_path" if rock_ridge else "joliet_path" if joliet else "iso_path"
            found = {f.path: (f, full) for f, full in _files(iso, facade)}
            files = tuple(f for f, _full in found.values())
            user_data_path, user_data = _user_data(iso, facade, found)
        except _READ_ERRORS as exc:
            raise SourceError(f"{path}: cannot read the directory tree: {_why(exc)}") from None
        finally:
            iso.close()
        by_extent = {f.extent: f.path for f in files if f.size}
        catalog_path, entries = _eltorito(fp, descriptors.get(0), by_extent, path)
        hybrid = _hybrid(fp, size)
    return IsoInfo(
        path=path,
        size=size,
        volume_label=pvd[40:72].decode("ascii", "replace").rstrip(" \x00"),
        joliet_label=joliet_label,
        volume_sectors=struct.unpack_from("<I", pvd, 80)[0],
        rock_ridge=rock_ridge,
        joliet=joliet,
        boot_catalog=catalog_path,
        boot_entries=entries,
        hybrid=hybrid,
        files=files,
        user_data_path=user_data_path,
        user_data=user_data,
    )


def _why(exc: Exception) -> str:
    if isinstance(exc, _PyCdlibException):
        return str(exc)
    return f"damaged metadata (pycdlib failed with {type(exc).__name__}: {exc})"


def _volume_descriptors(fp: IO[bytes], path: Path) -> dict[int, bytes]:
    """The first descriptor of each type (0 boot record, 1 primary, 2 Joliet)."""
    found: dict[int, bytes] = {}
    for sector in range(16, 16 + 64):
        fp.seek(sector * SECTOR)
        vd = fp.read(SECTOR)
        if len(vd) < SECTOR or vd[1:6] != b"CD001":
            if sector == 16:
                raise SourceError(
                    f"{path} is not an ISO9660 image: no CD001 volume descriptor at sector 16"
                )
            raise SourceError(f"{path}: volume descriptor set is truncated or corrupt")
        if vd[0] == 255:
            return found
        if vd[0] == 2 and not _is_joliet(vd):
            continue  # another supplementary descriptor (e.g. ISO 9660:1999): not Joliet's
        found.setdefault(vd[0], vd)
    raise SourceError(f"{path}: volume descriptor set has no terminator")


def _is_joliet(vd: bytes) -> bool:
    """A supplementary descriptor with a UCS-2 level 1-3 escape sequence."""
    return vd[88:90] == b"%/" and vd[90:91] in (b"@", b"C", b"E")


def _files(iso: Any, facade: str) -> Iterator[tuple[IsoFile, str]]:
    """Each regular file, with the path pycdlib knows it by in the *facade* namespace."""
    for dirpath, _dirs, names in iso.walk(**{facade: "/"}):
        for name in sorted(names):
            full = f"{dirpath.rstrip('/')}/{name}"
            rec = iso.get_record(**{facade: full})
            shown = full if facade != "iso_path" else _strip_version(full)
            yield IsoFile(shown, rec.get_data_length(), rec.extent_location()), full


def _strip_version(path: str) -> str:
    name = path.rsplit(";", 1)[0]
    return name[:-1] if name.endswith(".") else name


def _user_data(
    iso: Any, facade: str, files: dict[str, tuple[IsoFile, str]]
) -> tuple[str | None, str | None]:
    # Plain ISO9660 names are upper case: match them without regard to case.
    fold = facade == "iso_path"
    index = {(k.lower() if fold else k): v for k, v in files.items()}
    for wanted in USER_DATA_PATHS:
        found = index.get(wanted)
        if found is None or found[0].size > MAX_USER_DATA:
            continue
        buf = io.BytesIO()
        iso.get_file_from_iso_fp(buf, **{facade: found[1]})
        return wanted, buf.getvalue().decode("utf-8", "replace")
    return None, None


def _eltorito(
    fp: IO[bytes], boot_record: bytes | None, by_extent: dict[int, str], path: Path
) -> tuple[str | None, tuple[BootEntry, ...]]:
    if boot_record is None or not boot_record[7:30].startswith(b"EL TORITO SPECIFICATION"):
        return None, ()
    catalog_lba = struct.unpack_from("<I", boot_record, 0x47)[0]
    fp.seek(catalog_lba * SECTOR)
    catalog = fp.read(SECTOR)
    if len(catalog) < 64 or catalog[0] != 0x01 or catalog[30:32] != b"\x55\xaa":
        raise SourceError(f"{path}: El Torito boot catalog at sector {catalog_lba} is corrupt")
    if sum(struct.unpack_from("<16H", catalog, 0)) & 0xFFFF:
        raise SourceError(f"{path}: El Torito validation entry checksum is wrong")
    entries = [_boot_entry(catalog[32:64], catalog[1], by_extent)]
    offset, platform = 64, catalog[1]
    remaining = 0
    while offset + 32 <= len(catalog):
        rec = catalog[offset : offset + 32]
        offset += 32
        if remaining == 0:
            if rec[0] not in (0x90, 0x91):
                break  # no more section headers
            platform = rec[1]
            remaining = struct.unpack_from("<H", rec, 2)[0]
            if rec[0] == 0x91 and remaining == 0:
                break
            continue
        if rec[0] == 0x44:  # section entry extension: continues the previous entry
            continue
        entries.append(_boot_entry(rec, platform, by_extent))
        remaining -= 1
    return by_extent.get(catalog_lba), tuple(entries)


def _boot_entry(rec: bytes, platform_id: int, by_extent: dict[int, str]) -> BootEntry:
    segment, _system, count, rba = struct.unpack_from("<HBxHI", rec, 2)
    return BootEntry(
        platform=_PLATFORMS.get(platform_id, f"0x{platform_id:02x}"),
        platform_id=platform_id,
        bootable=rec[0] == 0x88,
        emulation=_EMULATIONS.get(rec[1] & 0x0F, f"0x{rec[1] & 0x0F:x}"),
        load_size=count,
        load_segment=segment,
        load_rba=rba,
        image_path=by_extent.get(rba),
    )


def _hybrid(fp: IO[bytes], size: int) -> HybridInfo:
    fp.seek(0)
    head = fp.read(1024)
    if len(head) < 1024:
        return HybridInfo(mbr_signature=False, mbr_partitions=(), gpt=None)
    signature = head[510:512] == b"\x55\xaa"
    parts = []
    if signature:
        for i in range(4):
            status, ptype, start, count = struct.unpack_from("<B3xB3xII", head, 446 + 16 * i)
            if ptype or count:  # isohybrid's partition 1 is bootable, type 0, non-empty
                parts.append(MbrPartition(i + 1, ptype, status == 0x80, start, count))
    gpt = _gpt(fp, head[512:1024], size) if head[512:520] == b"EFI PART" else None
    return HybridInfo(mbr_signature=signature, mbr_partitions=tuple(parts), gpt=gpt)


def _gpt_header_ok(header: bytes) -> tuple[bool, int, int, int, int]:
    """(header CRC valid, entries LBA, entry count, entry size, entries CRC) of a GPT header."""
    hsize = struct.unpack_from("<I", header, 12)[0]
    if header[:8] != b"EFI PART" or not 92 <= hsize <= len(header):
        return False, 0, 0, 0, 0
    stored = struct.unpack_from("<I", header, 16)[0]
    zeroed = header[:16] + b"\0\0\0\0" + header[20:hsize]
    lba, count, esize, ecrc = struct.unpack_from("<QIII", header, 72)
    return zlib.crc32(zeroed) == stored, lba, count, esize, ecrc


def _read_entries(fp: IO[bytes], lba: int, count: int, esize: int, size: int) -> bytes | None:
    total = count * esize
    if esize < 128 or total > 1 << 20 or lba * 512 + total > size:
        return None
    fp.seek(lba * 512)
    return fp.read(total)


def _gpt(fp: IO[bytes], header: bytes, size: int) -> GptInfo:
    header_ok, lba, count, esize, ecrc = _gpt_header_ok(header)
    raw = _read_entries(fp, lba, count, esize, size)
    entries_ok = raw is not None and zlib.crc32(raw) == ecrc
    backup_ok = False
    alternate = struct.unpack_from("<Q", header, 32)[0]
    if alternate > 0 and (alternate + 1) * 512 <= size:
        fp.seek(alternate * 512)
        b_ok, b_lba, b_count, b_esize, b_ecrc = _gpt_header_ok(fp.read(512))
        b_raw = _read_entries(fp, b_lba, b_count, b_esize, size) if b_ok else None
        backup_ok = b_raw is not None and zlib.crc32(b_raw) == b_ecrc
    partitions = []
    for i in range(count if raw is not None else 0):
        entry = raw[i * esize : (i + 1) * esize] if raw is not None else b""
        if entry[:16] == bytes(16):
            continue
        first, last = struct.unpack_from("<QQ", entry, 32)
        partitions.append(
            GptPartition(
                number=i + 1,
                type_guid=str(uuid.UUID(bytes_le=entry[:16])),
                guid=str(uuid.UUID(bytes_le=entry[16:32])),
                first_lba=first,
                last_lba=last,
                name=entry[56:128].decode("utf-16-le", "replace").rstrip("\x00"),
            )
        )
    return GptInfo(
        header_crc_valid=header_ok,
        entries_crc_valid=entries_ok,
        backup_valid=backup_ok,
        disk_guid=str(uuid.UUID(bytes_le=header[56:72])),
        partitions=tuple(partitions),
    )
