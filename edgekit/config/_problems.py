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
from edgekit.model._base import file_key

from ._convert import (
    _IDENT,
    _FloatNotString,
    _hint,
    _hints,
    _is_mapping,
    _is_secret_type,
    _is_var_tuple,
    _keys,
    get_converter,
    holds_secret,
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
        secrets = secret_texts(data, UserData)
        return [(parts, scrub(_message(what, None), secrets)) for parts, what in found]
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


def secret_texts(
    data: Any, t: Any, lines: Mapping[tuple[str | int, ...], int] | None = None
) -> list[str]:
    """The texts of every value at a :class:`Secret`-typed place in plain ``data`` of type
    ``t`` (as given: a number's digits, as written for YAML), longest first.

    Problems are scrubbed of these, so that no error path (a did-you-mean, a rule quoting a
    value, a new message nobody checked) can print a secret.
    """
    found: set[str] = set()
    written = lines.texts if isinstance(lines, _Lines) else {}
    stack: list[tuple[Any, Any, tuple[str | int, ...]]] = [(data, t, ())]
    while stack:
        value, typ, parts = stack.pop()
        if _is_secret_type(typ):
            leaves = [(value, parts)]
            while leaves:
                v, at = leaves.pop()
                if isinstance(v, Mapping):
                    leaves.extend((x, (*at, k)) for k, x in v.items())
                elif isinstance(v, list | tuple):
                    leaves.extend((x, (*at, i)) for i, x in enumerate(v))
                elif v is not None and not isinstance(v, bool):
                    found.update({str(v), repr(v), written.get(at, str(v))})
            continue
        if not holds_secret(typ):
            continue
        origin = typing.get_origin(typ)
        if origin in (typing.Union, types.UnionType):
            stack.extend((value, a, parts) for a in typing.get_args(typ))
        elif isinstance(typ, type) and attrs.has(typ) and isinstance(value, Mapping):
            hints = _hints(typ)
            for a in attrs.fields(typ):
                key = file_key(a)
                if key in value:
                    at = (*parts, key)
                    stack.append((value[key], a.metadata.get("schema_type", hints[a.name]), at))
        elif _is_var_tuple(typ) and isinstance(value, list | tuple):
            elem = typing.get_args(typ)[0]
            stack.extend((v, elem, (*parts, i)) for i, v in enumerate(value))
        elif _is_mapping(typ) and isinstance(value, Mapping):
            vt = typing.get_args(typ)[1]
            stack.extend((v, vt, (*parts, k)) for k, v in value.items())
    # Very short values would blank out ordinary words; they are not echoed by any message.
    return sorted((x for x in found if len(x) >= 4), key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every secret in ``secrets`` replaced by ``'***'``."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def _problems(
    exc: BaseException,
    lines: Mapping[tuple[str | int, ...], int],
    source: str | None,
    secrets: list[str] = [],  # noqa: B006 - never mutated
) -> list[Problem]:
    found: list[tuple[tuple[str | int, ...], str | BaseException]] = []
    _collect(exc, (), found)
    texts = lines.texts if isinstance(lines, _Lines) else {}
    problems = []
    for parts, what in found:
        message = scrub(_message(what, texts.get(parts)), secrets)
        probe = parts
        while probe not in lines and probe:
            probe = probe[:-1]
        problems.append(Problem(scrub(_path(parts), secrets), message, lines.get(probe), source))
    # In file order (stable, so one object's problems keep their order); no line: last.
    return sorted(problems, key=lambda p: (p.line is None, p.line or 0))
