"""``dart detect --resume``: a run interrupted and resumed writes exactly the files of a run made in one go; a
folder of another run is refused; image lists (``.txt``) are sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dart.detector import Detector
from dart.images import RUN_FILE, ResultFiles, expand_images, pending_images
from tests.conftest import image_folder
from tests.test_cli import detect_args, run

ARGS = ("-c", "person", "car", "--conf", "0.2", "--save-txt", "--save-coco", "--precision", "fp32", "--threads", "1")


@pytest.fixture()
def folder(tmp_path) -> Path:
    return image_folder(tmp_path / "imgs", 5)


def files_of(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_interrupted_then_resumed_equals_one_go(tmp_path, tiny_ckpt, folder, monkeypatch):
    whole = tmp_path / "whole"
    assert run(*detect_args(tiny_ckpt, folder, *ARGS, "-o", whole)).exit_code == 0

    calls = {"n": 0}
    original = Detector.detect_batch

    def stop_at_third(self, images):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, images)

    out = tmp_path / "out"
    monkeypatch.setattr(Detector, "detect_batch", stop_at_third)
    first = run(*detect_args(tiny_ckpt, folder, *ARGS, "-o", out))
    assert first.exit_code == 130 and "interrupted after 2 of 5 images" in first.output
    assert "--resume continues" in " ".join(first.output.split())
    assert len(json.loads((out / "instances.json").read_text())["images"]) == 2
    monkeypatch.setattr(Detector, "detect_batch", original)

    again = run(*detect_args(tiny_ckpt, folder, *ARGS, "-o", out))
    assert again.exit_code == 2 and "--overwrite" in again.output  # without --resume nothing is replaced
    resumed = run(*detect_args(tiny_ckpt, folder, *ARGS, "-o", out, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert "kept the results of 2 images an earlier run finished; detected 3" in " ".join(resumed.output.split())
    assert files_of(out) == files_of(whole)  # JSON, images, labels, instances.json and the run record


def test_ctrl_c_while_an_image_is_written_still_records_it_in_the_coco_file(tmp_path, tiny_ckpt, folder, monkeypatch):
    """A real SIGINT between an image's JSON and its COCO entry (the fault suite once caught one there): the image
    is finished and listed, then the run stops."""
    import os
    import signal

    original = ResultFiles.write
    calls = {"n": 0}

    def interrupted_after_the_json(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)  # delivered at once in the main thread, but for interrupt_deferred
        return out

    monkeypatch.setattr(ResultFiles, "write", interrupted_after_the_json)
    out = tmp_path / "out"
    first = run(*detect_args(tiny_ckpt, folder, *ARGS, "-o", out))
    assert first.exit_code == 130 and "interrupted after 2 of 5 images" in first.output
    listed = [Path(im["file_name"]).stem for im in json.loads((out / "instances.json").read_text())["images"]]
    written = sorted(p.stem for p in out.glob("*.json") if p.name not in ("instances.json", RUN_FILE))
    assert listed == written == ["im0", "im1"]


def test_a_partly_written_image_is_done_again(tmp_path, tiny_ckpt, folder):
    out = tmp_path / "out"
    assert run(*detect_args(tiny_ckpt, folder, *ARGS, "-o", out)).exit_code == 0
    whole = files_of(out)
    (out / "im3.png").unlink()  # its JSON and labels are there, its annotated image is not
    (out / "labels" / "im1.txt").unlink()
    files = ResultFiles(out, save_txt=True)
    todo, kept = pending_images(expand_images([str(folder)]), files)
    assert todo == [1, 3] and kept == [0, 2, 4]
    res = run(*detect_args(tiny_ckpt, folder, *ARGS, "-o", out, "--resume"))
    assert res.exit_code == 0 and "detected 2" in res.output
    assert files_of(out) == whole


def test_resume_refuses_another_run(tmp_path, tiny_ckpt, folder):
    out = tmp_path / "out"
    assert run(*detect_args(tiny_ckpt, folder, *ARGS, "-o", out)).exit_code == 0
    before = files_of(out)
    cases = [
        (("--conf", "0.25"), "conf: 0.2 before, 0.25 now"),
        (("-c", "bus"), 'classes: ["person", "car"] before, ["person", "car", "bus"] now'),
        (("--masks",), "masks: false before, true now"),
    ]
    for extra, message in cases:
        res = run(*detect_args(tiny_ckpt, folder, *ARGS, *extra, "-o", out, "--resume"))
        assert res.exit_code == 2, res.output
        assert message in " ".join(res.output.split()) and "Traceback" not in res.output
    record = json.loads((out / RUN_FILE).read_text())
    record["model"]["fingerprint"] = "0123456789abcdef"  # results of other weights
    (out / RUN_FILE).write_text(json.dumps(record))
    res = run(*detect_args(tiny_ckpt, folder, *ARGS, "-o", out, "--resume"))
    assert res.exit_code == 2 and "model.fingerprint" in res.output
    before[RUN_FILE] = (out / RUN_FILE).read_bytes()
    assert files_of(out) == before  # nothing was written by a refused run


def test_resume_with_everything_done_detects_nothing(tmp_path, tiny_ckpt, folder):
    out = tmp_path / "out"
    assert run(*detect_args(tiny_ckpt, folder, *ARGS, "-o", out)).exit_code == 0
    before = files_of(out)
    res = run(*detect_args(tiny_ckpt, folder, *ARGS, "-o", out, "--resume"))
    assert res.exit_code == 0 and "kept the results of 5 images" in res.output and "detected 0" in res.output
    assert files_of(out) == before


def test_image_lists(tmp_path, folder):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "some.txt").write_text(f"# two images and a folder\n../imgs/im3.png\n\n{folder / 'im1.png'}\n")
    (lists / "all.txt").write_text("some.txt\n../imgs\n")
    assert [p.name for p in expand_images([str(lists / "some.txt")])] == ["im3.png", "im1.png"]
    assert [p.name for p in expand_images([str(lists / "all.txt")])] == ["im3.png", "im1.png", "im0.png", "im2.png",
                                                                          "im4.png"]  # duplicates once, in order
