"""The YAML recipe format, and its validation with file and line numbers.

A recipe holds the settings of a whole setup and the steps that build and run it::

    name: coco80-trt                 # names the work folder (default runs/recipes/<name>)
    checkpoint: facebook/sam3        # hub id, folder, .safetensors or sam3.pt
    backbone: sam3                   # or a student (repvit_m2_3 ...) with student_weights
    prune: {skip_blocks: [5, 10]}    # or a spec file path
    imgsz: 1008
    classes: coco                    # a list, a file with one name per line, or "coco"
    backend: tensorrt
    text_cache: ${workdir}/coco80.safetensors
    vars: {video: traffic.mp4}       # your own ${names}
    steps:
      - run: export backbone         # any registered dart command
        options: {output: "${workdir}/backbone.onnx"}
        outputs: ["${workdir}/backbone.onnx"]
      - run: video
        args: ["${video}"]
        options: {track: true}

Every setting is passed to every step whose command has the matching option (``imgsz`` -> ``--imgsz``,
``classes`` -> ``--classes``/``--classes-file``/``--coco`` ...) unless the step sets it itself or says
``inherit: false`` (or lists the settings it takes). ``${name}`` is replaced by a setting, a ``vars`` entry,
``workdir`` or ``recipe_dir`` (``$$`` is a literal ``$``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dart.errors import InputError


class RecipeError(InputError):
    """A recipe that cannot be used: every problem with its file and line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        if len(problems) == 1:
            message = problems[0]
        else:
            message = f"{len(problems)} problems in the recipe:\n  " + "\n  ".join(problems)
        super().__init__(message)


# key -> (accepted python types, how to say it, description)
SETTINGS: dict[str, tuple[tuple[type, ...], str, str]] = {
    "name": ((str,), "a string", "recipe name; names the default work folder"),
    "description": ((str,), "a string", "free text"),
    "checkpoint": ((str,), "a string", "SAM3 weights: hub id, folder, .safetensors or sam3.pt"),
    "tokenizer": ((str,), "a string", "tokenizer folder or hub id"),
    "backbone": ((str,), "a string", "sam3 or a registered student backbone"),
    "student_weights": ((str,), "a string", "weights of the student backbone"),
    "prune": ((dict, str), "a mapping (skip_blocks, mask_blocks) or a spec file path", "pruned ViT blocks"),
    "imgsz": ((int,), "an integer", "square input size, a multiple of 14"),
    "classes": ((list, str), "a list of names, a file path or \"coco\"", "the vocabulary"),
    "backend": ((str,), "a string", "torch, onnxruntime or tensorrt"),
    "engines": ((str,), "a string", "folder of exported stages / engines"),
    "device": ((str,), "a string", "auto, cpu, cuda or cuda:N"),
    "precision": ((str,), "a string", "fp32, fp16 or bf16"),
    "max_classes": ((int,), "an integer", "classes per encoder-decoder batch"),
    "prompt_mode": ((str,), "a string", "meta (SAM3's prompt) or dart (text tokens only, as the DART research code)"),
    "text_cache": ((str,), "a string", "text-feature cache file"),
    "workdir": ((str,), "a string", "folder for the recipe's outputs (default runs/recipes/<name>)"),
    "vars": ((dict,), "a mapping", "your own ${names}"),
    "steps": ((list,), "a list of steps", "what to run, in order"),
}

STEP_KEYS: dict[str, tuple[tuple[type, ...], str, str]] = {
    "name": ((str,), "a string", "step name (unique; default: the command)"),
    "run": ((str,), "a string", "the dart command, e.g. 'export backbone', 'detect', 'eval coco'"),
    "args": ((list,), "a list", "positional arguments"),
    "options": ((dict,), "a mapping", "option: value (true/false for switches, lists repeat the option)"),
    "inputs": ((list,), "a list of paths", "extra files the step reads (paths in args/options are found alone)"),
    "outputs": ((list,), "a list of paths", "files the step writes; the step is skipped while they are up to date"),
    "inherit": ((bool, list), "true, false or a list of setting names", "which settings the step receives"),
}

PRUNE_KEYS = ("skip_blocks", "mask_blocks")
PRECISIONS = ("fp32", "fp16", "bf16")

