"""Every ``dart ...`` example in README.md names a real subcommand and only flags that subcommand has."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from dart.cli import build_app

README = Path(__file__).resolve().parents[1] / "README.md"


def examples() -> list[str]:
    """``dart`` command lines from the README's bash blocks (continuation lines joined, comments dropped)."""
    lines, inside = [], False
    for raw in README.read_text(encoding="utf-8").splitlines():
        if raw.startswith("```"):
            inside = raw.strip() in ("```bash", "```sh", "```console")
            continue
        if inside:
            lines.append(raw)
    joined = "\n".join(lines).replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        line = line.split(" #")[0].strip()
        line = re.sub(r"^(torchrun\s+(--\S+\s+)*-m\s+)", "", line)
        if line.startswith("dart "):
            commands.append(line)
    return commands


def is_group(command) -> bool:
    return hasattr(command, "commands")  # typer bundles its own click: duck-type the group


def resolve(group, words: list[str]):
    command = group
    while is_group(command) and words and words[0] in command.commands:
        command, words = command.commands[words[0]], words[1:]
    return command, words


def option_names(command) -> set[str]:
    names = {"--help", "-h"}
    for param in command.params:
        names.update(getattr(param, "opts", []))
        names.update(getattr(param, "secondary_opts", []))
    return names


@pytest.mark.parametrize("line", examples())
def test_readme_example_uses_existing_command_and_flags(line):
    import typer

    group = typer.main.get_command(build_app())
    words = shlex.split(line)[1:]
    command, rest = resolve(group, words)
    assert not is_group(command), f"'{line}' does not name a subcommand"
    known = option_names(command)
    for word in rest:
        if word.startswith("--") or re.fullmatch(r"-[a-zA-Z]", word):
            flag = word.split("=")[0]
            assert flag in known, f"README example uses {flag}, which `{' '.join(words[:2])}` does not have: {line}"


def test_readme_has_examples():
    assert len(examples()) > 30
