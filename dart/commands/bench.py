"""``dart bench``: speed on this machine — class scaling, video pipelining, backbone latency.

Every benchmark prints the device and library versions, a rich table, and writes a JSON file and a PNG plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from dart.commands import options as opt

D = opt.DEFAULTS
BENCH = "Benchmark"

app = typer.Typer(help="Measure speed: FPS and per-stage ms vs classes, video pipelining, backbone latency.",
                  no_args_is_help=True, rich_markup_mode="rich")

Warmup = Annotated[int, typer.Option("--warmup", min=0, rich_help_panel=BENCH, help="Untimed runs before timing.")]
Runs = Annotated[int, typer.Option("--runs", min=1, rich_help_panel=BENCH, help="Timed runs; medians are reported.")]
Output = Annotated[Path, typer.Option("--output", "-o", help="Output folder for the JSON file and the PNG plot.")]
Synthetic = Annotated[bool, typer.Option(
    "--synthetic", rich_help_panel=opt.MODEL,
    help="Random weights of SAM3's full size (no download): speed only, labelled 'synthetic' in every output.")]
SyntheticConfig = Annotated[Optional[Path], typer.Option(
    "--synthetic-config", rich_help_panel=opt.MODEL,
    help="With --synthetic: a Sam3Config JSON (or folder with config.json) instead of the full-size config.")]
Backends = Annotated[str, typer.Option(
    "--backend", rich_help_panel=opt.SPEED,
    help="torch, onnxruntime or tensorrt; several comma-separated (torch,tensorrt) give one setup each.")]
Configs = Annotated[Optional[Path], typer.Option(
    "--configs", rich_help_panel=opt.MODEL,
    help="YAML/JSON list of setups (name, checkpoint, backbone, skip_blocks, backend, engines, imgsz ...) to compare.")]


def _base_setup(**values: Any):
    """The command line's setup, its types checked; :func:`_validate` checks its values (which imports torch) once
    the files are checked."""
    from dart.setup import Setup

    return Setup.from_dict(values, where="command line", validate=False)


def _validate(setups: list, wheres: list[str]) -> None:
    for setup, where in zip(setups, wheres):
        setup.validate(where)


def _plan(overwrite: bool, output: Path, stem: str, setups: list, *inputs: tuple[Any, str]) -> None:
    """A benchmark writes OUTPUT/<stem>.json and .png: refuse, before timing anything, to replace an earlier
    result (without --overwrite) or an input, or to write where no file can be created."""
    from dart.io import Outputs

    plan = Outputs(overwrite=overwrite)
    for path, what in inputs:
        plan.input(path, what)
    for setup in setups:
        setup.register_inputs(plan)
        setup.plan_text_cache(plan)
    plan.folder(output, "-o/--output", [f"{stem}.json", f"{stem}.png"])


def _multi_backend_setups(base, backends: list[str], engines: Path | None) -> list:
    """One setup per backend of ``--backend torch,onnxruntime``: the PyTorch setup runs the checkpoint with the
    command's precision and compile mode; the engine setups run ``engines`` at the precision they were built."""
    from dataclasses import replace

    setups = []
    for name in backends:
        extra = {} if name == "torch" else {"engines": str(engines) if engines else None, "precision": "fp32",
                                             "compile": None}
        setups.append(replace(base, backend=name, name=name, **extra))  # validated by the caller, as --backend NAME
    return setups


