"""docs/cli.md documents every command the CLI has (so the two cannot drift apart)."""

from pathlib import Path

import click

from edgekit.cli import cli

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def leaf_commands(group: click.Group, prefix: str = "edgekit") -> list[str]:
    names = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            if command.invoke_without_command:  # `edgekit hosts` runs by itself too
                names.append(path)
            names.extend(leaf_commands(command, path))
        else:
            names.append(path)
    return names


def test_every_command_has_a_section_in_docs_cli_md():
    text = DOC.read_text()
    missing = [name for name in leaf_commands(cli) if f"### `{name}`" not in text]
    assert not missing, f"docs/cli.md lacks sections for: {missing}"


def test_every_documented_command_exists():
    text = DOC.read_text()
    documented = [
        line[len("### `") : -1] for line in text.splitlines() if line.startswith("### `edgekit")
    ]
    assert set(documented) <= set(leaf_commands(cli))


def test_every_public_name_of_edgekit_dist_is_documented():
    import re

    import edgekit.dist

    text = (DOC.parent / "distribution.md").read_text()
    section = text[
        text.index("## Python API (`edgekit.dist`)") : text.index("## API (`edgekit_oras`)")
    ]
    words = set(re.findall(r"[A-Za-z_]+", section))
    missing = [name for name in edgekit.dist.__all__ if name not in words]
    assert not missing, f"docs/distribution.md does not document edgekit.dist.{missing}"
