"""ISO9660 with Rock Ridge 1.09 and Joliet, written by hand for site ISOs (see
:mod:`edgekit_iso.siteiso` for why and for the layout): a template per image *shape*
(label, file names, date) with the variable fields patched in per image."""

from __future__ import annotations

import datetime as dt
import functools
import re
import struct
from collections.abc import Sequence

import attrs

from edgekit.errors import BuildError, ConfigError

__all__ = ["MIN_SECTORS", "SECTOR"]

#: The ISO9660 logical sector size.
SECTOR = 2048
#: Images are padded to at least this many sectors (128 KiB): libburn (xorriso) treats a
#: file of 32 sectors or fewer as blank media, and disk probes (blkid) read past 64 KiB.
MIN_SECTORS = 64
_SYSTEM_AREA = bytes(16 * SECTOR)
_ZEROS = bytes(MIN_SECTORS * SECTOR)

_LABEL_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_ -]{0,15}")
_FILE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}", re.IGNORECASE)
# Rock Ridge 1.09 (RRIP_1991A), the flavour Linux, xorriso and pycdlib all read.
_ER_ID = b"RRIP_1991A"
_ER_DES = b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS"
_ER_SRC = (
    b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN "
    b"PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION."
)
_RR_PX, _RR_NM, _RR_TF = 0x01, 0x08, 0x80
_DIR_MODE, _FILE_MODE = 0o40555, 0o100444
_MAX_FILE = 0xFFFFFFFF  # one extent; site ISOs hold kilobytes


def _b16(n: int) -> bytes:
    return struct.pack("<H", n) + struct.pack(">H", n)


def _b32(n: int) -> bytes:
    return struct.pack("<I", n) + struct.pack(">I", n)


def _dir_date(t: dt.datetime) -> bytes:
    return bytes([t.year - 1900, t.month, t.day, t.hour, t.minute, t.second, 0])


def _vd_date(t: dt.datetime) -> bytes:
    return t.strftime("%Y%m%d%H%M%S").encode() + b"00\x00"


def _dir_record(
    ident: bytes, extent: int, size: int, date: bytes, *, is_dir: bool, su: bytes = b""
) -> bytes:
    pad = b"\x00" if len(ident) % 2 == 0 else b""
    length = 33 + len(ident) + len(pad) + len(su)
    if length % 2:  # records have even length
        su += b"\x00"
        length += 1
    if length > 255:
        raise BuildError("a directory record is too long (file name too long)")
    return (
        bytes([length, 0])
        + _b32(extent)
        + _b32(size)
        + date
        + bytes([0x02 if is_dir else 0x00, 0, 0])
        + _b16(1)
        + bytes([len(ident)])
        + ident
        + pad
        + su
    )


def _rr_entries(*, mode: int, links: int, date: bytes, name: str | None) -> bytes:
    flags = _RR_PX | _RR_TF | (_RR_NM if name is not None else 0)
    out = b"RR\x05\x01" + bytes([flags])
    if name is not None:
        raw = name.encode("utf-8")
        out += b"NM" + bytes([5 + len(raw), 1, 0]) + raw
    out += b"PX\x24\x01" + _b32(mode) + _b32(links) + _b32(0) + _b32(0)
    # TF: modification, access, attribute-change times, 7-byte form.
    out += b"TF\x1a\x01\x0e" + date * 3
    return out


def _iso_names(names: Sequence[str]) -> dict[str, bytes]:
    """Level 1 (8.3, upper case) ISO9660 names, unique within the directory."""
    out: dict[str, bytes] = {}
    used: set[bytes] = set()
    for name in names:
        stem, dot, ext = name.upper().rpartition(".")
        if not dot:
            stem, ext = ext, ""
        stem = re.sub(r"[^A-Z0-9_]", "_", stem)[:8] or "_"
        ext = re.sub(r"[^A-Z0-9_]", "_", ext)[:3]
        ident = f"{stem}.{ext};1".encode()
        n = 0
        while ident in used:
            n += 1
            suffix = str(n)
            ident = f"{stem[: 8 - len(suffix)]}{suffix}.{ext};1".encode()
        used.add(ident)
        out[name] = ident
    return out


def _sectors(n: int) -> int:
    return (n + SECTOR - 1) // SECTOR


