"""``dart detect``: detect the given classes in images, write annotated images and JSON, print a table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
    threads: opt.Threads = None,
) -> None:
    """Detect objects of the given classes in images.

    Example: [bold]dart detect street.jpg --classes person car bicycle -o out/[/]

    By example boxes: [bold]dart detect shelf/ --exemplar ref.jpg:120,40,180,90=widget[/]
    """
    from dart.backends.base import set_threads
    from dart.classes import exemplar_images, parse_class_conf, resolve_classes
    from dart.errors import InputError
    from dart.images import detect_images, expand_images, output_names
    from dart.io import Outputs
    from dart.render import count, detections_table, precision_line, summary_table, timing_table
    from dart.setup import Setup
    from dart.timing import profile_stages

    console = Console()
    names = resolve_classes(classes, classes_file, coco, exemplar)
    images = expand_images(sources)
    if save_conf and not save_txt:
        raise InputError("--save-conf adds scores to YOLO labels: add --save-txt.")
    thresholds = parse_class_conf(class_conf, names)
    setup = Setup(checkpoint=checkpoint, tokenizer=tokenizer, backbone=backbone, student_weights=student_weights,
                  skip_blocks=skip_blocks, mask_blocks=mask_blocks, prune_spec=prune_spec, backend=backend,
                  engines=engines, backbone_engine=backbone_engine, encdec_engine=encdec_engine, imgsz=imgsz,
                  precision=precision, device=device, compile=compile, max_classes=max_classes, text_cache=text_cache,
                  prompt_mode=prompt_mode)
    setup.validate(None)
    plan = Outputs(overwrite=overwrite)
    plan.inputs_from(images, "image")
    plan.input(classes_file, "classes file")
    plan.inputs_from(exemplar_images(names), "exemplar image")
    setup.register_inputs(plan)
    setup.plan_text_cache(plan)
    plan.folder(output, "-o/--output", output_names(images, save_json=save_json, save_image=save_image,
                                                    save_txt=save_txt, save_coco=save_coco))
    set_threads(threads)
    if not setup.uses_engines:
        console.print(f"loading SAM3 from [bold]{checkpoint}[/] ...", highlight=False)
    detector = setup.build_detector(names, conf=conf, class_conf=thresholds, nms=nms,
                                    class_agnostic_nms=class_agnostic_nms, max_det=max_det,
                                    masks=masks)
    if note := precision_line(detector.backend):
        console.print(note, highlight=False)
    if tile:
        from dart.tiling import TiledDetector

        detector = TiledDetector(detector, tile, overlap=tile_overlap, batch=batch)
    imgsz = detector.backend.imgsz
    if benchmark:
        summary = profile_stages(detector, images[0], warmup=warmup, runs=bench_runs)
        console.print(timing_table(summary, f"per-stage timing, {count(len(names), 'class')}, {imgsz}px, "
                                            f"{detector.backend.name} on {detector.backend.device}"))
    result = detect_images(detector, images, output, save_json=save_json, save_image=save_image, save_txt=save_txt,
                           save_conf=save_conf, save_coco=save_coco, batch=batch, progress=len(images) > 1)
    if len(result.done) == 1 and not result.interrupted:
        path, dets = result.done[0]
        console.print(detections_table(dets, f"{path.name}: {count(len(dets), 'detection')}"))
    elif result.done:
        console.print(summary_table([(p.name, d) for p, d in result.done], detector.classes))
    if result.written:
        console.print(f"results saved to [bold]{output}[/] ({count(len(result.written), 'file')})", highlight=False)
    if result.interrupted:
        saved = " and instances.json" if save_coco and result.done else ""
        console.print(f"[yellow]interrupted[/] after {len(result.done)} of {count(len(images), 'image')}: the results "
                      f"of those{saved} are saved.", highlight=False)
        raise typer.Exit(130)
    if result.failed:
        shown = "; ".join(f"{p}: {why.rstrip('.')}" for p, why in result.failed[:3])
        more = f" and {len(result.failed) - 3} more" if len(result.failed) > 3 else ""
        raise InputError(f"{len(result.failed)} of {count(len(images), 'image')} could not be read ({shown}{more}); "
                         f"the full list is in {output / 'unreadable.txt'}.")
