"""The configuration converter: the one place edgekit parses and writes documents.

Files use camelCase keys (``customTag``), the model snake_case attributes (``custom_tag``).
Loading is strict (no unknown keys, no number where a string is expected, no ``"yes"`` for
``true``) and reports every problem at once as one :class:`~edgekit.errors.ConfigError`, each
problem with its JSON path in the file's own key names and, for YAML, its line.
"""

from __future__ import annotations

import enum
import io
import json
import os
import tempfile
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    LiteralScalarString,
    SingleQuotedScalarString,
)

from edgekit import limits
from edgekit.errors import ConfigError, Problem
from edgekit.model import (
    Cluster,
    ClusterProfile,
    EdgeHost,
    Forge,
    Pack,
    Rollout,
    Site,
    UserData,
)
from edgekit.model._base import file_key

from ._convert import REDACTED as REDACTED
from ._convert import _describe, _hint, get_converter, values_from_text
from ._parse import Format, _parse, parse_values
from ._problems import _problems, secret_texts, user_data_problems
from ._scalars import read_as_non_string

__all__ = [
    "API_VERSION",
    "KINDS",
    "KIND_NAMES",
    "check_user_data_header",
    "detect_kind",
    "detect_kind_of_file",
    "dump",
    "dump_file",
    "file_key",
    "get_converter",
    "load",
    "loads",
    "parse_user_data",
    "parse_values",
    "render_user_data",
    "structure",
    "unstructure",
    "user_data_problems",
    "values_from_text",
]

T = TypeVar("T")

#: The ``apiVersion`` documents may carry.
API_VERSION = "edgekit/v1"

#: Document kinds by their short name (as :func:`detect_kind` returns them).
KINDS: Mapping[str, type] = {
    "forge": Forge,
    "profile": ClusterProfile,
    "cluster": Cluster,
    "site": Site,
    "user-data": UserData,
    "pack": Pack,
    "host": EdgeHost,
    "rollout": Rollout,
}

#: The ``kind:`` values documents may carry, and their short names.
KIND_NAMES: Mapping[str, str] = {
    "Forge": "forge",
    "ClusterProfile": "profile",
    "Cluster": "cluster",
    "Site": "site",
    "UserData": "user-data",
    "Pack": "pack",
    "EdgeHost": "host",
    "Rollout": "rollout",
}


# --------------------------------------------------------------------------- public API


def detect_kind(data: Any) -> str:
    """The kind of a parsed document: its ``kind:`` or, without one, a guess from its keys."""
    if not isinstance(data, Mapping):
        # Never quoted: the whole document may be a token or a password.
        got = _describe(data, quote=False)
        raise ConfigError.single("$", f"a document must be a mapping, got {got}")
    kind = data.get("kind")
    if kind is not None:
        if kind in KIND_NAMES:
            return KIND_NAMES[kind]
        raise ConfigError.single(
            "$.kind",
            f"{kind!r} is not one of: {', '.join(KIND_NAMES)}" + _hint(kind, list(KIND_NAMES)),
        )
    keys = set(data)
    for kind_name, marker in (
        ("forge", {"images", "profiles", "iso", "backends", "siteInventory", "registration"}),
        ("user-data", {"stylus", "install", "stages", "users"}),
        ("cluster", {"controlPlane", "workers"}),
        ("profile", {"packs"}),
        ("pack", {"layer"}),
        ("host", {"uid", "mac"}),
        ("site", {"network", "tags"}),
    ):
        if keys & marker:
            return kind_name
    raise ConfigError.single(
        "$", "cannot tell what kind of document this is; add kind: (" + ", ".join(KIND_NAMES) + ")"
    )


def detect_kind_of_file(path: str | os.PathLike[str]) -> str:
    """The kind of the document in a YAML (or ``.json``) file; ConfigError naming the file."""
    p = Path(path)
    text = limits.read_text(p)
    fmt: Format = "json" if p.suffix.lower() == ".json" else "yaml"
    data, lines = _parse(text, fmt, str(p))
    try:
        return detect_kind(data)
    except ConfigError as e:
        raise ConfigError(
            [Problem(q.path, q.message, lines.get(()), str(p)) for q in e.problems]
        ) from None


