"""``dart detect``: detect the given classes in images, write annotated images and JSON, print a table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dart.commands import options as opt

D = opt.DEFAULTS


def detect(
    ctx: typer.Context,
    sources: Annotated[list[str], typer.Argument(help="Image files, folders or globs (quote globs: 'imgs/*.jpg').")],
    classes: opt.Classes = None,
    classes_file: opt.ClassesFile = None,
    coco: opt.Coco = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path("runs/detect"),
    save_json: Annotated[bool, typer.Option("--save-json/--no-save-json",
                                            help="Write <name>.json with one object per detection.")] = True,
    save_image: Annotated[bool, typer.Option("--save-image/--no-save-image",
                                             help="Write the annotated image <name>.<ext>.")] = True,
    conf: opt.Conf = D["conf"],
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
    text_cache: opt.TextCachePath = None,
    device: opt.Device = D["device"],
    precision: opt.Precision = D["precision"],
    compile: opt.Compile = None,
    imgsz: opt.Imgsz = D["imgsz"],
    max_classes: opt.MaxClasses = D["max_classes"],
    backend: opt.BackendName = "torch",
    engines: opt.Engines = None,
    backbone_engine: opt.BackboneEngine = None,
    encdec_engine: opt.EncdecEngine = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Images per backbone batch.")] = 1,
    benchmark: Annotated[bool, typer.Option("--benchmark", help="Print a per-stage timing table "
                                            "(preprocess, backbone, text, encoder-decoder, post) on the first image.")] = False,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed runs before --benchmark timing.")] = 3,
    bench_runs: Annotated[int, typer.Option("--bench-runs", min=1, help="Timed runs for --benchmark.")] = 10,
) -> None:
    """Detect objects of the given classes in images.

    Example: [bold]dart detect street.jpg --classes person car bicycle -o out/[/]
    """
    from dart.classes import resolve_classes
    from dart.detector import Detector
    from dart.errors import InputError
    from dart.models.sam3 import validate_imgsz
    from dart.pruning.spec import resolve_prune_spec
    from dart.pipeline import detect_images
    from dart.render import detections_table, summary_table, timing_table
    from dart.sources import expand_images
    from dart.timing import profile_stages

    console = Console()
    names = resolve_classes(classes, classes_file, coco)
    validate_imgsz(imgsz)
    prune = resolve_prune_spec(skip_blocks, mask_blocks, prune_spec)
    images = expand_images(sources)
    if output.exists() and not output.is_dir():
        raise InputError(f"output '{output}' exists and is not a folder.")
    if backend != "torch" or engines or backbone_engine or encdec_engine:
        from dart.backends.engine_backend import engine_options

        given = {name for name in ("imgsz", "skip_blocks", "mask_blocks", "prune_spec", "precision", "compile",
                                   "backbone", "student_weights", "checkpoint")
                 if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")}
        detector = Detector.from_engines(
            backbone_engine, encdec_engine, names, engines=engines, max_classes_per_batch=max_classes, conf=conf,
            nms=nms, class_agnostic_nms=class_agnostic_nms, max_det=max_det, masks=masks, text_cache=text_cache,
            **engine_options(backend, given, engines=engines, backbone_engine=backbone_engine, device=device,
                             checkpoint=checkpoint, tokenizer=tokenizer, imgsz=imgsz, prune=prune),
        )
        imgsz = detector.backend.imgsz
    else:
        console.print(f"loading SAM3 from [bold]{checkpoint}[/] ...", highlight=False)
        detector = Detector.from_pretrained(
            checkpoint, names, device=device, precision=precision, imgsz=imgsz, compile=compile, tokenizer=tokenizer,
            prune=prune, conf=conf, nms=nms, class_agnostic_nms=class_agnostic_nms, max_det=max_det, masks=masks,
            backbone=backbone, student_weights=student_weights,
            max_classes_per_batch=max_classes, text_cache=text_cache,
        )
    if benchmark:
        summary = profile_stages(detector, images[0], warmup=warmup, runs=bench_runs)
        console.print(timing_table(summary, f"per-stage timing, {len(names)} classes, {imgsz}px, "
                                            f"{detector.backend.name} on {detector.backend.device}"))
    result = detect_images(detector, images, output, save_json=save_json, save_image=save_image, batch=batch,
                           progress=len(images) > 1)
    if len(result.done) == 1:
        path, dets = result.done[0]
        console.print(detections_table(dets, f"{path.name}: {len(dets)} detections"))
    elif result.done:
        console.print(summary_table([(p.name, d) for p, d in result.done], names))
    if save_json or save_image:
        console.print(f"results saved to [bold]{output}[/]")
    if result.failed:
        first, reason = result.failed[0]
        raise InputError(f"{len(result.failed)} of {len(images)} images could not be read (first: {first}: {reason})")
