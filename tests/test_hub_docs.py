"""docs/hub.md cannot drift: its example runs, and its route table matches the served routes."""

from __future__ import annotations

import re
from pathlib import Path

from edgekit.hub.openapi import openapi_document

DOC = Path(__file__).resolve().parents[1] / "docs" / "hub.md"


def test_the_example_runs() -> None:
    text = DOC.read_text()
    example = re.search(r"```python\n(.*?)```", text, re.S)
    assert example is not None
    namespace: dict[str, object] = {}
    exec(compile(example.group(1), str(DOC), "exec"), namespace)


def test_route_table_lists_every_route() -> None:
    text = DOC.read_text()
    documented: set[tuple[str, str]] = set()
    for methods, path in re.findall(r"^\| `([A-Z/]+) (/[^`]*)`", text, re.M):
        for method in methods.split("/"):
            documented.add((method.lower(), path))
    served = {
        (method, path)
        for path, ops in openapi_document()["paths"].items()
        for method in ops
        if method != "parameters"
    }
    assert documented == served
