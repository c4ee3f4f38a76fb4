"""The README's table of the command line names every command and every option it has."""
from __future__ import annotations

from pathlib import Path

import click

import cli

README = Path(__file__).resolve().parent.parent / "README.md"


def commands() -> list[tuple[str, click.Command]]:
    """Every command a user runs, by its full name (`bulk-credit upload`)."""
    found = []
    for command in cli.COMMANDS:
        if isinstance(command, click.Group):
            found += [(f"{command.name} {name}", each) for name, each in command.commands.items()]
        else:
            found.append((command.name, command))
    return found


def reference_rows() -> dict[str, str]:
    """The rows of the table in "The command line", by the command they start with."""
    section = README.read_text().split("### The command line", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            name = line[3:line.index("`", 3)]
            rows[" ".join(word for word in name.split() if word.islower() or "-" in word)] = line
    return rows


def test_the_readme_documents_every_command_and_each_of_its_options():
    rows = reference_rows()
    assert len(commands()) >= 13
    for name, command in commands():
        assert name in rows, f"README: no row for `{name}`"
        for option in (opt for param in command.params for opt in param.opts if opt.startswith("--")):
            assert f"`{option}" in rows[name], f"README: `{name}` lacks {option}"
    assert set(rows) == {name for name, _ in commands()}  # and nothing that is not there
