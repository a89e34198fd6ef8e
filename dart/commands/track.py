"""``dart track``: ``dart video --track`` — or, with ``--detections``, tracking of saved detections without a model.

The options are those of ``dart video`` (the signature is derived from it, so the two commands never drift
apart), with tracking always on, ``SOURCE`` optional and ``--detections FILE`` added.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from dart.commands import video as video_cmd

Detections = Annotated[Optional[Path], typer.Option(
    "--detections", rich_help_panel=video_cmd.TRACKING,
    help="Track the detections saved by `dart video --save-jsonl` (no model needed); -o gets the MOT rows.")]
TrackSource = Annotated[Optional[str], typer.Argument(
    help="Video file, folder or quoted glob of frames, camera index (0) or stream URL. Omit with --detections.")]
TrackOutput = Annotated[Optional[Path], typer.Option(
    "--output", "-o", rich_help_panel=video_cmd.VIDEO,
    help="With SOURCE: the annotated video (.mp4, .avi, ...). With --detections: the MOT file (tracks.txt).")]
TRACKER_FLAGS = ("tracker", "track_thresh", "match_thresh", "max_time_lost")


def track(ctx: typer.Context, **params: Any) -> None:
    """Track objects in a video, camera or stream (dart video --track), or in saved detections (--detections).

    Examples: [bold]dart track street.mp4 -c person car -o tracks.mp4 --save-mot tracks.txt[/] ·
    [bold]dart track --detections dets.jsonl -o tracks.txt[/]
    """
    from dart.errors import InputError

    source, detections = params.pop("source"), params.pop("detections")
    tracker_options = {"name": params.pop("tracker"), **{k: params.pop(k) for k in TRACKER_FLAGS[1:]}}
    if detections is not None:
        if source is not None:
            raise InputError("give either a SOURCE to run the detector on or --detections FILE, not both.")
        _track_saved(detections, tracker_options, params)
        return
    if source is None:
        raise InputError("nothing to track: give a video, folder, camera index or URL, or --detections FILE.")
    video_cmd.run_video_command(ctx, source=source, track=True, tracker_options=tracker_options, **params)


def _track_saved(detections: Path, tracker_options: dict[str, Any], params: dict[str, Any]) -> None:
    from dart.errors import InputError
    from dart.io import Outputs
    from dart.render import count
    from dart.video.pipeline import track_saved_detections

    output, save_jsonl = params["output"], params["save_jsonl"]
    mot = params["save_mot"] or output
    if params["save_mot"] is not None and output is not None:
        raise InputError("with --detections, -o is the MOT file: give -o or --save-mot, not both.")
    if mot is None and save_jsonl is None:
        raise InputError("say where the tracks go: -o tracks.txt (MOT rows) and/or --save-jsonl tracks.jsonl.")
    console = Console(stderr=save_jsonl == "-")
    extra = {"nms_iou": params["class_agnostic_nms"]} if params["class_agnostic_nms"] is not None else {}
    tracker = video_cmd.build_tracker(**tracker_options, **extra)
    plan = Outputs(overwrite=params["overwrite"])
    plan.input(detections, "detections file", required=True)
    if mot is not None:
        plan.file(mot, "-o/--save-mot")
    if save_jsonl not in (None, "-"):
        plan.file(save_jsonl, "--save-jsonl")
    if mot is not None and save_jsonl not in (None, "-") and Path(mot).resolve() == Path(save_jsonl).resolve():
        raise InputError("the MOT file and --save-jsonl must be two different files.")
    stats = track_saved_detections(detections, tracker, save_mot=mot, save_jsonl=save_jsonl,
                                   start=params["start"], stride=params["stride"], max_frames=params["max_frames"],
                                   progress=params["progress"], console=console)
    console.print(f"{count(stats['frames'], 'frame')}, {count(stats['detections'], 'detection')} -> "
                  f"{count(stats['tracks'], 'track')} "
                  f"({stats['tracked']} tracked boxes, {stats['ms_per_frame']:.3f} ms per frame in the tracker)",
                  highlight=False)
    for kind, path in stats["outputs"].items():
        console.print(f"saved {kind}: [bold]{path}[/]", highlight=False)


def _signature() -> inspect.Signature:
    """``dart video``'s parameters with tracking always on, SOURCE optional and --detections added."""
    base = inspect.signature(video_cmd.video, eval_str=True)
    params = []
    for p in base.parameters.values():
        if p.name == "track":
            continue
        if p.name == "source":
            p = p.replace(annotation=TrackSource, default=None)
        elif p.name == "output":
            p = p.replace(annotation=TrackOutput)
        params.append(p)
        if p.name == "source":
            params.append(inspect.Parameter("detections", inspect.Parameter.KEYWORD_ONLY, annotation=Detections,
                                            default=None))
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.name != "ctx" else p for p in params]
    return base.replace(parameters=params)


track.__signature__ = _signature()  # type: ignore[attr-defined]
track.__annotations__ = {}
