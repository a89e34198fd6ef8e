"""The command line's error boundary: every fault is one sentence and an exit code, tracebacks only on request,
other libraries' warnings once and briefly."""

from __future__ import annotations

import errno
import warnings

import pytest
from typer.testing import CliRunner

from dart.cli import build_app, explain

runner = CliRunner()


def detect(tiny_ckpt, image_file, tmp_path, *extra):
    return runner.invoke(build_app(), [*extra, "detect", str(image_file), "-c", "person", "-m", str(tiny_ckpt),
                                       "--imgsz", "112", "--device", "cpu", "-o", str(tmp_path / "out")])


def boom(*args, **kwargs):
    raise ValueError("a bug deep inside\nsecond line of detail")


def test_an_unexpected_exception_is_one_internal_error_sentence(tiny_ckpt, image_file, tmp_path, monkeypatch):
    monkeypatch.setattr("dart.images.detect_images", boom)
    monkeypatch.delenv("DART_DEBUG", raising=False)
    res = detect(tiny_ckpt, image_file, tmp_path)
    assert res.exit_code == 1
    assert "internal error (ValueError: a bug deep inside)" in res.output and "--debug" in res.output
    assert "Traceback" not in res.output and "second line" not in res.output


@pytest.mark.parametrize("how", ["flag-first", "flag-last", "env"])
def test_debug_shows_the_traceback(tiny_ckpt, image_file, tmp_path, monkeypatch, how):
    monkeypatch.setattr("dart.images.detect_images", boom)
    if how == "env":
        monkeypatch.setenv("DART_DEBUG", "1")
        res = detect(tiny_ckpt, image_file, tmp_path)
    elif how == "flag-first":
        res = detect(tiny_ckpt, image_file, tmp_path, "--debug")
    else:
        res = runner.invoke(build_app(), ["detect", str(image_file), "-c", "person", "-m", str(tiny_ckpt),
                                          "--imgsz", "112", "-o", str(tmp_path / "out"), "--debug"])
    assert isinstance(res.exception, ValueError) and "a bug deep inside" in str(res.exception)


def test_os_errors_and_memory_are_sentences():
    message, code = explain(OSError(errno.ENOSPC, "No space left on device", "/data/out.mp4"))
    assert code == 1 and message.startswith("'/data/out.mp4': the disk is full")
    message, code = explain(MemoryError())
    assert code == 1 and "ran out of memory" in message and "--batch" in message
    message, _ = explain(RuntimeError("cannot open rtsp://admin:secret@cam/1"))
    assert "secret" not in message and "admin:***@cam" in message


def test_third_party_warnings_are_shown_once_on_one_line(tiny_ckpt, image_file, tmp_path, monkeypatch):
    from dart import images

    original = images.detect_images

    def noisy(*args, **kwargs):
        for _ in range(3):
            warnings.warn("something odd\n   happened in a library", UserWarning, stacklevel=1)
        warnings.warn("this API is going away", DeprecationWarning, stacklevel=1)
        return original(*args, **kwargs)

    monkeypatch.setattr(images, "detect_images", noisy)
    res = detect(tiny_ckpt, image_file, tmp_path)
    assert res.exit_code == 0, res.output
    assert res.output.count("warning: something odd happened in a library") == 1
    assert "going away" not in res.output and "test_errors.py" not in res.output
    res = detect(tiny_ckpt, image_file, tmp_path, "--verbose")
    assert res.exit_code == 2 and "already holds results" in res.output  # the same output folder, no --overwrite
    res = runner.invoke(build_app(), ["--verbose", "detect", str(image_file), "-c", "person", "-m", str(tiny_ckpt),
                                      "--imgsz", "112", "-o", str(tmp_path / "out2")])
    assert res.exit_code == 0 and "going away" in res.output and "UserWarning" in res.output


def test_the_warning_policy_ends_with_the_command(tiny_ckpt, image_file, tmp_path):
    before = warnings.showwarning
    assert detect(tiny_ckpt, image_file, tmp_path).exit_code == 0
    assert warnings.showwarning is before


