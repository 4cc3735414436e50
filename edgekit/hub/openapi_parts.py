"""Pieces every part of the hub's OpenAPI document is written with: schema shorthands, a
``$ref``, an object schema and the answers of an admin route (its errors included)."""

from __future__ import annotations

from typing import Any

__all__ = ["ADMIN", "INT", "NINT", "NSTR", "STR", "S", "obj", "ok", "ref"]

S = dict[str, Any]
STR: S = {"type": "string"}
NSTR: S = {"type": "string", "nullable": True}
INT: S = {"type": "integer"}
NINT: S = {"type": "integer", "nullable": True}
ADMIN: list[S] = [{"apiKey": []}]


def ref(name: str) -> S:
    """A reference to the component schema ``name``."""
    return {"$ref": f"#/components/schemas/{name}"}


def obj(props: S, required: list[str] | None = None) -> S:
    """An object schema with ``props`` (and the ``required`` ones)."""
    out: S = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    return out


def ok(name: str, status: str = "200", *errors: str) -> S:
    """The answers of a route: ``status`` with schema ``name``, and ``Error`` for 400, 401,
    429 and ``errors``."""
    answers: S = {
        status: {"description": "done", "content": {"application/json": {"schema": ref(name)}}}
    }
    for code in ("400", "401", "429", *errors):
        answers[code] = {
            "description": "refused",
            "content": {"application/json": {"schema": ref("Error")}},
        }
    return answers