# recipe setting -> the command option (python name) it becomes
SETTING_OPTIONS: dict[str, str] = {
    "checkpoint": "checkpoint", "tokenizer": "tokenizer", "backbone": "backbone",
    "student_weights": "student_weights", "imgsz": "imgsz", "backend": "backend", "engines": "engines",
    "device": "device", "precision": "precision", "max_classes": "max_classes", "text_cache": "text_cache",
    "prompt_mode": "prompt_mode",
}
INHERITABLE = (*SETTING_OPTIONS, "prune", "classes")
PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


@dataclass
class Step:
    index: int
    name: str
    run: str
    args: list[Any] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    inherit: bool | list[str] = True
    line: str = ""


@dataclass
class Recipe:
    path: Path
    settings: dict[str, Any]
    steps: list[Step]
    variables: dict[str, str]

    @property
    def name(self) -> str:
        return str(self.settings.get("name") or self.path.stem)

    @property
    def workdir(self) -> str:
        return self.variables["workdir"]


# ------------------------------------------------------------------------------------------------ loading
def load_yaml(path: str | Path) -> tuple[Any, dict[tuple, int]]:
    """Parse a YAML file; return the data and ``{path tuple: line}`` for every key and list item."""
    import yaml

    from dart.io import read_text

    path = Path(path)
    text = read_text(path, "recipe")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError([f"{where}: not valid YAML ({problem})."]) from exc
    lines: dict[tuple, int] = {}
    problems: list[str] = []
    if node is not None:
        _marks(node, (), lines, problems, path)
    if problems:
        raise RecipeError(problems)
    return data, lines


def _marks(node: Any, prefix: tuple, lines: dict[tuple, int], problems: list[str], path: Path) -> None:
    import yaml

    lines.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(f"{path}:{line}: key '{key}' is given twice (first on line {seen[key]}).")
            seen[key] = line
            lines[prefix + (key,)] = line
            _marks(value_node, prefix + (key,), lines, problems, path)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[prefix + (i,)] = item.start_mark.line + 1
            _marks(item, prefix + (i,), lines, problems, path)


# ---------------------------------------------------------------------------------------------- overrides
def apply_overrides(data: Any, lines: dict[tuple, int], overrides: list[str]) -> dict[tuple, str]:
    """Apply ``--set key=value`` (dotted keys; ``steps.<name or number>.options.x``; values parsed as YAML).
    Returns ``{path: "--set key=value"}`` so errors in overridden values name the override."""
    import yaml

    origins: dict[tuple, str] = {}
    if not isinstance(data, dict):
        return origins
    for item in overrides:
        if "=" not in item:
            raise InputError(f"--set takes key=value (e.g. --set imgsz=644), got '{item}'.")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise InputError(f"--set '{item}' has no key; use key=value.")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        parts = key.split(".")
        target: Any = data
        path: tuple = ()
        for depth, part in enumerate(parts[:-1]):
            target, part_key = _descend(target, part, item, parts[depth + 1])
            path += (part_key,)
        last: Any = parts[-1]
        if isinstance(target, list):
            last = _list_index(target, last, item)
        elif not isinstance(target, dict):
            raise InputError(f"--set {item}: '{'.'.join(parts[:-1])}' is not a mapping.")
        target[last] = value
        path += (last,)
        origins[path] = f"--set {item}"
        for known in [p for p in lines if p[:len(path)] == path]:
            del lines[known]
    return origins


def _descend(target: Any, part: str, item: str, next_part: str) -> tuple[Any, Any]:
    if isinstance(target, list):
        index = _list_index(target, part, item)
        return target[index], index
    if not isinstance(target, dict):
        raise InputError(f"--set {item}: '{part}' is inside a value that is not a mapping.")
    if part not in target or target[part] is None:
        target[part] = {}
    return target[part], part


def _list_index(items: list, part: Any, item: str) -> int:
    """A step is addressed by its number (1-based, as ``dart recipe show`` prints it) or by its name."""
    text = str(part)
    if text.isdigit() and 1 <= int(text) <= len(items):
        return int(text) - 1
    for i, entry in enumerate(items):
        if isinstance(entry, dict) and (entry.get("name") == text or _default_name(entry.get("run")) == text):
            return i
    raise InputError(f"--set {item}: there is no step '{text}' (use a step name or a number 1..{len(items)}).")


def _default_name(run: Any) -> str:
    return "-".join(str(run).split()) if run else ""


