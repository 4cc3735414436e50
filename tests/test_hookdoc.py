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


INTERFACES = DOC.with_name("plugin-interfaces.md")


def test_interface_reference_matches_the_interfaces():
    from edgekit.plugins import interfacedoc

    assert INTERFACES.read_text() == interfacedoc.render(), (
        "docs/plugin-interfaces.md is stale: run "
        "`python -m edgekit.plugins.interfacedoc > docs/plugin-interfaces.md`"
    )


def test_every_request_and_result_field_is_described():
    import attrs

    from edgekit.plugins import interfacedoc

    text = INTERFACES.read_text()
    for cls in interfacedoc._records():
        assert f"### `{cls.__name__}`" in text
        docs = interfacedoc._field_docs(cls)
        missing = [f.name for f in attrs.fields(cls) if not docs.get(f.name)]
        assert missing == [], f"{cls.__name__}: fields without a #: comment: {missing}"