@attrs.frozen
class _Template:
    """The fixed part of every image of one shape, plus where its variable fields are."""

    #: Sectors 16 up to the first data sector.
    header: bytes
    #: First data sector.
    data_start: int
    #: Offsets (into *header*) of the volume space size fields (both-endian 32).
    volume_size_at: tuple[int, ...]
    #: Per file (in name order): offsets of its directory records' extent fields.
    extent_at: tuple[tuple[int, ...], ...]

    def render(self, contents: Sequence[bytes]) -> list[bytes]:
        """The image for *contents* (one per file, in name order) as a list of byte strings."""
        buf = bytearray(self.header)
        parts: list[bytes] = [_SYSTEM_AREA, b""]
        sector = self.data_start
        for data, offsets in zip(contents, self.extent_at, strict=True):
            if len(data) > _MAX_FILE:
                raise ConfigError.single(
                    "$.files", f"a file of {len(data)} bytes is over the 4 GiB ISO9660 limit"
                )
            # Both-endian extent and size, adjacent in the record: one pack per record.
            fields = _b32(sector) + _b32(len(data))
            for off in offsets:
                buf[off : off + 16] = fields
            if data:
                parts.append(data)
                tail = len(data) % SECTOR
                if tail:
                    parts.append(_ZEROS[: SECTOR - tail])
                sector += _sectors(len(data))
        if sector < MIN_SECTORS:
            parts.append(_ZEROS[: (MIN_SECTORS - sector) * SECTOR])
            sector = MIN_SECTORS
        for off in self.volume_size_at:
            buf[off : off + 8] = _b32(sector)
        parts[1] = bytes(buf)
        return parts


