"""``dart plugins``: list what is registered in every dart entry-point group."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from dart.plugins.registry import GROUPS, available, load_all


def plugins(
    check: bool = typer.Option(False, "--check", help="Also import every plugin and report the ones that fail."),
) -> None:
    """List the registered subcommands, backends, backbones and trackers with their providing package."""
    console = Console()
    table = Table(title="dart plugins")
    table.add_column("group")
    table.add_column("name", style="bold")
    table.add_column("object")
    table.add_column("package")
    if check:
        table.add_column("status")
    broken = 0
    for group in GROUPS:
        status: dict[str, str] = {}
        if check:
            _, failures = load_all(group)
            status = {f.name: f"[red]{f.error}[/]" for f in failures}
            broken += len(failures)
        entries = available(group)
        if not entries:
            table.add_row(group, "[dim]-[/]", "", "", *([""] if check else []))
        for name, value, package in entries:
            row = [group, name, value, package]
            if check:
                row.append(status.get(name, "[green]ok[/]"))
            table.add_row(*row)
    console.print(table)
    if broken:
        raise typer.Exit(1)
