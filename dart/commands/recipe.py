"""``dart recipe``: run, validate and show YAML recipes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

app = typer.Typer(help="Replay a whole build-and-run setup from one YAML file.", no_args_is_help=True,
                  rich_markup_mode="rich")

RecipeFile = Annotated[Path, typer.Argument(help="The recipe (.yaml).")]
Set = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override a setting: --set imgsz=644 --set vars.video=clip.mp4 "
                  "--set steps.eval.options.max_images=50 (repeatable; values are YAML).")]


@app.command("run")
def run(
    recipe: RecipeFile,
    set_: Set = None,
    force: Annotated[bool, typer.Option("--force", help="Run every step, even the up-to-date ones.")] = False,
    only: Annotated[Optional[list[str]], typer.Option(
        "--only", help="Run only this step (by name; repeatable). The others are not run.")] = None,
) -> None:
    """Run the recipe's steps in order; steps whose outputs are newer than their inputs and settings are skipped.

    Example: [bold]dart recipe run recipes/coco80-trt-textcache.yaml --set imgsz=644[/]
    """
    from dart.recipes.runner import load_recipe, outcomes_table, run_recipe

    console = Console()
    parsed, plan = load_recipe(recipe, set_ or [])
    console.print(f"recipe [bold]{parsed.name}[/]: {len(plan)} steps, outputs in {parsed.workdir}", highlight=False)
    outcomes = run_recipe(plan, force=force, only=only, console=console)
    console.print(outcomes_table(outcomes))


@app.command("validate")
def validate(recipe: RecipeFile, set_: Set = None) -> None:
    """Check a recipe: keys, types, values, step commands and their options (each problem with file and line).

    Example: [bold]dart recipe validate recipes/traffic-tracking.yaml[/]
    """
    from dart.recipes.runner import load_recipe

    parsed, plan = load_recipe(recipe, set_ or [])
    Console().print(f"[green]ok[/]: {recipe} is a valid recipe ({len(plan)} steps: "
                    f"{', '.join(p.name for p in plan)}).", highlight=False)


@app.command("show")
def show(recipe: RecipeFile, set_: Set = None) -> None:
    """Print the resolved plan: settings, and each step's command line, status and outputs.

    Example: [bold]dart recipe show recipes/coco-eval.yaml --set vars.max_images=100[/]
    """
    from dart.recipes.runner import load_recipe, print_plan, settings_table

    console = Console()
    parsed, plan = load_recipe(recipe, set_ or [])
    console.print(settings_table(parsed))
    print_plan(plan, console)