@app.command("class-scaling")
def class_scaling(
    classes_counts: Annotated[str, typer.Option(
        "--classes-counts", rich_help_panel=BENCH,
        help="Class counts to time, comma-separated (COCO names, then 'object N' beyond 80).")] = "1,2,4,8,16,80",
    image: Annotated[Optional[Path], typer.Option(
        "--image", rich_help_panel=BENCH, help="Image to time (default: a fixed 1280x720 synthetic frame).")] = None,
    warmup: Warmup = 3,
    runs: Runs = 10,
    output: Output = Path("runs/bench"),
    configs: Configs = None,
    synthetic: Synthetic = False,
    synthetic_config: SyntheticConfig = None,
    checkpoint: opt.Checkpoint = D["checkpoint"],
    tokenizer: opt.Tokenizer = None,
    backbone: opt.Backbone = None,
    student_weights: opt.StudentWeights = None,
    prompt_mode: opt.PromptMode = None,
    skip_blocks: opt.SkipBlocks = None,
    mask_blocks: opt.MaskBlocks = None,
    prune_spec: opt.PruneSpecFile = None,
    text_cache: opt.TextCachePath = None,
    backend: Backends = "torch",
    engines: opt.Engines = None,
    device: opt.Device = D["device"],
    precision: opt.Precision = D["precision"],
    compile: opt.Compile = None,
    imgsz: opt.RunImgsz = None,
    max_classes: opt.MaxClasses = D["max_classes"],
    conf: opt.Conf = D["conf"],
    overwrite: opt.Overwrite = False,
    threads: opt.Threads = None,
) -> None:
    """FPS and per-stage ms (backbone, encoder-decoder, post) vs the number of classes, per setup.

    Example: [bold]dart bench class-scaling --classes-counts 1,4,16,80 --precision fp16 --synthetic[/]
    """
    from dart.bench.class_scaling import bench_image, parse_counts
    from dart.errors import InputError
    from dart.setup import configs_where, load_setups

    console = Console()
    counts = parse_counts(classes_counts)
    frame = bench_image(image)
    backends = [b.strip() for b in backend.split(",") if b.strip()]
    if not backends:
        raise InputError("--backend is empty; use torch, onnxruntime or tensorrt.")
    base = _base_setup(
        checkpoint=checkpoint, tokenizer=tokenizer, backbone=backbone, student_weights=student_weights,
        skip_blocks=skip_blocks, mask_blocks=mask_blocks, prune_spec=prune_spec, text_cache=text_cache,
        prompt_mode=prompt_mode, backend=backends[0] if len(backends) == 1 else "torch", engines=engines if len(backends) == 1 else None,
        device=device, precision=precision, compile=compile, imgsz=imgsz, max_classes=max_classes,
        synthetic=synthetic, synthetic_config=synthetic_config)
    if configs:
        setups = load_setups(configs, base, validate=False)
        wheres = [configs_where(configs, i) for i in range(len(setups))]
    elif len(backends) > 1:
        setups = _multi_backend_setups(base, backends, engines)
        wheres = [f"--backend {name}" for name in backends]
    else:
        setups, wheres = [base], ["command line"]
    _plan(overwrite, output, "class_scaling", setups, (image, "image"), (configs, "configs file"))
    _validate(setups, wheres)
    from dart.backends.base import describe_backend, set_threads  # torch: once the command line is checked
    from dart.bench.class_scaling import class_scaling as measure, make_report, write_report
    from dart.bench.report import class_scaling_table, fps_text
    from dart.render import precision_line
    from dart.setup import seed_random_text

    set_threads(threads)
    results, device_used = [], None
    for setup in setups:
        size = f"{setup.imgsz}px" if setup.imgsz else "default size"
        console.print(f"[bold]{escape(setup.label())}[/]: building ({setup.backend}, {size}, precision {setup.precision}) ...",
                      highlight=False)
        detector = setup.build_detector(None, conf=conf)
        device_used = detector.backend.device
        if note := precision_line(detector.backend):
            console.print(f"  {note}", highlight=False)
        prepare = (lambda names, d=detector: seed_random_text(d, names)) if setup.synthetic else None
        rows = measure(detector, counts, frame, warmup=warmup, runs=runs, prepare=prepare,
                       on_point=lambda r: console.print(f"  {r['classes']:>3} classes: {fps_text(r['fps'])} FPS"
                                                        f" ({r['total_ms'] / 1000:.3g} s per image)", highlight=False))
        results.append({"name": setup.name, "label": setup.label(), "synthetic": setup.synthetic,
                        **describe_backend(detector.backend), "imgsz": detector.backend.imgsz,
                        "setup": setup.describe(), "rows": rows})
        del detector
    settings = {"counts": counts, "warmup": warmup, "runs": runs, "conf": conf,
                "image": str(image) if image else "synthetic 1280x720 frame",
                "imgsz_note": f"imgsz {', '.join(sorted({str(r['imgsz']) for r in results}))}",
                "timing": "CUDA events per stage" if device_used is not None and device_used.type == "cuda"
                else "wall clock per stage"}
    report = make_report(results, device_used, settings)
    json_path, png_path = write_report(report, output)
    console.print(class_scaling_table(report))
    console.print(f"saved [bold]{json_path}[/] and [bold]{png_path}[/]")


