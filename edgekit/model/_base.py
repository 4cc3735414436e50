"""Shared helpers of the model: field metadata and validation that reports every problem."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import Any, NoReturn

import attrs

__all__ = ["INVALID", "Check", "ModelValueError", "Unavailable", "checks_of", "doc", "file_key"]

#: A relative path inside an object: attribute names (Python spelling), indices or mapping keys.
SubPath = tuple[str | int, ...]


def doc(text: str, *, key: str | None = None, **extra: Any) -> dict[str, Any]:
    """Field metadata: ``doc`` is the field's description, ``key`` overrides the file key name."""
    meta: dict[str, Any] = {"doc": text, **extra}
    if key is not None:
        meta["key"] = key
    return meta


def file_key(a: attrs.Attribute[Any]) -> str:
    """The key an attribute has in files: its ``key`` metadata, or its name in camelCase."""
    key = a.metadata.get("key")
    if isinstance(key, str):
        return key
    head, *rest = a.name.split("_")
    return head + "".join(p.capitalize() for p in rest)


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


# While the converter checks the rules of a partly loaded object, the Checks made are kept
# here so that problems found before a rule touched an unloadable field are not lost.
_ACTIVE: ContextVar[list[Check] | None] = ContextVar("edgekit_active_checks", default=None)


class Unavailable(BaseException):
    """A rule used a field whose value could not be loaded (see :data:`INVALID`).

    A BaseException, so that rules catching ``Exception`` or ``ValueError`` do not hide it.
    """


class _Invalid:
    """Stands for a field whose value failed to load; any use of it raises Unavailable."""

    __slots__ = ()

    def _unavailable(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise Unavailable

    __getattr__ = __getitem__ = __iter__ = __len__ = __bool__ = __contains__ = _unavailable
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _unavailable
    __hash__ = __str__ = __repr__ = __format__ = __index__ = __int__ = _unavailable


#: The placeholder for a field whose value failed to load.
INVALID: Any = _Invalid()


def checks_of(run: Any) -> list[Check]:
    """Call ``run()`` and return the Checks it made, keeping their problems even when it fails."""
    made: list[Check] = []
    token = _ACTIVE.set(made)
    try:
        run()
    except (Unavailable, ModelValueError):
        pass
    except Exception:  # a rule choked on a placeholder in some other way: keep what we have
        pass
    finally:
        _ACTIVE.reset(token)
    return made


class Check:
    """Collects rule violations of one object so that all of them are reported at once."""

    def __init__(self, obj: object) -> None:
        self.type = type(obj)
        self.cls = self.type.__name__
        self.problems: list[tuple[SubPath, str]] = []
        active = _ACTIVE.get()
        # Whether the converter is checking a partly loaded object (see :meth:`rule`).
        self._partial = active is not None
        if active is not None:
            active.append(self)

    def fail(self, path: SubPath | str, message: str) -> None:
        """Record that the field at ``path`` (first element: attribute name) breaks a rule."""
        sub: SubPath = (path,) if isinstance(path, str) else path
        where = str(sub[0]) + "".join(f"[{p!r}]" for p in sub[1:])
        self.problems.append((sub, f"{self.cls}.{where}: {message}"))

    @contextlib.contextmanager
    def rule(self) -> Iterator[None]:
        """Run one independent rule; if it needs a field that failed to load, skip only it.

        A placeholder used through Python raises :class:`Unavailable`; one handed to C code
        (``re.fullmatch``, ``ipaddress``) raises a ``TypeError`` or the like instead. So while
        the converter checks a partly loaded object, any exception skips just this rule (the
        field's own load problem is reported already). Otherwise only ``Unavailable`` is
        caught: a Python caller passing a wrong type still gets its ``TypeError``.
        """
        try:
            yield
        except Unavailable:
            pass
        except Exception:
            if not self._partial:
                raise

    def done(self) -> None:
        """Raise :class:`ModelValueError` when any rule was broken."""
        if self.problems:
            raise ModelValueError(self.problems, self.type)


_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$")


def is_dns_label(value: str) -> bool:
    """Whether ``value`` is a DNS label: lowercase letters, digits and '-', at most 63 chars."""
    return bool(_DNS_LABEL.fullmatch(value))


def is_name(value: str) -> bool:
    """Whether ``value`` is a plain object name (letters, digits, '.', '_', '-', <= 128 chars)."""
    return bool(_NAME.fullmatch(value))


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


def check_version(check: Check, field: str, value: str) -> None:
    """Record a problem when ``value`` is blank or holds whitespace (``" "``, ``"1.0 "``)."""
    if not value.strip():
        check.fail(field, "must not be empty or blank")
    elif any(ch.isspace() or not ch.isprintable() for ch in value):
        check.fail(field, f"{value!r} must not contain spaces or line breaks")


def check_not_blank(check: Check, field: str | SubPath, value: str) -> None:
    """Record a problem when ``value`` is empty or only whitespace."""
    if not value.strip():
        check.fail(field, "must not be empty or blank")
