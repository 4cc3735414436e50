"""Parsing YAML and JSON text into plain data, with each path's line, within bounds."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer, MaxDepthExceededError
from ruamel.yaml.constructor import DuplicateKeyError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode
from ruamel.yaml.scanner import RoundTripScanner

from edgekit import limits
from edgekit.errors import ConfigError, Problem

Format = Literal["yaml", "json"]

# --------------------------------------------------------------------------- YAML / JSON


class _Lines(dict[tuple[str | int, ...], int]):
    """Path -> line, plus the text of numbers as written (``1.10``, not ``1.1``)."""

    def __init__(self, text: str = "") -> None:
        super().__init__()
        self.source = text.splitlines()
        self.texts: dict[tuple[str | int, ...], str] = {}

    def note_text(self, parts: tuple[str | int, ...], pos: Any) -> None:
        try:
            line, col = pos
            token = re.match(r"[^\s,\]}#]+", self.source[line][col:])
        except (TypeError, ValueError, IndexError):
            return
        if token:
            self.texts[parts] = token.group(0)


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _pairs_joined(text: str) -> str:
    """``text`` with UTF-16 surrogate pairs (``"\\ud83d\\ude00"``, as JSON writes characters
    outside the BMP) joined into their character; lone surrogates are left to be refused."""
    if _SURROGATE.search(text) is None:
        return text
    return re.sub(
        r"[\ud800-\udbff][\udc00-\udfff]",
        lambda m: m.group().encode("utf-16-le", "surrogatepass").decode("utf-16-le"),
        text,
    )


def _plain(node: Any, parts: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> Any:
    """Plain Python data from ruamel's round-trip nodes, recording each path's line."""
    if isinstance(node, CommentedMap):
        lines.setdefault(parts, node.lc.line + 1)
        out: dict[Any, Any] = {}
        for k, v in node.items():
            key = _plain(k, (), {})
            with contextlib.suppress(KeyError, TypeError):
                lines[(*parts, key)] = node.lc.key(k)[0] + 1
            if isinstance(v, float) and isinstance(lines, _Lines):
                with contextlib.suppress(KeyError, TypeError):
                    lines.note_text((*parts, key), node.lc.value(k))
            out[key] = _plain(v, (*parts, key), lines)
        return out
    if isinstance(node, CommentedSeq):
        lines.setdefault(parts, node.lc.line + 1)
        items = []
        for i, v in enumerate(node):
            with contextlib.suppress(KeyError, TypeError):
                lines[(*parts, i)] = node.lc.item(i)[0] + 1
            if isinstance(v, float) and isinstance(lines, _Lines):
                with contextlib.suppress(KeyError, TypeError):
                    lines.note_text((*parts, i), node.lc.item(i))
            items.append(_plain(v, (*parts, i), lines))
        return items
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, str):
        return _pairs_joined(str(node))
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, datetime):
        return datetime.fromisoformat(node.isoformat())
    return node


class _Constructor(RoundTripConstructor):
    """ruamel's round-trip constructor, whose duplicate-key message never quotes values
    (ruamel's quotes both, and one may be a secret)."""

    def check_mapping_key(
        self, node: Any, key_node: Any, mapping: Any, key: Any, value: Any
    ) -> bool:
        if key in mapping:
            raise DuplicateKeyError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {_short(key)}",
                key_node.start_mark,
            )
        return True


def _short(key: Any) -> str:
    text = repr(key)
    return text if len(text) <= 80 else text[:77] + "..."


class _AliasBomb(Exception):
    def __init__(self, message: str, mark: Any = None) -> None:
        super().__init__(message)
        self.mark = mark