@app.command("video")
def video(
    source: Annotated[str, typer.Argument(help="Video file, folder of frames, webcam index or stream URL.")],
    classes: opt.Classes = None,
    classes_file: opt.ClassesFile = None,
    coco: opt.Coco = False,
    max_frames: Annotated[int, typer.Option("--max-frames", min=1, rich_help_panel=BENCH,
                                            help="Frames timed per mode.")] = 200,
    warmup: Annotated[int, typer.Option("--warmup", min=0, rich_help_panel=BENCH,
                                        help="Untimed frames before timing.")] = 10,
    output: Output = Path("runs/bench"),
    synthetic: Synthetic = False,
    synthetic_config: SyntheticConfig = None,
    checkpoint: opt.Checkpoint = D["checkpoint"],
    tokenizer: opt.Tokenizer = None,
    backbone: opt.Backbone = None,
    student_weights: opt.StudentWeights = None,
    prompt_mode: opt.PromptMode = None,
    skip_blocks: opt.SkipBlocks = None,
    mask_blocks: opt.MaskBlocks = None,
    prune_spec: opt.PruneSpecFile = None,
    text_cache: opt.TextCachePath = None,
    backend: opt.BackendName = D["backend"],
    engines: opt.Engines = None,
    device: opt.Device = D["device"],
    precision: opt.Precision = D["precision"],
    compile: opt.Compile = None,
    imgsz: opt.RunImgsz = None,
    max_classes: opt.MaxClasses = D["max_classes"],
    conf: opt.Conf = D["conf"],
    overwrite: opt.Overwrite = False,
    threads: opt.Threads = None,
) -> None:
    """Video FPS, sequential vs pipelined (backbone of frame t+1 overlapping the encoder-decoder of frame t).

    Example: [bold]dart bench video traffic.mp4 --classes car truck bus --max-frames 300[/]
    """
    from dart.bench.plot import bar_plot
    from dart.bench.report import video_table
    from dart.classes import resolve_classes
    from dart.errors import DependencyError
    from dart.io import redact, write_json
    from dart.render import count
    from dart.setup import seed_random_text

    try:
        from dart.video.pipeline import benchmark_video
    except ImportError as exc:
        raise DependencyError("`dart bench video` needs dart's video pipeline (dart.video.pipeline), which is not "
                              "installed in this dart; update dart to a version with `dart video`.") from exc
    console = Console()
    names = resolve_classes(classes, classes_file, coco)
    setup = _base_setup(
        checkpoint=checkpoint, tokenizer=tokenizer, backbone=backbone, student_weights=student_weights,
        skip_blocks=skip_blocks, mask_blocks=mask_blocks, prune_spec=prune_spec, text_cache=text_cache,
        prompt_mode=prompt_mode, backend=backend, engines=engines, device=device, precision=precision, compile=compile, imgsz=imgsz,
        max_classes=max_classes, synthetic=synthetic, synthetic_config=synthetic_config)
    _plan(overwrite, output, "video", [setup], (source, "video source"), (classes_file, "classes file"))
    from dart.video import open_source

    with open_source(source, max_frames=1):  # a missing video, camera or stream is one sentence before the model loads
        pass
    _validate([setup], ["command line"])
    from dart.backends.base import describe_backend, set_threads  # torch: once the command line is checked
    from dart.bench.environment import environment, header

    set_threads(threads)
    size = f"{setup.imgsz}px" if setup.imgsz else "default size"
    console.print(f"[bold]{escape(setup.label())}[/]: building ({setup.backend}, {size}) ...", highlight=False)
    detector = setup.build_detector(None, conf=conf)
    if setup.synthetic:
        seed_random_text(detector, names)
    detector.set_classes(names)
    result = benchmark_video(detector, source, max_frames, warmup)
    env = environment(detector.backend.device)
    report = {"benchmark": "video", "environment": env, "header": header(env), "source": redact(source),
              "classes": names, "max_frames": max_frames, "warmup": warmup, "synthetic": setup.synthetic,
              **describe_backend(detector.backend), "setup": setup.describe(), "result": result}
    write_json(output / "video.json", report)
    bars = [(mode, float(entry["fps"])) for mode, entry in result.items()
            if isinstance(entry, dict) and isinstance(entry.get("fps"), (int, float))]
    png = output / "video.png"
    bar_plot(bars, png, title="video FPS" + (" (synthetic weights)" if setup.synthetic else ""), xlabel="FPS",
             subtitle=header(env))
    table = video_table(result, f"video benchmark, {count(len(names), 'class')} | {header(env)}")
    if setup.synthetic:
        table.caption = f"{table.caption}; synthetic = random weights: speed only"
    console.print(table)
    console.print(f"saved [bold]{output / 'video.json'}[/] and [bold]{png}[/]")


