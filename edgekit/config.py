"""The configuration converter: the one place edgekit parses and writes documents.

Files use camelCase keys (``customTag``), the model snake_case attributes (``custom_tag``).
Loading is strict (no unknown keys, no number where a string is expected, no ``"yes"`` for
``true``) and reports every problem at once as one :class:`~edgekit.errors.ConfigError`, each
problem with its JSON path in the file's own key names and, for YAML, its line.
"""

from __future__ import annotations

import collections.abc
import contextlib
import difflib
import enum
import functools
import io
import json
import os
import re
import tempfile
import types
import typing
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import attrs
import cattrs
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, LiteralScalarString

from edgekit.errors import ConfigError, Problem
from edgekit.model import (
    BaseImage,
    Cluster,
    ClusterProfile,
    EdgeHost,
    Forge,
    LayoutBase,
    ModelValueError,
    Pack,
    RefBase,
    SampleOsBase,
    ScratchBase,
    Secret,
    Site,
    UserData,
)
from edgekit.model._base import INVALID, checks_of
from edgekit.model.images import Arch

__all__ = [
    "API_VERSION",
    "KINDS",
    "KIND_NAMES",
    "detect_kind",
    "detect_kind_of_file",
    "dump",
    "dump_file",
    "file_key",
    "get_converter",
    "load",
    "loads",
    "parse_values",
    "structure",
    "unstructure",
    "user_data_problems",
]

T = TypeVar("T")
Format = Literal["yaml", "json"]

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
}

REDACTED = "***"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --------------------------------------------------------------------------- key names


def file_key(a: attrs.Attribute[Any]) -> str:
    """The key an attribute has in files: its ``key`` metadata, or its name in camelCase."""
    key = a.metadata.get("key")
    if isinstance(key, str):
        return key
    head, *rest = a.name.split("_")
    return head + "".join(p.capitalize() for p in rest)


def _is_open(a: attrs.Attribute[Any]) -> bool:
    return bool(a.metadata.get("open"))


def _fields(cls: type) -> tuple[attrs.Attribute[Any], ...]:
    return tuple(attrs.fields(cls))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _keys(cls: type) -> dict[str, str]:
    """Attribute name -> file key, for the modelled (not open) fields of ``cls``."""
    return {a.name: file_key(a) for a in _fields(cls) if not _is_open(a)}


def _open_field(cls: type) -> str | None:
    return next((a.name for a in _fields(cls) if _is_open(a)), None)


# --------------------------------------------------------------------------- strict scalars


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


class _FloatNotString(ValueError):
    """A number where a string is expected; the message can quote the text as written."""

    def __init__(self, value: float) -> None:
        self.value = value
        super().__init__(self.message(None))

    def message(self, written: str | None) -> str:
        if written is not None and written != repr(self.value):
            return (
                f"expected a string, got {written} which YAML reads as the number "
                f'{self.value!r}; quote it ("{written}")'
            )
        return f'expected a string, got {_describe(self.value)}; quote it ("{self.value}")'


def _structure_str(value: Any, _: type) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise ValueError(
            f"expected a string, got {_describe(value)}; quote it if you mean the text "
            f"('{str(value).lower()}')"
        )
    if isinstance(value, float):
        raise _FloatNotString(value)
    if isinstance(value, int):
        raise ValueError(f'expected a string, got {_describe(value)}; quote it ("{value}")')
    raise ValueError(f"expected a string, got {_describe(value)}")


def _structure_int(value: Any, _: type) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"expected an integer, got {_describe(value)}")


def _structure_float(value: Any, _: type) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"expected a number, got {_describe(value)}")


def _structure_bool(value: Any, _: type) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"expected true or false, got {_describe(value)}")


def _structure_enum(value: Any, cls: type[enum.Enum]) -> enum.Enum:
    allowed = [m.value for m in cls]
    if isinstance(value, str):
        for m in cls:
            if m.value == value:
                return m
    raise ValueError(
        f"{_describe(value)} is not one of: {', '.join(map(str, allowed))}"
        + _hint(value, [str(a) for a in allowed])
    )


def _structure_datetime(value: Any, _: type) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"expected an ISO 8601 time (2026-01-31T12:00:00Z), got {_describe(value)}")


