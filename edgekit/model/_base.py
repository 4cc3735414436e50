"""Shared helpers of the model: field metadata and validation that reports every problem."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["Check", "ModelValueError", "doc"]

#: A relative path inside an object: attribute names (Python spelling), indices or mapping keys.
SubPath = tuple[str | int, ...]


def doc(text: str, *, key: str | None = None, **extra: Any) -> dict[str, Any]:
    """Field metadata: ``doc`` is the field's description, ``key`` overrides the file key name."""
    meta: dict[str, Any] = {"doc": text, **extra}
    if key is not None:
        meta["key"] = key
    return meta


class ModelValueError(ValueError):
    """An object broke one or more rules; :attr:`problems` holds (relative path, message) pairs.

    The converter turns each pair into a :class:`edgekit.errors.Problem` whose path uses the
    file's key names, so a Python user and a YAML user see the same rule violated.
    """

    def __init__(self, problems: Sequence[tuple[SubPath, str]], cls: type | None = None) -> None:
        self.problems: tuple[tuple[SubPath, str], ...] = tuple(problems)
        #: The class whose rules were broken (paths start at its attributes).
        self.cls = cls
        super().__init__("; ".join(message for _, message in self.problems))


class Check:
    """Collects rule violations of one object so that all of them are reported at once."""

    def __init__(self, obj: object) -> None:
        self.type = type(obj)
        self.cls = self.type.__name__
        self.problems: list[tuple[SubPath, str]] = []

    def fail(self, path: SubPath | str, message: str) -> None:
        """Record that the field at ``path`` (first element: attribute name) breaks a rule."""
        sub: SubPath = (path,) if isinstance(path, str) else path
        where = str(sub[0]) + "".join(f"[{p!r}]" for p in sub[1:])
        self.problems.append((sub, f"{self.cls}.{where}: {message}"))

    def done(self) -> None:
        """Raise :class:`ModelValueError` when any rule was broken."""
        if self.problems:
            raise ModelValueError(self.problems, self.type)


_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$")


def is_dns_label(value: str) -> bool:
    """Whether ``value`` is a DNS label: lowercase letters, digits and '-', at most 63 chars."""
    return bool(_DNS_LABEL.match(value))


def is_name(value: str) -> bool:
    """Whether ``value`` is a plain object name (letters, digits, '.', '_', '-', <= 128 chars)."""
    return bool(_NAME.match(value))


def check_name(check: Check, field: str, value: str) -> None:
    """Record a problem when ``value`` is not a plain object name."""
    if not is_name(value):
        check.fail(
            field,
            f"{value!r} is not a valid name (letters, digits, '.', '_', '-', "
            "starting and ending with a letter or digit, at most 128 characters)",
        )


def duplicates(values: Sequence[str]) -> list[str]:
    """The values that occur more than once, in first-seen order."""
    seen: set[str] = set()
    dup: list[str] = []
    for v in values:
        if v in seen and v not in dup:
            dup.append(v)
        seen.add(v)
    return dup
