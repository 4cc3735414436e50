"""Strict JSON for the hub's edge: bounded, unambiguous and clean text, or a refusal.

Everything that reaches the hub from outside (HTTP bodies, airgap bundles) is decoded here,
before any rule runs and before anything is stored:

- at most ``limit`` bytes, UTF-8;
- nesting at most :data:`MAX_DEPTH` arrays/objects deep (checked before parsing, so a deep
  document is a refusal, never a ``RecursionError``);
- no duplicate keys (the second would silently win), no ``NaN``/``Infinity``, no number
  too large for a float (``1e400``);
- no string (key or value, anywhere) holding a lone UTF-16 surrogate (``"\\ud800"``: it
  cannot be encoded again, so storing it would break every later read) or a control
  character (U+0000-U+001F, U+007F-U+009F: they make names that are not what they look
  like, e.g. ``"edge-1\\n"``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

from edgekit import limits
from edgekit.errors import Problem
from edgekit.hub.errors import HubError, Refusal

__all__ = ["DEFAULT_MAX_BODY", "MAX_DEPTH", "bad_text", "decode_json", "text_problems"]

#: The largest request body the hub reads by default.
DEFAULT_MAX_BODY = 64 * 1024
#: The deepest nesting of arrays and objects accepted (the hub's documents need about 8).
MAX_DEPTH = 32
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(rb"[\[\]{}]")
# The same rule as for files (edgekit.limits): tab, LF and CR are text (a pack's YAML values,
# a multi-line status message); other C0/C1 controls and lone surrogates are not. Names and
# uids are held to their own full-match patterns on top of this.
_BAD_CHAR = re.compile(f"{limits.CONTROL_CHARS.pattern[:-1]}\ud800-\udfff]")


def _depth(raw: bytes) -> int:
    """The deepest bracket nesting of ``raw``, ignoring brackets inside strings."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRING.sub(b'""', raw)):
        if bracket in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def bad_text(value: str) -> str | None:
    """Why ``value`` may not be stored (a lone surrogate or a control character), or None."""
    match = _BAD_CHAR.search(value)
    if match is None:
        return None
    code = ord(match.group())
    kind = "a lone UTF-16 surrogate" if 0xD800 <= code <= 0xDFFF else "a control character"
    return f"contains {kind} (U+{code:04X}) at index {match.start()}"


def text_problems(value: Any, path: str = "$") -> Iterator[Problem]:
    """A problem for every key or string value in ``value`` that :func:`bad_text` refuses."""
    if isinstance(value, str):
        reason = bad_text(value)
        if reason is not None:
            yield Problem(path, reason)
    elif isinstance(value, dict):
        for key, item in value.items():
            reason = bad_text(key)
            shown = key if reason is None else repr(key).strip("'\"")
            if reason is not None:
                yield Problem(f"{path}.{shown}", f"key {reason}")
            yield from text_problems(item, f"{path}.{shown}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from text_problems(item, f"{path}[{i}]")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(key)
        out[key] = value
    return out


class _Duplicate(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    # 1e400 parses as inf, which no JSON answer can carry back: refuse it at the edge.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is too large")
    return value


def decode_json(raw: bytes, *, limit: int, what: str = "request body") -> Any:
    """``raw`` as JSON under the rules above; :class:`HubError` with the reason otherwise."""
    if len(raw) > limit:
        raise HubError(Refusal.TOO_LARGE, "PayloadTooLarge", f"{what} is larger than {limit} bytes")
    depth = _depth(raw)
    if depth > MAX_DEPTH:
        raise HubError(
            Refusal.INVALID,
            "MalformedJson",
            f"{what} nests {depth} levels deep; at most {MAX_DEPTH} are allowed",
        )
    try:
        text = raw.decode("utf-8")
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
            parse_float=_finite,
        )
    except _Duplicate as dup:
        key = dup.key if bad_text(dup.key) is None else repr(dup.key)
        raise HubError(
            Refusal.INVALID, "MalformedJson", f"{what} has the key {key!r} twice"
        ) from None
    except UnicodeDecodeError as exc:
        raise HubError(
            Refusal.INVALID, "MalformedJson", f"{what} is not UTF-8 (byte {exc.start})"
        ) from None
    except (ValueError, RecursionError) as exc:
        # RecursionError cannot happen after the depth check; kept as a last line of defence.
        reason = str(exc) if isinstance(exc, ValueError) else "too deeply nested"
        raise HubError(
            Refusal.INVALID, "MalformedJson", f"{what} is not valid JSON: {reason}"
        ) from None
    problems = list(text_problems(value))
    if problems:
        raise HubError(
            Refusal.INVALID, "InvalidText", f"{what} holds text that cannot be stored", problems
        )
    return value
