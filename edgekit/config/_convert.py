"""The cattrs converter: strict scalar hooks, containers, unions and attrs classes."""

from __future__ import annotations

import collections.abc
import difflib
import enum
import functools
import re
import types
import typing
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import (
    ClassValidationError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from edgekit import limits
from edgekit.errors import ConfigError
from edgekit.model import (
    BackendChoice,
    BaseImage,
    LayoutBase,
    ModelValueError,
    RefBase,
    RegistryMirror,
    SampleOsBase,
    ScratchBase,
    Secret,
    StylusRegistry,
    UserData,
)
from edgekit.model._base import INVALID, checks_of, file_key
from edgekit.model.images import Arch
from edgekit.model.packs import PackValues

T = TypeVar("T")

REDACTED = "***"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --------------------------------------------------------------------------- key names


def _is_open(a: attrs.Attribute[Any]) -> bool:
    return bool(a.metadata.get("open"))


def _fields(cls: type) -> tuple[attrs.Attribute[Any], ...]:
    return tuple(attrs.fields(cls))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _keys(cls: type) -> dict[str, str]:
    """Attribute name -> file key, for the modelled (not open) fields of ``cls``."""
    return {a.name: file_key(a) for a in _fields(cls) if not _is_open(a)}


def _open_field(cls: type) -> str | None:
    return next((a.name for a in _fields(cls) if _is_open(a)), None)


# --------------------------------------------------------------------------- strict scalars


def _describe(value: Any, *, quote: bool = True) -> str:
    """``value`` in words; strings are quoted (shortened) unless ``quote`` is false, which is
    how values are described wherever a secret may be (see :func:`holds_secret`)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value!r}" if quote else "a number"
    if isinstance(value, str):
        if not quote:
            return "a string"
        text = repr(value)
        return f"the string {text if len(text) <= 80 else text[:76] + '...' + text[0]}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _is_secret_type(t: Any) -> bool:
    return t is Secret or (
        typing.get_origin(t) in (typing.Union, types.UnionType) and Secret in typing.get_args(t)
    )


@functools.cache
def holds_secret(t: Any) -> bool:
    """Whether a value of type ``t`` is or may contain a :class:`Secret` (at any depth).

    Errors about such a value never quote it: a token written where a mapping was expected
    must not be echoed back.
    """
    return _holds_secret(t, set())


def _holds_secret(t: Any, seen: set[Any]) -> bool:
    if _is_secret_type(t):
        return True
    if isinstance(t, type) and attrs.has(t):
        if t in seen:
            return False
        seen.add(t)
        hints = _hints(t)
        return any(
            _holds_secret(a.metadata.get("schema_type", hints[a.name]), seen)
            for a in attrs.fields(t)
        )
    return any(_holds_secret(a, seen) for a in typing.get_args(t) if a is not Ellipsis)


class _FloatNotString(ValueError):
    """A number where a string is expected; the message can quote the text as written."""

    def __init__(self, value: float) -> None:
        self.value = value
        super().__init__(self.message(None))

    def message(self, written: str | None) -> str:
        if written is not None and written != repr(self.value):
            return (
                f"expected a string, got {written} which YAML reads as the number "
                f'{self.value!r}; quote it ("{written}")'
            )
        return f'expected a string, got {_describe(self.value)}; quote it ("{self.value}")'


def _structure_str(value: Any, _: type) -> str:
    if isinstance(value, str):
        why = limits.bad_character(value)
        if why is not None:
            raise ValueError(why)
        return value
    if isinstance(value, bool):
        raise ValueError(
            f"expected a string, got {_describe(value)}; quote it if you mean the text "
            f"('{str(value).lower()}')"
        )
    if isinstance(value, float):
        raise _FloatNotString(value)
    if isinstance(value, int):
        raise ValueError(f'expected a string, got {_describe(value)}; quote it ("{value}")')
    raise ValueError(f"expected a string, got {_describe(value)}")


def _structure_int(value: Any, _: type) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"expected an integer, got {_describe(value)}")


def _structure_float(value: Any, _: type) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"expected a number, got {_describe(value)}")


def _structure_bool(value: Any, _: type) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"expected true or false, got {_describe(value)}")


def _structure_enum(value: Any, cls: type[enum.Enum]) -> enum.Enum:
    allowed = [m.value for m in cls]
    if isinstance(value, str):
        for m in cls:
            if m.value == value:
                return m
    raise ValueError(
        f"{_describe(value)} is not one of: {', '.join(map(str, allowed))}"
        + _hint(value, [str(a) for a in allowed])
    )


def _structure_datetime(value: Any, _: type) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"expected an ISO 8601 time (2026-01-31T12:00:00Z), got {_describe(value)}")


def _structure_secret(value: Any, _: type) -> Secret:
    # Never quotes the value, whatever its type: a token given as a number is still a token.
    if isinstance(value, str):
        if value == REDACTED:
            raise ValueError(
                "the secret was redacted ('***') when this document was written; "
                "supply the real value"
            )
        why = limits.bad_character(value)
        if why is not None:
            raise ValueError(why)
        return Secret(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("expected a string, got a number; quote the value (it is secret)")
    raise ValueError(
        f"expected a string, got {_describe(value, quote=False)} (the value is secret)"
    )


def _hint(value: Any, choices: list[str]) -> str:
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


# --------------------------------------------------------------------------- containers


def _is_var_tuple(t: Any) -> bool:
    args = typing.get_args(t)
    return typing.get_origin(t) is tuple and len(args) == 2 and args[1] is Ellipsis


def _is_mapping(t: Any) -> bool:
    return typing.get_origin(t) in (collections.abc.Mapping, dict)


def _tuple_hook(c: cattrs.Converter, t: Any) -> Callable[[Any, Any], tuple[Any, ...]]:
    elem = typing.get_args(t)[0]
    quote = not holds_secret(t)

    def hook(data: Any, _: Any) -> tuple[Any, ...]:
        # A single string is accepted where a list of architectures is expected ("arch: amd64").
        if elem is Arch and isinstance(data, str):
            data = [data]
        if not isinstance(data, list | tuple):
            raise ValueError(f"expected a list, got {_describe(data, quote=quote)}")
        out: list[Any] = []
        errors: list[Exception] = []
        for i, v in enumerate(data):
            try:
                out.append(c.structure(v, elem))
            except Exception as e:
                e.add_note(IterableValidationNote(f"Structuring {t} @ index {i}", i, elem))
                errors.append(e)
        if errors:
            raise IterableValidationError(f"While structuring {t!r}", errors, t)
        return tuple(out)

    return hook


def _mapping_hook(c: cattrs.Converter, t: Any) -> Callable[[Any, Any], dict[Any, Any]]:
    args = typing.get_args(t)
    kt, vt = args if args else (Any, Any)
    quote = not holds_secret(t)

    def hook(data: Any, _: Any) -> dict[Any, Any]:
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a mapping, got {_describe(data, quote=quote)}")
        out: dict[Any, Any] = {}
        errors: list[Exception] = []
        for k, v in data.items():
            try:
                out[c.structure(k, kt)] = c.structure(v, vt)
            except Exception as e:
                e.add_note(IterableValidationNote(f"Structuring mapping value @ key {k!r}", k, vt))
                errors.append(e)
        if errors:
            raise IterableValidationError(f"While structuring {t!r}", errors, t)
        return out

    return hook


# --------------------------------------------------------------------------- unions


def _structure_base(data: Any, _: Any) -> BaseImage:
    if data == "scratch":
        return ScratchBase()
    if isinstance(data, Mapping):
        keys = set(data)
        c = get_converter()
        if "layout" in keys:
            return c.structure(data, LayoutBase)
        if "ref" in keys:
            return c.structure(data, RefBase)
        if "sampleOs" in keys:
            return c.structure(data, SampleOsBase)
    raise ValueError(
        f"expected scratch, {{layout: PATH, tag: TAG}}, {{ref: REGISTRY/REPO:TAG}} or "
        f"{{sampleOs: debian-12}}, got {_describe(data)}"
    )


def _structure_backend_choice(data: Any, _: Any) -> BackendChoice:
    """``publisher: oras`` (the name alone) or ``publisher: {name: NAME, options: {...}}``."""
    if isinstance(data, str):
        return BackendChoice(_structure_str(data, str))
    if isinstance(data, Mapping):
        hook = _class_structure_hook(get_converter(), BackendChoice)
        return typing.cast(BackendChoice, hook(data, BackendChoice))
    raise ValueError(
        f"expected a backend name or {{name: NAME, options: {{...}}}}, got {_describe(data)}"
    )


def _unstructure_backend_choice(choice: BackendChoice) -> Any:
    # The short form when there are no options: a file written back reads as it was.
    if not choice.options:
        return choice.name
    return {"name": choice.name, "options": get_converter().unstructure(dict(choice.options))}


def _structure_values(data: Any, _: Any) -> PackValues:
    """Pack values: a mapping, or YAML text parsed now (within the bounds) and kept as text
    next to its mapping, so a bad ``values: |`` is found at validation and a written-back
    document keeps what the user wrote."""
    if isinstance(data, str):
        return values_from_text(data)
    if isinstance(data, Mapping):
        return PackValues(_mapping_hook(get_converter(), Mapping[str, Any])(data, None))
    raise ValueError(f"expected YAML text or a mapping, got {_describe(data)}")


def values_from_text(text: str) -> PackValues:
    """Pack values from YAML text (``values: |``): the mapping it spells, keeping the text.

    Raises ValueError when the text does not parse within the bounds or is not a mapping.
    """
    from ._parse import _parse  # parsing needs nothing from the converter

    try:
        data, _ = _parse(text, "yaml", None)
    except ConfigError as e:
        where = [
            f"{p.message} (line {p.line} of the text)" if p.line else p.message for p in e.problems
        ]
        raise ValueError("the values text is not valid: " + "; ".join(where)) from None
    if data is None:
        return PackValues(text=text)
    if not isinstance(data, Mapping):
        raise ValueError(
            f"values given as YAML text must be a mapping, got {_describe(data, quote=False)}"
        )
    return PackValues(data, text=text)


def _structure_user_data_field(data: Any, _: Any) -> str | UserData | None:
    """An ISO's ``userData``: a file path, or an inline document structured now."""
    if data is None or isinstance(data, str):
        return _structure_str(data, str) if data is not None else None
    if isinstance(data, Mapping):
        return get_converter().structure(data, UserData)
    raise ValueError(f"expected a file path or a user-data mapping, got {_describe(data)}")


def _registry_hook(c: cattrs.Converter) -> Callable[[Any, Any], StylusRegistry]:
    """``stylus.registry``: as any attrs class, but when some mirrors do not load, the rules
    still run on the others (and on every key), so one pass reports all of them."""
    generic = _class_structure_hook(c, StylusRegistry)

    def hook(data: Any, _: Any) -> StylusRegistry:
        try:
            return typing.cast(StylusRegistry, generic(data, StylusRegistry))
        except ClassValidationError as e:
            mirrors = data.get("mirrors") if isinstance(data, Mapping) else None
            if not isinstance(mirrors, Mapping):
                raise
            loaded: dict[str, RegistryMirror | None] = {}
            for host, value in mirrors.items():
                if isinstance(host, str):
                    try:
                        loaded[host] = c.structure(value, RegistryMirror)
                    except Exception:
                        loaded[host] = None  # its own problems are in ``e``
            if None not in loaded.values():
                raise  # every mirror loaded: the constructor already ran the rules
            rules = StylusRegistry.partial_problems(loaded)
            if not rules.problems:
                raise
            raise ClassValidationError(e.message, [*e.exceptions, rules], StylusRegistry) from None

    return hook


def _unstructure_values(values: PackValues) -> Any:
    return values.text if values.text is not None else dict(values)


# --------------------------------------------------------------------------- the converter


def _class_structure_hook(c: cattrs.Converter, cls: type) -> Callable[[Any, Any], Any]:
    open_name = _open_field(cls)
    overrides = {a.name: override(rename=file_key(a), omit=_is_open(a)) for a in _fields(cls)}
    fn: Callable[[Any, Any], Any] = make_dict_structure_fn(
        cls,
        c,
        _cattrs_forbid_extra_keys=open_name is None,
        **overrides,  # type: ignore[arg-type]
    )
    known = set(_keys(cls).values())
    quote = not holds_secret(cls)

    def build(data: Mapping[Any, Any]) -> Any:
        try:
            return fn(data, cls)
        except ClassValidationError as e:
            if all(isinstance(x, ModelValueError) for x in e.exceptions):
                raise  # the fields loaded; the constructor already ran every rule
            rules = _partial_rules(c, cls, data)
            if rules is None:
                raise
            raise ClassValidationError(e.message, [*e.exceptions, rules], cls) from None

    def hook(data: Any, _: Any) -> Any:
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a mapping, got {_describe(data, quote=quote)}")
        if open_name is None:
            return build(data)
        extra = {k: v for k, v in data.items() if k not in known}
        obj = build({k: v for k, v in data.items() if k in known})
        if extra:
            # str keys only; the open mapping is Mapping[str, Any]
            for k in extra:
                if not isinstance(k, str):
                    raise ValueError(f"key {k!r} must be a string; quote it")
            obj = attrs.evolve(obj, **{open_name: extra})
        return obj

    return hook


def _partial_rules(c: cattrs.Converter, cls: type, data: Mapping[Any, Any]) -> Exception | None:
    """The rules of ``cls`` that hold for the fields that did load, when others did not.

    The object is assembled without its constructor, unloadable fields set to a placeholder,
    and its rules run. Each independent rule is a ``with check.rule():`` block, so one that
    needs a placeholder is skipped alone and every other rule still runs; the problems found
    are real and are reported with the shape problems, so one pass shows all it can.
    """
    post_init = getattr(cls, "__attrs_post_init__", None)
    if post_init is None:
        return None
    hints = _hints(cls)
    obj: Any = object.__new__(cls)
    for a in _fields(cls):
        value: Any = INVALID
        key = file_key(a)
        if _is_open(a):
            value = {}
        elif key in data:
            try:
                value = c.structure(data[key], hints[a.name])
            except Exception:
                value = INVALID
        elif isinstance(a.default, attrs.Factory):  # type: ignore[arg-type]
            value = a.default.factory()  # type: ignore[union-attr]
        elif a.default is not attrs.NOTHING:
            value = a.default
        object.__setattr__(obj, a.name, value)
    checks = checks_of(lambda: post_init(obj))
    problems = [p for check in checks[:1] for p in check.problems]
    return ModelValueError(problems, cls) if problems else None


def _class_unstructure_hook(c: cattrs.Converter, cls: type) -> Callable[[Any], Any]:
    open_name = _open_field(cls)
    overrides = {a.name: override(rename=file_key(a), omit=_is_open(a)) for a in _fields(cls)}
    fn: Callable[[Any], Any] = make_dict_unstructure_fn(
        cls,
        c,
        _cattrs_omit_if_default=True,
        **overrides,  # type: ignore[arg-type]
    )

    def hook(obj: Any) -> Any:
        out = fn(obj)
        if open_name is not None:
            out.update(getattr(obj, open_name))
        return out

    return hook


@functools.cache
def get_converter(reveal_secrets: bool = False) -> cattrs.Converter:
    """The converter; with ``reveal_secrets`` secrets are written, otherwise as ``'***'``."""
    c = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    c.register_structure_hook(str, _structure_str)
    c.register_structure_hook(int, _structure_int)
    c.register_structure_hook(float, _structure_float)
    c.register_structure_hook(bool, _structure_bool)
    c.register_structure_hook(datetime, _structure_datetime)
    c.register_structure_hook(Secret, _structure_secret)
    c.register_structure_hook_func(
        lambda t: isinstance(t, type) and issubclass(t, enum.Enum), _structure_enum
    )
    c.register_structure_hook_factory(_is_var_tuple, lambda t: _tuple_hook(c, t))
    c.register_structure_hook_factory(_is_mapping, lambda t: _mapping_hook(c, t))
    c.register_structure_hook_func(lambda t: t == BaseImage, _structure_base)
    c.register_structure_hook(BackendChoice, _structure_backend_choice)
    c.register_structure_hook(PackValues, _structure_values)
    c.register_structure_hook(StylusRegistry, _registry_hook(c))
    c.register_structure_hook_func(
        lambda t: t == (str | UserData | None), _structure_user_data_field
    )
    c.register_structure_hook_factory(
        lambda t: attrs.has(t) and t is not Secret, lambda t: _class_structure_hook(c, t)
    )

    c.register_unstructure_hook(
        Secret, (lambda s: s.reveal()) if reveal_secrets else (lambda s: REDACTED)
    )
    c.register_unstructure_hook(datetime, lambda d: d.isoformat())
    c.register_unstructure_hook(ScratchBase, lambda _: "scratch")
    c.register_unstructure_hook(BackendChoice, _unstructure_backend_choice)
    c.register_unstructure_hook(PackValues, _unstructure_values)
    c.register_unstructure_hook_factory(
        lambda t: attrs.has(t) and t not in (Secret, ScratchBase),
        lambda t: _class_unstructure_hook(c, t),
    )
    return c
