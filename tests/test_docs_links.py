"""Every relative link in README.md and docs/*.md points at a file that exists and, when it
names an ``#anchor`` in a Markdown file, at a heading (or ``<a id>``) that file has.

A renamed heading or a moved file otherwise breaks links silently: GitHub renders them and
only a reader clicking finds out.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


def github_slug(title: str) -> str:
    """The anchor GitHub gives a heading: Markdown stripped, lower case, punctuation dropped
    (except ``-`` and ``_``), spaces to ``-``."""
    title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)
    title = title.replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    for line in text.splitlines():
        found.update(_HTML_ANCHOR.findall(line))
        m = _HEADING.match(line)
        if not m:
            continue
        slug = github_slug(m.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        # GitHub numbers repeated headings: "x", "x-1", "x-2", ...
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def relative_links(path: Path) -> list[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    text = _INLINE_CODE.sub("", text)
    return [t for t in _LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root)}: ({target})"
        if not dest.exists():
            problems.append(f"{where}: no file {dest.relative_to(root)}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where}: {dest.relative_to(root)} has no heading #{anchor}")
    return problems


def test_the_slug_rule_matches_github() -> None:
    assert github_slug("Airgap upgrades from a stick (issue 11, item 4)") == (
        "airgap-upgrades-from-a-stick-issue-11-item-4"
    )
    assert github_slug("`edgekit hosts reset`") == "edgekit-hosts-reset"
    assert github_slug("User-data (`userdata.py`)") == "user-data-userdatapy"


def test_the_checker_finds_a_broken_file_and_anchor(tmp_path: Path) -> None:
    (tmp_path / "b.md").write_text("# Real heading\n\n## Twice\n\n## Twice\n")
    doc = tmp_path / "a.md"
    doc.write_text(
        "[ok](b.md#real-heading) [ok2](b.md#twice-1) [web](https://x.test/#nope)\n"
        "[gone](c.md) [bad](b.md#nope) `[code](d.md)`\n"
        "```\n[fenced](e.md)\n```\n"
    )
    problems = broken_links(doc, tmp_path)
    assert problems == [
        "a.md: (c.md): no file c.md",
        "a.md: (b.md#nope): b.md has no heading #nope",
    ]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc: Path) -> None:
    assert broken_links(doc) == []