def _kind_problems(
    data: Any, cls: type, lines: Mapping[tuple[str | int, ...], int], source: str | None
) -> tuple[Any, list[Problem]]:
    if not isinstance(data, Mapping):
        return data, []
    problems = []
    kind = data.get("kind")
    if kind is not None:
        expected = next((k for k, v in KIND_NAMES.items() if KINDS[v] is cls), None)
        if kind != expected:
            problems.append(
                Problem(
                    "$.kind",
                    f"expected kind {expected!r}, got {kind!r}"
                    if expected
                    else f"kind is not allowed here (got {kind!r})",
                    lines.get(("kind",)),
                    source,
                )
            )
    api = data.get("apiVersion")
    if api is not None and api != API_VERSION:
        problems.append(
            Problem(
                "$.apiVersion",
                f"expected {API_VERSION!r}, got {api!r}",
                lines.get(("apiVersion",)),
                source,
            )
        )
    rest = {k: v for k, v in data.items() if k not in ("kind", "apiVersion")}
    return rest, problems


def _structure(
    data: Any, cls: type[T] | None, lines: Mapping[tuple[str | int, ...], int], source: str | None
) -> T:
    if cls is None:
        try:
            cls = typing.cast(type[T], KINDS[detect_kind(data)])
        except ConfigError as e:
            raise ConfigError(
                [Problem(p.path, p.message, lines.get(()), source) for p in e.problems]
            ) from None
    data, problems = _kind_problems(data, cls, lines, source)
    try:
        obj = get_converter().structure(data, cls)
    except Exception as e:
        problems.extend(_problems(e, lines, source, secret_texts(data, cls, lines)))
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return obj


def structure(data: Any, cls: type[T], source: str | None = None) -> T:
    """Build a ``cls`` from plain data (as parsed from JSON/YAML); ConfigError on problems.

    The data gets the bounds of parsed documents (nesting depth, valid text in every key and
    string), so that data built in Python or decoded elsewhere cannot reach the converter
    or a later dump in a shape that parsing would have refused.
    """
    found = limits.data_problems(data)
    if found:
        raise ConfigError([Problem(limits.json_path(p), m, None, source) for p, m in found])
    return _structure(data, cls, {}, source)


def loads(
    text: str,
    cls: type[T] | None = None,
    *,
    format: Format = "yaml",
    source: str | None = None,
) -> T:
    """Parse a document; ``cls`` defaults to the document's kind (see :func:`detect_kind`)."""
    data, lines = _parse(text, format, source)
    return _structure(data, cls, lines, source)


def load(path: str | os.PathLike[str], cls: type[T] | None = None) -> T:
    """Load a YAML (or ``.json``) file; errors name the file and lines."""
    p = Path(path)
    text = limits.read_text(p)  # a regular file of bounded size, or a ConfigError naming it
    fmt: Format = "json" if p.suffix.lower() == ".json" else "yaml"
    if fmt == "yaml" and cls in (None, UserData):
        # Another cloud-init format's header is refused whatever the document looks like.
        required = cls is UserData or _looks_like_user_data(text)
        check_user_data_header(text, str(p), required=required)
    return loads(text, cls, format=fmt, source=str(p))


def _looks_like_user_data(text: str) -> bool:
    try:
        return detect_kind(_parse(text, "yaml", None)[0]) == "user-data"
    except ConfigError:
        return False  # loads() reports the problem


#: First lines cloud-init reads as a format other than ``#cloud-config``.
_OTHER_HEADERS = ("#!", "#cloud-", "#include", "#part-handler", "#upstart-job", "## template")


def check_user_data_header(text: str, source: str | None = None, *, required: bool) -> None:
    """Refuse user-data whose first line is not exactly ``#cloud-config``.

    A first line that is another cloud-init format's header (``#!/bin/bash``,
    ``#cloud-config-archive``, ``#include``) is always refused: the device would not read the
    document as cloud-config. With ``required`` (user-data files) the header must be there.
    """
    first = text.split("\n", 1)[0].rstrip()
    if first == UserData.HEADER.strip():
        return
    word = first.split(maxsplit=1)[0][:40] if first.strip() else ""
    if first.startswith(_OTHER_HEADERS):
        message = (
            f"user-data must start with exactly '#cloud-config'; {word!r} makes it "
            "another cloud-init format"
        )
    elif first.startswith("\ufeff"):
        message = "user-data must start with exactly '#cloud-config', not a byte order mark"
    elif required:
        message = "user-data must start with the line '#cloud-config'"
    else:
        return
    raise ConfigError([Problem("$", message, 1, source)])


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