@app.command("backbones")
def backbones(
    imgsz: opt.Imgsz = D["imgsz"],
    device: opt.Device = D["device"],
    precision: opt.Precision = D["precision"],
    names: Annotated[Optional[str], typer.Option(
        "--names", rich_help_panel=BENCH,
        help="Only these backbones, comma-separated (default: every registered one, see `dart plugins`).")] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, rich_help_panel=BENCH, help="Images per forward.")] = 1,
    warmup: Warmup = 3,
    runs: Runs = 10,
    output: Output = Path("runs/bench"),
    checkpoint: Annotated[Optional[str], typer.Option(
        "--checkpoint", "-m", rich_help_panel=opt.MODEL,
        help="SAM3 weights for the sam3 row (default: random weights of SAM3's size; latency does not depend on "
             "the values).")] = None,
    synthetic_config: Annotated[Optional[Path], typer.Option(
        "--synthetic-config", rich_help_panel=opt.MODEL,
        help="A Sam3Config JSON (or folder with config.json) for the random-weight sam3 rows, instead of SAM3's "
             "full size.")] = None,
    skip_blocks: opt.SkipBlocks = None,
    mask_blocks: opt.MaskBlocks = None,
    prune_spec: opt.PruneSpecFile = None,
    overwrite: opt.Overwrite = False,
    threads: opt.Threads = None,
) -> None:
    """Latency of every registered backbone (SAM3's ViT, pruned with --skip-blocks, and the student backbones).

    Example: [bold]dart bench backbones --imgsz 1008 --device cuda --precision fp16 --skip-blocks 5,10,12[/]
    """
    from dart.bench.plot import bar_plot
    from dart.bench.report import records_table
    from dart.errors import DependencyError, InputError
    from dart.io import Outputs, write_json
    from dart.models.loading import check_checkpoint_named, vit_blocks
    from dart.models.sam3 import validate_imgsz
    from dart.pruning.spec import resolve_prune_spec

    console = Console()
    validate_imgsz(imgsz)
    if checkpoint is not None:
        check_checkpoint_named(checkpoint)
    prune = resolve_prune_spec(skip_blocks, mask_blocks, prune_spec)
    if prune and checkpoint is not None and (blocks := vit_blocks(checkpoint)) is not None:
        prune.validate(blocks)
    plan = Outputs(overwrite=overwrite)
    plan.input(checkpoint, "checkpoint", contents=True)
    plan.input(prune_spec, "prune spec", required=True)
    plan.input(synthetic_config, "synthetic config", required=True)
    plan.folder(output, "-o/--output", ["backbones.json", "backbones.png"])
    from dart.backends.base import resolve_device, resolve_precision, set_threads  # torch: once the files are checked
    from dart.bench.environment import environment, header

    try:
        from dart.students.bench import benchmark_backbones
    except ImportError as exc:
        raise DependencyError("`dart bench backbones` needs dart's student backbones (dart.students.bench), which "
                              "are not installed in this dart.") from exc
    dev = resolve_device(device)
    resolve_precision(precision, dev)
    set_threads(threads)
    chosen = [n.strip() for n in names.split(",") if n.strip()] if names else None
    if names is not None and not chosen:
        raise InputError("--names is empty; give backbone names like sam3,repvit_m2_3.")
    config = None
    if synthetic_config is not None:
        from dart.bench.synthetic import synthetic_config as read_config

        config = read_config(synthetic_config)
    console.print(f"timing backbones at {imgsz}px, batch {batch}, {precision} on {dev} ...", highlight=False)
    rows = benchmark_backbones(imgsz, str(dev), runs, warmup=warmup, names=chosen, precision=precision, batch=batch,
                               checkpoint=checkpoint, sam3_config=config, prune=prune or None)
    env = environment(dev)
    weights = checkpoint or "random weights (latency does not depend on the values)"
    report = {"benchmark": "backbones", "environment": env, "header": header(env), "imgsz": imgsz, "batch": batch,
              "precision": precision, "warmup": warmup, "runs": runs, "weights": weights, "rows": rows}
    write_json(output / "backbones.json", report)
    key = _latency_key(rows)
    png = output / "backbones.png"
    bar_plot([(str(r.get("backbone", r.get("name", i))), float(r[key])) for i, r in enumerate(rows)
              if isinstance(r.get(key), (int, float))],
             png, title=f"backbone latency at {imgsz}px, {precision}", xlabel=key.replace("_", " "),
             subtitle=header(env))
    try:
        from dart.students.bench import backbones_table

        table = backbones_table(rows)
    except ImportError:  # pragma: no cover - older students module
        table = records_table(rows, "backbone latency")
    table.title = f"{table.title} | {header(env)}"
    table.caption = f"medians of {runs} runs after {warmup} warm-up runs; weights: {weights}"
    console.print(table)
    console.print(f"saved [bold]{output / 'backbones.json'}[/] and [bold]{png}[/]")


