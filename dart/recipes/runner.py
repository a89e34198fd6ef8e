"""Run a recipe's steps in order, in this process, skipping the ones that are up to date.

>>> from dart.recipes import load_recipe, run_recipe
>>> recipe, plan = load_recipe("recipes/coco80-trt-textcache.yaml", overrides=["imgsz=644"])
>>> outcomes = run_recipe(plan)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rich.markup import escape

from dart.errors import DartError
from dart.recipes.commands import run_command
from dart.recipes.plan import PlannedStep, build_plan
from dart.recipes.schema import Recipe, parse_recipe


class StepFailed(DartError):
    """A step's command failed; the recipe stops there (exit code: the step's)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class StepOutcome:
    name: str
    action: str  # "ran", "skipped", "not selected"
    reason: str
    seconds: float = 0.0


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> tuple[Recipe, list[PlannedStep]]:
    """Parse, validate and plan a recipe (every problem reported with its file and line)."""
    recipe = parse_recipe(path, overrides)
    return recipe, build_plan(recipe)


def run_recipe(plan: list[PlannedStep], *, force: bool = False, only: list[str] | None = None,
               console: Console | None = None) -> list[StepOutcome]:
    """Run the steps in order. A step is skipped when it is up to date (unless ``force``) or not in ``only``;
    a failing step stops the recipe with :class:`StepFailed`."""
    import time

    console = console or Console()
    only_set = set(only or [])
    unknown = only_set - {p.name for p in plan}
    if unknown:
        from dart.errors import InputError

        raise InputError(f"--only names step '{sorted(unknown)[0]}', which this recipe does not have; its steps: "
                         f"{', '.join(p.name for p in plan)}.")
    outcomes = []
    total = len(plan)
    for number, step in enumerate(plan, 1):
        title = f"[bold]step {number}/{total}[/] {step.name}"
        if only_set and step.name not in only_set:
            outcomes.append(StepOutcome(step.name, "not selected", "not in --only"))
            console.print(f"{title}: [dim]not selected[/]", highlight=False)
            continue
        status = step.status()
        if status.up_to_date and not force:
            outcomes.append(StepOutcome(step.name, "skipped", status.reason))
            console.print(f"{title}: [green]up to date[/], skipped", highlight=False)
            continue
        reason = "--force" if force and status.up_to_date else status.reason
        console.print(f"{title}: running ({reason})\n  [dim]{escape(step.command_line)}[/]", highlight=False)
        started = time.perf_counter()
        code = run_command(step.run_argv())
        seconds = time.perf_counter() - started
        if code == 130:
            raise KeyboardInterrupt
        if code != 0:
            raise StepFailed(f"step {number} '{step.name}' (dart {step.step.run}) failed with exit code {code}; "
                             "the steps after it were not run.", code)
        missing = [o for o in step.outputs if not o.exists()]
        if missing:
            raise StepFailed(f"step {number} '{step.name}' finished but did not write its declared output "
                             f"{missing[0]}; fix the step's outputs list.", 1)
        step.write_stamp()
        outcomes.append(StepOutcome(step.name, "ran", reason, seconds))
    return outcomes


def settings_table(recipe: Recipe) -> Table:
    table = Table(title=f"recipe {recipe.name} ({recipe.path})", title_justify="left", show_header=False)
    table.add_column("setting", style="bold")
    table.add_column("value")
    for key, value in recipe.settings.items():
        if key == "workdir":
            continue
        if key == "classes" and isinstance(value, list) and len(value) > 12:
            value = ", ".join(value[:12]) + f" ... ({len(value)} names)"
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        table.add_row(key, str(value))
    table.add_row("workdir", recipe.workdir)
    return table


def print_plan(plan: list[PlannedStep], console: Console) -> None:
    """Each step with its status and its full command line (copy-pasteable), inherited settings and outputs."""
    from rich.markup import escape

    console.print("[bold]steps[/]")
    for number, step in enumerate(plan, 1):
        status = step.status()
        state = "[green]up to date: will be skipped[/]" if status.up_to_date else f"[yellow]will run[/]: {status.reason}"
        console.print(f"{number}. [bold]{step.name}[/]  {state}", highlight=False)
        console.print(f"   {escape(step.command_line)}", highlight=False, soft_wrap=True)
        if step.inherited:
            console.print(f"   [dim]inherits: {', '.join(step.inherited)}[/]", highlight=False)
        if step.outputs:
            console.print(f"   [dim]outputs: {', '.join(escape(str(o)) for o in step.outputs)}[/]", highlight=False)


def outcomes_table(outcomes: list[StepOutcome]) -> Table:
    table = Table(title="recipe finished", title_justify="left")
    table.add_column("step", style="bold")
    table.add_column("action")
    table.add_column("why")
    table.add_column("seconds", justify="right")
    for o in outcomes:
        table.add_row(o.name, o.action, o.reason, f"{o.seconds:.1f}" if o.action == "ran" else "")
    return table
