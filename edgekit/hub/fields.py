"""Typed fields out of a request's JSON object, every problem collected with its path.

The wire layer (:mod:`edgekit.hub.wire`) has already refused bad text; these readers check
JSON types and sizes, and the domain layer then applies the model's rules.
"""

from __future__ import annotations

import re
from typing import Any

from edgekit.errors import Problem

__all__ = ["Fields"]


class Fields:
    """Reads typed fields out of a JSON object, collecting every problem with its path."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems

    def obj(self, data: Any, key: str, path: str, *, required: bool = False) -> dict[str, Any]:
        value = data.get(key) if isinstance(data, dict) else None
        if value is None:
            if required:
                self.problems.append(Problem(f"{path}.{key}", "is required"))
            return {}
        if not isinstance(value, dict):
            self.problems.append(Problem(f"{path}.{key}", "must be an object"))
            return {}
        return value

    def str_(
        self,
        data: Any,
        key: str,
        path: str,
        *,
        required: bool = False,
        max_len: int = 255,
        pattern: re.Pattern[str] | None = None,
        what: str = "",
    ) -> str | None:
        value = data.get(key) if isinstance(data, dict) else None
        where = f"{path}.{key}"
        if value is None:
            if required:
                self.problems.append(Problem(where, "is required"))
            return None
        if not isinstance(value, str):
            self.problems.append(Problem(where, "must be a string"))
            return None
        if required and not value:
            self.problems.append(Problem(where, "must not be empty"))
            return None
        if len(value) > max_len:
            self.problems.append(Problem(where, f"must be at most {max_len} characters"))
            return None
        if pattern is not None and not pattern.fullmatch(value):
            self.problems.append(Problem(where, f"must be {what or pattern.pattern}"))
            return None
        return value

    def int_(
        self, data: Any, key: str, path: str, *, required: bool = False, minimum: int = 0
    ) -> int | None:
        value = data.get(key) if isinstance(data, dict) else None
        where = f"{path}.{key}"
        if value is None:
            if required:
                self.problems.append(Problem(where, "is required"))
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.problems.append(Problem(where, "must be an integer"))
            return None
        if value < minimum or value > 2**31:
            self.problems.append(Problem(where, f"must be between {minimum} and {2**31}"))
            return None
        return value

    def bool_(self, data: Any, key: str, path: str, *, required: bool = False) -> bool | None:
        value = data.get(key) if isinstance(data, dict) else None
        if value is None:
            if required:
                self.problems.append(Problem(f"{path}.{key}", "is required"))
            return None
        if not isinstance(value, bool):
            self.problems.append(Problem(f"{path}.{key}", "must be true or false"))
            return None
        return value

    def tags(self, data: Any, key: str, path: str) -> dict[str, str]:
        value = data.get(key) if isinstance(data, dict) else None
        where = f"{path}.{key}"
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problems.append(Problem(where, "must be an object of strings"))
            return {}
        if len(value) > 64:
            self.problems.append(Problem(where, "must have at most 64 tags"))
            return {}
        out: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(v, str) or len(k) > 128 or len(v) > 256:
                self.problems.append(
                    Problem(f"{where}.{k}", "must be a string of at most 256 characters")
                )
            else:
                out[k] = v
        return out

    def str_list(self, data: Any, key: str, path: str) -> list[str]:
        value = data.get(key) if isinstance(data, dict) else None
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problems.append(Problem(f"{path}.{key}", "must be a string or list of strings"))
            return []
        return list(value)
