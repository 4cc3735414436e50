"""How model objects render in Jupyter: a compact, escaped HTML table of what was set.

A notebook that builds a :class:`~edgekit.model.Rollout` or loads a forge file shows the
object it made; attrs' one-line repr of a forge with 200 sites is thousands of characters.
Here only fields that differ from their defaults are shown, under the names a file uses
(``maxUnavailable``, not ``max_unavailable``), nested objects fold into ``<details>``, long
lists show their first items and a count, and a :class:`~edgekit.model.Secret` is always
``***``. The output is bounded whatever the object's size. No I/O, no converter: the key
names come from the field metadata, as the converter's do.
"""

from __future__ import annotations

import enum
import html
from collections.abc import Iterable, Mapping
from pathlib import PurePath
from typing import Any

import attrs

from ._base import file_key
from .hosts import Secret

__all__ = ["install", "model_html"]

#: Items of a list or mapping shown before "... and N more".
MAX_ITEMS = 12
#: Characters of a string shown before it is clipped.
MAX_TEXT = 120
#: Nesting levels unfolded; deeper objects show as their class and name.
MAX_DEPTH = 3

_TABLE = 'style="border-collapse:collapse;font-size:90%;margin:0"'
_KEY = 'style="text-align:left;vertical-align:top;padding:0 8px 0 0"'
_VALUE = 'style="text-align:left;padding:0"'


def _is_default(a: attrs.Attribute[Any], value: Any) -> bool:
    default = a.default
    if default is attrs.NOTHING:
        return False
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        if default.takes_self:  # type: ignore[union-attr]
            return False
        default = default.factory()  # type: ignore[union-attr]
    try:
        return bool(value == default)
    except Exception:  # a value that cannot be compared is shown
        return False


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def _title(obj: Any) -> str:
    """``ClassName name version`` (the parts it has), escaped."""
    parts = [f"<b>{html.escape(type(obj).__name__)}</b>"]
    for field in ("name", "version"):
        value = getattr(obj, field, None)
        if isinstance(value, str) and value:
            parts.append(html.escape(_clip(value)))
    return " ".join(parts)


def _shown(obj: Any) -> list[tuple[str, Any]]:
    """(file key, value) of the fields that differ from their defaults, but the title's."""
    out = []
    for a in attrs.fields(type(obj)):
        value = getattr(obj, a.name, None)
        if a.name in ("name", "version") and isinstance(value, str):
            continue
        if not _is_default(a, value):
            out.append((file_key(a), value))
    return out


def _scalar(value: Any) -> str | None:
    """The escaped text of a scalar, or None for a container or an object."""
    if isinstance(value, Secret):
        return "***"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return html.escape(_clip(str(value.value)))
    if isinstance(value, str | int | float | PurePath):
        return html.escape(_clip(str(value)))
    return None


def _inline(value: Any) -> str | None:
    """A scalar, or a short list or mapping of scalars, as one line of text; else None."""
    text = _scalar(value)
    if text is not None:
        return text
    if isinstance(value, Mapping) and len(value) <= 3:
        pairs = [(html.escape(_clip(str(k))), _scalar(v)) for k, v in value.items()]
        if all(t is not None for _, t in pairs):
            return "{" + ", ".join(f"{k}: {t}" for k, t in pairs) + "}"
    if isinstance(value, list | tuple) and len(value) <= 3:
        texts = [_scalar(v) for v in value]
        if all(t is not None for t in texts):
            return ", ".join(t for t in texts if t is not None)
    return None


def _more(shown: int, total: int) -> str:
    return f" <i>... and {total - shown:,} more</i>" if total > shown else ""


def _value(value: Any, depth: int) -> str:
    text = _scalar(value)
    if text is not None:
        return text
    if attrs.has(type(value)):
        if depth >= MAX_DEPTH:
            return _title(value)
        rows = _shown(value)
        inline = [(k, _inline(v)) for k, v in rows]
        if len(rows) <= 3 and all(t is not None for _, t in inline):
            fields = ", ".join(f"{html.escape(k)}: {t}" for k, t in inline)
            return _title(value) + (f" ({fields})" if fields else "")
        return f"<details><summary>{_title(value)}</summary>{_table(rows, depth + 1)}</details>"
    if isinstance(value, Mapping):
        return _mapping(value, depth)
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        return _sequence(value, depth)
    return html.escape(_clip(type(value).__name__))


def _mapping(value: Mapping[Any, Any], depth: int) -> str:
    if not value:
        return "{}"
    items = list(value.items())[:MAX_ITEMS]
    if depth >= MAX_DEPTH:
        return f"{{{len(value):,} keys}}"
    if len(value) <= 3:
        text = _inline(value)
        if text is not None:
            return text[1:-1]  # a row of its own needs no braces
    table = _table([(str(k), v) for k, v in items], depth + 1) + _more(len(items), len(value))
    return f"<details><summary>{len(value):,} keys</summary>{table}</details>"


def _sequence(value: Iterable[Any], depth: int) -> str:
    items = list(value)
    if not items:
        return "[]"
    head = items[:MAX_ITEMS]
    texts = [_scalar(v) for v in head]
    if all(t is not None for t in texts):
        return ", ".join(t for t in texts if t is not None) + _more(len(head), len(items))
    if len(items) == 1:
        return _value(items[0], depth)
    if depth >= MAX_DEPTH:
        return f"[{len(items):,} items]"
    kinds = sorted({type(v).__name__ for v in items})
    label = f"{len(items):,} {html.escape(kinds[0] if len(kinds) == 1 else 'items')}"
    entries = "".join(f"<li>{_value(v, depth + 1)}</li>" for v in head)
    return (
        f"<details><summary>{label}</summary>"
        f'<ul style="margin:0;padding-left:1.2em">{entries}</ul>'
        f"{_more(len(head), len(items))}</details>"
    )


def _table(rows: list[tuple[str, Any]], depth: int) -> str:
    if not rows:
        return ""
    body = "".join(
        f"<tr><th {_KEY}>{html.escape(_clip(k))}</th><td {_VALUE}>{_value(v, depth)}</td></tr>"
        for k, v in rows
    )
    return f"<table {_TABLE}>{body}</table>"


def model_html(obj: Any) -> str:
    """``obj`` (an attrs model object) as compact HTML: title, then the fields it sets."""
    return f"<div>{_title(obj)}{_table(_shown(obj), 1)}</div>"


def _repr_html_(self: Any) -> str:
    return model_html(self)


def install(classes: Iterable[Any]) -> None:
    """Give every attrs class in ``classes`` that has none of its own a ``_repr_html_``."""
    for cls in classes:
        if isinstance(cls, type) and attrs.has(cls) and "_repr_html_" not in vars(cls):
            cls._repr_html_ = _repr_html_  # type: ignore[attr-defined]
