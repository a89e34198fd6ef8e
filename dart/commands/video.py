"""``dart video``: detect (and track) objects in a video file, a folder of frames, a camera or a stream."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from dart.commands import options as opt

D = opt.DEFAULTS
VIDEO = "Video"
TRACKING = "Tracking"

Source = Annotated[str, typer.Argument(
    help="Video file, folder or quoted glob of frames, camera index (0) or stream URL (rtsp://, http://).")]
Output = Annotated[Optional[Path], typer.Option(
    "--output", "-o", rich_help_panel=VIDEO,
    help="Write the annotated video here (same fps and size as the source; .mp4, .avi, .mov, .mkv).")]
SaveJsonl = Annotated[Optional[str], typer.Option(
    "--save-jsonl", rich_help_panel=VIDEO,
    help="Write one JSON line per frame (frame, time, width, height, detections); '-' writes to stdout.")]
SaveMot = Annotated[Optional[Path], typer.Option(
    "--save-mot", rich_help_panel=VIDEO,
    help="Write MOTChallenge rows frame,id,x,y,w,h,score,class,-1,-1 (needs tracking).")]
MaxFrames = Annotated[Optional[int], typer.Option(
    "--max-frames", min=1, rich_help_panel=VIDEO, help="Stop after this many frames (default: the whole source).")]
Start = Annotated[int, typer.Option("--start", min=0, rich_help_panel=VIDEO,
                                    help="Skip this many frames at the start of the source.")]
Stride = Annotated[int, typer.Option("--stride", min=1, rich_help_panel=VIDEO,
                                     help="Process every n-th frame (the output video plays at fps / stride).")]
Reconnect = Annotated[int, typer.Option(
    "--reconnect", min=0, rich_help_panel=VIDEO,
    help="Camera or live stream: reopen it up to N times in a row when it stops sending frames (1, 2, 4, 8, 10 s "
         "apart; frame numbers carry on). 0: stop with a message.")]
Fps = Annotated[Optional[float], typer.Option(
    "--fps", min=0.1, rich_help_panel=VIDEO, help="Frame rate of a folder of images (default 30).")]
DisplayOpt = Annotated[bool, typer.Option(
    "--display", rich_help_panel=VIDEO,
    help="Show a live window (q or Esc quits). Needs opencv-python with GUI support, not the headless build.")]
Sequential = Annotated[bool, typer.Option(
    "--sequential", rich_help_panel=VIDEO,
    help="Turn pipelining off: decode, detect and write one frame after the other (for comparison).")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", rich_help_panel=VIDEO,
                                        help="Progress bar with live FPS.")]
VideoConf = Annotated[Optional[float], typer.Option(
    "--conf", min=0.0, max=1.0, rich_help_panel=opt.DETECTION,
    help="Confidence threshold (default 0.3; 0.1 with tracking, which uses low-score boxes).")]
Track = Annotated[bool, typer.Option("--track", rich_help_panel=TRACKING,
                                     help="Track objects across frames: stable IDs, trails, --save-mot.")]
TrackerName = Annotated[str, typer.Option(
    "--tracker", rich_help_panel=TRACKING, help="Tracker registered in dart.trackers (see `dart plugins`).")]
TrackThresh = Annotated[float, typer.Option(
    "--track-thresh", min=0.0, max=1.0, rich_help_panel=TRACKING,
    help="Detections at or above this score start and extend tracks; lower ones (above 0.1) only extend them.")]
MatchThresh = Annotated[float, typer.Option(
    "--match-thresh", min=0.0, max=1.0, rich_help_panel=TRACKING,
    help="Minimum IoU between a track's predicted box and a detection to associate them.")]
MaxTimeLost = Annotated[int, typer.Option(
    "--max-time-lost", min=0, rich_help_panel=TRACKING,
    help="Frames a lost track is kept (and can come back with its ID) before it is dropped.")]

TRACK_DEFAULTS = {"tracker": "bytetrack", "track_thresh": 0.5, "match_thresh": 0.5, "max_time_lost": 30}




def video_setup(**o: Any):
    """The :class:`~dart.setup.Setup` the flags describe, not yet validated: the run's files are checked first
    (no torch needed), then :meth:`~dart.setup.Setup.validate` (no weights loaded)."""
    from dart.setup import setup_from_options

    return setup_from_options(o, validate=False)


def build_detector(console: Console, setup, names: list[str], **o: Any):
    """The detector ``dart detect`` would build from the same flags (PyTorch, or exported ONNX/TensorRT stages)."""
    from dart.render import precision_line

    if not setup.uses_engines:
        console.print(f"loading SAM3 from [bold]{o['checkpoint']}[/] ...", highlight=False)
    detector = setup.build_detector(names, conf=o["conf"], class_conf=o["class_conf"], nms=o["nms"],
                                    class_agnostic_nms=o["class_agnostic_nms"], max_det=o["max_det"], masks=o["masks"])
    if note := precision_line(detector.backend):
        console.print(note, highlight=False)
    return detector


def build_tracker(name: str, track_thresh: float, match_thresh: float, max_time_lost: int, **extra: Any):
    from dart.tracking import load_tracker

    return load_tracker(name, track_thresh=track_thresh, match_thresh=match_thresh, max_time_lost=max_time_lost,
                        **{k: v for k, v in extra.items() if v is not None})


def summary_table(result, title: str) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("source", result.source)
    table.add_row("mode", result.mode)
    table.add_row("frames", str(result.frames))
    table.add_row("time", f"{result.seconds:.2f} s")
    table.add_row("FPS (wall clock)", f"{result.fps:.2f}")
    table.add_row("detections", str(result.detections))
    if result.track_ids:
        table.add_row("tracks", str(len(result.track_ids)))
    if result.dropped:
        table.add_row("frames dropped", f"{result.dropped} (inference slower than the live source)")
    if result.reconnects:
        table.add_row("reconnected", f"{result.reconnects} times")
    stopped = {"end": "end of source", "user": "stopped by the user", "interrupted": "interrupted (Ctrl-C)",
               "error": "the source failed"}[result.stopped]
    if result.ended_early:
        stopped = f"the source ended early: {result.frames} of the {result.expected} frames it announces"
    table.add_row("stopped", stopped)
    for kind, path in result.outputs.items():
        table.add_row(f"saved {kind}", path)
    return table


def stage_table(stages: dict[str, dict[str, float]], pipelined: bool) -> Table:
    table = Table(title="per-stage time", title_justify="left")
    for col in ("stage", "median ms", "mean ms", "runs"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for stage, s in stages.items():
        table.add_row(stage, f"{s['median']:.2f}", f"{s['mean']:.2f}", str(s["n"]))
    table.caption = ("stages overlap in pipelined mode: FPS comes from the wall clock, not from their sum"
                     if pipelined else "without CUDA synchronisation GPU stages show launch time")
    return table


def plan_outputs(source: str, setup, o: dict[str, Any], names: list[str] | None = None) -> None:
    """Check every output of a video run against its inputs, the overwrite policy and the file system, before the
    source opens or a model loads."""
    from dart.classes import exemplar_images
    from dart.errors import InputError
    from dart.io import Outputs
    from dart.video.writers import check_video_name

    paths = [Path(p).resolve() for p in (o["output"], o["save_jsonl"], o["save_mot"]) if p not in (None, "-")]
    if len(set(paths)) < len(paths):
        raise InputError("-o, --save-jsonl and --save-mot must name three different files.")
    plan = Outputs(overwrite=o["overwrite"])
    plan.input(source, "video source", contents=True)
    plan.input(o["classes_file"], "classes file")
    plan.inputs_from(exemplar_images(names or []), "exemplar image")
    setup.register_inputs(plan)
    setup.plan_text_cache(plan)
    if o["output"] is not None:
        plan.file(check_video_name(o["output"]), "-o/--output")
    if o["save_jsonl"] not in (None, "-"):
        plan.file(o["save_jsonl"], "--save-jsonl")
    if o["save_mot"] is not None:
        plan.file(o["save_mot"], "--save-mot")


def run_video_command(ctx: typer.Context, *, source: str, track: bool, tracker_options: dict[str, Any],
                      **o: Any) -> None:
    """Shared body of ``dart video`` and ``dart track`` (parse -> validate -> run -> render)."""
    from dart.classes import parse_class_conf, resolve_classes
    from dart.errors import DartError, InputError
    from dart.render import count

    console = Console(stderr=o["save_jsonl"] == "-")
    names = resolve_classes(o["classes"], o["classes_file"], o["coco"], o.pop("exemplar", None))
    o["class_conf"] = parse_class_conf(o["class_conf"], names)
    if o["save_mot"] is not None and not track:
        raise InputError("--save-mot writes track IDs: add --track (or use `dart track`).")
    if o["display"]:
        from dart.errors import DependencyError
        from dart.video.overlay import display_problem

        problem = display_problem()
        if problem:
            raise DependencyError(problem)
    tracker = build_tracker(**tracker_options) if track else None
    if o["conf"] is None:
        o["conf"] = min(0.1, tracker_options["track_thresh"]) if track else D["conf"]
    setup = video_setup(**o)
    plan_outputs(source, setup, o, names)
    from dart.video import open_source

    src = open_source(source, start=o["start"], stride=o["stride"], max_frames=o["max_frames"], fps=o["fps"],
                      reconnect=o["reconnect"])
    try:
        setup.validate(None)
        from dart.backends.base import set_threads  # torch: imported once the command line and source are checked

        set_threads(o["threads"])
        if not any(o[key] for key in ("output", "save_jsonl", "save_mot", "display")):
            console.print("[yellow]note:[/] nothing will be saved (no -o, --save-jsonl or --save-mot): only the "
                          "summary is printed.", highlight=False)
        console.print(f"source: {src.describe()}", highlight=False)
        detector = build_detector(console, setup, names, **o)
        from dart.tiling import tiled

        detector = tiled(detector, o["tile"], overlap=o["tile_overlap"])
    except BaseException:
        src.close()
        raise
    from dart.video import run_video

    try:
        result = run_video(detector, src, tracker=tracker, output=o["output"], save_jsonl=o["save_jsonl"],
                           save_mot=o["save_mot"], display=o["display"], sequential=o["sequential"],
                           progress=o["progress"] and not src.live, console=console)
    except DartError as exc:
        partial = getattr(exc, "result", None)
        if partial is not None and partial.frames:
            console.print(summary_table(partial, "partial run"))
        raise
    console.print(summary_table(result, f"{count(result.frames, 'frame')}, {count(len(names), 'class')}, "
                                        f"{detector.backend.name} on {detector.backend.device}"))
    if result.ended_early:
        console.print(f"[yellow]warning:[/] '{src.name}' ended after {result.frames} of the {result.expected} frames "
                      "its container announces (a truncated or damaged file?); the results of those frames are saved.",
                      highlight=False)
    if result.stages:
        console.print(stage_table(result.stages, result.mode == "pipelined"))
    if result.stopped == "interrupted":
        raise typer.Exit(130)


def video(
    ctx: typer.Context,
    source: Source,
    classes: opt.Classes = None,
    classes_file: opt.ClassesFile = None,
    coco: opt.Coco = False,
    exemplar: opt.Exemplars = None,
    track: Track = False,
    output: Output = None,
    save_jsonl: SaveJsonl = None,
    save_mot: SaveMot = None,
    max_frames: MaxFrames = None,
    start: Start = 0,
    stride: Stride = 1,
    fps: Fps = None,
    reconnect: Reconnect = 0,
    display: DisplayOpt = False,
    sequential: Sequential = False,
    progress: Progress = True,
    tracker: TrackerName = TRACK_DEFAULTS["tracker"],
    track_thresh: TrackThresh = TRACK_DEFAULTS["track_thresh"],
    match_thresh: MatchThresh = TRACK_DEFAULTS["match_thresh"],
    max_time_lost: MaxTimeLost = TRACK_DEFAULTS["max_time_lost"],
    conf: VideoConf = None,
    class_conf: opt.ClassConf = None,
    tile: opt.Tile = None,
    tile_overlap: opt.TileOverlap = 0.2,
    nms: opt.Nms = D["nms"],
    class_agnostic_nms: opt.AgnosticNms = None,
    max_det: opt.MaxDet = D["max_det"],
    masks: opt.Masks = False,
    checkpoint: opt.Checkpoint = D["checkpoint"],
    tokenizer: opt.Tokenizer = None,
    skip_blocks: opt.SkipBlocks = None,
    mask_blocks: opt.MaskBlocks = None,
    prune_spec: opt.PruneSpecFile = None,
    backbone: opt.Backbone = None,
    student_weights: opt.StudentWeights = None,
    prompt_mode: opt.PromptMode = None,
    text_cache: opt.TextCachePath = None,
    device: opt.Device = D["device"],
    precision: opt.Precision = D["precision"],
    compile: opt.Compile = None,
    imgsz: opt.RunImgsz = None,
    max_classes: opt.MaxClasses = D["max_classes"],
    backend: opt.BackendName = D["backend"],
    engines: opt.Engines = None,
    backbone_engine: opt.BackboneEngine = None,
    encdec_engine: opt.EncdecEngine = None,
    overwrite: opt.Overwrite = False,
    threads: opt.Threads = None,
) -> None:
    """Detect (and with --track, track) objects in a video, a folder of frames, a camera or a stream.

    Example: [bold]dart video street.mp4 --classes person car --track -o out.mp4 --save-jsonl dets.jsonl[/]
    """
    options = dict(locals())
    for key in ("ctx", "source", "track", "tracker", "track_thresh", "match_thresh", "max_time_lost"):
        options.pop(key)
    run_video_command(ctx, source=source, track=track,
                      tracker_options=dict(name=tracker, track_thresh=track_thresh, match_thresh=match_thresh,
                                           max_time_lost=max_time_lost),
                      **options)