def _structure_secret(value: Any, _: type) -> Secret:
    s = _structure_str(value, str)
    if s == REDACTED:
        raise ValueError(
            "the secret was redacted ('***') when this document was written; supply the real value"
        )
    return Secret(s)


def _hint(value: Any, choices: list[str]) -> str:
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


# --------------------------------------------------------------------------- containers


def _is_var_tuple(t: Any) -> bool:
    args = typing.get_args(t)
    return typing.get_origin(t) is tuple and len(args) == 2 and args[1] is Ellipsis


def _is_mapping(t: Any) -> bool:
    return typing.get_origin(t) in (collections.abc.Mapping, dict)


def _tuple_hook(c: cattrs.Converter, t: Any) -> Callable[[Any, Any], tuple[Any, ...]]:
    elem = typing.get_args(t)[0]

    def hook(data: Any, _: Any) -> tuple[Any, ...]:
        # A single string is accepted where a list of architectures is expected ("arch: amd64").
        if elem is Arch and isinstance(data, str):
            data = [data]
        if not isinstance(data, list | tuple):
            raise ValueError(f"expected a list, got {_describe(data)}")
        out: list[Any] = []
        errors: list[Exception] = []
        for i, v in enumerate(data):
            try:
                out.append(c.structure(v, elem))
            except Exception as e:
                e.add_note(IterableValidationNote(f"Structuring {t} @ index {i}", i, elem))
                errors.append(e)
        if errors:
            raise IterableValidationError(f"While structuring {t!r}", errors, t)
        return tuple(out)

    return hook


def _mapping_hook(c: cattrs.Converter, t: Any) -> Callable[[Any, Any], dict[Any, Any]]:
    args = typing.get_args(t)
    kt, vt = args if args else (Any, Any)

    def hook(data: Any, _: Any) -> dict[Any, Any]:
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a mapping, got {_describe(data)}")
        out: dict[Any, Any] = {}
        errors: list[Exception] = []
        for k, v in data.items():
            try:
                out[c.structure(k, kt)] = c.structure(v, vt)
            except Exception as e:
                e.add_note(IterableValidationNote(f"Structuring mapping value @ key {k!r}", k, vt))
                errors.append(e)
        if errors:
            raise IterableValidationError(f"While structuring {t!r}", errors, t)
        return out

    return hook


# --------------------------------------------------------------------------- unions


def _structure_base(data: Any, _: Any) -> BaseImage:
    if data == "scratch":
        return ScratchBase()
    if isinstance(data, Mapping):
        keys = set(data)
        c = get_converter()
        if "layout" in keys:
            return c.structure(data, LayoutBase)
        if "ref" in keys:
            return c.structure(data, RefBase)
        if "sampleOs" in keys:
            return c.structure(data, SampleOsBase)
    raise ValueError(
        f"expected scratch, {{layout: PATH, tag: TAG}}, {{ref: REGISTRY/REPO:TAG}} or "
        f"{{sampleOs: debian-12}}, got {_describe(data)}"
    )


def _structure_values(data: Any, t: Any) -> str | dict[str, Any] | None:
    if isinstance(data, str):
        return data
    if data is None and t == (str | Mapping[str, Any] | None):
        return None
    if isinstance(data, Mapping):
        return dict(_mapping_hook(get_converter(), Mapping[str, Any])(data, None))
    raise ValueError(f"expected YAML text or a mapping, got {_describe(data)}")


# --------------------------------------------------------------------------- the converter


def _class_structure_hook(c: cattrs.Converter, cls: type) -> Callable[[Any, Any], Any]:
    open_name = _open_field(cls)
    overrides = {a.name: override(rename=file_key(a), omit=_is_open(a)) for a in _fields(cls)}
    fn: Callable[[Any, Any], Any] = make_dict_structure_fn(
        cls,
        c,
        _cattrs_forbid_extra_keys=open_name is None,
        **overrides,  # type: ignore[arg-type]
    )
    known = set(_keys(cls).values())

    def build(data: Mapping[Any, Any]) -> Any:
        try:
            return fn(data, cls)
        except ClassValidationError as e:
            if all(isinstance(x, ModelValueError) for x in e.exceptions):
                raise  # the fields loaded; the constructor already ran every rule
            rules = _partial_rules(c, cls, data)
            if rules is None:
                raise
            raise ClassValidationError(e.message, [*e.exceptions, rules], cls) from None

    def hook(data: Any, _: Any) -> Any:
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a mapping, got {_describe(data)}")
        if open_name is None:
            return build(data)
        extra = {k: v for k, v in data.items() if k not in known}
        obj = build({k: v for k, v in data.items() if k in known})
        if extra:
            # str keys only; the open mapping is Mapping[str, Any]
            for k in extra:
                if not isinstance(k, str):
                    raise ValueError(f"key {k!r} must be a string; quote it")
            obj = attrs.evolve(obj, **{open_name: extra})
        return obj

    return hook


