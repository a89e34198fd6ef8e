"""YAML recipes: shipped recipes validate, a tiny recipe runs end to end and skips up-to-date steps on a second
run, settings reach the commands that take them, and every validation error names its file and line."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from dart.classes import COCO80
from dart.cli import build_app
from dart.recipes import RecipeError, build_plan, parse_recipe
from dart.recipes.commands import command_tree
from tests.coco_data import write_dataset
from tests.conftest import make_image
from tests.tiny import TINY_IMGSZ

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))


def run(*args):
    return CliRunner().invoke(build_app(), [str(a) for a in args])


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_shipped_recipes_validate(recipe):
    parsed = parse_recipe(recipe)
    plan = build_plan(parsed)
    assert plan and all(step.argv[: len(step.step.run.split())] == step.step.run.split() for step in plan)
    assert all("${" not in token for step in plan for token in step.argv), "every placeholder is resolved"


def test_shipped_recipes_cover_the_documented_setups():
    names = {r.stem for r in RECIPES}
    assert {"realtime-4class-trt", "coco80-trt-textcache", "traffic-tracking", "coco-eval", "pruned16-backbone",
            "student-repvit"} <= names
    trt = build_plan(parse_recipe(RECIPES[[r.stem for r in RECIPES].index("realtime-4class-trt")]))
    lines = {s.name: s.argv for s in trt}
    assert lines["export-encdec"][lines["export-encdec"].index("--max-classes") + 1] == "4"
    assert "--fp16" in lines["build-backbone"] and "--backend" in lines["detect"]


def test_tiny_recipe_runs_then_skips_up_to_date_steps(tmp_path, tiny_ckpt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cv2.imwrite("street.jpg", make_image())
    images, ann = write_dataset(tmp_path / "coco", categories=["person", "car", "bicycle", "dog", "cat", "bus"])
    recipe = write(tmp_path / "tiny.yaml", f"""
        name: tiny
        checkpoint: {tiny_ckpt}
        imgsz: {TINY_IMGSZ}
        device: cpu
        classes: [person, car]
        vars:
          image: street.jpg
        steps:
          - run: detect
            args: ["${{image}}"]
            options: {{output: "${{workdir}}/detect", save_image: false, conf: 0.1}}
            outputs: ["${{workdir}}/detect/street.json"]
          - name: eval
            run: eval coco
            options: {{images: {images}, annotations: {ann}, categories: dataset, max_images: 2,
                       output: "${{workdir}}/eval"}}
            outputs: ["${{workdir}}/eval/summary.json"]
          - name: speed
            run: bench class-scaling
            options: {{classes_counts: [1, 2], warmup: 0, runs: 1, output: "${{workdir}}/bench"}}
            outputs: ["${{workdir}}/bench/class_scaling.json"]
    """)
    work = tmp_path / "runs/recipes/tiny"
    first = run("recipe", "run", recipe)
    assert first.exit_code == 0, first.output
    detect_json = json.loads((work / "detect/street.json").read_text())
    assert detect_json["classes"] == ["person", "car"]  # the recipe's classes reached dart detect
    assert json.loads((work / "eval/summary.json").read_text())["images"] == 2
    bench = json.loads((work / "bench/class_scaling.json").read_text())
    assert [r["classes"] for r in bench["setups"][0]["rows"]] == [1, 2]
    assert bench["setups"][0]["setup"]["imgsz"] == TINY_IMGSZ  # inherited --imgsz
    stamps = sorted(p.name for p in work.rglob("*.dart-step.json"))
    assert stamps == [".class_scaling.json.dart-step.json", ".street.json.dart-step.json", ".summary.json.dart-step.json"]

    mtimes = {p: p.stat().st_mtime_ns for p in work.rglob("*.json")}
    second = run("recipe", "run", recipe)
    assert second.exit_code == 0, second.output
    assert second.output.count("up to date, skipped") == 3
    assert {p: p.stat().st_mtime_ns for p in work.rglob("*.json")} == mtimes, "nothing was rewritten"

    # An input newer than the outputs re-runs only the step that reads it.
    future = (work / "detect/street.json").stat().st_mtime + 10
    os.utime("street.jpg", (future, future))
    third = run("recipe", "run", recipe)
    assert third.exit_code == 0, third.output
    assert "street.jpg is newer than its outputs" in third.output and third.output.count("up to date, skipped") == 2

    # Changed settings re-run the step; show prints the plan with the override applied.
    shown = run("recipe", "show", recipe, "--set", "steps.speed.options.classes_counts=[1,3]")
    assert shown.exit_code == 0, shown.output
    assert "settings changed" in shown.output and "--classes-counts 1,3" in shown.output.replace("\n", " ")


def test_failing_step_stops_the_recipe(tmp_path, tiny_ckpt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = write(tmp_path / "fail.yaml", f"""
        checkpoint: {tiny_ckpt}
        classes: [person]
        steps:
          - run: detect
            args: [missing.jpg]
          - name: never
            run: detect
            args: [missing.jpg]
            outputs: [never.json]
    """)
    res = run("recipe", "run", recipe)
    assert res.exit_code == 2
    assert "image 'missing.jpg' does not exist" in res.output
    assert "step 1 'detect' (dart detect) failed with exit code 2" in res.output.replace("\n", " ")
    assert "step 2/2" not in res.output


def test_validation_errors_name_file_and_line(tmp_path):
    recipe = write(tmp_path / "bad.yaml", """
        name: bad
        imgsz: 100
        checkpoint: 5
        clases: [a]
        prune: {skip_blocks: [1, x]}
        steps:
          - run: detct
          - run: detect
            args: [a.jpg]
            options: {conff: 0.3, masks: maybe}
          - run: eval coco
            args: [x]
          - run: detect
            args: [b.jpg]
            text: 3
    """)
    res = run("recipe", "validate", recipe)
    assert res.exit_code == 2
    out = res.output.replace("\n", " ")
    expected = [
        (2, "imgsz must be a positive multiple of 14"),
        (3, "'checkpoint' must be a string, got an integer"),
        (4, "unknown key 'clases'; allowed keys: name, description, checkpoint"),
        (5, "prune: --skip-blocks takes block numbers like 5,10,12; 'x' is not a number"),
        (7, "'detct' is not a registered dart command"),
        (10, "dart detect has no option 'conff'; its options: --backbone"),
        (10, "'masks' is a switch: write true or false"),
        (12, "dart eval coco takes no positional arguments"),
        (15, "unknown key 'text' in step 4; allowed keys: name, run, args, options"),
    ]
    for line, message in expected:
        assert f"bad.yaml:{line}: {message}" in out, (line, message, res.output)
    assert "Registered commands:" in out and "eval coco" in out


def test_yaml_syntax_duplicates_and_missing_required_options(tmp_path):
    broken = write(tmp_path / "syntax.yaml", """
        steps:
          - run: detect
            args: [a.jpg
    """)
    with pytest.raises(RecipeError, match=r"syntax.yaml:\d+: not valid YAML"):
        parse_recipe(broken)
    dupes = write(tmp_path / "dupes.yaml", """
        imgsz: 112
        imgsz: 224
        steps: [{run: plugins}]
    """)
    with pytest.raises(RecipeError, match=r"dupes.yaml:2: key 'imgsz' is given twice \(first on line 1\)"):
        parse_recipe(dupes)
    required = write(tmp_path / "required.yaml", """
        steps:
          - run: plugins
          - name: eval
            run: eval coco
            options: {images: x}
    """)
    with pytest.raises(RecipeError, match=r"required.yaml:3: step 'eval': dart eval coco needs --annotations"):
        build_plan(parse_recipe(required))


def test_missing_steps_and_set_errors(tmp_path):
    with pytest.raises(RecipeError, match="has no steps"):
        parse_recipe(write(tmp_path / "nosteps.yaml", "name: x\n"))
    ok = write(tmp_path / "ok.yaml", """
        imgsz: 112
        steps:
          - run: plugins
    """)
    with pytest.raises(RecipeError, match=r"--set imgsz=abc: 'imgsz' must be an integer, got a string"):
        parse_recipe(ok, ["imgsz=abc"])
    with pytest.raises(Exception, match="there is no step 'nope'"):
        parse_recipe(ok, ["steps.nope.options.check=true"])
    with pytest.raises(Exception, match="takes key=value"):
        parse_recipe(ok, ["imgsz"])
    assert parse_recipe(ok, ["imgsz=224"]).settings["imgsz"] == 224
    assert parse_recipe(ok, ["steps.1.options.check=true"]).steps[0].options == {"check": True}


def test_settings_become_options_only_where_commands_take_them(tmp_path):
    classes_file = tmp_path / "classes.txt"
    classes_file.write_text("car\nbus\n")
    recipe = write(tmp_path / "inherit.yaml", f"""
        checkpoint: ckpt
        imgsz: 644
        prune: {{skip_blocks: [5, 10], mask_blocks: ["25:attn"]}}
        classes: coco
        text_cache: ${{workdir}}/cache.safetensors
        vars: {{src: a.jpg, out: "${{workdir}}/x"}}
        steps:
          - run: detect
            args: ["${{src}}"]
            options: {{masks: true, save_json: false, conf: 0.25, output: "${{out}}"}}
          - name: detect-own-classes
            run: detect
            args: [b.jpg]
            options: {{classes: [dog, cat], imgsz: 1008}}
          - name: detect-file
            run: detect
            args: [c.jpg]
            inherit: [checkpoint]
            options: {{classes_file: {classes_file}}}
          - name: eval
            run: eval coco
            options: {{images: i, annotations: a.json}}
          - name: spec
            run: eval coco
            options: {{images: i, annotations: a.json, prune_spec: spec.yaml}}
    """)
    plan = {s.name: s.argv for s in build_plan(parse_recipe(recipe))}
    first = plan["detect"]
    assert first[:2] == ["detect", "a.jpg"], "positional arguments come first"
    assert "--masks" in first and "--no-save-json" in first and first[first.index("--conf") + 1] == "0.25"
    assert first[first.index("--output") + 1] == "runs/recipes/inherit/x"
    assert first[first.index("--skip-blocks") + 1] == "5,10" and first[first.index("--mask-blocks") + 1] == "25:attn"
    assert "--coco" in first and "--classes" not in first
    assert first[first.index("--text-cache") + 1] == "runs/recipes/inherit/cache.safetensors"
    own = plan["detect-own-classes"]
    assert [own[i + 1] for i, t in enumerate(own) if t == "--classes"] == ["dog", "cat"] and "--coco" not in own
    assert own[own.index("--imgsz") + 1] == "1008" and own.count("--imgsz") == 1
    assert plan["detect-file"] == ["detect", "c.jpg", "--classes-file", str(classes_file), "--checkpoint", "ckpt"]
    assert "--coco" not in plan["eval"] and "--classes" not in plan["eval"], "eval coco has no class options"
    assert plan["eval"][plan["eval"].index("--skip-blocks") + 1] == "5,10"
    assert "--skip-blocks" not in plan["spec"] and "spec.yaml" in plan["spec"]


def test_coco_classes_become_names_for_commands_without_coco_switch(tmp_path):
    from dart.recipes.plan import step_argv

    info = command_tree()["detect"]
    trimmed = type(info)(info.path, info.command, {k: v for k, v in info.options.items() if k != "coco"},
                         info.arguments)
    step = parse_recipe(write(tmp_path / "c.yaml", "classes: coco\nsteps: [{run: detect, args: [a.jpg]}]\n")).steps[0]
    argv, inherited = step_argv(step, trimmed, {"classes": "coco"})
    assert [argv[i + 1] for i, t in enumerate(argv) if t == "--classes"] == COCO80 and inherited == ["classes"]


def test_recipe_cannot_run_itself(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "loop.yaml", "steps:\n  - run: recipe run\n    args: [loop.yaml]\n")
    with pytest.raises(RecipeError, match=r"loop.yaml:3: step 'recipe-run' runs this same recipe"):
        parse_recipe("loop.yaml")
