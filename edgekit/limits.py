"""Bounds on what edgekit reads: size, nesting depth, YAML aliases, file kinds, characters.

Every document edgekit parses (forge files, user-data, inventories, hub requests, air-gap
files) goes through these bounds, so that a small or careless input cannot exhaust memory or
time, and every bound is a :class:`~edgekit.errors.ConfigError` naming the file or the JSON
path. ``docs/bad-input.md`` lists the limits; the hub and ``edgekit hub import`` use
:func:`loads_json` and :func:`read_bytes` for the same guarantees.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekit.errors import ConfigError, Problem

__all__ = [
    "MAX_ALIASES",
    "MAX_ALIAS_EXPANSION",
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_PROBLEMS",
    "MAX_YAML_BYTES",
    "bad_character",
    "data_problems",
    "file_kind_problem",
    "json_path",
    "kind_name",
    "loads_json",
    "read_bytes",
    "read_json",
    "read_text",
]

#: The largest document (forge file, user-data, CSV inventory, JSON body) edgekit reads.
MAX_DOCUMENT_BYTES = 10 * 1024 * 1024
#: The largest YAML document: the round-trip parser that keeps line numbers for messages is
#: pure Python and reads roughly 50-100 KB/s, so YAML gets a tighter bound than JSON or CSV
#: (a fleet of many sites belongs in a ``siteInventory`` CSV).
MAX_YAML_BYTES = 2 * 1024 * 1024
#: The deepest nesting of mappings and lists in a document (a forge file needs about 10).
MAX_DEPTH = 64
#: The most YAML aliases (``*name``) a document may use.
MAX_ALIASES = 1_000
#: The most nodes aliases may add when expanded (a "billion laughs" document adds billions).
MAX_ALIAS_EXPANSION = 100_000
#: Problems of one kind reported per document before the rest are summarised.
MAX_PROBLEMS = 50

# Tab, line feed and carriage return are text; every other C0/C1 control character and DEL
# is not, in any field (they hide in names, break terminals and file formats).
#: Control characters that are never text (tab, LF and CR are).
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_CONTROL = CONTROL_CHARS
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Parts = tuple[str | int, ...]


def json_path(parts: Parts) -> str:
    """``$.a[0]["b c"]``: the JSON path of ``parts`` (keys and indices)."""
    out = "$"
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif _IDENT.fullmatch(p):
            out += f".{p}"
        else:
            out += "[" + json.dumps(p) + "]"
    return out


def bad_character(text: str) -> str | None:
    """Why ``text`` is not acceptable text (a lone surrogate, a control character), or None.

    The message never quotes ``text`` (it may be a secret), only the offending code point.
    """
    m = _SURROGATE.search(text)
    if m is not None:
        return (
            f"contains a lone surrogate (U+{ord(m.group()):04X}), which is not valid "
            "Unicode text; remove it"
        )
    m = _CONTROL.search(text)
    if m is not None:
        return f"contains the control character U+{ord(m.group()):04X}; remove it"
    return None


class _DuplicateKeys(dict[str, Any]):
    """A JSON object that had repeated keys; :func:`data_problems` reports them by path."""

    duplicates: list[str]


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    dups: list[str] = []
    for k, v in pairs:
        if k in out and k not in dups:
            dups.append(k)
        out[k] = v
    if not dups:
        return out
    marked = _DuplicateKeys(out)
    marked.duplicates = dups
    return marked


def data_problems(data: Any, *, max_depth: int = MAX_DEPTH) -> list[tuple[Parts, str]]:
    """Problems of parsed data: nesting deeper than ``max_depth``, bad characters in keys and
    strings, keys given twice (JSON). Iterative, so any depth is safe to check."""
    found: list[tuple[Parts, str]] = []
    deep = False
    stack: list[tuple[Any, Parts]] = [(data, ())]
    while stack and len(found) < MAX_PROBLEMS:
        value, parts = stack.pop()
        if isinstance(value, str):
            why = bad_character(value)
            if why is not None:
                found.append((parts, why))
            continue
        if not isinstance(value, dict | list):
            continue
        if len(parts) >= max_depth:
            if not deep:
                found.append((parts, f"nested more than {max_depth} levels deep"))
                deep = True
            continue
        if isinstance(value, dict):
            for k in getattr(value, "duplicates", ()):
                found.append(((*parts, k), f"duplicate key {k!r}"))
            items = list(value.items())
            for k, v in reversed(items):
                if isinstance(k, str):
                    why = bad_character(k)
                    if why is not None:
                        found.append(
                            ((*parts, k.encode("utf-8", "replace").decode()), "key " + why)
                        )
                        continue
                stack.append((v, (*parts, k)))
        else:
            stack.extend((v, (*parts, i)) for i, v in reversed(list(enumerate(value))))
    return found


def _too_big(size: int, limit: int) -> str:
    return f"is {size:,} bytes, more than the limit of {limit:,} bytes"


def file_kind_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as an input file ("no such file", "it is a directory, not
    a regular file", a device, FIFO or socket), or None for a regular file. Never opens it
    (opening a FIFO blocks)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "no such file"
    except OSError as e:
        return str(e.strerror or e)
    if stat.S_ISREG(st.st_mode):
        return None
    return f"it is {kind_name(st.st_mode)}, not a regular file"


def kind_name(mode: int) -> str:
    """What a file of ``st_mode`` ``mode`` is, for a message: "a directory", "a device", ..."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def read_bytes(
    path: str | os.PathLike[str],
    *,
    where: str = "$",
    limit: int = MAX_DOCUMENT_BYTES,
    source: str | None = None,
) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; ConfigError at ``where`` naming
    the file otherwise (a device, FIFO or directory is refused before it is read)."""
    p = Path(path)
    src = source if source is not None else str(p)
    why = file_kind_problem(p)
    if why is not None:
        raise ConfigError([Problem(where, f"cannot read {p}: {why}", None, src)])
    try:
        # O_NONBLOCK: a file swapped for a FIFO after the check above still cannot block us.
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise ConfigError(
            [Problem(where, f"cannot read {p}: {e.strerror or e}", None, src)]
        ) from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            why = f"cannot read {p}: it is not a regular file"
            raise ConfigError([Problem(where, why, None, src)])
        if st.st_size > limit:
            why = f"cannot read {p}: it {_too_big(st.st_size, limit)}"
            raise ConfigError([Problem(where, why, None, src)])
        data = fh.read(limit + 1)
    if len(data) > limit:  # grew while we read it
        why = f"cannot read {p}: it is more than the limit of {limit:,} bytes"
        raise ConfigError([Problem(where, why, None, src)])
    return data


def read_text(
    path: str | os.PathLike[str],
    *,
    where: str = "$",
    limit: int = MAX_DOCUMENT_BYTES,
    source: str | None = None,
    encoding: str = "utf-8",
) -> str:
    """Like :func:`read_bytes`, decoded (``utf-8-sig`` drops a byte order mark)."""
    data = read_bytes(path, where=where, limit=limit, source=source)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        src = source if source is not None else str(path)
        # The line too: a byte offset alone is hard to find in a 200-row spreadsheet export.
        line = data.count(b"\n", 0, e.start) + 1
        why = f"{path} is not UTF-8 text (line {line:,}, byte {e.start:,}: {e.reason})"
        raise ConfigError([Problem(where, why, line, src)]) from None


def loads_json(
    data: str | bytes,
    *,
    source: str | None = None,
    limit: int = MAX_DOCUMENT_BYTES,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """Parse JSON within bounds: at most ``limit`` bytes and ``max_depth`` levels, no key
    given twice in an object, no lone surrogates or control characters in strings.

    Raises :class:`ConfigError` listing the problems with their JSON paths.
    """
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise ConfigError([Problem("$", f"the document {_too_big(size, limit)}", None, source)])
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(
                [Problem("$", f"not UTF-8 text (byte {e.start:,}: {e.reason})", None, source)]
            ) from None
    try:
        value = json.loads(data, object_pairs_hook=_pairs)
    except json.JSONDecodeError as e:
        raise ConfigError([Problem("$", f"invalid JSON: {e.msg}", e.lineno, source)]) from None
    except RecursionError:
        raise ConfigError(
            [Problem("$", f"invalid JSON: nested more than {max_depth} levels deep", None, source)]
        ) from None
    problems = data_problems(value, max_depth=max_depth)
    if problems:
        raise ConfigError([Problem(json_path(p), m, None, source) for p, m in problems])
    return value


def read_json(
    path: str | os.PathLike[str], *, limit: int = MAX_DOCUMENT_BYTES, max_depth: int = MAX_DEPTH
) -> Any:
    """A JSON file read and parsed within the bounds of :func:`loads_json`."""
    return loads_json(
        read_bytes(path, limit=limit), source=str(path), limit=limit, max_depth=max_depth
    )


def iter_strings(data: Any) -> Iterator[str]:
    """Every string (keys included) in plain data, iteratively."""
    stack = [data]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            yield v
        elif isinstance(v, dict):
            for k, x in v.items():
                if isinstance(k, str):
                    yield k
                stack.append(x)
        elif isinstance(v, list | tuple):
            stack.extend(v)
