"""The ``dart`` executable: a root Typer app that mounts every ``dart.commands`` entry point.

A command entry point is either a ``typer.Typer`` app (mounted as a command group, e.g. ``dart export ...``)
or a plain function (mounted as a single command, e.g. ``dart detect``). Built-in commands are registered
in pyproject.toml exactly like third-party ones.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import click
import typer
from rich.console import Console
from rich.markup import escape
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


GLOBAL_FLAGS = ("--debug", "--verbose", "-v")
DEBUG_KEY = "dart.debug"
VERBOSE_KEY = "dart.verbose"
DEBUG_ENV = "DART_DEBUG"


def debug_requested(ctx: click.Context | None = None) -> bool:
    """``--debug`` on this command line, or ``DART_DEBUG`` set to something other than 0/empty."""
    if ctx is not None and ctx.find_root().meta.get(DEBUG_KEY):
        return True
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _is_click_control(exc: BaseException) -> bool:
    """click's own exits and usage errors (Typer may vendor click, so they are matched by module and shape)."""
    module = type(exc).__module__ or ""
    return module.startswith(("click", "typer")) or isinstance(exc, (click.exceptions.Exit, click.ClickException,
                                                                     click.exceptions.Abort))


def explain(exc: BaseException) -> tuple[str, int]:
    """The sentence and exit code the command line gives for an exception that is not a :class:`DartError`."""
    from dart.io import os_reason, redact

    name = type(exc).__name__
    if isinstance(exc, MemoryError) or name == "OutOfMemoryError":
        where = "the GPU" if name == "OutOfMemoryError" else "this machine"
        return (f"{where} ran out of memory; lower --batch, --max-classes or --imgsz, or use --precision fp16/bf16 "
                "(nothing half-written was left behind).", 1)
    if isinstance(exc, OSError):
        target = f"'{redact(str(exc.filename))}': " if exc.filename else ""
        return f"{target}{os_reason(exc)} ({name}); nothing half-written was left behind.", 1
    first = redact(str(exc).strip().splitlines()[0]) if str(exc).strip() else ""
    detail = f"{name}: {first}" if first else name
    return (f"internal error ({detail}). This is a bug in dart: run the same command with --debug (or "
            f"{DEBUG_ENV}=1) to see the traceback, and report it.", 1)


class DartGroup(TyperGroup):
    """The root click group and the command line's error boundary: expands greedy options; turns a
    :class:`DartError` into one red sentence and its exit code, an unexpected exception into one "internal error"
    sentence (exit 1; the traceback with ``--debug`` or ``DART_DEBUG=1``) and Ctrl-C into exit 130; shows
    third-party warnings once and briefly (in full with ``--verbose``). Also under ``typer.testing.CliRunner``,
    which calls the click group directly."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, self._hoist_global_flags(expand_greedy_options(list(args))))

    def _hoist_global_flags(self, args: list[str]) -> list[str]:
        """``dart detect a.jpg -c cat --debug`` means ``dart --debug detect ...``: the root's own flags work anywhere
        on the line, unless the subcommand has a flag of that name itself (``dart build --verbose``)."""
        command: Any = self
        depth = 0
        while depth < len(args) and hasattr(command, "commands") and args[depth] in command.commands:
            command = command.commands[args[depth]]
            depth += 1
        if depth == 0:
            return args
        own = {name for param in command.params for name in (*param.opts, *param.secondary_opts)}
        end = args.index("--") if "--" in args else len(args)
        tail = args[depth:end]
        hoisted = [a for a in tail if a in GLOBAL_FLAGS and a not in own]
        kept = [a for a in tail if not (a in GLOBAL_FLAGS and a not in own)]
        return hoisted + args[:depth] + kept + args[end:]

    def invoke(self, ctx: click.Context) -> Any:
        from dart.io import redact

        with warnings.catch_warnings():  # the command's warning policy ends with the command
            try:
                return super().invoke(ctx)
            except DartError as exc:
                err_console.print(f"[bold red]error:[/] {escape(redact(str(exc)))}", highlight=False,
                                  soft_wrap=True)
                ctx.exit(exc.exit_code)
            except KeyboardInterrupt:
                err_console.print("[yellow]interrupted[/]")
                ctx.exit(130)
            except Exception as exc:  # noqa: BLE001 - the boundary: one sentence, traceback on request
                if _is_click_control(exc) or debug_requested(ctx):
                    raise
                message, code = explain(exc)
                err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
                ctx.exit(code)


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
        ctx: typer.Context,
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Print the dart version and exit."
        ),
        debug: bool = typer.Option(
            False, "--debug", help=f"Show the full traceback of an error (also: {DEBUG_ENV}=1)."),
        verbose: bool = typer.Option(
            False, "--verbose", "-v",
            help="Show other libraries' warnings and logs in full (default: each warning once, on one line)."),
    ) -> None:
        """SAM3 as a real-time, multi-class, open-vocabulary object detector."""
        from dart import noise

        ctx.meta[DEBUG_KEY] = debug
        ctx.meta[VERBOSE_KEY] = verbose
        noise.configure(verbose=verbose, err=lambda line: err_console.print(escape(line), style="yellow",
                                                                            highlight=False, soft_wrap=True))

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
