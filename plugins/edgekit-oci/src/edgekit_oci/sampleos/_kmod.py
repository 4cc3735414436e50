"""Kernel module metadata: ``.modinfo`` from ELF objects, dependency closure, load order.

Debian's kernel package ships no ``modules.dep`` (``depmod`` makes it at install time), so
the dependencies are read from each module's ``.modinfo`` section instead.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

from edgekit.errors import BuildError

__all__ = ["load_order", "modinfo", "module_name"]


def module_name(path: str) -> str:
    """``kernel/drivers/ata/ata_piix.ko`` -> ``ata_piix`` (dashes and underscores are equal)."""
    base = path.rsplit("/", 1)[-1]
    for suffix in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def modinfo(data: bytes, where: str) -> dict[str, list[str]]:
    """The ``key=value`` pairs of a 64-bit little-endian module's ``.modinfo`` section."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise BuildError(f"{where} is not a 64-bit little-endian ELF kernel module")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from(
            "<IIQQQQ", data, shoff + index * shentsize
        )
        return name, offset, size

    _, str_off, str_size = section(shstrndx)
    names = data[str_off : str_off + str_size]
    for i in range(shnum):
        name_at, offset, size = section(i)
        if names[name_at : names.index(b"\0", name_at)] == b".modinfo":
            info: dict[str, list[str]] = {}
            for item in data[offset : offset + size].split(b"\0"):
                key, sep, value = item.decode("utf-8", "replace").partition("=")
                if sep:
                    info.setdefault(key, []).append(value)
            return info
    raise BuildError(f"{where} has no .modinfo section")


def load_order(
    wanted: Iterable[str], depends: Mapping[str, Iterable[str]], builtin: Iterable[str]
) -> list[str]:
    """Module names to insert, dependencies first; built-in modules are left out.

    ``depends`` maps every loadable module name to its direct dependencies. Ties are broken
    by the order of ``wanted``, then by name, so the result is deterministic.
    """
    built = set(builtin)
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in built or state.get(name) == "done":
            return
        if state.get(name) == "active":
            raise BuildError(
                f"kernel modules depend on each other in a cycle: {' -> '.join(chain)}"
            )
        if name not in depends:
            raise BuildError(f"kernel module {name} (needed by {chain[0]}) is not in the kernel")
        state[name] = "active"
        for dep in sorted(d for d in depends[name] if d):
            visit(dep, (*chain, dep))
        state[name] = "done"
        order.append(name)

    for name in wanted:
        visit(name, (name,))
    return order
