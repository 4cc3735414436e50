"""The boundary between edgekit and a backend: results are checked, failures are named.

A backend is third-party code called from the middle of edgekit. Without a check, a
publisher returning a ``dict`` where a :class:`~edgekit.plugins.interfaces.PushResult` is
due fails later, deep in the pipeline, with a traceback that never names the plugin. So the
manager hands out *guarded* instances: every method of the capability's interface checks
its return value against the interface's annotated return type (a wrong one is a
:class:`~edgekit.errors.BackendResultError`), and turns an exception that is not an
:class:`~edgekit.errors.EdgekitError` into a :class:`~edgekit.errors.BackendError` naming
the capability, the backend and the distribution providing it (the original stays as
``__cause__``, shown with ``EDGEKIT_DEBUG=1``). Both are kinds of
:class:`~edgekit.errors.PluginError`, like every fault of a plugin.

The instance keeps its class (``isinstance`` works, and a backend calling its own methods
goes through the same checks); the guarded methods are set on the instance.
"""

from __future__ import annotations

import collections.abc
import functools
import inspect
import sys
import traceback
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from edgekit.errors import BackendError, BackendResultError, EdgekitError, PluginError, Problem
from edgekit.plugins.checks import location_in, source_location
from edgekit.plugins.interfaces import CAPABILITIES, Backend

__all__ = [
    "Contract",
    "GuardedHooks",
    "contract",
    "guard",
    "mismatch",
    "options_problems",
]

#: How many items of a returned collection are checked: enough to catch a wrong element
#: type, bounded so a backend returning a huge list does not cost a second pass.
MAX_CHECKED_ITEMS = 10_000


@attrs.frozen
class Contract:
    """One method of a capability's interface and the return type it promises."""

    method: str
    #: The annotation as written in the interface (``list[Artifact]``): used in messages.
    annotation: str
    #: The evaluated type, or None when it cannot be evaluated (then nothing is checked).
    expected: Any


def _evaluate(annotation: object, module: str) -> Any:
    if not isinstance(annotation, str):
        return annotation
    namespace = dict(vars(sys.modules[module])) if module in sys.modules else {}
    try:
        return eval(annotation, namespace)  # the interface's own annotation text
    except Exception:  # a name imported only for type checkers: leave it unchecked
        return None


@functools.cache
def contract(base: type[Backend]) -> tuple[Contract, ...]:
    """The public methods of a capability base class and their promised return types."""
    found: dict[str, Contract] = {}
    for klass in reversed(base.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, Backend)) or klass is Backend:
            continue  # Backend's own helpers (options()) are not a capability's contract
        for name, raw in vars(klass).items():
            if name.startswith("_") or not inspect.isfunction(raw):
                continue  # classmethods (unavailable_reason) are not called on instances
            annotation = raw.__annotations__.get("return", "Any")
            text = annotation if isinstance(annotation, str) else _type_name(annotation)
            found[name] = Contract(name, text, _evaluate(annotation, raw.__module__))
    return tuple(found[n] for n in sorted(found))


def _type_name(tp: Any) -> str:
    if tp is None or tp is type(None):
        return "None"
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("collections.abc.", "")


def _kind(value: object) -> str:
    return "None" if value is None else type(value).__name__


_SEQUENCES = (list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.Set)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def mismatch(value: object, expected: Any) -> str | None:
    """How ``value`` differs from the type ``expected``, or None when it matches.

    Understands what interfaces use: classes, ``None``, unions, ``list``/``Sequence``/
    ``tuple``/``set`` and ``dict``/``Mapping`` with their parameters, ``Any``. Anything
    else (a TypeVar, a Literal) is accepted rather than guessed at.
    """
    if expected is None or expected is type(None):
        return None if value is None else _kind(value)
    if expected is Any or expected is object:
        return None
    origin = typing.get_origin(expected)
    args = typing.get_args(expected)
    if origin is typing.Union or origin is types.UnionType:
        found = [mismatch(value, arm) for arm in args]
        if None in found:
            return None
        # An arm of the right container type with a wrong item says the most.
        return next((f for f in found if f and f != _kind(value)), _kind(value))
    if origin is None:
        if isinstance(expected, type):
            return None if isinstance(value, expected) else _kind(value)
        return None
    if not isinstance(origin, type):
        return None  # Literal, Annotated, ...: not used by interfaces; accept
    if not isinstance(value, origin):
        return _kind(value)
    if origin in _MAPPINGS or issubclass(origin, collections.abc.Mapping):
        return _mapping_mismatch(typing.cast("Mapping[Any, Any]", value), args)
    if origin in _SEQUENCES:  # never iterators: checking would consume them
        return _items_mismatch(value, origin, args)
    return None


def _items_mismatch(value: Any, origin: type, args: tuple[Any, ...]) -> str | None:
    if not args:
        return None
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            return f"{_kind(value)} of {len(value)} items"
        pairs = list(zip(range(len(args)), value, args, strict=True))
    else:
        pairs = [(i, item, args[0]) for i, item in enumerate(value) if i < MAX_CHECKED_ITEMS]
    for index, item, arg in pairs:
        inner = mismatch(item, arg)
        if inner is not None:
            return f"{_kind(value)} whose item [{index}] is {inner}"
    return None


def _mapping_mismatch(value: Mapping[Any, Any], args: tuple[Any, ...]) -> str | None:
    if len(args) != 2:
        return None
    key_type, value_type = args
    for count, (key, item) in enumerate(value.items()):
        if count >= MAX_CHECKED_ITEMS:
            break
        inner = mismatch(key, key_type)
        if inner is not None:
            return f"{_kind(value)} with a key {key!r} of type {inner}"
        inner = mismatch(item, value_type)
        if inner is not None:
            return f"{_kind(value)} whose value at {key!r} is {inner}"
    return None


