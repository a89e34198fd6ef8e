"""The written contract matches the program: README.md stays a short front door, every command has a page in
docs/ that names every flag its --help shows, and every ``dart ...`` example names a real subcommand and only flags
it has."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from dart.cli import GLOBAL_FLAGS, build_app
from dart.errors import EXIT_CODES

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 250

# the page of each top-level command (a group's subcommands share their group's page; `dart track` takes every
# `dart video` flag, and its page says so)
PAGES = {"detect": "detect.md", "video": "video.md", "track": ("track.md", "video.md"), "export": "export.md", "build": "build.md",
         "text-cache": "text-cache.md", "precision": "precision.md", "prune": "prune.md", "distill": "distill.md",
         "eval": "eval.md", "bench": "bench.md", "recipe": "recipe.md", "plugins": "plugins.md",
         "convert": "convert.md", "serve": "serve.md"}


def root_group():
    return typer.main.get_command(build_app())


def is_group(command) -> bool:
    return hasattr(command, "commands")  # typer may vendor click: duck-type the group


def leaf_commands(group=None, prefix: tuple[str, ...] = ()):
    group = group or root_group()
    for name, command in sorted(group.commands.items()):
        if is_group(command):
            yield from leaf_commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


def option_names(command) -> set[str]:
    names = {"--help", "-h"}
    for param in command.params:
        names.update(getattr(param, "opts", []))
        names.update(getattr(param, "secondary_opts", []))
    return names


def long_flags(command) -> list[str]:
    flags = []
    for param in command.params:
        if getattr(param, "param_type_name", "") != "option":
            continue
        flags += [o for o in (*param.opts, *param.secondary_opts) if o.startswith("--")]
    return [f for f in flags if f != "--help"]


def examples(path: Path) -> list[str]:
    """``dart`` command lines from a Markdown file's bash blocks (continuation lines joined, comments dropped)."""
    lines, inside = [], False
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw.startswith("```"):
            inside = raw.strip() in ("```bash", "```sh", "```console")
            continue
        if inside:
            lines.append(raw)
    joined = "\n".join(lines).replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        line = line.split(" #")[0].split(" | ")[0].strip()
        line = re.sub(r"^(torchrun\s+(--\S+\s+)*-m\s+)", "", line)
        if line.startswith("dart "):
            commands.append(line)
    return commands


def all_examples() -> list[tuple[str, str]]:
    files = [README, *sorted(DOCS.glob("*.md"))]
    return [(path.name, line) for path in files for line in examples(path)]


def resolve(group, words: list[str]):
    command = group
    while is_group(command) and words and words[0] in command.commands:
        command, words = command.commands[words[0]], words[1:]
    return command, words


@pytest.mark.parametrize("where,line", all_examples())
def test_example_uses_existing_command_and_flags(where, line):
    words = shlex.split(line)[1:]
    while words and words[0] in GLOBAL_FLAGS:
        words = words[1:]
    command, rest = resolve(root_group(), words)
    assert not is_group(command), f"{where}: '{line}' does not name a subcommand"
    known = option_names(command) | set(GLOBAL_FLAGS)
    for word in rest:
        if word.startswith("--") or re.fullmatch(r"-[a-zA-Z]", word):
            flag = word.split("=")[0]
            assert flag in known, f"{where}: {flag} is not a flag of `dart {' '.join(words[:2])}`: {line}"


def test_every_command_has_a_page_that_names_every_flag_of_its_help():
    runner = CliRunner()
    app = build_app()
    missing: list[str] = []
    for path, command in leaf_commands():
        names = PAGES[path[0]] if isinstance(PAGES[path[0]], tuple) else (PAGES[path[0]],)
        pages = [DOCS / name for name in names]
        for page in pages:
            assert page.is_file(), f"`dart {' '.join(path)}` has no page: expected {page}"
        page = pages[0]
        text = "\n".join(p.read_text(encoding="utf-8") for p in pages)
        help_text = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "250"}).output
        for flag in long_flags(command):
            assert flag in help_text, f"`dart {' '.join(path)} --help` does not show {flag}"
            if not re.search(rf"{re.escape(flag)}(?![\w-])", text):
                missing.append(f"{page.name}: `dart {' '.join(path)}` {flag}")
    assert not missing, "flags shown by --help but not documented:\n" + "\n".join(missing)


def test_every_page_of_docs_is_reachable_from_the_readme():
    readme = README.read_text(encoding="utf-8")
    for page in sorted(DOCS.glob("*.md")):
        assert f"docs/{page.name}" in readme, f"README.md does not link {page}"
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / target).is_file(), f"README.md links {target}, which does not exist"


def test_readme_is_a_short_front_door():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    for heading in ("## Install (one command)", "## Run (one command)", "## Test (one command)"):
        assert heading in text
    assert "DESIGN.md" not in text, "the repository has no DESIGN.md to point to"
    assert len(examples(README)) >= 12


def test_exit_codes_page_lists_every_code_and_the_debug_switches():
    text = (DOCS / "exit-codes.md").read_text(encoding="utf-8")
    for code in EXIT_CODES:
        assert re.search(rf"^\| {code} \|", text, re.M), f"exit code {code} is not in docs/exit-codes.md"
    for switch in ("--debug", "DART_DEBUG", "--verbose"):
        assert switch in text


def test_outputs_page_states_the_overwrite_policy():
    text = (DOCS / "outputs.md").read_text(encoding="utf-8")
    assert "--overwrite" in text and "never written over" in text and "temporary name" in text
