"""``dart`` end to end on a tiny checkpoint: outputs parsed back, errors are sentences, plugins listed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import EntryPoint

import cv2
import pytest
from typer.testing import CliRunner

from dart.cli import build_app, expand_greedy_options
from tests.conftest import make_image
from tests.tiny import TINY_IMGSZ

runner = CliRunner()


def run(*args):
    return runner.invoke(build_app(), [str(a) for a in args])


def detect_args(tiny_ckpt, *extra):
    return ["detect", *extra, "--checkpoint", tiny_ckpt, "--imgsz", TINY_IMGSZ, "--device", "cpu"]


def test_greedy_classes_option():
    assert expand_greedy_options(["detect", "a.jpg", "--classes", "person", "car", "-o", "x"]) == [
        "detect", "a.jpg", "--classes", "person", "--classes", "car", "-o", "x"]
    assert expand_greedy_options(["-c", "a", "--conf", "0.5", "b.jpg"]) == ["-c", "a", "--conf", "0.5", "b.jpg"]


def test_detect_writes_json_and_image(tmp_path, tiny_ckpt, image_file):
    out = tmp_path / "out"
    res = run(*detect_args(tiny_ckpt, image_file, "--classes", "person", "car", "dog", "-o", out, "--conf", "0.2",
                           "--masks"))
    assert res.exit_code == 0, res.output
    data = json.loads((out / "street.json").read_text())
    assert data["classes"] == ["person", "car", "dog"] and (data["height"], data["width"]) == (90, 160)
    assert data["detections"], "the tiny model yields detections at conf 0.2"
    for row in data["detections"]:
        assert set(row) >= {"box_xyxy", "score", "class_id", "class_name", "mask"}
        assert row["class_name"] == data["classes"][row["class_id"]] and row["score"] >= 0.2
        x1, y1, x2, y2 = row["box_xyxy"]
        assert 0 <= x1 <= x2 <= 160 and 0 <= y1 <= y2 <= 90
    image = cv2.imread(str(out / "street.jpg"))
    assert image.shape == (90, 160, 3)
    assert "street.jpg" in res.output and "detections" in res.output
    umask = os.umask(0)
    os.umask(umask)
    for name in ("street.json", "street.jpg"):  # a normal file's mode, not mkstemp's private 0600
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_detect_folder_classes_file_and_switches(tmp_path, tiny_ckpt):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"im{i}.png"), make_image(seed=i))
    classes = tmp_path / "classes.txt"
    classes.write_text("# vehicles\ncar\nbus\n\nperson\n")
    out = tmp_path / "out"
    res = run(*detect_args(tiny_ckpt, folder, "--classes-file", classes, "-o", out, "--no-save-image", "--batch", 2))
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["dart-run.json", "im0.json", "im1.json", "im2.json"]
    assert json.loads((out / "im1.json").read_text())["classes"] == ["car", "bus", "person"]


def test_detect_benchmark_table(tmp_path, tiny_ckpt, image_file):
    res = run(*detect_args(tiny_ckpt, image_file, "-c", "person", "-o", tmp_path, "--benchmark", "--warmup", 1,
                           "--bench-runs", 2, "--no-save-image", "--no-save-json"))
    assert res.exit_code == 0, res.output
    for stage in ("preprocess", "backbone", "text", "encdec", "post"):
        assert stage in res.output


@pytest.mark.parametrize("args,code,message", [
    (["missing.jpg", "-c", "person"], 2, "does not exist"),
    (["{img}"], 2, "no classes given"),
    (["{img}", "-c", " "], 2, "class list is empty"),
    (["{img}", "-c", "car", "-c", "car"], 2, "listed twice"),
    (["{img}", "-c", "car", "--imgsz", "100"], 2, "multiple of 14"),
    (["{img}", "-c", "car", "--precision", "fp64"], 2, "unknown precision"),
    (["{img}", "-c", "car", "--skip-blocks", "1,x"], 2, "not a number"),
    (["{img}", "-c", "car", "--checkpoint", "nowhere/sam3.pt"], 3, "does not exist"),
])
def test_detect_errors_are_sentences(tmp_path, tiny_ckpt, image_file, args, code, message):
    args = [str(image_file) if a == "{img}" else a for a in args]
    base = ["detect", *args, "--imgsz", TINY_IMGSZ, "--device", "cpu", "-o", tmp_path / "o"]
    if "--checkpoint" not in args:
        base += ["--checkpoint", tiny_ckpt]
    if "--imgsz" in args:
        base = ["detect", *args, "--device", "cpu", "--checkpoint", tiny_ckpt]
    res = run(*base)
    assert res.exit_code == code, res.output
    assert message in res.output
    assert "Traceback" not in res.output


def test_unreadable_image_is_skipped_and_reported_and_outputs_intact(tmp_path, tiny_ckpt, image_file):
    out = tmp_path / "out"
    assert run(*detect_args(tiny_ckpt, image_file, "-c", "car", "-o", out)).exit_code == 0
    before = (out / "street.json").read_bytes()
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    res = run(*detect_args(tiny_ckpt, bad, image_file, "-c", "car", "-o", out))
    assert res.exit_code == 2 and "already holds results" in res.output and "--overwrite" in res.output
    res = run(*detect_args(tiny_ckpt, bad, image_file, "-c", "car", "-o", out, "--overwrite"))
    assert res.exit_code == 2 and "1 of 2 images could not be read" in res.output
    assert (out / "unreadable.txt").read_text().startswith(f"{bad.resolve()}: ")
    assert not (out / "broken.json").exists() and not (out / "broken.jpg").exists()
    assert (out / "street.json").read_bytes() == before  # same model, same input: rewritten identically
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary files left behind"


def test_text_cache_of_other_model_refused_without_touching_outputs(tmp_path, tiny_ckpt, image_file):
    from tests.tiny import save_tiny_checkpoint

    other = save_tiny_checkpoint(tmp_path / "other", seed=3)
    cache = tmp_path / "text.safetensors"
    out = tmp_path / "out"
    assert run(*detect_args(other, image_file, "-c", "car", "-o", out, "--text-cache", cache)).exit_code == 0
    res = run(*detect_args(tiny_ckpt, image_file, "-c", "car", "-o", tmp_path / "out2", "--text-cache", cache))
    assert res.exit_code == 2 and "built for model" in res.output
    assert not (tmp_path / "out2").exists()


def test_plugins_lists_every_group():
    res = run("plugins")
    assert res.exit_code == 0, res.output
    for text in ("dart.commands", "dart.backends", "dart.backbones", "dart.trackers", "detect", "torch"):
        assert text in res.output


def test_broken_plugin_is_a_warning_and_cli_still_works(monkeypatch, capsys):
    import dart.plugins.registry as registry

    real = registry.entry_points

    def with_broken(group):
        eps = list(real(group=group))
        if group == "dart.commands":
            eps.append(EntryPoint("broken", "dart_no_such_module:app", group))
        return eps

    monkeypatch.setattr(registry, "entry_points", with_broken)
    app = build_app()
    warning = " ".join(capsys.readouterr().err.split())
    assert "'broken'" in warning and "failed to load and was skipped" in warning
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "detect" in res.output and "broken" not in res.output


def test_help_lists_subcommands_and_python_m_dart_works():
    res = subprocess.run([sys.executable, "-m", "dart", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "detect" in res.stdout and "plugins" in res.stdout
    res = subprocess.run([sys.executable, "-m", "dart", "--version"], capture_output=True, text=True, timeout=120)
    assert res.stdout.startswith("dart ")


def test_building_the_cli_does_not_import_torch():
    """`dart --help` must stay instant: no command module may import torch (or transformers) at import time."""
    code = ("import sys; from dart.cli import build_app; build_app(); "
            "print(sorted(m for m in ('torch', 'transformers', 'cv2', 'onnx') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_option_help_survives_rich_markup():
    """Help is rendered as rich markup: a '[default: ...]' in an option's help would be eaten as a style tag."""
    import typer
    from rich.markup import render

    def params(command, name):
        for sub_name, sub in getattr(command, "commands", {}).items():
            yield from params(sub, f"{name} {sub_name}")
        for param in command.params:
            if getattr(param, "help", None):
                yield name, param

    lost = [(name, param.opts) for name, param in params(typer.main.get_command(build_app()), "dart")
            if render(param.help).plain != param.help.replace("\\[", "[")]
    assert lost == []
    res = run("detect", "--help")
    assert "default: 1008" in " ".join(res.output.split())


