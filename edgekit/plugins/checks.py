"""Static checks of a plugin object and of the backend classes it registers.

pluggy accepts a plugin whose hook name is misspelled (it just never calls it) and ignores a
function named like a hook but not marked ``@hookimpl``; an abstract backend class fails only
when a step instantiates it. Each of these would pass ``edgekit plugins`` silently, so the
manager runs these checks on every plugin, registered directly or found through an entry
point, and reports what they find with the file and line to fix.
"""

from __future__ import annotations

import difflib
import inspect
import traceback
from collections.abc import Collection
from types import TracebackType

import attrs

from edgekit.plugins import hookspecs
from edgekit.plugins.interfaces import Backend

__all__ = [
    "HOOK_NAMES",
    "Finding",
    "backend_class_problem",
    "did_you_mean",
    "hook_problems",
    "location_in",
    "source_location",
]

_SPEC_ATTR = f"{hookspecs.PROJECT}_spec"
_IMPL_ATTR = f"{hookspecs.PROJECT}_impl"

#: Every hook a plugin may implement.
HOOK_NAMES: frozenset[str] = frozenset(
    name for name, value in vars(hookspecs).items() if hasattr(value, _SPEC_ATTR)
)


def source_location(obj: object) -> str | None:
    """``file:line`` where a function or class is defined, when Python can tell."""
    target = inspect.unwrap(obj) if callable(obj) else obj
    try:
        path = inspect.getsourcefile(target)  # type: ignore[arg-type]
        if path is None:
            return None
        code = getattr(target, "__code__", None)
        line = code.co_firstlineno if code is not None else inspect.getsourcelines(target)[1]  # type: ignore[arg-type]
    except (OSError, TypeError):
        return None
    return f"{path}:{line}"


def did_you_mean(name: str, choices: Collection[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or nothing."""
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@attrs.frozen
class Finding:
    """One problem of a plugin, and the ``file:line`` to fix when known."""

    message: str
    location: str | None = None

    def __str__(self) -> str:
        return f"{self.message} (at {self.location})" if self.location else self.message


def _spec_arguments(hook: str) -> list[str]:
    return list(inspect.signature(getattr(hookspecs, hook)).parameters)


def _required_arguments(func: object) -> list[str] | None:
    try:
        sig = inspect.signature(func)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = [p.name for p in sig.parameters.values() if p.kind in kinds and p.default is p.empty]
    # A plugin that is a class (not an instance) has unbound methods; like pluggy, do not
    # count their ``self``.
    if names[:1] == ["self"] and "." in getattr(func, "__qualname__", ""):
        names = names[1:]
    return names


def hook_problems(plugin: object) -> list[Finding]:
    """What is wrong with the hook functions of ``plugin``.

    Looks at every routine whose name starts with ``edgekit_`` or that carries the
    ``@hookimpl`` mark: an unknown name (with the closest real hook), a real hook name
    without the mark, or an argument the hook never passes (an implementation may take
    fewer arguments than the specification, never others).
    """
    problems: list[Finding] = []
    try:
        names = sorted(dir(plugin))
    except Exception:  # a hostile __dir__; pluggy will fail on it more clearly
        return problems
    for attr in names:
        try:
            value = getattr(plugin, attr)
        except Exception:
            continue
        if not inspect.isroutine(value):
            continue  # constants, submodules, classes: not hooks
        marked = getattr(value, _IMPL_ATTR, None) is not None
        if attr in HOOK_NAMES:
            if not marked:
                problems.append(
                    Finding(
                        f"{attr} is not marked @hookimpl, so edgekit would never call it; "
                        "decorate it with @edgekit.plugins.hookimpl",
                        source_location(value),
                    )
                )
                continue
            expected = _spec_arguments(attr)
            extra = [a for a in _required_arguments(value) or () if a not in expected]
            if extra:
                problems.append(
                    Finding(
                        f"{attr} takes {', '.join(extra)}, which the hook does not pass; "
                        f"it passes {', '.join(expected) or 'nothing'} (any of them, by name)",
                        source_location(value),
                    )
                )
        elif marked or attr.startswith(f"{hookspecs.PROJECT}_"):
            problems.append(
                Finding(
                    f"unknown hook {attr}{did_you_mean(attr, HOOK_NAMES)}; "
                    "docs/hooks.md lists the hooks that exist",
                    source_location(value),
                )
            )
    return problems


def backend_class_problem(capability: str, base: type[Backend], cls: object) -> Finding | None:
    """Why ``cls`` cannot be a ``capability`` backend, or None."""
    if not (isinstance(cls, type) and issubclass(cls, base)):
        return Finding(
            f"registered {cls!r} as a {capability} backend, "
            f"but it is not a subclass of edgekit.plugins.{base.__name__}"
        )
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        return Finding(f"{cls.__qualname__} has no 'name' class attribute", source_location(cls))
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        return Finding(
            f"{capability} backend {name!r} ({cls.__module__}.{cls.__qualname__}) is "
            f"abstract: it does not implement {missing}",
            source_location(cls),
        )
    return _signature_problem(capability, base, cls, name)


def _positional(func: object) -> tuple[list[inspect.Parameter], bool] | None:
    """A function's positional parameters after ``self``, and whether it takes ``*args``."""
    try:
        params = list(inspect.signature(func).parameters.values())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    star = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    return [p for p in params if p.kind in kinds][1:], star


def _signature_problem(
    capability: str, base: type[Backend], cls: type, name: str
) -> Finding | None:
    """A method of the interface overridden with another call shape (an old positional
    API such as ``push_image(layout, tag, target, ctx, options)``): found now, rather than
    as a TypeError in the middle of a run."""
    for klass in base.__mro__:
        for method, spec in vars(klass).items():
            if method.startswith("_") or not inspect.isfunction(spec):
                continue
            expected = _positional(spec)
            own = getattr(cls, method, None)
            if expected is None or own is spec or not inspect.isfunction(own):
                continue
            got = _positional(own)
            if got is None:
                continue
            wanted = [p.name for p in expected[0]]
            params, star = got
            required = [p for p in params if p.default is inspect.Parameter.empty]
            if len(required) <= len(wanted) and (len(params) >= len(wanted) or star):
                continue
            shown = ", ".join(p.name for p in params)
            return Finding(
                f"{capability} backend {name!r}: {method}({shown}) does not match the "
                f"interface {method}({', '.join(wanted)}); every backend "
                f"method takes a request record and the context (see docs/writing-plugins.md)",
                source_location(own),
            )
    return None


def _in_modules(module: str, roots: Collection[str]) -> bool:
    return any(module == r or module.startswith(f"{r}.") for r in roots)


def location_in(exc: BaseException, roots: Collection[str]) -> str | None:
    """``file:line`` of the last traceback frame inside the modules ``roots`` (and below).

    That frame is the line of the plugin's own code that failed, rather than the line of
    importlib or of a library the plugin called. A :class:`SyntaxError` has no such frame
    (the file never ran), but it names the file and line itself.
    """
    if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:
        return f"{exc.filename}:{exc.lineno}"
    found: str | None = None
    tb: TracebackType | None = exc.__traceback__
    for frame, line in traceback.walk_tb(tb):
        if _in_modules(str(frame.f_globals.get("__name__", "")), roots):
            found = f"{frame.f_code.co_filename}:{line}"
    return found