# The mistakes users make most (a path mistyped, an output over an input) are found by reading the command line
# and the file system alone: these report before torch or transformers are imported, in about a second, instead of
# after the seconds those imports take.
LIGHT_MISTAKES = [
    ("detect nothere.jpg -c person", 2, "image 'nothere.jpg' does not exist"),
    ("detect photos -c person -o photos", 2, "dart never writes over its inputs"),
    ("detect photos -c person -m ./nothere", 3, "checkpoint './nothere' does not exist"),
    ("video nothere.mp4 -c person", 2, "video 'nothere.mp4' does not exist"),
    ("video clip.mp4 -c person -o clip.mp4", 2, "is the video source 'clip.mp4' this run reads"),
    ("track clip.mp4 -c person -m nothere.pt", 3, "checkpoint 'nothere.pt' does not exist"),
    ("export backbone -m ./nothere", 3, "checkpoint './nothere' does not exist"),
    ("export encdec -m photos -o photos/im0.jpg", 2, "is a file of the checkpoint 'photos' this run reads"),
    ("eval coco --images photos --annotations nothere.json", 2, "annotation file 'nothere.json' does not exist"),
    ("eval coco --images coco/images --annotations coco/instances.json -m ./nothere", 3,
     "command line: checkpoint './nothere' does not exist"),
    ("text-cache build -c person -m ./nothere -o text.safetensors", 3, "checkpoint './nothere' does not exist"),
    ("text-cache build -c person -m photos -o photos", 2, "is the checkpoint 'photos' this run reads"),
    ("precision bisect -m ./nothere", 3, "checkpoint './nothere' does not exist"),
    ("precision compare torch:fp32 torch:bf16 --image nothere.jpg", 2, "image 'nothere.jpg' does not exist"),
    ("detect clip.mp4 -c person", 2, "'clip.mp4' is a video, and this command reads images"),
    ("serve -c person -m ./nothere", 3, "checkpoint './nothere' does not exist"),
    ("serve -m ./nothere", 3, "checkpoint './nothere' does not exist"),
    ("bench class-scaling -m ./nothere", 3, "command line: checkpoint './nothere' does not exist"),
    ("bench class-scaling --image nothere.jpg", 2, "image 'nothere.jpg' does not exist"),
    ("bench video nothere.mp4 -c person", 2, "video 'nothere.mp4' does not exist"),
    ("bench backbones -m ./nothere", 3, "checkpoint './nothere' does not exist"),
    ("distill --data-dir nothere", 2, "training images folder 'nothere' does not exist"),
    ("distill --data-dir photos -m ./nothere", 3, "checkpoint './nothere' does not exist"),
    ("prune search --calib-dir photos -m ./nothere", 3, "checkpoint './nothere' does not exist"),
    ("prune apply --skip-blocks 1 -m ./nothere -o pruned", 3, "checkpoint './nothere' does not exist"),
    ("convert nothere.pt -o out.safetensors", 3, "'nothere.pt' does not exist"),
]
PROBE = """
import runpy, sys
sys.argv = ["dart", *sys.argv[1:]]
try:
    runpy.run_module("dart", run_name="__main__")
except SystemExit as exit:
    heavy = [name for name in ("torch", "transformers") if name in sys.modules]
    print("imported:", ",".join(heavy) or "-", file=sys.stderr)
    raise
"""


def test_common_mistakes_are_reported_before_torch_is_imported(tmp_path):
    import os
    import shlex
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    import cv2

    from tests.coco_data import write_dataset
    from tests.conftest import make_image

    (tmp_path / "photos").mkdir()
    cv2.imwrite(str(tmp_path / "photos" / "im0.jpg"), make_image())
    write_dataset(tmp_path / "coco")
    writer = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 90))
    for seed in range(2):
        writer.write(make_image(seed=seed))
    writer.release()
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    env.pop("DART_DEBUG", None)

    def run(command: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", PROBE, *shlex.split(command)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(run, [command for command, _, _ in LIGHT_MISTAKES]))
    for (command, code, message), proc in zip(LIGHT_MISTAKES, results):
        output = " ".join((proc.stdout + proc.stderr).split())
        assert proc.returncode == code, f"{command}: exit {proc.returncode}:\n{output}"
        assert message in output and "Traceback" not in output, f"{command}:\n{output}"
        assert "imported: -" in output, f"{command} imported what it did not need:\n{output}"
