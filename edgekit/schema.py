"""JSON Schema (draft 2020-12) for edgekit documents, generated from the attrs model.

The schema is derived by walking the attrs classes, so it cannot drift from the model: keys
are the file's key names, descriptions come from the fields' ``doc`` metadata, and classes
that carry unmodelled keys (user-data) are the only ones with ``additionalProperties``.
Rules that need code (cross-references, subnets) are checked by the converter, not here.
"""

from __future__ import annotations

import enum
import inspect
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from edgekit.config import API_VERSION, KIND_NAMES, file_key
from edgekit.model import BaseImage, Forge, Secret
from edgekit.model.images import Arch

__all__ = ["forge_json_schema", "json_schema"]

DRAFT = "https://json-schema.org/draft/2020-12/schema"


class _Builder:
    def __init__(self) -> None:
        self.defs: dict[str, dict[str, Any]] = {}

    def ref(self, cls: type) -> dict[str, Any]:
        name = cls.__name__
        if name not in self.defs:
            self.defs[name] = {}  # placeholder: breaks recursion
            self.defs[name] = self.object(cls)
        return {"$ref": f"#/$defs/{name}"}

    def object(self, cls: type) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        props: dict[str, Any] = {}
        required: list[str] = []
        open_ = False
        for a in attrs.fields(cls):
            if a.metadata.get("open"):
                open_ = True
                continue
            key = file_key(a)
            s = self.type(a.metadata.get("schema_type", hints[a.name]))
            doc = a.metadata.get("doc")
            if doc:
                s = {**s, "description": doc}
            props[key] = s
            if a.default is attrs.NOTHING:
                required.append(key)
        out: dict[str, Any] = {"type": "object"}
        desc = inspect.getdoc(cls)
        if desc:
            out["description"] = desc.split("\n\n")[0]
        out["properties"] = props
        if required:
            out["required"] = required
        out["additionalProperties"] = open_
        return out

    def type(self, t: Any) -> dict[str, Any]:
        if t is Any:
            return {}
        if t is str or t is Secret:
            return {"type": "string"}
        if t is bool:
            return {"type": "boolean"}
        if t is int:
            return {"type": "integer"}
        if t is float:
            return {"type": "number"}
        if t is datetime:
            return {"type": "string", "format": "date-time"}
        if t == BaseImage:
            return {
                "oneOf": [
                    {"const": "scratch"},
                    *(self.ref(a) for a in typing.get_args(t) if a.__name__ != "ScratchBase"),
                ]
            }
        if isinstance(t, type) and issubclass(t, enum.Enum):
            return {"enum": [m.value for m in t]}
        if isinstance(t, type) and attrs.has(t):
            return self.ref(t)
        origin = typing.get_origin(t)
        args = typing.get_args(t)
        if origin in (typing.Union, types.UnionType):
            return {"anyOf": [self.type(a) for a in args]}
        if origin is tuple:
            arr = {"type": "array", "items": self.type(args[0])}
            if args[0] is Arch:  # a single string is accepted too
                return {"anyOf": [self.type(Arch), arr]}
            return arr
        if origin in (Mapping, dict):
            return {"type": "object", "additionalProperties": self.type(args[1])}
        if t is type(None):
            return {"type": "null"}
        raise TypeError(f"no JSON Schema for {t!r}")


def json_schema(cls: type, *, title: str | None = None) -> dict[str, Any]:
    """A JSON Schema for documents of attrs class ``cls`` (kind/apiVersion allowed on top)."""
    b = _Builder()
    top = b.object(cls)
    kind = cls.__name__ if cls.__name__ in KIND_NAMES else None
    extra: dict[str, Any] = {"apiVersion": {"const": API_VERSION, "description": "edgekit/v1"}}
    if kind is not None:
        extra["kind"] = {"const": kind, "description": "The document kind."}
    top["properties"] = {**extra, **top["properties"]}
    return {
        "$schema": DRAFT,
        "$id": f"https://edgekit.dev/schema/{cls.__name__.lower()}.json",
        "title": title or cls.__name__,
        **top,
        "$defs": b.defs,
    }


def forge_json_schema() -> dict[str, Any]:
    """The JSON Schema of the forge file (``edgeforge.yaml``)."""
    return json_schema(Forge, title="edgekit forge file (edgeforge.yaml)")
