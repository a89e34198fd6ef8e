"""The ``dart`` executable: a root Typer app that mounts every ``dart.commands`` entry point.

A command entry point is either a ``typer.Typer`` app (mounted as a command group, e.g. ``dart export ...``)
or a plain function (mounted as a single command, e.g. ``dart detect``). Built-in commands are registered
in pyproject.toml exactly like third-party ones.
"""

from __future__ import annotations

from typing import Any

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

from dart import __version__
from dart.errors import DartError
from dart.plugins.registry import load_all

err_console = Console(stderr=True)


# Options that take several space-separated values, as users of detection CLIs expect:
# ``--classes person car bicycle`` is rewritten to ``--classes person --classes car --classes bicycle``.
GREEDY_OPTIONS = ("--classes", "-c")


def expand_greedy_options(argv: list[str]) -> list[str]:
    """Let the :data:`GREEDY_OPTIONS` consume every following value up to the next option (or ``--``)."""
    out: list[str] = []
    current: str | None = None
    for arg in argv:
        if arg == "--":
            current = None
            out.append(arg)
        elif arg.startswith("-") and len(arg) > 1 and not _is_number(arg):
            current = arg if arg in GREEDY_OPTIONS else None
            out.append(arg)
        elif current is not None and out and out[-1] != current:
            out.extend([current, arg])
        else:
            out.append(arg)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class DartGroup(TyperGroup):
    """The root click group: expands greedy options and turns :class:`DartError` into one red sentence and its
    exit code (also under ``typer.testing.CliRunner``, which calls the click group directly)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_greedy_options(list(args)))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DartError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            ctx.exit(130)


class DartApp(typer.Typer):
    """The root Typer app, built on :class:`DartGroup`."""

    def __init__(self, **kwargs: Any):
        super().__init__(cls=DartGroup, **kwargs)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dart {__version__}")
        raise typer.Exit()


def build_app() -> DartApp:
    """Build the root app and mount every registered subcommand."""
    app = DartApp(
        name="dart",
        help="SAM3 as a real-time, multi-class, open-vocabulary object detector.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode="rich",
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Print the dart version and exit."
        ),
    ) -> None:
        """SAM3 as a real-time, multi-class, open-vocabulary object detector."""

    commands, failures = load_all("dart.commands")
    for failure in failures:
        err_console.print(f"[yellow]warning:[/] {failure.sentence()}", highlight=False)
    for name, obj in commands.items():
        if isinstance(obj, typer.Typer):
            app.add_typer(obj, name=name)
        elif callable(obj):
            app.command(name=name)(obj)
        else:
            err_console.print(
                f"[yellow]warning:[/] the subcommand plugin '{name}' is neither a Typer app nor a function; skipped.",
                highlight=False,
            )
    return app


def main() -> None:
    """Console-script entry point."""
    build_app()()


if __name__ == "__main__":
    main()