@functools.lru_cache(maxsize=64)
def _template(label: str, names: tuple[str, ...], epoch: int) -> _Template:
    if not _LABEL_RE.fullmatch(label):
        raise ConfigError.single(
            "$.label",
            f"volume label {label!r} must be 1-16 characters: letters, digits, '_', '-', ' '",
        )
    for name in names:
        if not _FILE_NAME_RE.fullmatch(name):
            raise ConfigError.single(
                "$.files", f"file name {name!r} must be 1-64 letters, digits, '.', '_' or '-'"
            )
    when = dt.datetime.fromtimestamp(epoch, dt.UTC)
    ddate, vdate = _dir_date(when), _vd_date(when)
    iso_ids = _iso_names(names)

    # Fixed sector numbers; the ISO root may need more than one sector for many files.
    path_l, path_m, jpath_l, jpath_m = 19, 20, 21, 22
    iso_root = 23

    def build_iso_dir(root_sectors: int) -> tuple[list[bytes], dict[str, int]]:
        ce_sector = iso_root + root_sectors
        su_dot = (
            b"SP\x07\x01\xbe\xef\x00"
            + b"CE\x1c\x01"
            + _b32(ce_sector)
            + _b32(0)
            + _b32(8 + len(_ER_ID) + len(_ER_DES) + len(_ER_SRC))
            + _rr_entries(mode=_DIR_MODE, links=2, date=ddate, name=None)
        )
        su_dotdot = _rr_entries(mode=_DIR_MODE, links=2, date=ddate, name=None)
        records = [
            _dir_record(b"\x00", iso_root, root_sectors * SECTOR, ddate, is_dir=True, su=su_dot),
            _dir_record(b"\x01", iso_root, root_sectors * SECTOR, ddate, is_dir=True, su=su_dotdot),
        ]
        order = sorted(names, key=lambda n: iso_ids[n])
        for name in order:
            su = _rr_entries(mode=_FILE_MODE, links=1, date=ddate, name=name)
            records.append(_dir_record(iso_ids[name], 0, 0, ddate, is_dir=False, su=su))
        return records, {n: i + 2 for i, n in enumerate(order)}

    def pack_dir(records: list[bytes]) -> tuple[bytes, list[int]]:
        """Records into sectors (a record never crosses a sector); returns their offsets."""
        out = bytearray()
        offsets = []
        for rec in records:
            if len(out) % SECTOR + len(rec) > SECTOR:
                out += bytes(SECTOR - len(out) % SECTOR)
            offsets.append(len(out))
            out += rec
        out += bytes(-len(out) % SECTOR)
        return bytes(out), offsets

    records, iso_index = build_iso_dir(1)
    iso_dir, iso_offsets = pack_dir(records)
    if len(iso_dir) > SECTOR:  # sizes changed: rebuild with the real sector count
        records, iso_index = build_iso_dir(len(iso_dir) // SECTOR)
        iso_dir, iso_offsets = pack_dir(records)
    iso_root_sectors = len(iso_dir) // SECTOR
    ce_sector = iso_root + iso_root_sectors
    ce_area = (
        b"ER"
        + bytes([8 + len(_ER_ID) + len(_ER_DES) + len(_ER_SRC), 1])
        + bytes([len(_ER_ID), len(_ER_DES), len(_ER_SRC), 1])
        + _ER_ID
        + _ER_DES
        + _ER_SRC
    )
    ce_area += bytes(-len(ce_area) % SECTOR)

    joliet_root = ce_sector + 1
    jorder = sorted(names, key=lambda n: n.encode("utf-16-be"))

    def build_joliet(root_sectors: int) -> list[bytes]:
        size = root_sectors * SECTOR
        recs = [
            _dir_record(b"\x00", joliet_root, size, ddate, is_dir=True),
            _dir_record(b"\x01", joliet_root, size, ddate, is_dir=True),
        ]
        recs += [_dir_record(n.encode("utf-16-be"), 0, 0, ddate, is_dir=False) for n in jorder]
        return recs

    jdir, joffsets = pack_dir(build_joliet(1))
    if len(jdir) > SECTOR:
        jdir, joffsets = pack_dir(build_joliet(len(jdir) // SECTOR))
    data_start = joliet_root + len(jdir) // SECTOR

    def path_table(extent: int, big_endian: bool) -> bytes:
        fmt = ">IH" if big_endian else "<IH"
        rec = bytes([1, 0]) + struct.pack(fmt, extent, 1) + b"\x00\x00"
        return rec + bytes(SECTOR - len(rec))

    def volume_descriptor(joliet: bool) -> bytes:
        def text(value: str, width: int) -> bytes:
            if joliet:  # UCS-2 padded with spaces; an odd-width field ends in a zero byte
                return (
                    (value + " " * width)
                    .encode("utf-16-be")[: width - width % 2]
                    .ljust(width, b"\x00")
                )
            return value.encode("ascii").ljust(width, b" ")

        root_ext = joliet_root if joliet else iso_root
        root_size = len(jdir) if joliet else len(iso_dir)
        vd = bytearray(SECTOR)
        vd[0:7] = bytes([2 if joliet else 1]) + b"CD001\x01"
        vd[8:40] = text("LINUX", 32)
        vd[40:72] = text(label, 32)
        # 80: volume space size, patched per image.
        if joliet:
            vd[88:91] = b"%/E"  # UCS-2 level 3
        vd[120:124] = _b16(1)
        vd[124:128] = _b16(1)
        vd[128:132] = _b16(SECTOR)
        vd[132:140] = _b32(10)
        lp, mp = (jpath_l, jpath_m) if joliet else (path_l, path_m)
        vd[140:144] = struct.pack("<I", lp)
        vd[148:152] = struct.pack(">I", mp)
        vd[156:190] = _dir_record(b"\x00", root_ext, root_size, ddate, is_dir=True)
        vd[190:318] = text("", 128)
        vd[318:446] = text("", 128)
        vd[446:574] = text("", 128)
        vd[574:702] = text("EDGEKIT", 128)
        vd[702:739] = text("", 37)
        vd[739:776] = text("", 37)
        vd[776:813] = text("", 37)
        vd[813:830] = vdate
        vd[830:847] = vdate
        vd[847:864] = b"0" * 16 + b"\x00"
        vd[864:881] = vdate
        vd[881] = 1
        return bytes(vd)

    terminator = b"\xffCD001\x01" + bytes(SECTOR - 7)
    header = b"".join(
        [
            volume_descriptor(False),
            volume_descriptor(True),
            terminator,
            path_table(iso_root, False),
            path_table(iso_root, True),
            path_table(joliet_root, False),
            path_table(joliet_root, True),
            iso_dir,
            ce_area,
            jdir,
        ]
    )
    assert len(header) == (data_start - 16) * SECTOR

    def base(sector: int) -> int:
        return (sector - 16) * SECTOR

    extent_at = []
    for name in names:
        iso_off = base(iso_root) + iso_offsets[iso_index[name]] + 2
        j_off = base(joliet_root) + joffsets[2 + jorder.index(name)] + 2
        extent_at.append((iso_off, j_off))
    return _Template(
        header=header,
        data_start=data_start,
        volume_size_at=(base(16) + 80, base(17) + 80),
        extent_at=tuple(extent_at),
    )
