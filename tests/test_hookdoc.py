"""The hook reference in docs/ cannot drift from the hook specifications."""

from pathlib import Path

from edgekit.plugins import hookdoc, hookspecs

DOC = Path(__file__).resolve().parents[1] / "docs" / "hooks.md"


def test_hook_reference_matches_hookspecs():
    assert DOC.read_text() == hookdoc.render(), (
        "docs/hooks.md is stale: run `python -m edgekit.plugins.hookdoc > docs/hooks.md`"
    )


def test_every_hook_is_documented_with_its_signature():
    text = DOC.read_text()
    hooks = [name for name in dir(hookspecs) if name.startswith("edgekit_")]
    assert len(hooks) >= 9
    for name in hooks:
        assert f"### `{name}(" in text
