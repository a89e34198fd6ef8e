"""Per-frame cost of the ByteTrack tracker for many objects (CPU; no model involved).

    python benchmarks/tracker.py                  # 100 objects, 300 frames
    python benchmarks/tracker.py --objects 20 50 100 200 --frames 500 --reference
    python benchmarks/tracker.py --botsort        # + BoT-SORT on 1280x720 frames, motion estimation included

Synthetic scene: objects moving at constant speed and bouncing off the borders, box jitter, 5 % missed and 10 %
low-score detections, a few one-frame false positives. Prints median and p95 milliseconds per
``tracker.update`` call, as CPU time of the calling thread and as wall-clock time (the time to build the input Detections is not counted) and, with ``--reference``, the
same for the published ``cjm-byte-track`` implementation (dev extra) on the same detection stream. With
``--botsort``: BoT-SORT (ByteTrack + camera motion compensation) fed 1280x720 frames of a panning, shaking camera
over a textured scene, its camera motion estimate included in the time, next to ByteTrack on the same 720p stream.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from dart.detections import Detections
from dart.tracking import ByteTrack
from dart.tracking.botsort import BoTSORT


def detection_stream(objects: int, frames: int, seed: int = 0, size: tuple[int, int] = (1080, 1920)) -> list[Detections]:
    rng = np.random.default_rng(seed)
    h, w = size
    pos = rng.uniform([60, 60], [w - 60, h - 60], (objects, 2))
    vel = rng.uniform(-6, 6, (objects, 2))
    wh = rng.uniform([20, 40], [60, 120], (objects, 2))
    names = np.array(["person", "car", "bicycle"], dtype=object)
    stream = []
    for _ in range(frames):
        pos += vel
        for k, limit in enumerate((w, h)):
            out = (pos[:, k] < wh[:, k] / 2) | (pos[:, k] > limit - wh[:, k] / 2)
            vel[out, k] *= -1
            pos[:, k] = np.clip(pos[:, k], wh[:, k] / 2, limit - wh[:, k] / 2)
        r = rng.random(objects)
        keep = r >= 0.05
        scores = np.where(r < 0.15, rng.uniform(0.2, 0.45, objects), rng.uniform(0.6, 0.95, objects))[keep]
        centre = pos[keep] + rng.normal(0, 1.5, (int(keep.sum()), 2))
        xyxy = np.concatenate([centre - wh[keep] / 2, centre + wh[keep] / 2], axis=1)
        classes = (np.arange(objects) % 3)[keep]
        if rng.random() < 0.3:
            fp = rng.uniform([0, 0], [w - 40, h - 40])
            xyxy = np.concatenate([xyxy, [[fp[0], fp[1], fp[0] + 30, fp[1] + 30]]])
            scores = np.append(scores, rng.uniform(0.3, 0.55))
            classes = np.append(classes, 0)
        stream.append(Detections(xyxy, scores, classes, names[classes], image_size=size))
    return stream


def timed(update, inputs: list, warmup: int = 20) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU (this thread) milliseconds per call, after ``warmup`` untimed calls. On a busy machine
    the CPU time is the better measure of the tracker's own cost."""
    wall, cpu = [], []
    for i, item in enumerate(inputs):
        w0, c0 = time.perf_counter(), time.thread_time()
        update(item)
        c1, w1 = time.thread_time(), time.perf_counter()
        if i >= warmup:
            wall.append((w1 - w0) * 1000.0)
            cpu.append((c1 - c0) * 1000.0)
    return wall, cpu


def time_ours(stream: list[Detections]) -> tuple[list[float], list[float]]:
    return timed(ByteTrack().update, stream)


def panning_frames(frames: int, size: tuple[int, int] = (720, 1280), seed: int = 0):
    """``frames`` BGR images of a camera panning 8 px per frame (plus 3 px shake) over smooth random texture; views
    into one large picture, copied to contiguous frames one at a time (outside the timed call)."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size
    cam = np.round(np.arange(frames)[:, None] * np.array([8, 1]) + rng.normal(0, 3, (frames, 2))).astype(int)
    cam -= cam.min(axis=0)
    hh, ww = h + int(cam[:, 1].max()) + 1, w + int(cam[:, 0].max()) + 1
    small = rng.integers(0, 256, (hh // 8, ww // 8, 3)).astype(np.uint8)
    world = cv2.resize(small, (ww, hh), interpolation=cv2.INTER_CUBIC)
    for x, y in cam:
        yield np.ascontiguousarray(world[y:y + h, x:x + w])


def time_botsort(stream: list[Detections], size: tuple[int, int] = (720, 1280)) -> tuple[list[float], list[float]]:
    tracker = BoTSORT()
    return timed(lambda item: tracker.update(item[0], image=item[1]), zip(stream, panning_frames(len(stream), size)))


def best_of(repeat: int, run) -> tuple[list[float], list[float]]:
    """The run with the lowest median CPU time out of ``repeat`` (as timeit does: the least disturbed one)."""
    runs = [run() for _ in range(max(1, repeat))]
    return min(runs, key=lambda r: statistics.median(r[1]))


def time_reference(stream: list[Detections], size: tuple[int, int] = (1080, 1920)) -> tuple[list[float], list[float]]:
    from cjm_byte_track.core import BYTETracker

    tracker = BYTETracker(track_thresh=0.5, track_buffer=30, match_thresh=0.5, frame_rate=30)
    arrays = [np.concatenate([d.xyxy, d.scores[:, None]], axis=1).astype(np.float64) for d in stream]
    return timed(lambda results: tracker.update(results, size, size), arrays)


def row(name: str, objects: int, times: tuple[list[float], list[float]]) -> list[str]:
    wall, cpu = times
    return [name, str(objects), f"{statistics.median(cpu):.3f}", f"{float(np.percentile(cpu, 95)):.3f}",
            f"{statistics.median(wall):.3f}", f"{float(np.percentile(wall, 95)):.3f}"]


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, nargs="+", default=[100], help="objects per frame (default: 100)")
    parser.add_argument("--frames", type=int, default=300, help="frames per run (default: 300)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per setting; the least disturbed is shown (default: 3)")
    parser.add_argument("--reference", action="store_true", help="also time cjm-byte-track (pip install cjm-byte-track)")
    parser.add_argument("--botsort", action="store_true",
                        help="also time BoT-SORT on 1280x720 frames, camera motion estimate included (and ByteTrack "
                             "on the same detections)")
    args = parser.parse_args()

    table = Table(title=f"tracker.update cost per frame ({cpu_name()}, {args.frames} frames, best of {args.repeat} "
                        "runs)", title_justify="left")
    for col in ("tracker", "objects", "CPU median ms", "CPU p95 ms", "wall median ms", "wall p95 ms"):
        table.add_column(col, justify="right" if col != "tracker" else "left", no_wrap=True)
    for n in args.objects:
        stream = detection_stream(n, args.frames)
        table.add_row(*row("dart ByteTrack", n, best_of(args.repeat, lambda: time_ours(stream))))
        if args.reference:
            table.add_row(*row("cjm-byte-track", n, best_of(args.repeat, lambda: time_reference(stream))))
        if args.botsort:
            hd = detection_stream(n, args.frames, size=(720, 1280))
            table.add_row(*row("dart ByteTrack, 1280x720", n, best_of(args.repeat, lambda: time_ours(hd))))
            table.add_row(*row("dart BoT-SORT, 1280x720 frames", n, best_of(args.repeat, lambda: time_botsort(hd))))
    Console().print(table)


if __name__ == "__main__":
    main()