# ---------------------------------------------------------------------------------------------- validation
def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping", type(None): "empty"}.get(type(value), type(value).__name__)


def _is(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


class _Checker:
    def __init__(self, path: Path, lines: dict[tuple, int], origins: dict[tuple, str]):
        self.path = path
        self.lines = lines
        self.origins = origins
        self.problems: list[str] = []

    def where(self, key: tuple) -> str:
        for depth in range(len(key), -1, -1):
            sub = key[:depth]
            if sub in self.origins:
                return self.origins[sub]
            if sub in self.lines:
                return f"{self.path}:{self.lines[sub]}"
        return str(self.path)

    def error(self, key: tuple, message: str) -> None:
        self.problems.append(f"{self.where(key)}: {message}")

    def sorted(self) -> list[str]:
        """Problems in file order (``--set`` problems first)."""
        def line(problem: str) -> int:
            head = problem.split(": ", 1)[0]
            number = head.rsplit(":", 1)[-1]
            return int(number) if number.isdigit() else 0

        return sorted(self.problems, key=line)


def parse_recipe(path: str | Path, overrides: list[str] | None = None, commands: dict | None = None) -> Recipe:
    """Load, override, validate and resolve a recipe. ``commands`` is the command tree to check steps against
    (default: the installed one, :func:`dart.recipes.commands.command_tree`). All problems are reported together,
    each with its file and line (or the ``--set`` that caused it)."""
    path = Path(path)
    data, lines = load_yaml(path)
    origins = apply_overrides(data, lines, overrides or [])
    check = _Checker(path, lines, origins)
    if not isinstance(data, dict):
        raise RecipeError([f"{path}:1: a recipe is a mapping of settings with a 'steps' list; "
                           f"allowed keys: {', '.join(SETTINGS)}."])
    if commands is None:
        from dart.recipes.commands import command_tree

        commands = command_tree()
    settings: dict[str, Any] = {}
    for key, value in data.items():
        key_s = str(key)
        if key_s not in SETTINGS:
            check.error((key,), f"unknown key '{key_s}'; allowed keys: {', '.join(SETTINGS)}.")
            continue
        types, said, _ = SETTINGS[key_s]
        if value is None and key_s != "steps":
            continue
        if not _is(value, types):
            check.error((key,), f"'{key_s}' must be {said}, got {_type_name(value)} ({value!r}).")
            continue
        settings[key_s] = value
    _check_settings(settings, check)
    variables = _variables(settings, path, check)
    steps = _check_steps(settings.get("steps"), commands, check, variables)
    if check.problems:
        raise RecipeError(check.sorted())
    resolved = {k: _substitute(v, variables, check, (k,)) for k, v in settings.items() if k not in ("steps", "vars")}
    if check.problems:
        raise RecipeError(check.sorted())
    return Recipe(path, resolved, steps, variables)


def _check_settings(settings: dict[str, Any], check: _Checker) -> None:
    from dart.models.sam3 import validate_imgsz
    from dart.pruning.spec import PruneSpec

    if "imgsz" in settings:
        try:
            validate_imgsz(settings["imgsz"])
        except InputError as exc:
            check.error(("imgsz",), str(exc))
    if "max_classes" in settings and settings["max_classes"] < 1:
        check.error(("max_classes",), f"'max_classes' must be at least 1, got {settings['max_classes']}.")
    if "prompt_mode" in settings and settings["prompt_mode"] not in ("meta", "dart"):
        check.error(("prompt_mode",), f"'prompt_mode' must be meta or dart, got '{settings['prompt_mode']}'.")
    if "precision" in settings and settings["precision"] not in PRECISIONS:
        check.error(("precision",), f"'precision' must be one of {', '.join(PRECISIONS)}, got '{settings['precision']}'.")
    if "backend" in settings:
        from dart.plugins.registry import available

        names = [name for name, _, _ in available("dart.backends")]
        if settings["backend"] not in names:
            check.error(("backend",), f"backend '{settings['backend']}' is not registered; registered backends: "
                                      f"{', '.join(names)}.")
    prune = settings.get("prune")
    if isinstance(prune, dict):
        for key, value in prune.items():
            if key not in PRUNE_KEYS:
                check.error(("prune", key), f"unknown key '{key}' in prune; allowed keys: {', '.join(PRUNE_KEYS)}.")
            elif value is not None and not _is(value, (list, str, int)):
                check.error(("prune", key), f"'prune.{key}' must be a list or a comma-separated string, got "
                                            f"{_type_name(value)}.")
        if set(prune) <= set(PRUNE_KEYS) and all(v is None or _is(v, (list, str, int)) for v in prune.values()):
            try:
                PruneSpec.parse(prune.get("skip_blocks"), prune.get("mask_blocks"))
            except InputError as exc:
                check.error(("prune",), f"prune: {exc}")
    classes = settings.get("classes")
    if isinstance(classes, list):
        if not classes:
            check.error(("classes",), "'classes' is an empty list; list class names, give a file, or write coco.")
        for i, name in enumerate(classes):
            if not isinstance(name, str) or not name.strip():
                check.error(("classes", i), f"class names must be non-empty strings, got {name!r}.")
    variables = settings.get("vars")
    if isinstance(variables, dict):
        for key, value in variables.items():
            if not re.fullmatch(r"[A-Za-z_][\w-]*", str(key)):
                check.error(("vars", key), f"variable name '{key}' must start with a letter or _ and use letters, "
                                           "digits, _ or -.")
            if value is not None and not _is(value, (str, int, float, bool)):
                check.error(("vars", key), f"variable '{key}' must be a single value, got {_type_name(value)}.")
            if str(key) in SETTINGS or key in ("workdir", "recipe_dir"):
                check.error(("vars", key), f"variable '{key}' has the name of a setting; choose another name.")


def _variables(settings: dict[str, Any], path: Path, check: _Checker) -> dict[str, str]:
    """The ``${...}`` names: scalar settings, ``vars``, ``recipe_dir`` and ``workdir`` (resolved last)."""
    variables: dict[str, str] = {"recipe_dir": str(path.parent)}
    for key, value in settings.items():
        if key in ("steps", "vars", "prune", "classes") and not isinstance(value, str):
            continue
        variables[key] = _scalar(value)
    for key, value in (settings.get("vars") or {}).items():
        variables[str(key)] = "" if value is None else _scalar(value)
    variables.setdefault("name", path.stem)
    workdir = settings.get("workdir") or f"runs/recipes/{variables['name']}"
    variables["workdir"] = workdir
    # resolve references between variables (vars may use settings and each other), a few rounds deep
    for _ in range(5):
        changed = False
        for key, value in list(variables.items()):
            new = PLACEHOLDER.sub(lambda m: variables.get(m.group(1).strip(), m.group(0)), value)
            if new != value:
                variables[key] = new
                changed = True
        if not changed:
            break
    for key, value in variables.items():
        left = PLACEHOLDER.search(value)
        if left:
            origin = ("vars", key) if key in (settings.get("vars") or {}) else (key,)
            check.error(origin, f"'${{{left.group(1)}}}' refers to itself or to an unknown name.")
    return variables


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _substitute(value: Any, variables: dict[str, str], check: _Checker, key: tuple) -> Any:
    if isinstance(value, str):
        def repl(match: re.Match) -> str:
            name = match.group(1).strip()
            if name not in variables:
                check.error(key, f"unknown name '${{{name}}}'; known names: {', '.join(sorted(variables))}.")
                return match.group(0)
            return variables[name]

        return PLACEHOLDER.sub(repl, value.replace("$$", "\0")).replace("\0", "$")
    if isinstance(value, list):
        return [_substitute(v, variables, check, key + (i,)) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _substitute(v, variables, check, key + (k,)) for k, v in value.items()}
    return value


def _check_steps(steps: Any, commands: dict, check: _Checker, variables: dict[str, str]) -> list[Step]:
    if steps is None:
        check.error(("steps",) if ("steps",) in check.lines else (), "the recipe has no steps; add a 'steps:' list "
                    "with at least one step (e.g. - run: detect).")
        return []
    if not isinstance(steps, list):
        return []
    if not steps:
        check.error(("steps",), "'steps' is empty; add at least one step (e.g. - run: detect).")
    out: list[Step] = []
    names: dict[str, int] = {}
    for i, raw in enumerate(steps):
        key = ("steps", i)
        if not isinstance(raw, dict):
            check.error(key, f"step {i + 1} must be a mapping with 'run: COMMAND', got {_type_name(raw)}.")
            continue
        ok = True
        for k, v in raw.items():
            if k not in STEP_KEYS:
                check.error(key + (k,), f"unknown key '{k}' in step {i + 1}; allowed keys: {', '.join(STEP_KEYS)}.")
                ok = False
            elif v is not None and not _is(v, STEP_KEYS[k][0]):
                check.error(key + (k,), f"'{k}' of step {i + 1} must be {STEP_KEYS[k][1]}, got {_type_name(v)}.")
                ok = False
        if "run" not in raw or not raw.get("run"):
            check.error(key, f"step {i + 1} has no 'run' (the dart command it runs, e.g. run: detect).")
            continue
        if not ok:
            continue
        run = " ".join(str(raw["run"]).split())
        name = raw.get("name") or _default_name(run)
        if not re.fullmatch(r"[\w.+-]+", name):
            check.error(key + ("name",), f"step name '{name}' may only use letters, digits and . _ - +.")
        if name in names:
            check.error(key + ("name",) if "name" in raw else key,
                        f"step name '{name}' is used by step {names[name] + 1} too; give the steps distinct names.")
        names[name] = i
        step = Step(index=i, name=name, run=run, args=list(raw.get("args") or []),
                    options=dict(raw.get("options") or {}), inputs=list(raw.get("inputs") or []),
                    outputs=list(raw.get("outputs") or []),
                    inherit=raw["inherit"] if raw.get("inherit") is not None else True,
                    line=check.where(key))
        _check_step(step, raw, commands, check, key)
        for attr in ("args", "options", "inputs", "outputs"):
            setattr(step, attr, _substitute(getattr(step, attr), variables, check, key + (attr,)))
        out.append(step)
    return out


def _check_step(step: Step, raw: dict, commands: dict, check: _Checker, key: tuple) -> None:
    info = commands.get(step.run)
    if info is None:
        groups = sorted({p.split()[0] for p in commands if " " in p})
        hint = ""
        if step.run in groups:
            subs = sorted(p for p in commands if p.split()[0] == step.run)
            hint = f" '{step.run}' is a group: use one of {', '.join(subs)}."
        check.error(key + ("run",), f"'{step.run}' is not a registered dart command.{hint} Registered commands: "
                                    f"{', '.join(sorted(commands))}.")
        return
    if step.run == "recipe run" and step.args and Path(str(step.args[0])).resolve() == check.path.resolve():
        check.error(key + ("args", 0), f"step '{step.name}' runs this same recipe, which would never end.")
    for i, value in enumerate(step.args):
        if not _is(value, (str, int, float)):
            check.error(key + ("args", i), f"argument {i + 1} of step '{step.name}' must be a single value, got "
                                           f"{_type_name(value)}.")
    if info.max_args is not None and len(step.args) > info.max_args:
        most = f"at most {info.max_args} positional argument(s)" if info.max_args else "no positional arguments"
        check.error(key + ("args",), f"dart {step.run} takes {most}; step '{step.name}' gives {len(step.args)} "
                                     "(options go under 'options:').")
    if len(step.args) < info.min_args:
        names = ", ".join(str(a.name).upper() for a in info.arguments if a.required)
        check.error(key, f"step '{step.name}': dart {step.run} needs positional argument(s) {names}; add "
                         "them under 'args:'.")
    for opt_key, value in step.options.items():
        option = info.option(str(opt_key))
        if option is None or option.name == "help":
            check.error(key + ("options", opt_key), f"dart {step.run} has no option '{opt_key}'; its options: "
                                                    f"{', '.join(info.flags())}.")
            continue
        if option.is_flag and not isinstance(value, bool):
            check.error(key + ("options", opt_key), f"'{opt_key}' is a switch: write true or false, got {value!r}.")
        elif isinstance(value, dict):
            check.error(key + ("options", opt_key), f"option '{opt_key}' takes a value or a list, not a mapping.")
        elif isinstance(value, list) and any(isinstance(v, (list, dict)) for v in value):
            check.error(key + ("options", opt_key), f"option '{opt_key}' takes a flat list of values.")
    inherit = step.inherit
    if isinstance(inherit, list):
        for j, name in enumerate(inherit):
            if name not in INHERITABLE:
                check.error(key + ("inherit", j), f"'{name}' is not a setting a step can inherit; choose from "
                                                  f"{', '.join(INHERITABLE)}.")


__all__ = ["Recipe", "RecipeError", "SETTINGS", "STEP_KEYS", "Step", "apply_overrides", "load_yaml", "parse_recipe"]
