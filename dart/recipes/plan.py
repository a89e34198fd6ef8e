"""From a validated :class:`~dart.recipes.schema.Recipe` to the exact ``dart`` command line of every step, and
whether a step is up to date.

A step is up to date (and skipped) when it declares ``outputs``, they all exist, the settings hash stored next to
them (``.<first output>.dart-step.json``) equals the hash of the step's resolved command line, and no input is
newer than the outputs. Inputs are the step's declared ``inputs`` plus every existing file or folder named in its
arguments (the checkpoint folder, the images, an earlier step's ONNX file ...).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dart.classes import COCO80
from dart.recipes.commands import CommandInfo, OptionInfo
from dart.recipes.schema import INHERITABLE, SETTING_OPTIONS, Recipe, RecipeError, Step

STAMP_SUFFIX = ".dart-step.json"
MAX_WALK = 20000  # files looked at per folder when finding its newest file


@dataclass
class StepStatus:
    up_to_date: bool
    reason: str


@dataclass
class PlannedStep:
    step: Step
    argv: list[str]
    outputs: list[Path]
    declared_inputs: list[Path]
    inherited: list[str]
    output_flags: frozenset[str] = frozenset()  # the command's options that name files it writes (-o, --save-*)
    overwrite_flag: str | None = None  # the command's --overwrite, when it has one

    @property
    def name(self) -> str:
        return self.step.name

    @property
    def command_line(self) -> str:
        return "dart " + shlex.join(self.argv)

    def run_argv(self) -> list[str]:
        """The command line the runner executes: a recipe replaces its own earlier outputs, so a step whose command
        has ``--overwrite`` gets it (inputs are still never written over)."""
        if self.overwrite_flag and self.overwrite_flag not in self.argv:
            return [*self.argv, self.overwrite_flag]
        return list(self.argv)

    @property
    def digest(self) -> str:
        payload = json.dumps({"run": self.step.run, "argv": self.argv}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def stamp_path(self) -> Path | None:
        if not self.outputs:
            return None
        first = self.outputs[0]
        return first.parent / f".{first.name}{STAMP_SUFFIX}"

    def inputs(self) -> list[Path]:
        """Declared inputs plus existing paths named in the arguments, minus the step's own outputs."""
        found: list[Path] = list(self.declared_inputs)
        tokens = self.argv[len(self.step.run.split()):]
        for i, token in enumerate(tokens):
            if not token or token.startswith("-") or len(token) > 4096:
                continue
            if i > 0 and tokens[i - 1] in self.output_flags:
                continue  # a file the step writes (its --save-jsonl, say) is not an input of it
            path = Path(token).expanduser()
            try:
                if path.exists():
                    found.append(path)
            except OSError:
                continue
        outputs = [o.resolve() for o in self.outputs]
        unique: dict[Path, Path] = {}
        for path in found:
            resolved = path.resolve()
            if any(resolved == o or _inside(o, resolved) or _inside(resolved, o) for o in outputs):
                continue
            unique.setdefault(resolved, path)
        return list(unique.values())

    def status(self) -> StepStatus:
        if not self.outputs:
            return StepStatus(False, "always runs (it declares no outputs)")
        missing = [o for o in self.outputs if not o.exists()]
        if missing:
            return StepStatus(False, f"output {missing[0]} does not exist yet")
        stamp = read_stamp(self.stamp_path)
        if stamp is None:
            return StepStatus(False, "no record of a run with these settings")
        if stamp.get("digest") != self.digest:
            return StepStatus(False, "its settings changed since the last run")
        missing_inputs = [p for p in self.declared_inputs if not p.exists()]
        if missing_inputs:
            return StepStatus(False, f"input {missing_inputs[0]} does not exist")
        oldest_output = min(newest_mtime(o) for o in self.outputs)
        for path in self.inputs():
            if newest_mtime(path) > oldest_output:
                return StepStatus(False, f"input {path} is newer than its outputs")
        return StepStatus(True, "up to date")

    def write_stamp(self) -> None:
        from dart.io import write_json

        if self.stamp_path is not None:
            write_json(self.stamp_path, {"step": self.name, "run": self.step.run, "digest": self.digest,
                                         "argv": self.argv, "finished": time.time()})


