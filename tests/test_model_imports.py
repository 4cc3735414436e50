"""The model is plain data and rules: it imports nothing of edgekit outside edgekit/model/.

The one exception is :mod:`edgekit.errors`, the exception vocabulary every layer shares
(it imports nothing of edgekit itself, which the second test holds).
"""

from __future__ import annotations

import ast
from pathlib import Path

import edgekit

ROOT = Path(edgekit.__file__).parent


def _edgekit_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [(node.lineno, n) for n in names if n == "edgekit" or n.startswith("edgekit.")]
    return found


def test_the_model_imports_only_itself_and_the_errors() -> None:
    bad = [
        f"{p.relative_to(ROOT.parent)}:{line}: {name}"
        for p in sorted((ROOT / "model").glob("*.py"))
        for line, name in _edgekit_imports(p)
        if not (name.startswith("edgekit.model") or name == "edgekit.errors")
    ]
    assert bad == []


def test_the_errors_module_imports_nothing_of_edgekit() -> None:
    assert _edgekit_imports(ROOT / "errors.py") == []