def test_option_help_names_only_flags_its_command_has():
    """An option whose help starts 'With --X' depends on --X: that flag must exist on the same command."""
    import re

    import typer

    def commands(command, name):
        yield name, command
        for sub_name, sub in getattr(command, "commands", {}).items():
            yield from commands(sub, f"{name} {sub_name}")

    wrong = []
    for name, command in commands(typer.main.get_command(build_app()), "dart"):
        flags = {o for p in command.params for o in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]}
        for param in command.params:
            match = re.match(r"With (--[a-z0-9-]+)", getattr(param, "help", None) or "")
            if match and match.group(1) not in flags:
                wrong.append((name, param.opts[0], match.group(1)))
    assert wrong == []


def test_detect_downloads_image_urls(tmp_path, tiny_ckpt, image_file):
    """http(s) sources are fetched (a server on the loopback interface) and detected like files; a missing one is
    one sentence."""
    import functools
    import http.server
    import socketserver
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = socketserver.TCPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(image_file.parent)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{image_file.name}"
        out = tmp_path / "out"
        res = run(*detect_args(tiny_ckpt, url, "-c", "person", "car", "-o", out, "--conf", "0.1"))
        assert res.exit_code == 0, res.output
        local = json.loads((out / "street.json").read_text())
        res = run(*detect_args(tiny_ckpt, image_file, "-c", "person", "car", "-o", tmp_path / "ref", "--conf", "0.1"))
        assert local["detections"] == json.loads((tmp_path / "ref" / "street.json").read_text())["detections"]
        res = run(*detect_args(tiny_ckpt, url.replace("street", "missing"), "-c", "person", "-o", out))
        assert res.exit_code == 2 and "answered 404" in res.output
    finally:
        server.shutdown()
        server.server_close()
    res = run(*detect_args(tiny_ckpt, url, "-c", "person", "-o", out))  # the server is gone
    assert res.exit_code == 2 and "cannot download" in res.output


def test_threads_default_to_the_cpus_this_process_may_use(monkeypatch):
    import torch

    from dart.backends.base import set_threads, thread_count
    from dart.errors import InputError

    try:
        monkeypatch.delenv("DART_THREADS", raising=False)
        assert set_threads() == len(os.sched_getaffinity(0)) == torch.get_num_threads() == thread_count()
        monkeypatch.setenv("DART_THREADS", "3")
        assert set_threads() == 3 == torch.get_num_threads()
        assert set_threads(2) == 2  # the flag wins over the environment
        monkeypatch.setenv("DART_THREADS", "lots")
        with pytest.raises(InputError, match="DART_THREADS must be a whole number"):
            set_threads()
    finally:
        torch.set_num_threads(1)
