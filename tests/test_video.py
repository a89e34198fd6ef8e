"""Video sources, writers and runners on a short generated mp4 with a tiny SAM3: outputs parsed back,
pipelined == sequential == per-frame detect, and partial outputs stay valid when a run is cut short."""

from __future__ import annotations

import copy
import json
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from dart.detections import Detections
from dart.detector import Detector
from dart.errors import DependencyError, InputError
from dart.tracking import ByteTrack
from dart.video import (DecodeAhead, Frame, StreamError, VideoSource, benchmark_video, open_source, read_jsonl,
                        run_video, same_detections)
from dart.video.writers import JsonlWriter, VideoWriter
from tests.conftest import make_image

CLASSES = ["person", "car", "dog"]
FRAMES, FPS, SIZE = 12, 10, (160, 90)


def frame_image(i: int) -> np.ndarray:
    return np.ascontiguousarray(np.roll(make_image(seed=0), 2 * i, axis=1))


def write_video(path: Path, frames: int = FRAMES) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    for i in range(frames):
        writer.write(frame_image(i))
    writer.release()
    return path


@pytest.fixture(scope="module")
def video_file(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4")


@pytest.fixture(scope="module")
def detector(tiny_backend) -> Detector:
    return Detector(tiny_backend, CLASSES, conf=0.1)


def tracker() -> ByteTrack:
    return ByteTrack(track_thresh=0.3)  # the tiny random model scores its boxes around 0.55


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return frames, fps


class ListSource(VideoSource):
    """In-memory frames; raises ``fail`` after ``fail_after`` frames (a stream dying mid-way)."""

    def __init__(self, images, fail_after: int | None = None, live: bool = False, fail: type = StreamError):
        self.images, self.fail_after, self.live, self.fail = images, fail_after, live, fail
        self.name, self.fps, self.size, self.total = "list", float(FPS), SIZE, None if live else len(images)
        self.closed = False

    def __iter__(self):
        for i, image in enumerate(self.images):
            if self.fail_after is not None and i == self.fail_after:
                raise self.fail(f"the stream stopped after {i} frames.")
            yield Frame(i, image, i / self.fps)

    def close(self):
        self.closed = True


# ----------------------------------------------------------------------------------------------- sources
def test_file_source_start_stride_max_frames(video_file):
    with open_source(video_file) as src:
        assert (src.total, src.fps, src.size, src.live) == (FRAMES, FPS, SIZE, False)
        frames = list(src)
    assert [f.index for f in frames] == list(range(FRAMES))
    assert frames[3].time == pytest.approx(0.3)
    with open_source(str(video_file), start=2, stride=3) as src:
        assert src.total == 4 and [f.index for f in src] == [2, 5, 8, 11]
    with open_source(video_file, start=2, stride=3, max_frames=2) as src:
        got = list(src)
        assert src.total == 2 and [f.index for f in got] == [2, 5]
    # the frames decoded after skipping are the right ones (grab() keeps the count exact)
    np.testing.assert_array_equal(got[1].image, frames[5].image)


def test_folder_glob_and_single_image_sources(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"f{i:03d}.png"), frame_image(i))
    src = open_source(folder, stride=2, fps=5)
    frames = list(src)
    assert [f.index for f in frames] == [0, 2, 4] and src.fps == 5 and frames[1].time == pytest.approx(0.4)
    np.testing.assert_array_equal(frames[2].image, frame_image(4))
    assert [f.index for f in open_source(str(folder / "f00[1-3].png"))] == [0, 1, 2]
    assert len(list(open_source(folder / "f004.png"))) == 1


