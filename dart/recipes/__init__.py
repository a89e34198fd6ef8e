"""YAML recipes: a whole build-and-run setup in one file, replayed by ``dart recipe run``.

- :mod:`dart.recipes.schema`: the format, ``--set`` overrides, validation with file and line numbers;
- :mod:`dart.recipes.commands`: the installed ``dart`` command tree (step names and options are checked against
  it, and steps run through it in this process);
- :mod:`dart.recipes.plan`: each step's command line, inherited settings, and the up-to-date check;
- :mod:`dart.recipes.runner`: running the steps, tables for ``show`` and ``run``.
"""

from __future__ import annotations

from dart.recipes.plan import PlannedStep, build_plan
from dart.recipes.runner import StepFailed, StepOutcome, load_recipe, run_recipe
from dart.recipes.schema import Recipe, RecipeError, parse_recipe

__all__ = ["PlannedStep", "Recipe", "RecipeError", "StepFailed", "StepOutcome", "build_plan", "load_recipe",
           "parse_recipe", "run_recipe"]
