"""The ``dart`` command tree as a recipe sees it: which commands are registered and which options each takes.

Built from the root app (:func:`dart.cli.build_app`), so every command registered in the ``dart.commands`` entry
points — built in or added by another package — can be a recipe step, and recipe validation checks step names
and options against what is really installed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any


@dataclass
class OptionInfo:
    name: str  # the Python parameter name, e.g. max_frames
    opts: list[str]  # e.g. ["--max-frames"]
    secondary: list[str]  # e.g. ["--no-masks"]
    is_flag: bool
    multiple: bool
    required: bool

    @property
    def flag(self) -> str:
        longs = [o for o in self.opts if o.startswith("--")]
        return (longs or self.opts)[0]


@dataclass
class CommandInfo:
    path: str  # "export backbone"
    command: Any  # a click command (Typer vendors its own click)
    options: dict[str, OptionInfo] = field(default_factory=dict)  # keyed by python name
    arguments: list[Any] = field(default_factory=list)

    def option(self, key: str) -> OptionInfo | None:
        """Find an option by its python name (``max_frames``) or flag (``max-frames``, ``--max-frames``)."""
        norm = key.lstrip("-").replace("-", "_")
        if norm in self.options:
            return self.options[norm]
        for info in self.options.values():
            if any(o.lstrip("-").replace("-", "_") == norm for o in info.opts + info.secondary):
                return info
        return None

    def flags(self) -> list[str]:
        return sorted(info.flag for info in self.options.values() if info.name != "help")

    @property
    def max_args(self) -> int | None:
        total = 0
        for arg in self.arguments:
            if arg.nargs < 0:
                return None
            total += arg.nargs
        return total

    @property
    def min_args(self) -> int:
        return sum(max(arg.nargs, 1) for arg in self.arguments if arg.required)


def root_command() -> Any:
    """The click group behind ``dart`` with every registered command mounted (plugin warnings go to stderr)."""
    import typer

    from dart.cli import build_app

    return typer.main.get_command(build_app())


@lru_cache(maxsize=1)
def command_tree() -> dict[str, CommandInfo]:
    """``{"detect": CommandInfo, "export backbone": CommandInfo, ...}`` for every leaf command."""
    return walk(root_command())


def walk(group: Any, prefix: str = "") -> dict[str, CommandInfo]:
    out: dict[str, CommandInfo] = {}
    for name, command in sorted(group.commands.items()):
        path = f"{prefix}{name}"
        if hasattr(command, "commands"):  # a group: its subcommands are the steps
            out.update(walk(command, path + " "))
            continue
        info = CommandInfo(path, command)
        for param in command.params:
            kind = getattr(param, "param_type_name", "")
            if kind == "argument":
                info.arguments.append(param)
            elif kind == "option" and param.name:
                info.options[param.name] = OptionInfo(param.name, list(param.opts), list(param.secondary_opts),
                                                      bool(param.is_flag), bool(param.multiple), bool(param.required))
        out[path] = info
    return out


def run_command(argv: list[str]) -> int:
    """Run ``dart ARGV`` in this process; returns the exit code (0 on success).

    Errors inside the command are printed by the root group (one sentence) and come back as their exit code;
    usage errors (unknown option, bad value) are printed here the way the command line prints them.
    """
    import click

    from dart.cli import DEBUG_KEY, VERBOSE_KEY

    group = root_command()
    outer = click.get_current_context(silent=True)
    meta = outer.find_root().meta if outer is not None else {}
    argv = [*(["--debug"] if meta.get(DEBUG_KEY) else []), *(["--verbose"] if meta.get(VERBOSE_KEY) else []), *argv]
    try:
        result = group.main(args=list(argv), prog_name="dart", standalone_mode=False)
    except Exception as exc:  # click's usage errors; Typer vendors click, so they are matched by shape
        if type(exc).__name__ == "Abort":
            return 130
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show(file=sys.stderr)
            return code
        raise
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