def test_bad_sources_are_one_sentence(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_source(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 50)
    with pytest.raises(InputError, match="cannot read video"):
        list(open_source(junk))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        open_source(tmp_path / "empty")
    with pytest.raises(InputError, match="matches no image"):
        open_source(str(tmp_path / "*.jpg"))
    with pytest.raises(InputError, match="cannot open camera 99"):
        open_source("99")
    with pytest.raises(InputError, match="cannot open the stream"):
        open_source("rtsp://127.0.0.1:9/nothing")
    with pytest.raises(InputError, match="--stride"):
        open_source(junk, stride=0)


class FlakyCapture:
    """Stands in for cv2.VideoCapture on a live RTSP stream: each opening in ``sessions`` delivers that many frames
    and then stops; ``None`` is an opening that fails. Frame i has the value i in its first pixel."""

    def __init__(self, sessions):
        self.sessions, self.opened, self.sent = list(sessions), 0, 0

    def __call__(self, spec, api=None):
        count = self.sessions[self.opened] if self.opened < len(self.sessions) else None
        self.opened += 1
        outer = self

        class Cap:
            left = count

            def isOpened(self):  # noqa: N802 - OpenCV's name
                return count is not None

            def get(self, prop):
                return {cv2.CAP_PROP_FPS: 25.0, cv2.CAP_PROP_FRAME_WIDTH: 8, cv2.CAP_PROP_FRAME_HEIGHT: 6}.get(prop, 0)

            def read(self):
                if not self.left:
                    return False, None
                self.left -= 1
                image = np.zeros((6, 8, 3), np.uint8)
                image[0, 0, 0] = outer.sent
                outer.sent += 1
                return True, image

            def release(self):
                pass

        return Cap()


def test_live_stream_reconnects_and_frame_numbers_carry_on(monkeypatch):
    import dart.video.sources as sources

    monkeypatch.setattr(sources, "RECONNECT_FIRST_DELAY", 0.001)
    monkeypatch.setattr(sources, "LIVE_READ_RETRIES", 1)
    # 3 frames, drop; reopen fails once, then 2 frames, drop; reopen works but sends nothing; two failures
    fake = FlakyCapture([3, None, 2, 0, None, None])
    monkeypatch.setattr(sources.cv2, "VideoCapture", fake)
    src = open_source("rtsp://camera/stream", reconnect=3)
    assert src.live
    frames = []
    with pytest.raises(StreamError, match="after 5 frames, and 3 reconnection attempts failed"):
        for frame in src:
            frames.append(frame)
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 1, 2, 3, 4]
    assert src.reconnects == 2 and fake.opened == 6  # the tries counted since the last frame, not in total

    fake = FlakyCapture([3, 2])
    monkeypatch.setattr(sources.cv2, "VideoCapture", fake)
    with pytest.raises(StreamError, match="after 3 frames \\(the results"):
        list(open_source("rtsp://camera/stream"))  # reconnect=0: stop at the first drop, as before
    assert fake.opened == 1
    with pytest.raises(InputError, match="--reconnect"):
        open_source("rtsp://camera/stream", reconnect=-1)


def test_closing_the_decoder_stops_a_reconnection_wait(monkeypatch):
    import dart.video.sources as sources

    monkeypatch.setattr(sources, "RECONNECT_FIRST_DELAY", 60.0)
    monkeypatch.setattr(sources, "RECONNECT_MAX_DELAY", 60.0)
    monkeypatch.setattr(sources, "LIVE_READ_RETRIES", 1)
    monkeypatch.setattr(sources.cv2, "VideoCapture", FlakyCapture([2, 5]))
    reader = DecodeAhead(open_source("rtsp://camera/stream", reconnect=2), depth=4)
    it = iter(reader)
    assert [next(it).index, next(it).index] == [0, 1]  # then the stream drops and the reader waits 60 s
    reader.close(timeout=5.0)
    assert not reader._thread.is_alive()  # woken by close(), not after the 60 s


