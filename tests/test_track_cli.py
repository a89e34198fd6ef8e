"""``dart video`` / ``dart track`` end to end through the CLI on a tiny checkpoint and a generated mp4: files
parsed back, tracking from saved detections equals tracking live, errors are sentences that change nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from dart.cli import build_app
from tests.test_video import FRAMES, read_video, write_video
from tests.tiny import TINY_IMGSZ

runner = CliRunner()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4")


def run(*args):
    return runner.invoke(build_app(), [str(a) for a in args], env={"COLUMNS": "250"})


def model_args(tiny_ckpt):
    return ["--classes", "person", "car", "dog", "--checkpoint", tiny_ckpt, "--imgsz", TINY_IMGSZ, "--device", "cpu",
            "--no-progress"]


def mot_rows(path):
    return np.loadtxt(path, delimiter=",", ndmin=2)


def test_video_then_track_saved_detections_equals_live_tracking(tmp_path, tiny_ckpt, clip):
    raw = tmp_path / "raw.jsonl"
    res = run("video", clip, *model_args(tiny_ckpt), "--conf", "0.1", "--save-jsonl", raw, "-o", tmp_path / "a.mp4")
    assert res.exit_code == 0, res.output
    lines = raw.read_text().splitlines()
    assert len(lines) == FRAMES and all("track_id" not in json.dumps(json.loads(x)) for x in lines)
    assert len(read_video(tmp_path / "a.mp4")[0]) == FRAMES
    assert "FPS" in res.output and "backbone" in res.output and "encdec" in res.output

    offline = tmp_path / "offline.txt"
    res = run("track", "--detections", raw, "-o", offline, "--track-thresh", "0.3")
    assert res.exit_code == 0, res.output
    live = tmp_path / "live.txt"
    res = run("track", clip, *model_args(tiny_ckpt), "--track-thresh", "0.3", "--save-mot", live, "-o",
              tmp_path / "t.mp4", "--save-jsonl", tmp_path / "t.jsonl")
    assert res.exit_code == 0, res.output
    a, b = mot_rows(offline), mot_rows(live)
    assert len(a) > 0 and a.shape == b.shape and a.shape[1] == 10
    np.testing.assert_array_equal(a[:, [0, 1, 7]], b[:, [0, 1, 7]])  # frame, track id, class
    np.testing.assert_allclose(a[:, 2:7], b[:, 2:7], atol=0.011)  # JSONL keeps 2 decimals of the boxes
    assert sorted(set(a[:, 0].astype(int))) == list(range(1, FRAMES + 1))
    tracked = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert len(tracked) == FRAMES and all("track_id" in d for rec in tracked for d in rec["detections"])


def test_track_saved_detections_with_class_agnostic_nms(tmp_path):
    """The same vehicle saved as car and van on every frame: one track with NMS, two without."""
    dets = tmp_path / "dets.jsonl"
    with open(dets, "w") as f:
        for i in range(6):
            box = [10.0 + 3 * i, 20.0, 60.0 + 3 * i, 50.0]
            rows = [{"box_xyxy": box, "score": 0.9, "class_id": 0, "class_name": "car"},
                    {"box_xyxy": [box[0] + 1, box[1], box[2], box[3] + 1], "score": 0.8, "class_id": 1,
                     "class_name": "van"}]
            f.write(json.dumps({"frame": i, "time": i / 30, "width": 100, "height": 80, "detections": rows}) + "\n")
    out = tmp_path / "tracks.txt"
    res = run("track", "--detections", dets, "-o", out, "--class-agnostic-nms", "0.5")
    assert res.exit_code == 0, res.output
    rows = mot_rows(out)
    assert len(rows) == 6 and set(rows[:, 1]) == {1} and set(rows[:, 7]) == {0}
    res = run("track", "--detections", dets, "--save-jsonl", tmp_path / "t.jsonl", "--start", "2", "--stride", "2")
    assert res.exit_code == 0, res.output
    frames = [json.loads(x)["frame"] for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert frames == [2, 4]


def test_track_errors_are_sentences_and_change_nothing(tmp_path, clip):
    out = tmp_path / "tracks.txt"
    out.write_text("previous result\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"frame": 0, "detections": []}\n{"frame": 1, "detec\n')
    res = run("track", "--detections", bad, "-o", out)
    assert res.exit_code == 2 and "already exists" in res.output and "--overwrite" in res.output
    res = run("track", "--detections", bad, "-o", out, "--overwrite")  # allowed to replace it, but the input is bad
    assert res.exit_code == 2 and "line 2" in res.output
    assert out.read_text() == "previous result\n"
    res = run("track")
    assert res.exit_code == 2 and "nothing to track" in res.output
    res = run("track", clip, "--detections", bad, "-o", out)
    assert res.exit_code == 2 and "not both" in res.output
    res = run("track", "--detections", tmp_path / "missing.jsonl", "-o", out)
    assert res.exit_code == 2 and "does not exist" in res.output
    res = run("track", "--detections", bad)
    assert res.exit_code == 2 and "where the tracks go" in res.output
    assert out.read_text() == "previous result\n"
    res = run("track", "--detections", bad, "-o", out, "--tracker", "nope")
    assert res.exit_code == 2 and "no tracker named 'nope'" in res.output


def test_video_errors_are_sentences_and_change_nothing(tmp_path, tiny_ckpt, clip):
    video, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    video.write_bytes(b"previous video")
    jsonl.write_text("previous\n")
    res = run("video", clip, *model_args(tiny_ckpt), "-o", video, "--save-jsonl", jsonl)
    assert res.exit_code == 2 and "already exists" in res.output, res.output
    for source, message in ((tmp_path / "missing.mp4", "does not exist"), (tmp_path / "m.jsonl", "cannot read video")):
        if source.suffix == ".jsonl":
            source.write_text("not a video\n")
        res = run("video", source, *model_args(tiny_ckpt), "-o", video, "--save-jsonl", jsonl, "--overwrite")
        assert res.exit_code == 2 and message in res.output, res.output
    res = run("video", clip, *model_args(tiny_ckpt), "-o", video, "--save-jsonl", video)
    assert res.exit_code == 2 and "three different files" in res.output, res.output
    res = run("video", clip, *model_args(tiny_ckpt), "--save-mot", tmp_path / "m.txt")
    assert res.exit_code == 2 and "--track" in res.output
    res = run("video", clip, *model_args(tiny_ckpt), "--display")
    assert res.exit_code == 4 and "--display needs" in res.output
    res = run("video", clip, "--checkpoint", tiny_ckpt)
    assert res.exit_code == 2 and "no classes" in res.output
    assert video.read_bytes() == b"previous video" and jsonl.read_text() == "previous\n"
    assert not (tmp_path / "m.txt").exists()


def test_video_jsonl_to_stdout_and_sequential(tmp_path, tiny_ckpt, clip):
    res = run("video", clip, *model_args(tiny_ckpt), "--sequential", "--max-frames", "3", "--save-jsonl", "-")
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert [r["frame"] for r in records] == [0, 1, 2]


def test_help_lists_every_flag_with_defaults():
    for command in ("video", "track"):
        res = run(command, "--help")
        assert res.exit_code == 0
        text = " ".join(res.output.split())
        for flag in ("--output", "--save-jsonl", "--max-frames", "--start", "--stride", "--display", "--sequential",
                     "--track-thresh", "--match-thresh", "--max-time-lost", "--class-agnostic-nms", "--backend",
                     "--engines", "--coco", "--text-cache", "--imgsz", "--prune-spec"):
            assert flag in text, (command, flag)
        assert "[default: 0.5]" in text and "[default: 30]" in text
    assert "--detections" in " ".join(run("track", "--help").output.split())