def _partial_rules(c: cattrs.Converter, cls: type, data: Mapping[Any, Any]) -> Exception | None:
    """The rules of ``cls`` that hold for the fields that did load, when others did not.

    The object is assembled without its constructor, unloadable fields set to a placeholder;
    its rules run until one touches a placeholder. The problems found up to then are real
    and are reported with the shape problems, so one pass shows as much as possible.
    """
    post_init = getattr(cls, "__attrs_post_init__", None)
    if post_init is None:
        return None
    hints = _hints(cls)
    obj: Any = object.__new__(cls)
    for a in _fields(cls):
        value: Any = INVALID
        key = file_key(a)
        if _is_open(a):
            value = {}
        elif key in data:
            try:
                value = c.structure(data[key], hints[a.name])
            except Exception:
                value = INVALID
        elif isinstance(a.default, attrs.Factory):  # type: ignore[arg-type]
            value = a.default.factory()  # type: ignore[union-attr]
        elif a.default is not attrs.NOTHING:
            value = a.default
        object.__setattr__(obj, a.name, value)
    checks = checks_of(lambda: post_init(obj))
    problems = [p for check in checks[:1] for p in check.problems]
    return ModelValueError(problems, cls) if problems else None


def _class_unstructure_hook(c: cattrs.Converter, cls: type) -> Callable[[Any], Any]:
    open_name = _open_field(cls)
    overrides = {a.name: override(rename=file_key(a), omit=_is_open(a)) for a in _fields(cls)}
    fn: Callable[[Any], Any] = make_dict_unstructure_fn(
        cls,
        c,
        _cattrs_omit_if_default=True,
        **overrides,  # type: ignore[arg-type]
    )

    def hook(obj: Any) -> Any:
        out = fn(obj)
        if open_name is not None:
            out.update(getattr(obj, open_name))
        return out

    return hook


@functools.cache
def get_converter(reveal_secrets: bool = False) -> cattrs.Converter:
    """The converter; with ``reveal_secrets`` secrets are written, otherwise as ``'***'``."""
    c = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    c.register_structure_hook(str, _structure_str)
    c.register_structure_hook(int, _structure_int)
    c.register_structure_hook(float, _structure_float)
    c.register_structure_hook(bool, _structure_bool)
    c.register_structure_hook(datetime, _structure_datetime)
    c.register_structure_hook(Secret, _structure_secret)
    c.register_structure_hook_func(
        lambda t: isinstance(t, type) and issubclass(t, enum.Enum), _structure_enum
    )
    c.register_structure_hook_factory(_is_var_tuple, lambda t: _tuple_hook(c, t))
    c.register_structure_hook_factory(_is_mapping, lambda t: _mapping_hook(c, t))
    c.register_structure_hook_func(lambda t: t == BaseImage, _structure_base)
    c.register_structure_hook_func(
        lambda t: t in (str | Mapping[str, Any], str | Mapping[str, Any] | None),
        _structure_values,
    )
    c.register_structure_hook_factory(
        lambda t: attrs.has(t) and t is not Secret, lambda t: _class_structure_hook(c, t)
    )

    c.register_unstructure_hook(
        Secret, (lambda s: s.reveal()) if reveal_secrets else (lambda s: REDACTED)
    )
    c.register_unstructure_hook(datetime, lambda d: d.isoformat())
    c.register_unstructure_hook(ScratchBase, lambda _: "scratch")
    c.register_unstructure_hook_factory(
        lambda t: attrs.has(t) and t not in (Secret, ScratchBase),
        lambda t: _class_unstructure_hook(c, t),
    )
    return c


# --------------------------------------------------------------------------- errors


def _seg(k: str | int) -> str:
    if isinstance(k, int):
        return f"[{k}]"
    return f".{k}" if _IDENT.match(k) else f"[{json.dumps(k)}]"