def test_http_url_source(video_file):
    """A URL goes through OpenCV's FFmpeg network reader (a server on the loopback interface)."""
    import functools
    import http.server
    import socketserver

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = socketserver.TCPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(video_file.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{video_file.name}"
        with open_source(url, max_frames=5) as src:
            assert src.kind == "stream" and src.size == SIZE
            frames = list(src)
        assert [f.index for f in frames] == [0, 1, 2, 3, 4]
        with open_source(video_file) as local:
            np.testing.assert_array_equal(frames[4].image, list(local)[4].image)
        with pytest.raises(InputError, match="cannot open the stream"):
            open_source(url.replace(video_file.name, "missing.mp4"))
    finally:
        server.shutdown()
        server.server_close()


def test_start_past_the_end(video_file):
    with pytest.raises(InputError, match="past the end"):
        open_source(video_file, start=FRAMES)


def test_decode_ahead_keeps_order_and_reports_the_error_after_the_frames():
    src = ListSource([frame_image(i) for i in range(8)], fail_after=5)
    reader = DecodeAhead(src, depth=2)
    got = []
    with pytest.raises(StreamError, match="stopped after 5"):
        for frame in reader:
            got.append(frame.index)
    reader.close()
    assert got == [0, 1, 2, 3, 4] and src.closed


def test_decode_ahead_drops_oldest_frames_of_a_slow_live_source():
    import time

    src = ListSource([frame_image(i % 3) for i in range(60)], live=True)
    reader = DecodeAhead(src, depth=2)
    got = []
    for frame in reader:
        got.append(frame.index)
        time.sleep(0.01)
    reader.close()
    assert reader.dropped > 0 and len(got) + reader.dropped == 60
    assert got == sorted(got) and got[-1] == 59  # in order, and the newest frame is never the one dropped


# ----------------------------------------------------------------------------------------------- writers
def test_writers_leave_previous_files_alone_until_closed(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("previous good file\n")
    writer = JsonlWriter(target)
    writer.write(0, 0.0, Detections.empty((90, 160)), (90, 160))
    assert target.read_text() == "previous good file\n"  # still untouched while writing
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert len(partial) == 1 and json.loads(partial[0].read_text())["frame"] == 0  # complete line, flushed
    assert writer.close() and json.loads(target.read_text())["frame"] == 0
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # a normal file's mode, not mkstemp's private 0600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    unused = JsonlWriter(tmp_path / "never.jsonl")
    assert not unused.close() and not (tmp_path / "never.jsonl").exists()
    with pytest.raises(InputError, match=r"\.mp4"):
        VideoWriter(tmp_path / "out.gif", 10)


# ------------------------------------------------------------------------------------------ end to end
def run_all(detector, source, tmp_path: Path, tag: str, **kwargs):
    collected: list[Detections] = []
    result = run_video(detector, source, tracker=tracker(), output=tmp_path / f"{tag}.mp4",
                       save_jsonl=tmp_path / f"{tag}.jsonl", save_mot=tmp_path / f"{tag}.txt", progress=False,
                       on_frame=lambda frame, dets: collected.append(dets), **kwargs)
    return result, collected


def test_video_end_to_end_outputs_parse_back(detector, video_file, tmp_path):
    result, tracked = run_all(detector, video_file, tmp_path, "pipe")
    assert result.frames == FRAMES and result.stopped == "end" and result.mode == "pipelined"
    assert set(result.outputs) == {"video", "jsonl", "mot"}
    frames, fps = read_video(tmp_path / "pipe.mp4")
    assert len(frames) == FRAMES and fps == pytest.approx(FPS) and frames[0].shape == (SIZE[1], SIZE[0], 3)
    records = read_jsonl(tmp_path / "pipe.jsonl")
    assert [r[0] for r in records] == list(range(FRAMES))
    assert all(size == (SIZE[1], SIZE[0]) for _, _, size, _ in records)
    assert sum(len(r[3]) for r in records) > 0, "the tiny model tracks something"
    for (frame, _, _, rows), dets in zip(records, tracked):
        back = Detections.from_json(rows)
        assert back.track_ids.tolist() == dets.track_ids.tolist()
        np.testing.assert_allclose(back.xyxy, dets.xyxy, atol=0.01)
    mot = np.loadtxt(tmp_path / "pipe.txt", delimiter=",", ndmin=2)
    expected = [row.split(",") for f, dets in enumerate(tracked) for row in dets.to_mot(f + 1)]
    assert mot.shape == (len(expected), 10)
    np.testing.assert_allclose(mot, np.array(expected, dtype=float))
    assert set(mot[:, 0].astype(int)) <= set(range(1, FRAMES + 1)) and (mot[:, 8:] == -1).all()
    stages = set(result.stages)
    assert {"decode", "preprocess", "backbone", "encdec", "post", "track", "draw", "write"} <= stages


@pytest.mark.parametrize("overlap_stages", [False, True])
def test_pipelined_equals_sequential_equals_detect(detector, video_file, tmp_path, overlap_stages):
    """Same detections whatever the runner; overlap_stages=True runs the backbone / encoder-decoder split that
    CUDA uses (here on CPU threads, without streams)."""
    seq, seq_dets = run_all(detector, video_file, tmp_path, "seq", sequential=True)
    pipe, pipe_dets = run_all(detector, video_file, tmp_path, "pipe", overlap_stages=overlap_stages)
    assert seq.frames == pipe.frames == FRAMES
    assert same_detections(seq_dets, pipe_dets)
    assert [d.track_ids.tolist() for d in seq_dets] == [d.track_ids.tolist() for d in pipe_dets]
    assert (tmp_path / "seq.jsonl").read_text() == (tmp_path / "pipe.jsonl").read_text()
    raw: list[Detections] = []
    run_video(detector, video_file, progress=False, overlap_stages=overlap_stages,
              on_frame=lambda frame, dets: raw.append(dets))
    with open_source(video_file) as src:
        reference = [detector.detect(f.image) for f in src]
    assert same_detections(raw, reference)
    assert sum(len(d) for d in reference) > 0


def test_detection_worker_path_used_with_a_preview_window(detector, video_file):
    """With --display on the CPU, detection runs in a worker and the caller handles frames: same detections."""
    from dart.video.pipeline import _drain, _pipelined_stages

    stop = threading.Event()
    with open_source(video_file) as src:
        workers, results = _pipelined_stages(detector, iter(src), stop, depth=2, overlap_stages=False)
        for worker in workers:
            worker.start()
        got = list(_drain(results, stop))
        reference = [detector.detect(f.image) for f in open_source(video_file)]
    assert [f.index for f, _ in got] == list(range(FRAMES))
    assert same_detections([d for _, d in got], reference)


@pytest.mark.parametrize("sequential", [True, False])
def test_stream_dying_mid_way_keeps_valid_partial_outputs(detector, tmp_path, sequential):
    (tmp_path / "cut.mp4").write_bytes(b"an older result that must be replaced by the partial run")
    source = ListSource([frame_image(i) for i in range(10)], fail_after=5)
    with pytest.raises(StreamError, match="stopped after 5") as info:
        run_all(detector, source, tmp_path, "cut", sequential=sequential)
    result = info.value.result
    assert result.frames == 5 and result.stopped == "error" and source.closed
    frames, _ = read_video(tmp_path / "cut.mp4")
    assert len(frames) == 5  # finalised: playable
    lines = (tmp_path / "cut.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == [0, 1, 2, 3, 4]
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


@pytest.mark.parametrize("sequential", [True, False])
def test_ctrl_c_flushes_and_closes_everything(detector, video_file, tmp_path, sequential):
    def interrupt(frame, dets):
        if frame.index == 3:
            raise KeyboardInterrupt

    result = run_video(detector, video_file, output=tmp_path / "i.mp4", save_jsonl=tmp_path / "i.jsonl",
                       progress=False, sequential=sequential, on_frame=interrupt)
    assert result.stopped == "interrupted" and result.frames == 4
    assert len(read_video(tmp_path / "i.mp4")[0]) == 4
    assert len((tmp_path / "i.jsonl").read_text().splitlines()) == 4
    assert not [t for t in threading.enumerate() if t.name.startswith("dart-") and t.is_alive()]


def test_a_real_ctrl_c_between_two_outputs_leaves_them_agreeing(detector, video_file, tmp_path, monkeypatch):
    """SIGINT after a frame's JSONL line, before its MOT rows and video frame: the frame is finished everywhere."""
    import signal

    original = JsonlWriter.write

    def interrupted_after_the_line(self, frame, *args, **kwargs):
        original(self, frame, *args, **kwargs)
        if frame == 3:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(JsonlWriter, "write", interrupted_after_the_line)
    result = run_video(detector, video_file, tracker=ByteTrack(), output=tmp_path / "i.mp4",
                       save_jsonl=tmp_path / "i.jsonl", save_mot=tmp_path / "i.txt", progress=False, sequential=True)
    assert result.stopped == "interrupted" and result.frames == 4
    assert [json.loads(line)["frame"] for line in (tmp_path / "i.jsonl").read_text().splitlines()] == [0, 1, 2, 3]
    assert len(read_video(tmp_path / "i.mp4")[0]) == 4
    mot_frames = {int(line.split(",")[0]) for line in (tmp_path / "i.txt").read_text().splitlines()}
    assert mot_frames <= {1, 2, 3, 4}  # MOT counts frames from 1; frames without tracks have no rows


def test_user_stop_and_max_frames(detector, video_file, tmp_path):
    result = run_video(detector, video_file, progress=False, on_frame=lambda frame, dets: frame.index < 2)
    assert result.stopped == "user" and result.frames == 3
    result = run_video(detector, open_source(video_file, max_frames=4), progress=False)
    assert result.frames == 4 and result.stopped == "end"


def test_save_mot_needs_a_tracker_and_display_needs_a_gui(detector, video_file, tmp_path):
    with pytest.raises(InputError, match="--save-mot"):
        run_video(detector, video_file, save_mot=tmp_path / "m.txt", progress=False)
    with pytest.raises(DependencyError, match="--display needs"):
        run_video(detector, video_file, display=True, progress=False)
    assert not (tmp_path / "m.txt").exists()


def test_benchmark_video_compares_both_modes(detector, video_file):
    report = benchmark_video(detector, str(video_file), max_frames=6, warmup=1)
    assert report["frames"] == 6 and report["identical"] is True
    assert report["sequential"]["fps"] > 0 and report["pipelined"]["fps"] > 0
    assert report["speedup"] == pytest.approx(report["pipelined"]["fps"] / report["sequential"]["fps"])
    assert {"backbone", "encdec"} <= set(report["sequential"]["stages"])
    assert report["device"] == "cpu" and report["classes"] == len(CLASSES)


@pytest.mark.cuda
def test_cuda_two_stream_pipeline_equals_sequential(tiny_loaded, video_file, tmp_path):
    """On CUDA the pipelined runner puts the backbone and the encoder-decoder on two streams: same detections and
    tracks as the sequential runner (a missing stream wait would show up as different or garbage boxes)."""
    from dart.backends.torch_backend import TorchBackend

    cuda = Detector(TorchBackend(copy.deepcopy(tiny_loaded), device="cuda"), CLASSES, conf=0.1)  # a copy: .to moves
    seq, seq_dets = run_all(cuda, video_file, tmp_path, "seq", sequential=True)
    pipe, pipe_dets = run_all(cuda, video_file, tmp_path, "pipe")
    assert seq.frames == pipe.frames == FRAMES and pipe.mode == "pipelined"
    assert same_detections(seq_dets, pipe_dets, atol=1e-4)
    assert [d.track_ids.tolist() for d in seq_dets] == [d.track_ids.tolist() for d in pipe_dets]
    assert sum(len(d) for d in seq_dets) > 0