def _latency_key(rows: list[dict[str, Any]]) -> str:
    """The column holding the latency to plot: the first numeric key mentioning ms (median preferred)."""
    keys = [k for r in rows[:1] for k, v in r.items() if isinstance(v, (int, float)) and "ms" in k.lower()]
    for key in keys:
        if "median" in key.lower():
            return key
    return keys[0] if keys else "ms"


@app.command("peers")
def peers(
    checkpoint: Annotated[Path, typer.Argument(
        help="Meta's sam3.pt (or a folder holding it, e.g. a facebook/sam3 snapshot): every system reads these "
             "weights.")],
    systems: Annotated[Optional[str], typer.Option(
        "--systems", rich_help_panel=BENCH,
        help="Comma-separated, from: dart-fp32, dart-auto, dart-onnxruntime, dart-openvino, dart-openvino-bf16, "
             "meta-fp32, meta-bf16, transformers-fp32, dart-research-fp32, and on CUDA dart-fp16, "
             "dart-research-fp16 (default: every one whose inputs are given).")] = None,
    classes_counts: Annotated[str, typer.Option(
        "--classes-counts", rich_help_panel=BENCH,
        help="Class counts to time, comma-separated (COCO names, then 'object N' beyond 80).")] = "1,4,80",
    image: Annotated[Optional[Path], typer.Option(
        "--image", rich_help_panel=BENCH, help="Image to time (default: a fixed 1280x720 synthetic frame).")] = None,
    engines: opt.Engines = None,
    research_repo: Annotated[Optional[Path], typer.Option(
        "--research-repo", rich_help_panel=BENCH,
        help="A clone of the DART research code (github.com/mkturkcan/DART) for the dart-research-fp32 row (and "
             "dart-research-fp16 on CUDA).")] = None,
    tokenizer: Annotated[Optional[Path], typer.Option(
        "--tokenizer", rich_help_panel=opt.MODEL,
        help="CLIP's bpe_simple_vocab_16e6.txt.gz (default: the one open-clip-torch installs).")] = None,
    device: opt.Device = D["device"],
    warmup: Annotated[int, typer.Option("--warmup", min=0, rich_help_panel=BENCH,
                                        help="Untimed image + smallest-count runs per system.")] = 1,
    runs: Annotated[int, typer.Option("--runs", min=1, rich_help_panel=BENCH,
                                      help="Timed runs of the image part and of each count up to 16 classes.")] = 2,
    runs_large: Annotated[int, typer.Option("--runs-large", min=1, rich_help_panel=BENCH,
                                            help="Timed runs of counts above 16 classes (minutes each on a CPU).")] = 1,
    timeout: Annotated[Optional[float], typer.Option(
        "--timeout", min=1, rich_help_panel=BENCH, help="Seconds one system may take before it is stopped.")] = None,
    rounds: Annotated[int, typer.Option(
        "--rounds", min=1, rich_help_panel=BENCH,
        help="Run the systems this many times, alternately forwards and backwards, and report each one's medians: "
             "a machine whose speed drifts then weighs on every system alike.")] = 1,
    output: Output = Path("runs/bench"),
    overwrite: opt.Overwrite = False,
    threads: opt.Threads = None,
) -> None:
    """dart side by side with Meta's sam3, transformers and the DART research code: same weights, image, classes.

    Each system runs in its own child process, one after another, as its users run it; the table gives seconds per
    image (image part + class part), peak memory, and the speed-up over the fastest peer computing in the same
    precision at each class count.

    Example: [bold]dart bench peers sam3.pt --engines engines/ --classes-counts 1,4,80 --threads 8[/]
    """
    from dart.bench.class_scaling import bench_image, parse_counts
    from dart.bench.peers import parse_systems, run_peers, write_report
    from dart.bench.report import peers_table
    from dart.errors import InputError
    from dart.io import Outputs

    console = Console()
    counts = parse_counts(classes_counts)
    if research_repo is not None and not (research_repo / "sam3" / "model" / "sam3_multiclass_fast.py").is_file():
        raise InputError(f"'{research_repo}' is not a clone of the DART research code (no "
                         "sam3/model/sam3_multiclass_fast.py in it).")
    if not checkpoint.exists():
        raise InputError(f"checkpoint '{checkpoint}' does not exist; give Meta's sam3.pt or a folder holding it.")
    plan = Outputs(overwrite=overwrite)
    plan.input(checkpoint, "checkpoint", contents=True)
    plan.input(image, "image")
    plan.input(engines, "engines", contents=True)
    plan.folder(output, "-o/--output", ["peers.json", "peers.png"])
    if image is not None:
        bench_image(image)  # unreadable images are refused before anything loads
    from dart.backends.base import resolve_device  # torch: once the files are checked

    chosen = parse_systems(systems, engines=engines is not None, research_repo=research_repo is not None,
                           cuda=resolve_device(device).type == "cuda")
    console.print(f"systems: {', '.join(chosen)}; {', '.join(map(str, counts))} classes", highlight=False)
    report = run_peers(checkpoint, chosen, counts=counts, image=image, engines=engines, research_repo=research_repo,
                       tokenizer=tokenizer, device=device, threads=threads, warmup=warmup, runs=runs,
                       runs_large=runs_large, timeout_s=timeout, rounds=rounds,
                       on_line=lambda line: console.print(escape(line), highlight=False))
    json_path, png_path = write_report(report, output)
    console.print(peers_table(report))
    console.print(f"saved [bold]{json_path}[/] and [bold]{png_path}[/]")
