"""The hub's request bodies, declared once: the routes read them with these specs and
:mod:`edgekit.hub.openapi` renders the same specs as JSON Schema.

Limits live here; name patterns and enumerations come from the model (:mod:`edgekit.model`),
so neither the readers nor the OpenAPI document copy a regex or a list of values by hand.
The model still has the last word on each value (its messages name the rule).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import attrs

from edgekit.errors import Problem
from edgekit.hub.fields import Fields
from edgekit.model import Arch, HostState
from edgekit.model._base import _DNS_LABEL, _NAME

__all__ = [
    "HEARTBEAT",
    "REGISTRATION",
    "SEARCH",
    "STATUS",
    "STATUS_STATES",
    "TOKEN_BATCH",
    "TOKEN_CREATE",
    "TOKEN_STATE",
    "TOKEN_UPDATE",
    "Bool",
    "Int",
    "Obj",
    "SiteList",
    "Str",
    "StrList",
    "Tags",
    "dns_label_pattern",
    "name_pattern",
]

#: What an agent may report it did.
STATUS_STATES = ("applying", "applied", "failed")
_INT_MAX = 2**31
#: The most sites a token (or a batch of tokens) names: edgekit.hub.domain.MAX_TOKEN_SITES.
MAX_SITES = 4096


def name_pattern() -> str:
    """The model's pattern of a plain object name (host uids, pool hosts)."""
    return _NAME.pattern


def dns_label_pattern() -> str:
    """The model's pattern of a DNS label (cluster names, sites)."""
    return _DNS_LABEL.pattern


class Spec(Protocol):
    """A field: read from a request, and described in the OpenAPI document."""

    def read(self, f: Fields, data: Any, key: str, path: str) -> Any:
        """The value at ``data[key]`` (path ``path.key``), problems recorded in ``f``."""

    def openapi(self) -> dict[str, Any]:
        """The field as JSON Schema."""


@attrs.frozen
class Str:
    """A string of at most ``max_len`` characters."""

    max_len: int = 255
    required: bool = False
    pattern: str | None = None
    enum: tuple[str, ...] | None = None
    format: str | None = None
    description: str | None = None

    def read(self, f: Fields, data: Any, key: str, path: str) -> str | None:
        value = f.str_(data, key, path, required=self.required, max_len=self.max_len)
        if value is not None and self.enum is not None and value not in self.enum:
            f.problems.append(Problem(f"{path}.{key}", f"must be one of {', '.join(self.enum)}"))
            return None
        return value

    def openapi(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string"}
        if self.enum is not None:
            out["enum"] = list(self.enum)
        elif self.format is None:
            out["maxLength"] = self.max_len
        if self.required and self.enum is None and self.format is None:
            out["minLength"] = 1
        for key, value in (
            ("pattern", self.pattern),
            ("format", self.format),
            ("description", self.description),
        ):
            if value is not None:
                out[key] = value
        return out


@attrs.frozen
class Int:
    """An integer from ``minimum`` to 2**31."""

    minimum: int = 0
    required: bool = False

    def read(self, f: Fields, data: Any, key: str, path: str) -> int | None:
        return f.int_(data, key, path, required=self.required, minimum=self.minimum)

    def openapi(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.minimum, "maximum": _INT_MAX}


@attrs.frozen
class Bool:
    """``true`` or ``false``."""

    required: bool = False

    def read(self, f: Fields, data: Any, key: str, path: str) -> bool | None:
        return f.bool_(data, key, path, required=self.required)

    def openapi(self) -> dict[str, Any]:
        return {"type": "boolean"}


@attrs.frozen
class Tags:
    """An object of strings: at most 64, keys of at most 128 characters, values 256."""

    def read(self, f: Fields, data: Any, key: str, path: str) -> dict[str, str]:
        return f.tags(data, key, path)

    def openapi(self) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": {"type": "string", "maxLength": 256},
            "maxProperties": 64,
        }


@attrs.frozen
class StrList:
    """A string or a list of strings (optionally from ``enum``)."""

    enum: tuple[str, ...] | None = None

    def read(self, f: Fields, data: Any, key: str, path: str) -> list[str]:
        values = f.str_list(data, key, path)
        if self.enum is not None:
            for i, value in enumerate(values):
                if value not in self.enum:
                    f.problems.append(
                        Problem(f"{path}.{key}[{i}]", f"must be one of {', '.join(self.enum)}")
                    )
        return values

    def openapi(self) -> dict[str, Any]:
        item: dict[str, Any] = {"type": "string"}
        if self.enum is not None:
            item["enum"] = list(self.enum)
        return {"type": "array", "items": item}