def _label(capability: str, name: str, distribution: str) -> str:
    return f"{capability} {name!r} ({distribution})"


def _guarded(
    bound: Callable[..., Any],
    term: Contract,
    capability: str,
    name: str,
    distribution: str,
    roots: tuple[str, ...],
) -> Callable[..., Any]:
    label = _label(capability, name, distribution)
    where = {
        "capability": capability,
        "backend": name,
        "distribution": distribution,
        "method": term.method,
    }

    @functools.wraps(bound)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            result = bound(*args, **kwargs)
        except EdgekitError:
            raise  # already a message for the user, written by the backend
        except Exception as exc:
            at = location_in(exc, roots)
            raise BackendError(
                f"{label} failed in {term.method}(): {type(exc).__name__}: {exc}"
                + (f" (at {at})" if at else ""),
                **where,
            ) from exc
        if term.expected is not None:
            wrong = mismatch(result, term.expected)
            if wrong is not None:
                at = source_location(bound)
                raise BackendResultError(
                    f"{label} returned {wrong}, expected {term.annotation} "
                    f"(from {term.method}(){f' at {at}' if at else ''}); "
                    "this is a bug in the plugin",
                    **where,
                )
        return result

    return call


def guard(instance: Backend, capability: str, name: str, distribution: str) -> Backend:
    """Guard every interface method of ``instance`` (see the module docstring); returns it."""
    cls = type(instance)
    roots = tuple({cls.__module__.split(".")[0], cls.__module__})
    for term in contract(CAPABILITIES[capability]):
        bound = getattr(instance, term.method, None)
        if bound is None or not callable(bound):
            continue
        wrapped = _guarded(bound, term, capability, name, distribution, roots)
        # object.__setattr__: a frozen attrs backend refuses plain assignment.
        object.__setattr__(instance, term.method, wrapped)
    return instance


def wrap_failure(
    exc: Exception, *, capability: str, name: str, distribution: str, doing: str, cls: type
) -> BackendError:
    """A :class:`BackendError` for a failure outside a method call (creating the backend)."""
    at = location_in(exc, (cls.__module__.split(".")[0],))
    return BackendError(
        f"{_label(capability, name, distribution)} failed {doing}: {type(exc).__name__}: {exc}"
        + (f" (at {at})" if at else ""),
        capability=capability,
        backend=name,
        distribution=distribution,
        method=doing,
    )


def options_problems(
    cls: type[Backend], options: Mapping[str, Any], path: str, *, label: tuple[str, str]
) -> list[Problem]:
    """``cls.options_problems(options)`` checked like a result, its paths under ``path``
    (``$.backends.publisher.options``); a failure or a wrong result names the backend."""
    capability, distribution = label
    try:
        found = cls.options_problems(options)
    except EdgekitError:
        raise
    except Exception as exc:
        raise wrap_failure(
            exc,
            capability=capability,
            name=cls.name,
            distribution=distribution,
            doing="checking its options",
            cls=cls,
        ) from exc
    wrong = mismatch(found, list[Problem])
    if wrong is not None:
        raise BackendResultError(
            f"{_label(capability, cls.name, distribution)} returned {wrong} from "
            "options_problems(), expected list[Problem]; this is a bug in the plugin",
            capability=capability,
            backend=cls.name,
            distribution=distribution,
            method="options_problems",
        )
    return [
        Problem(f"{path}.{p.path}" if p.path else path, p.message, p.line, p.source) for p in found
    ]


class GuardedHooks:
    """The pluggy hook relay, naming the plugin whose hook raised a non-edgekit exception.

    ``manager.hook.edgekit_step_finished(...)`` keeps pluggy's calling rules; only when an
    implementation raises something other than an :class:`EdgekitError` does the error
    become a :class:`~edgekit.errors.PluginError` naming that plugin, its distribution and
    its line (the original is the ``__cause__``). An exception no implementation's frame
    is in (a wrong call by edgekit itself) passes unchanged.
    """

    def __init__(self, relay: Any, describe: Callable[[object], str]) -> None:
        self._relay = relay
        self._describe = describe

    def __getattr__(self, name: str) -> Any:
        return _GuardedCaller(getattr(self._relay, name), self._describe)


class _GuardedCaller:
    def __init__(self, caller: Any, describe: Callable[[object], str]) -> None:
        self._caller = caller
        self._describe = describe

    def __getattr__(self, name: str) -> Any:
        return getattr(self._caller, name)  # get_hookimpls(), name, spec, ...

    def __call__(self, **kwargs: Any) -> Any:
        try:
            return self._caller(**kwargs)
        except EdgekitError:
            raise
        except Exception as exc:
            codes = {
                getattr(impl.function, "__code__", None): impl
                for impl in self._caller.get_hookimpls()
            }
            frames = [frame for frame, _ in traceback.walk_tb(exc.__traceback__)]
            culprit = next((codes[f.f_code] for f in frames if f.f_code in codes), None)
            if culprit is None:
                raise
            module = getattr(culprit.function, "__module__", "") or ""
            at = location_in(exc, (module, module.split(".")[0]))
            raise PluginError(
                f"{self._describe(culprit.plugin)} failed in {self._caller.name}(): "
                f"{type(exc).__name__}: {exc}" + (f" (at {at})" if at else "")
            ) from exc