def _path(parts: tuple[str | int, ...]) -> str:
    return "$" + "".join(_seg(p) for p in parts)


def _unwrap(t: Any) -> Any:
    """The attrs class or container inside an Optional/union annotation, if one."""
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        for a in typing.get_args(t):
            if attrs.has(a) or _is_var_tuple(a) or _is_mapping(a):
                return a
    return t


def _model_path(cls: type, sub: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Translate a path of attribute names (as validators give it) to file key names."""
    out: list[str | int] = []
    t: Any = cls
    for p in sub:
        t = _unwrap(t)
        if isinstance(p, str) and isinstance(t, type) and attrs.has(t):
            fd = attrs.fields_dict(t)
            if p in fd:
                out.append(file_key(fd[p]))
                t = _hints(t).get(p, Any)
                continue
        out.append(p)
        args = typing.get_args(t)
        t = args[0] if _is_var_tuple(t) else (args[1] if _is_mapping(t) and args else Any)
    return tuple(out)


def _collect(
    exc: BaseException,
    parts: tuple[str | int, ...],
    out: list[tuple[tuple[str | int, ...], str | BaseException]],
) -> None:
    if isinstance(exc, ClassValidationError):
        keys = _keys(exc.cl) if attrs.has(exc.cl) else {}
        for sub in exc.exceptions:
            child = parts
            for note in getattr(sub, "__notes__", []):
                name = getattr(note, "name", None)
                if isinstance(name, str):
                    child = (*parts, keys.get(name, name))
            if isinstance(sub, KeyError) and child != parts:
                out.append((child, "required key is missing"))
            else:
                _collect(sub, child, out)
        return
    if isinstance(exc, IterableValidationError):
        for sub in exc.exceptions:
            child = parts
            for note in getattr(sub, "__notes__", []):
                if isinstance(note, IterableValidationNote):
                    child = (*parts, note.index)
            _collect(sub, child, out)
        return
    if isinstance(exc, ForbiddenExtraKeysError):
        choices = list(_keys(exc.cl).values()) if attrs.has(exc.cl) else []
        for k in sorted(exc.extra_fields, key=str):
            out.append(((*parts, k), f"unknown key {k!r}" + _hint(k, choices)))
        return
    if isinstance(exc, ModelValueError):
        for rel, message in exc.problems:
            p = _model_path(exc.cls, rel) if exc.cls is not None else rel
            out.append(((*parts, *p), message))
        return
    out.append((parts, exc))


def _message(what: str | BaseException, written: str | None) -> str:
    if isinstance(what, _FloatNotString):
        return what.message(written)
    if isinstance(what, BaseException):
        return str(what) or type(what).__name__
    return what


def user_data_problems(data: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """Problems of inline user-data (relative paths in file keys); [] when it is valid.

    A registration token is refused: forge files name the variable holding it instead.
    """
    try:
        ud = get_converter().structure(data, UserData)
    except Exception as e:
        found: list[tuple[tuple[str | int, ...], str | BaseException]] = []
        _collect(e, (), found)
        return [(parts, _message(what, None)) for parts, what in found]
    site = ud.stylus.site if ud.stylus is not None else None
    if site is not None and site.edge_host_token is not None:
        return [
            (
                ("stylus", "site", "edgeHostToken"),
                "a registration token does not belong in a forge file; put it in the "
                "environment variable named by registration.tokenEnv",
            )
        ]
    return []


def _problems(
    exc: BaseException, lines: Mapping[tuple[str | int, ...], int], source: str | None
) -> list[Problem]:
    found: list[tuple[tuple[str | int, ...], str | BaseException]] = []
    _collect(exc, (), found)
    texts = lines.texts if isinstance(lines, _Lines) else {}
    problems = []
    for parts, what in found:
        message = _message(what, texts.get(parts))
        probe = parts
        while probe not in lines and probe:
            probe = probe[:-1]
        problems.append(Problem(_path(parts), message, lines.get(probe), source))
    # In file order (stable, so one object's problems keep their order); no line: last.
    return sorted(problems, key=lambda p: (p.line is None, p.line or 0))


# --------------------------------------------------------------------------- YAML / JSON


class _Lines(dict[tuple[str | int, ...], int]):
    """Path -> line, plus the text of numbers as written (``1.10``, not ``1.1``)."""

    def __init__(self, text: str = "") -> None:
        super().__init__()
        self.source = text.splitlines()
        self.texts: dict[tuple[str | int, ...], str] = {}

    def note_text(self, parts: tuple[str | int, ...], pos: Any) -> None:
        try:
            line, col = pos
            token = re.match(r"[^\s,\]}#]+", self.source[line][col:])
        except (TypeError, ValueError, IndexError):
            return
        if token:
            self.texts[parts] = token.group(0)


def _plain(node: Any, parts: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> Any:
    """Plain Python data from ruamel's round-trip nodes, recording each path's line."""
    if isinstance(node, CommentedMap):
        lines.setdefault(parts, node.lc.line + 1)
        out: dict[Any, Any] = {}
        for k, v in node.items():
            key = _plain(k, (), {})
            with contextlib.suppress(KeyError, TypeError):
                lines[(*parts, key)] = node.lc.key(k)[0] + 1
            if isinstance(v, float) and isinstance(lines, _Lines):
                with contextlib.suppress(KeyError, TypeError):
                    lines.note_text((*parts, key), node.lc.value(k))
            out[key] = _plain(v, (*parts, key), lines)
        return out
    if isinstance(node, CommentedSeq):
        lines.setdefault(parts, node.lc.line + 1)
        items = []
        for i, v in enumerate(node):
            with contextlib.suppress(KeyError, TypeError):
                lines[(*parts, i)] = node.lc.item(i)[0] + 1
            if isinstance(v, float) and isinstance(lines, _Lines):
                with contextlib.suppress(KeyError, TypeError):
                    lines.note_text((*parts, i), node.lc.item(i))
            items.append(_plain(v, (*parts, i), lines))
        return items
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, str):
        return str(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, datetime):
        return datetime.fromisoformat(node.isoformat())
    return node


def _parse(
    text: str, fmt: Format, source: str | None
) -> tuple[Any, dict[tuple[str | int, ...], int]]:
    lines = _Lines(text if fmt == "yaml" else "")
    if fmt == "json":
        try:
            return json.loads(text), lines
        except json.JSONDecodeError as e:
            raise ConfigError([Problem("$", f"invalid JSON: {e.msg}", e.lineno, source)]) from None
    yaml = YAML(typ="rt")
    try:
        node = yaml.load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        msg = " ".join(x for x in (e.context, e.problem) if x) or "invalid YAML"
        raise ConfigError([Problem("$", f"invalid YAML: {msg}", line, source)]) from None
    except Exception as e:  # ruamel raises a few non-marked errors (e.g. bad tags)
        raise ConfigError([Problem("$", f"invalid YAML: {e}", None, source)]) from None
    return _plain(node, (), lines), lines


def parse_values(text: str) -> Mapping[str, Any]:
    """Pack values given as YAML text, as a mapping (``{}`` for empty text)."""
    data, _ = _parse(text, "yaml", None)
    if data is None:
        return {}
    if isinstance(data, Mapping):
        return data
    return {"": data}


# --------------------------------------------------------------------------- public API


def detect_kind(data: Any) -> str:
    """The kind of a parsed document: its ``kind:`` or, without one, a guess from its keys."""
    if not isinstance(data, Mapping):
        raise ConfigError.single("$", f"a document must be a mapping, got {_describe(data)}")
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
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([Problem("$", f"cannot read {p}: {e}", None, str(p))]) from None
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
        problems.extend(_problems(e, lines, source))
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return obj


def structure(data: Any, cls: type[T], source: str | None = None) -> T:
    """Build a ``cls`` from plain data (as parsed from JSON/YAML); ConfigError on problems."""
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
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(
            [Problem("$", f"cannot read {p}: {e.strerror or e}", None, str(p))]
        ) from None
    except UnicodeDecodeError as e:
        raise ConfigError([Problem("$", f"{p} is not UTF-8 text: {e}", None, str(p))]) from None
    fmt: Format = "json" if p.suffix.lower() == ".json" else "yaml"
    return loads(text, cls, format=fmt, source=str(p))


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


def _for_yaml(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _for_yaml(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_for_yaml(v) for v in value]
    if isinstance(value, str) and _literal_ok(value):
        return LiteralScalarString(value)
    if isinstance(value, str) and any(ch in value for ch in "\x85\u2028\u2029"):
        # ruamel folds these line breaks in quoted-plain output; double quotes escape them.
        return DoubleQuotedScalarString(value)
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
