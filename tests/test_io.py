"""The output layer (dart/io.py): plans refuse what would damage inputs or earlier results, writes are atomic,
OS errors are sentences, credentials never leave dart."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from dart.errors import OutputError, WriteError
from dart.io import (TEMP_MARK, Outputs, atomic_folder, atomic_path, file_or_folder, os_reason, redact, write_json,
                     write_text)


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if TEMP_MARK in p.name]


def test_an_output_that_is_an_input_is_refused_whatever_the_flags(tmp_path):
    image = tmp_path / "a.jpg"
    image.write_bytes(b"jpeg")
    for overwrite in (False, True):
        plan = Outputs(overwrite=overwrite)
        plan.input(image, "image")
        with pytest.raises(OutputError, match=r"is the image '.*a.jpg' this run reads; dart never writes over"):
            plan.file(image, "-o")
        with pytest.raises(OutputError, match="would receive 'a.jpg' over the image"):
            plan.folder(tmp_path, "-o", ["a.jpg", "a.json"])
        plan.folder(tmp_path, "-o", ["a.json"])  # a new file beside the input is fine
    assert image.read_bytes() == b"jpeg"


def test_hard_links_symlinks_and_relative_spellings_are_the_same_input(tmp_path, monkeypatch):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"video")
    os.link(video, tmp_path / "hard.mp4")
    (tmp_path / "soft.mp4").symlink_to(video)
    monkeypatch.chdir(tmp_path)
    plan = Outputs(overwrite=True)
    plan.input("clip.mp4", "video source")
    for name in ("hard.mp4", "soft.mp4", "./clip.mp4", str(video), "sub/../clip.mp4"):
        with pytest.raises(OutputError, match="video source"):
            plan.file(name)


def test_files_of_a_checkpoint_folder_are_inputs_but_new_files_beside_them_are_not(tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "model.safetensors").write_bytes(b"weights")
    plan = Outputs(overwrite=True)
    plan.input(ck, "checkpoint", contents=True)
    with pytest.raises(OutputError, match="is a file of the checkpoint '.*ck' this run reads"):
        plan.file(ck / "model.safetensors")
    plan.file(ck / "new.json")
    with pytest.raises(OutputError, match="is or holds the checkpoint"):
        plan.folder(ck, whole=True)
    with pytest.raises(OutputError, match="is or holds the checkpoint"):
        plan.folder(tmp_path, whole=True)


def test_earlier_results_need_overwrite_and_growing_files_do_not(tmp_path):
    (tmp_path / "a.json").write_text("{}")
    with pytest.raises(OutputError, match=r"already holds results this run would replace \(a.json\).*--overwrite"):
        Outputs().folder(tmp_path, "-o", ["a.json", "b.json"])
    with pytest.raises(OutputError, match="'.*a.json' already exists; pass --overwrite"):
        Outputs().file(tmp_path / "a.json")
    Outputs(overwrite=True).folder(tmp_path, "-o", ["a.json"])
    Outputs().file(tmp_path / "a.json", existing="extend")
    Outputs().folder(tmp_path, "-o", ["a.json"], existing="replace")
    many = [f"{i}.json" for i in range(6)]
    for name in many:
        (tmp_path / name).write_text("{}")
    with pytest.raises(OutputError, match=r"\(0.json, 1.json, 2.json and 3 more\)"):
        Outputs().folder(tmp_path, "-o", many)


def test_destinations_that_cannot_be_created_are_refused_up_front(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot be created: '.*blocker' is a file, not a folder"):
        Outputs().file(blocker / "deep" / "out.json")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        Outputs().folder(blocker)
    (tmp_path / "dir").mkdir()
    with pytest.raises(OutputError, match="is a folder; give a file name"):
        Outputs().file(tmp_path / "dir")
    assert not (tmp_path / "deep").exists() and blocker.read_text() == "x"


def test_atomic_path_keeps_the_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"old": True})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert target.read_text() == '{\n  "old": true\n}\n' and not leftovers(tmp_path)


def test_a_full_disk_is_one_sentence_and_leaves_nothing_behind(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    write_text(target, "earlier")

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(WriteError, match=r"cannot write '.*out.txt': the disk is full; nothing was left half-written"):
        write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "earlier" and not leftovers(tmp_path)


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    folder = tmp_path / "ck"
    with atomic_folder(folder) as staging:
        (staging / "a.txt").write_text("one")
    with pytest.raises(RuntimeError):
        with atomic_folder(folder) as staging:
            (staging / "a.txt").write_text("two")
            raise RuntimeError("failed half-way")
    assert (folder / "a.txt").read_text() == "one" and not leftovers(tmp_path)
    with atomic_folder(folder) as staging:
        (staging / "b.txt").write_text("three")
    assert sorted(p.name for p in folder.iterdir()) == ["b.txt"] and not leftovers(tmp_path)


def test_an_existing_file_is_a_file_whatever_its_suffix(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"x")
    assert file_or_folder(tmp_path / "model.bin", "backbone.engine", (".engine",)) == tmp_path / "model.bin"
    assert file_or_folder(tmp_path / "engines", "backbone.engine", (".engine",)) == tmp_path / "engines" / \
        "backbone.engine"


@pytest.mark.parametrize("text,expected", [
    ("rtsp://admin:hunter2@10.0.0.5/stream1", "rtsp://admin:***@10.0.0.5/stream1"),
    ("cannot open the stream 'rtsps://u:p%40ss@cam:554/x': check", "cannot open the stream 'rtsps://u:***@cam:554/x': check"),
    ("http://token@host/feed.mjpg", "http://***@host/feed.mjpg"),
    ("https://example.com/a.jpg?token=abc123&size=2", "https://example.com/a.jpg?token=***&size=2"),
    ("https://example.com/a.jpg", "https://example.com/a.jpg"),
    ("/data/videos/a@b.mp4", "/data/videos/a@b.mp4"),
])
def test_credentials_are_masked(text, expected):
    assert redact(text) == expected


def test_os_reasons_are_phrases():
    assert os_reason(OSError(errno.ENOSPC, "x")) == "the disk is full"
    assert os_reason(OSError(errno.EROFS, "x")) == "the file system is read-only"
    assert os_reason(OSError(errno.ECONNRESET, "Connection reset by peer")) == "connection reset by peer"


def test_ctrl_c_in_a_deferred_block_arrives_when_the_block_ends():
    import os
    import signal
    import time

    from dart.io import interrupt_deferred

    before = signal.getsignal(signal.SIGINT)
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with interrupt_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # without the deferral the KeyboardInterrupt would be raised here
            finished.append(True)
    assert finished == [True] and signal.getsignal(signal.SIGINT) is before
    with interrupt_deferred():  # no Ctrl-C: nothing is raised
        finished.append(True)
    assert finished == [True, True]