def read_stamp(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: not JSON, or not UTF-8
        return None
    return data if isinstance(data, dict) else None


def _inside(parent: Path, child: Path) -> bool:
    try:
        child.relative_to(parent)
    except ValueError:
        return False
    return child != parent


def newest_mtime(path: Path) -> float:
    """A file's mtime; for a folder, the newest mtime of anything inside it (or of the folder itself)."""
    newest = path.stat().st_mtime
    if path.is_dir():
        seen = 0
        for root, _, files in os.walk(path):
            for name in files:
                seen += 1
                if seen > MAX_WALK:
                    return newest
                try:
                    newest = max(newest, os.stat(os.path.join(root, name)).st_mtime)
                except OSError:
                    continue
    return newest


# ----------------------------------------------------------------------------------------------- planning
def build_plan(recipe: Recipe, commands: dict[str, CommandInfo] | None = None) -> list[PlannedStep]:
    """The command line of every step (settings inherited where the command takes them); a step that lacks a
    required option is reported with its line."""
    if commands is None:
        from dart.recipes.commands import command_tree

        commands = command_tree()
    problems: list[str] = []
    plan = []
    for step in recipe.steps:
        info = commands[step.run]
        argv, inherited = step_argv(step, info, recipe.settings)
        tokens = set(argv)
        missing = [o for o in info.options.values() if o.required and not tokens & set(o.opts + o.secondary)]
        if missing:
            flags = ", ".join(o.flag for o in missing)
            problems.append(f"{step.line}: step '{step.name}': dart {step.run} needs {flags}; add it under "
                            "'options:'.")
        else:
            problem = parse_problem(info, argv[len(step.run.split()):])
            if problem:
                problems.append(f"{step.line}: step '{step.name}': {problem}")
        plan.append(PlannedStep(step, argv, [Path(o) for o in step.outputs], [Path(i) for i in step.inputs],
                                inherited, output_flags(info), _overwrite_flag(info)))
    if problems:
        raise RecipeError(problems)
    return plan


def parse_problem(info: CommandInfo, args: list[str]) -> str | None:
    """Parse a step's arguments exactly as ``dart`` would (types, ranges, choices: ``conf: high`` is refused here,
    not when the step runs); the problem as a sentence, or None."""
    try:
        ctx = info.command.make_context(f"dart {info.path}", list(args), resilient_parsing=False)
    except Exception as exc:  # click's usage errors (Typer may vendor click: matched by shape)
        message = getattr(exc, "format_message", None)
        if callable(message):
            return str(message()).rstrip(".") + "."
        raise
    ctx.close()
    return None


def output_flags(info: CommandInfo) -> frozenset[str]:
    """Flags whose value is a file or folder the command writes: ``--output``/``-o`` and every ``--save-*`` option
    that takes a value (the naming convention of dart's commands, which plugins are asked to follow)."""
    flags: set[str] = set()
    for option in info.options.values():
        if not option.is_flag and (option.name == "output" or option.name.startswith("save")):
            flags.update(option.opts)
    return frozenset(flags)


def _overwrite_flag(info: CommandInfo) -> str | None:
    option = info.option("overwrite")
    return option.flag if option is not None and option.is_flag else None


def step_argv(step: Step, info: CommandInfo, settings: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``[command..., positional args..., options...]`` and the settings the step inherited.

    Positional arguments come right after the command, so a multi-value option such as ``--classes`` never
    swallows them.
    """
    argv = step.run.split() + [str(a) for a in step.args]
    given = set()
    for key, value in step.options.items():
        option = info.option(str(key))
        assert option is not None  # checked by validation
        given.add(option.name)
        argv += render_option(option, value)
    allowed = INHERITABLE if step.inherit is True else ([] if step.inherit is False else list(step.inherit))
    inherited = []
    for setting in allowed:
        if setting not in settings or settings[setting] is None:
            continue
        extra = _inherit(setting, settings[setting], info, given)
        if extra:
            argv += extra
            inherited.append(setting)
    return argv, inherited


def _inherit(setting: str, value: Any, info: CommandInfo, given: set[str]) -> list[str]:
    if setting in SETTING_OPTIONS:
        option = info.option(SETTING_OPTIONS[setting])
        if option is None or option.name in given:
            return []
        return render_option(option, value)
    if setting == "prune":
        if given & _names(info, ("skip_blocks", "mask_blocks", "prune_spec")):
            return []
        if isinstance(value, str):
            option = info.option("prune_spec")
            return render_option(option, value) if option else []
        out: list[str] = []
        for key in ("skip_blocks", "mask_blocks"):
            option = info.option(key)
            if option is not None and value.get(key) not in (None, "", []):
                items = value[key] if isinstance(value[key], list) else str(value[key]).split(",")
                out += [option.flag, ",".join(str(v).strip() for v in items)]
        return out
    if setting == "classes":
        if given & _names(info, ("classes", "classes_file", "coco")):
            return []
        classes, coco, classes_file = (info.option(k) for k in ("classes", "coco", "classes_file"))
        if isinstance(value, str) and value.strip().lower() == "coco":
            if coco is not None:
                return [coco.flag]
            value = list(COCO80)
        if isinstance(value, str):
            return [classes_file.flag, value] if classes_file else []
        if classes is None:
            return []
        return render_option(classes, [str(v) for v in value], repeat=True)
    return []


def _names(info: CommandInfo, keys: tuple[str, ...]) -> set[str]:
    """The python names of the command's options for these flags (commands may name parameters differently)."""
    return {option.name for key in keys if (option := info.option(key)) is not None}


def render_option(option: OptionInfo, value: Any, repeat: bool = False) -> list[str]:
    """One option as command-line tokens: switches by name (``--masks`` / ``--no-masks``), lists repeated for
    repeatable options (``--classes a --classes b``) and comma-joined otherwise."""
    if value is None:
        return []
    if isinstance(value, bool):
        if option.is_flag or option.secondary:
            if value:
                return [option.flag]
            return [option.secondary[0]] if option.secondary else []
        return [option.flag, "true" if value else "false"]
    if isinstance(value, list):
        if option.multiple or repeat:
            return [token for item in value for token in (option.flag, _text(item))]
        return [option.flag, ",".join(_text(v) for v in value)]
    return [option.flag, _text(value)]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
