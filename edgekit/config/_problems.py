"""Problems: cattrs errors turned into path-addressed messages, with secrets redacted."""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from typing import Any

import attrs
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)

from edgekit.errors import Problem
from edgekit.model import (
    ModelValueError,
    UserData,
)

from ._convert import (
    _IDENT,
    _FloatNotString,
    _hint,
    _hints,
    _is_mapping,
    _is_var_tuple,
    _keys,
    file_key,
    get_converter,
)
from ._parse import _Lines

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
