"""``dart detect``: detect the given classes in images, write annotated images and JSON, print a table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from dart.commands import options as opt

D = opt.DEFAULTS


def detect(
    sources: Annotated[list[str], typer.Argument(help="Image files, folders or globs (quote globs: 'imgs/*.jpg').")],
    classes: opt.Classes = None,
    classes_file: opt.ClassesFile = None,
    coco: opt.Coco = False,
    exemplar: opt.Exemplars = None,
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="Output folder (an earlier result in it is replaced only with --overwrite).")] = Path(
        "runs/detect"),
    save_json: Annotated[bool, typer.Option("--save-json/--no-save-json",
                                            help="Write <name>.json with one object per detection.")] = True,
    save_image: Annotated[bool, typer.Option("--save-image/--no-save-image",
                                             help="Write the annotated image <name>.<ext>.")] = True,
    save_txt: Annotated[bool, typer.Option(
        "--save-txt", help="Write YOLO labels OUTPUT/labels/<name>.txt (class cx cy w h, 0..1; with --masks the mask "
                           "outline) and labels/classes.txt: auto-labelling for training another detector.")] = False,
    save_conf: Annotated[bool, typer.Option("--save-conf", help="With --save-txt: append each box's score.")] = False,
    save_coco: Annotated[bool, typer.Option(
        "--save-coco", help="Write OUTPUT/instances.json: a COCO dataset of all images (boxes; RLE masks with "
                            "--masks), loadable by pycocotools.")] = False,
    conf: opt.Conf = D["conf"],
    class_conf: opt.ClassConf = None,
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
    batch: Annotated[int, typer.Option("--batch", min=1, help="Images (or tiles) per backbone batch.")] = 1,
    tile: opt.Tile = None,
    tile_overlap: opt.TileOverlap = 0.2,
    benchmark: Annotated[bool, typer.Option("--benchmark", help="Print a per-stage timing table "
                                            "(preprocess, backbone, text, encoder-decoder, post) on the first image.")] = False,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed runs before --benchmark timing.")] = 3,
    bench_runs: Annotated[int, typer.Option("--bench-runs", min=1, help="Timed runs for --benchmark.")] = 10,
    overwrite: opt.Overwrite = False,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Keep the results an earlier, interrupted run of the same command left in --output and "
                         "detect only the images without them (a run with other classes, thresholds or weights is "
                         "refused).")] = False,
    ray: Annotated[bool, typer.Option(
        "--ray", rich_help_panel=opt.RAY, help="Label on Ray Data: one detector per worker (one per GPU, else CPU "
                                               "workers), the same files; needs the ray extra.")] = False,
    ray_address: opt.RayAddress = None,
    workers: Annotated[Optional[int], typer.Option(
        "--workers", min=1, rich_help_panel=opt.RAY, show_default=False,
        help="With --ray: detectors running at once (default: one per GPU of the cluster; on CPUs, one).")] = None,
    threads: opt.Threads = None,
) -> None:
    """Detect objects of the given classes in images.

    Example: [bold]dart detect street.jpg --classes person car bicycle -o out/[/]

    By example boxes: [bold]dart detect shelf/ --exemplar ref.jpg:120,40,180,90=widget[/]

    Many images, many GPUs: [bold]dart detect images.txt -c person car --save-coco --ray --resume[/]
    """
    from dart.classes import exemplar_images, parse_class_conf, resolve_classes
    from dart.errors import InputError
    from dart.images import (RUN_FILE, ResultFiles, detect_images, expand_images, output_names, resume_plan,
                             run_record)
    from dart.io import Outputs
    from dart.render import count, precision_line, timing_table
    from dart.setup import setup_from_options
    from dart.timing import profile_stages

    console = Console()
    names = resolve_classes(classes, classes_file, coco, exemplar)
    images = expand_images(sources)
    if save_conf and not save_txt:
        raise InputError("--save-conf adds scores to YOLO labels: add --save-txt.")
    if resume and overwrite:
        raise InputError("--resume keeps earlier results and --overwrite replaces them: give one of the two.")
    if resume and save_coco and not save_json:
        raise InputError("--resume with --save-coco reads the kept images' results from their JSON files: drop "
                         "--no-save-json.")
    if ray and benchmark:
        raise InputError("--benchmark times a detector on this machine: drop --ray to use it.")
    if (ray_address or workers) and not ray:
        raise InputError(f"{'--ray-address' if ray_address else '--workers'} is for --ray: add --ray.")
    thresholds = parse_class_conf(class_conf, names)
    setup = setup_from_options(locals(), validate=False)  # the files first: their mistakes need no torch to find
    plan = Outputs(overwrite=overwrite)
    plan.inputs_from(images, "image")
    plan.input(classes_file, "classes file")
    plan.inputs_from(exemplar_images(names), "exemplar image")
    setup.register_inputs(plan)
    setup.plan_text_cache(plan)
    plan.folder(output, "-o/--output", output_names(images, save_json=save_json, save_image=save_image,
                                                    save_txt=save_txt, save_coco=save_coco),
                existing="replace" if resume else "refuse")  # resuming: dart-run.json decides (same run only)
    plan.file(output / RUN_FILE, "run record", existing="replace")
    thresholding = {"conf": conf, "class_conf": thresholds, "nms": nms, "class_agnostic_nms": class_agnostic_nms,
                    "max_det": max_det, "masks": masks}  # what the detector is built with, and what the run records
    record = run_record(names, {**thresholding, "tile": tile, "tile_overlap": tile_overlap if tile else None})
    files = ResultFiles(output, save_json=save_json, save_image=save_image, save_txt=save_txt, save_conf=save_conf)
    if resume:  # another run's results are refused now; the model is compared once it is loaded
        resume_plan(files, images, record, need_json=save_coco, ignore=("model",))
    setup.validate(None)
    if ray:
        from dart.classes import parse_vocabulary
        from dart.serve.ray_label import LabelJob, label_on_ray

        job = LabelJob(setup, list(names), parse_vocabulary(list(names)).names, files, thresholding, tile=tile,
                       tile_overlap=tile_overlap, batch=batch, threads=threads, coco=save_coco)
        console.print(f"labelling {count(len(images), 'image')} on Ray ...", highlight=False)
        result = label_on_ray(job, images, address=ray_address, workers=workers, resume=resume, record=record,
                              progress=len(images) > 1)
        _report(console, result, images, output, save_coco, summary=None)
        return
    from dart.backends.base import set_threads  # torch: imported once the command line has been checked

    set_threads(threads)
    if not setup.uses_engines:
        console.print(f"loading SAM3 from [bold]{checkpoint}[/] ...", highlight=False)
    detector = setup.build_detector(names, **thresholding)
    if note := precision_line(detector.backend):
        console.print(note, highlight=False)
    from dart.tiling import tiled

    detector = tiled(detector, tile, overlap=tile_overlap, batch=batch)
    imgsz = detector.backend.imgsz
    if benchmark:
        summary = profile_stages(detector, images[0], warmup=warmup, runs=bench_runs)
        console.print(timing_table(summary, f"per-stage timing, {count(len(names), 'class')}, {imgsz}px, "
                                            f"{detector.backend.name} on {detector.backend.device}"))
    result = detect_images(detector, images, output, save_json=save_json, save_image=save_image, save_txt=save_txt,
                           save_conf=save_conf, save_coco=save_coco, batch=batch, progress=len(images) > 1,
                           resume=resume, record=record)
    _report(console, result, images, output, save_coco, summary=detector.classes)


def _report(console: Console, result, images: list[Path], output: Path, save_coco: bool,
            summary: list[str] | None) -> None:
    """The table of what was found (``summary``: the class names, when the detections are at hand), where the
    files went, and the exit code of an interrupted run or of unreadable images."""
    from dart.errors import InputError
    from dart.render import count, detections_table, summary_table

    if summary is not None and len(result.done) == 1 and not result.interrupted:
        path, dets = result.done[0]
        console.print(detections_table(dets, f"{path.name}: {count(len(dets), 'detection')}"))
    elif summary is not None and result.done:
        console.print(summary_table([(p.name, d) for p, d in result.done], summary))
    if result.kept:
        console.print(f"kept the results of {count(len(result.kept), 'image')} an earlier run finished; detected "
                      f"{len(result.done)}.", highlight=False)
    if summary is None and result.done:  # on Ray the workers wrote the files
        console.print(f"results of {count(len(result.done), 'image')} saved to [bold]{output}[/]", highlight=False)
    elif result.written:
        console.print(f"results saved to [bold]{output}[/] ({count(len(result.written), 'file')})", highlight=False)
    if result.interrupted:
        saved = " and instances.json" if save_coco and (result.done or result.kept) else ""
        console.print(f"[yellow]interrupted[/] after {len(result.done)} of {count(len(images), 'image')}: the results "
                      f"of those{saved} are saved; the same command with --resume continues.", highlight=False)
        raise typer.Exit(130)
    if result.failed:
        shown = "; ".join(f"{p}: {why.rstrip('.')}" for p, why in result.failed[:3])
        more = f" and {len(result.failed) - 3} more" if len(result.failed) > 3 else ""
        raise InputError(f"{len(result.failed)} of {count(len(images), 'image')} could not be read ({shown}{more}); "
                         f"the full list is in {output / 'unreadable.txt'}.")
