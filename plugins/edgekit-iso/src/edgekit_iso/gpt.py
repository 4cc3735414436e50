"""Repair the GPT pycdlib writes for an isohybrid ISO.

pycdlib 1.22 computes the partition-array CRC over its used entries only, while UEFI
defines it over the whole array (``num_parts * entry_size`` bytes), so firmware and tools
report the table as corrupt. It also gives the backup table its own random disk and
partition GUIDs, and types the EFI partition as basic data. :func:`repair_isohybrid_gpt`
makes the backup a copy of the primary, types partition 2 as an EFI System Partition, and
recomputes every CRC; :func:`fix_gpt_crcs` only recomputes CRCs.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from pathlib import Path
from typing import BinaryIO

from edgekit.errors import BuildError

__all__ = ["ESP_TYPE_GUID", "fix_gpt_crcs", "repair_isohybrid_gpt"]

_SECTOR = 512
_SIGNATURE = b"EFI PART"
#: The EFI System Partition type GUID, as stored on disk (mixed endian).
ESP_TYPE_GUID = uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b").bytes_le


def _read_header(fp: BinaryIO, lba: int) -> bytearray:
    fp.seek(lba * _SECTOR)
    header = bytearray(fp.read(_SECTOR))
    if header[:8] != _SIGNATURE:
        raise BuildError(f"no GPT header at LBA {lba}")
    return header


def _entries_location(header: bytes | bytearray) -> tuple[int, int]:
    entries_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
    return int(entries_lba), int(count) * int(entry_size)


def _write_header(fp: BinaryIO, lba: int, header: bytearray) -> None:
    entries_lba, length = _entries_location(header)
    fp.seek(entries_lba * _SECTOR)
    struct.pack_into("<I", header, 88, zlib.crc32(fp.read(length)))
    (header_size,) = struct.unpack_from("<I", header, 12)
    struct.pack_into("<I", header, 16, 0)
    struct.pack_into("<I", header, 16, zlib.crc32(bytes(header[:header_size])))
    fp.seek(lba * _SECTOR)
    fp.write(header)


def fix_gpt_crcs(path: Path) -> None:
    """Recompute the CRCs of the primary (LBA 1) and backup GPT headers of ``path``."""
    with open(path, "r+b") as fp:
        primary = _read_header(fp, 1)
        backup_lba = int(struct.unpack_from("<Q", primary, 32)[0])
        _write_header(fp, 1, primary)
        _write_header(fp, backup_lba, _read_header(fp, backup_lba))


def repair_isohybrid_gpt(path: Path) -> None:
    """Make pycdlib's GPT valid: ESP type on partition 2, backup = primary, correct CRCs."""
    with open(path, "r+b") as fp:
        primary = _read_header(fp, 1)
        backup_lba = int(struct.unpack_from("<Q", primary, 32)[0])
        backup = _read_header(fp, backup_lba)
        entries_lba, length = _entries_location(primary)
        (entry_size,) = struct.unpack_from("<I", primary, 84)
        fp.seek(entries_lba * _SECTOR)
        array = bytearray(fp.read(length))
        # Partition 2 is the El Torito EFI image; firmware looks for the ESP type.
        array[entry_size : entry_size + 16] = ESP_TYPE_GUID
        fp.seek(entries_lba * _SECTOR)
        fp.write(array)
        backup_entries_lba, _ = _entries_location(backup)
        fp.seek(backup_entries_lba * _SECTOR)
        fp.write(array)
        backup[56:72] = primary[56:72]  # disk GUID
        _write_header(fp, 1, primary)
        _write_header(fp, backup_lba, backup)