@attrs.frozen
class SiteList:
    """A list of site names (DNS labels), at most ``max_items``; None when absent. The
    domain layer checks each name and duplicates (:func:`edgekit.hub.domain.site_list_problems`)."""

    max_items: int
    required: bool = False

    def read(self, f: Fields, data: Any, key: str, path: str) -> list[str] | None:
        value = data.get(key) if isinstance(data, dict) else None
        where = f"{path}.{key}"
        if value is None:
            if self.required:
                f.problems.append(Problem(where, "is required"))
            return None
        if not isinstance(value, list):
            f.problems.append(Problem(where, "must be a list of site names"))
            return None
        if len(value) > self.max_items:
            f.problems.append(Problem(where, f"must name at most {self.max_items} sites"))
            return None
        bad = [i for i, v in enumerate(value) if not isinstance(v, str) or not 0 < len(v) <= 128]
        for i in bad:
            f.problems.append(Problem(f"{where}[{i}]", "must be a string of 1-128 characters"))
        return None if bad else list(value)

    def openapi(self) -> dict[str, Any]:
        return {
            "type": "array",
            "items": {"type": "string", "maxLength": 128, "pattern": dns_label_pattern()},
            "minItems": 1,
            "maxItems": self.max_items,
            "uniqueItems": True,
        }


@attrs.frozen
class Obj:
    """An object of named fields (unknown fields are ignored, as Palette's API does)."""

    fields: Mapping[str, Spec]
    required: bool = False

    def read(self, f: Fields, data: Any, key: str, path: str) -> dict[str, Any]:
        present = isinstance(data, dict) and isinstance(data.get(key), dict)
        inner = f.obj(data, key, path, required=self.required)
        if not present:
            # Absent or not an object (reported above): its fields are not reported again.
            return dict.fromkeys(self.fields)
        return self.read_object(f, inner, f"{path}.{key}")

    def read_object(self, f: Fields, data: Any, path: str = "$") -> dict[str, Any]:
        """Every field's value (None when absent or wrong; the problem is in ``f``)."""
        return {name: spec.read(f, data, name, path) for name, spec in self.fields.items()}

    def openapi(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "object",
            "properties": {name: spec.openapi() for name, spec in self.fields.items()},
        }
        required = [name for name, spec in self.fields.items() if getattr(spec, "required", False)]
        if required:
            out["required"] = required
        return out


TOKEN_CREATE = Obj(
    {
        "metadata": Obj({"name": Str(128, required=True)}, required=True),
        "spec": Obj(
            {
                "defaultProjectUid": Str(128),
                "expiry": Str(
                    64,
                    required=True,
                    format="date-time",
                    description="RFC 3339 with a zone, in the future",
                ),
                "site": Str(128, pattern=dns_label_pattern()),
                "maxHosts": Int(minimum=1),
                "sites": SiteList(MAX_SITES),
            },
            required=True,
        ),
    }
)
#: ``POST /v1/edgehosts/tokens/batch``: one token per site, named ``namePrefix + site``.
TOKEN_BATCH = Obj(
    {
        "metadata": Obj({"namePrefix": Str(64)}),
        "spec": Obj(
            {
                "sites": SiteList(MAX_SITES, required=True),
                "defaultProjectUid": Str(128),
                "expiry": Str(
                    64,
                    required=True,
                    format="date-time",
                    description="RFC 3339 with a zone, in the future",
                ),
                "maxHosts": Int(minimum=1),
            },
            required=True,
        ),
    }
)
TOKEN_UPDATE = Obj(
    {"spec": Obj({"expiry": Str(64, required=True, format="date-time")}, required=True)}
)
TOKEN_STATE = Obj({"isActive": Bool(required=True)})
REGISTRATION = Obj(
    {
        "edgeHostToken": Str(512, description="or the EdgeHostToken header"),
        "hostUid": Str(128, required=True, pattern=name_pattern()),
        "hostAddress": Str(description="an IP address"),
        "macAddress": Str(description="a MAC address, aa:bb:cc:dd:ee:ff"),
        "arch": Str(enum=tuple(a.value for a in Arch)),
        "site": Str(128, pattern=dns_label_pattern()),
        "tags": Tags(),
        "agentVersion": Str(64),
    }
)
HEARTBEAT = Obj({"hostAddress": Str()})
STATUS = Obj(
    {
        "state": Str(required=True, enum=STATUS_STATES),
        "generation": Int(),
        "message": Str(4096),
        "providerImage": Str(1024),
    }
)
SEARCH = Obj(
    {
        "filter": Obj(
            {
                "state": StrList(enum=tuple(s.value for s in HostState)),
                "site": StrList(),
                "tags": Tags(),
            }
        ),
        "limit": Int(minimum=1),
        "offset": Int(),
    }
)