def unstructure(obj: Any, *, reveal_secrets: bool = False) -> Any:
    """Plain JSON-compatible data with the file's key names; secrets are ``'***'`` unless
    ``reveal_secrets`` is true."""
    return _jsonable(get_converter(reveal_secrets).unstructure(obj))


def _literal_ok(s: str) -> bool:
    # Literal block style can only carry text without trailing blanks or special characters.
    return (
        "\n" in s
        and all(ln == ln.rstrip() and ln.isprintable() for ln in s.split("\n"))
        and not s[:1].isspace()
    )


#: Where registry mirrors are keyed by ``host[:port]`` (user-data, wherever it is nested).
_MIRRORS_PATH = ("stylus", "registry", "mirrors")


def _key_for_yaml(key: Any, mirror: bool) -> Any:
    if mirror and isinstance(key, str):
        # Always quoted, as the docs write it ("127.0.0.1:5000"): a host:port key is never
        # a number, whatever the reader ("5000:30" is base-60 300030 to YAML 1.1).
        return DoubleQuotedScalarString(key)
    if isinstance(key, str) and read_as_non_string(key):
        return SingleQuotedScalarString(key)
    return key


def _for_yaml(value: Any, path: tuple[Any, ...] = ()) -> Any:
    if isinstance(value, Mapping):
        mirrors = path[-3:] == _MIRRORS_PATH
        return {_key_for_yaml(k, mirrors): _for_yaml(v, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_for_yaml(v, (*path, None)) for v in value]
    if isinstance(value, str) and _literal_ok(value):
        return LiteralScalarString(value)
    if isinstance(value, str) and any(ch in value for ch in "\x85\u2028\u2029"):
        # ruamel folds these line breaks in quoted-plain output; double quotes escape them.
        return DoubleQuotedScalarString(value)
    if isinstance(value, str) and read_as_non_string(value):
        # ruamel quotes by YAML 1.2 rules only (so '5000' but a plain yes or 1:20, which a
        # YAML 1.1 reader takes for true and 80); the same single quotes it uses.
        return SingleQuotedScalarString(value)
    return value


def dump(obj: Any, format: Format = "yaml", *, reveal_secrets: bool = False) -> str:
    """``obj`` as YAML or JSON text with the file's key names (secrets redacted by default).

    Documents of a kind in :data:`KIND_NAMES` (except user-data) start with ``apiVersion``
    and ``kind``.
    """
    data = unstructure(obj, reveal_secrets=reveal_secrets)
    kind = type(obj).__name__
    if kind in KIND_NAMES and not isinstance(obj, UserData) and isinstance(data, dict):
        # Documents say what they are, so that loading them needs no class.
        data = {"apiVersion": API_VERSION, "kind": kind, **data}
    if format == "json":
        return json.dumps(data, indent=2) + "\n"
    yaml = YAML(typ="rt")
    yaml.default_flow_style = False
    yaml.width = 4096
    buf = io.StringIO()
    yaml.dump(_for_yaml(data), buf)
    return buf.getvalue()


def dump_file(obj: Any, path: str | os.PathLike[str], *, reveal_secrets: bool = False) -> Path:
    """Write ``obj`` to ``path`` atomically (temporary name, then rename); JSON for ``.json``.

    User-data is written with its ``#cloud-config`` header.
    """
    p = Path(path)
    fmt: Format = "json" if p.suffix.lower() == ".json" else "yaml"
    text = dump(obj, fmt, reveal_secrets=reveal_secrets)
    if isinstance(obj, UserData) and fmt == "yaml":
        text = UserData.HEADER + text
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def parse_user_data(text: str, source: str | None = None) -> UserData:
    """``#cloud-config`` YAML as a :class:`UserData`, strictly; ConfigError lists every problem.

    A first line that is another cloud-init format's header (``#!``,
    ``#cloud-config-archive``, ``#include``...) is refused; a missing header is accepted
    here, but not in user-data files (see :func:`load`).
    """
    check_user_data_header(text, source, required=False)
    return loads(text, UserData, source=source)


def render_user_data(user_data: UserData) -> str:
    """The document as ``#cloud-config`` YAML, secrets included (it goes to the device)."""
    return UserData.HEADER + dump(user_data, reveal_secrets=True)