class _Composer(Composer):
    """ruamel's composer, counting aliases and refusing documents whose aliases would expand
    past :data:`~edgekit.limits.MAX_ALIAS_EXPANSION` nodes or refer to themselves."""

    def compose_document(self) -> Any:
        self._aliases = 0
        node = super().compose_document()
        if self._aliases:
            _check_expansion(node)
        return node

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.parser.check_event(AliasEvent):
            self._aliases = getattr(self, "_aliases", 0) + 1
            if self._aliases > limits.MAX_ALIASES:
                mark = self.parser.peek_event().start_mark
                raise _AliasBomb(f"more than {limits.MAX_ALIASES:,} aliases", mark)
        return super().compose_node(parent, index)


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: Node) -> None:
    """Count the nodes ``root`` expands to (aliases copied out), iteratively, in time linear
    in the distinct nodes; refuse cycles and expansions past the limit."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            total = 1 + sum(size[id(c)] for c in _children(node))
            if total - len(size) > limits.MAX_ALIAS_EXPANSION:
                raise _AliasBomb(
                    f"aliases expand the document by more than "
                    f"{limits.MAX_ALIAS_EXPANSION:,} nodes (an alias bomb?)",
                    node.start_mark,
                )
            size[key] = total
            continue
        if key in size:
            continue
        if key in on_path:
            raise _AliasBomb("an alias refers to a node that contains it", node.start_mark)
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)


class _Scanner(RoundTripScanner):
    """ruamel's scanner, refusing flow collections (``[[[...``) nested past the depth limit
    as it meets them: it looks ahead for simple keys in time quadratic in the flow depth."""

    def fetch_flow_collection_start(self, TokenClass: Any, to_push: str) -> None:
        if self.flow_level >= limits.MAX_DEPTH:
            raise MaxDepthExceededError(None, None, "too deep", self.reader.get_mark())
        super().fetch_flow_collection_start(TokenClass, to_push)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.Scanner = _Scanner
    yaml.Composer = _Composer
    yaml.Constructor = _Constructor
    yaml.max_depth = limits.MAX_DEPTH
    return yaml


def _size_problem(text: str, fmt: Format, source: str | None) -> None:
    size = len(text.encode("utf-8", "surrogatepass"))
    limit = limits.MAX_YAML_BYTES if fmt == "yaml" else limits.MAX_DOCUMENT_BYTES
    if size > limit:
        hint = " for YAML (put many sites in a siteInventory CSV)" if fmt == "yaml" else ""
        message = f"the document is {size:,} bytes, more than the limit of {limit:,} bytes{hint}"
        raise ConfigError([Problem("$", message, None, source)])


def _parse(
    text: str, fmt: Format, source: str | None
) -> tuple[Any, dict[tuple[str | int, ...], int]]:
    _size_problem(text, fmt, source)
    lines = _Lines(text if fmt == "yaml" else "")
    if fmt == "json":
        return limits.loads_json(text, source=source), lines
    try:
        node = _yaml().load(text)
    except _AliasBomb as e:
        line = e.mark.line + 1 if e.mark is not None else None
        raise ConfigError([Problem("$", f"invalid YAML: {e}", line, source)]) from None
    except MaxDepthExceededError as e:
        mark = e.problem_mark
        line = mark.line + 1 if mark is not None else None
        msg = f"invalid YAML: nested more than {limits.MAX_DEPTH} levels deep"
        raise ConfigError([Problem("$", msg, line, source)]) from None
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        msg = " ".join(x for x in (e.context, e.problem) if x) or "invalid YAML"
        raise ConfigError([Problem("$", f"invalid YAML: {msg}", line, source)]) from None
    except RecursionError:  # pragma: no cover - max_depth stops nesting well before this
        msg = f"invalid YAML: nested more than {limits.MAX_DEPTH} levels deep"
        raise ConfigError([Problem("$", msg, None, source)]) from None
    except Exception as e:  # ruamel raises a few non-marked errors (e.g. bad tags)
        raise ConfigError([Problem("$", f"invalid YAML: {e}", None, source)]) from None
    data = _plain(node, (), lines)
    found = limits.data_problems(data)
    if found:
        problems = []
        for parts, message in found:
            probe = parts
            while probe not in lines and probe:
                probe = probe[:-1]
            problems.append(Problem(limits.json_path(parts), message, lines.get(probe), source))
        raise ConfigError(problems)
    return data, lines


def _kind(value: Any) -> str:
    """What ``value`` is, never what it says (pack values may hold secrets)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else type(value).__name__


def parse_values(text: str, source: str | None = None) -> Mapping[str, Mapping[str, Any]]:
    """Per-pack values given as YAML text (``{pack: {key: value}}``; ``{}`` for empty text).

    Raises :class:`ConfigError` with every problem (addressed by path, in ``source``): bad
    YAML, a document that is not a mapping, a pack whose values are not a mapping."""
    data, lines = _parse(text, "yaml", source)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        message = f"give a mapping of pack name to its values, not {_kind(data)}"
        raise ConfigError([Problem("$", message, lines.get(()), source)])
    problems = [
        Problem(
            limits.json_path((key,)),
            f"the values of pack {key!r} must be a mapping of key to value, not {_kind(value)}",
            lines.get((key,)),
            source,
        )
        for key, value in data.items()
        if not isinstance(value, Mapping)
    ]
    if problems:
        raise ConfigError(problems)
    return {str(k): v for k, v in data.items()}
