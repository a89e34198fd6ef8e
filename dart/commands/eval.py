"""``dart eval``: accuracy on standard datasets (``dart eval coco``) and of tracks (``dart eval mot``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from dart.commands import options as opt

D = opt.DEFAULTS
DATA = "Dataset"

app = typer.Typer(help="Measure accuracy: COCO AP with pycocotools; tracking with HOTA, MOTA and IDF1.",
                  no_args_is_help=True,
                  rich_markup_mode="rich")


@app.command("coco")
def coco(
    images: Annotated[Path, typer.Option("--images", rich_help_panel=DATA,
                                         help="Folder of the dataset's images (e.g. val2017/).")],
    annotations: Annotated[Path, typer.Option("--annotations", rich_help_panel=DATA,
                                              help="COCO instances JSON (e.g. instances_val2017.json).")],
    max_images: Annotated[Optional[int], typer.Option(
        "--max-images", min=1, rich_help_panel=DATA,
        help="Evaluate only the first N images (by image id). Default: all.")] = None,
    categories: Annotated[str, typer.Option(
        "--categories", rich_help_panel=DATA,
        help="coco: detect the 80 COCO class names (mapped to the file's categories by name); dataset: detect the "
             "annotation file's own category names.")] = "coco",
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (results.json, summary.json, "
                                         "per-image predictions): a run interrupted there resumes; one made with "
                                         "other settings needs --overwrite.")] = Path("runs/eval/coco"),
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Start over in an output folder that holds predictions of an earlier run (default: "
                            "resume a run with the same settings, refuse one with other settings).")] = False,
    configs: Annotated[Optional[Path], typer.Option(
        "--configs", rich_help_panel=opt.MODEL,
        help="YAML/JSON list of setups (checkpoint, backbone, prune, backend, imgsz ...) to compare in one table; "
             "each is evaluated into OUTPUT/<name>/.")] = None,
    masks: Annotated[bool, typer.Option("--masks/--no-masks", rich_help_panel=opt.DETECTION,
                                        help="Also predict masks and report segm AP.")] = False,
    conf: Annotated[float, typer.Option("--conf", min=0.0, max=1.0, rich_help_panel=opt.DETECTION,
                                        help="Score threshold (low for AP: it ranks, it does not filter).")] = 0.05,
    nms: opt.Nms = D["nms"],
    max_det: Annotated[int, typer.Option("--max-det", min=1, rich_help_panel=opt.DETECTION,
                                         help="Detections kept per image (COCO scores the top 100).")] = 100,
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
    batch: Annotated[int, typer.Option("--batch", min=1, rich_help_panel=opt.SPEED,
                                       help="Images (or tiles, with --tile) per backbone batch.")] = 1,
    tile: opt.Tile = None,
    tile_overlap: opt.TileOverlap = 0.2,
    threads: opt.Threads = None,
) -> None:
    """Detect the 80 COCO categories on a COCO-format dataset and report AP, AP50, AP75, AP_S/M/L.

    Example: [bold]dart eval coco --images val2017/ --annotations instances_val2017.json --max-images 500[/]

    Under [bold]torchrun --nproc-per-node 8 -m dart eval coco ...[/] each rank takes every 8th image and rank 0
    merges and scores. Interrupted runs resume where they stopped (same command, same --output).
    """
    from dart.classes import COCO80
    from dart.errors import InputError
    from dart.eval import coco as ev
    from dart.eval.report import metrics_table
    from dart.render import precision_line
    from dart.eval.store import PREDICTIONS, dist_env
    from dart.io import Outputs, write_json
    from dart.setup import Setup, configs_where, load_setups

    console = Console()
    rank, world, local_rank = dist_env()
    if categories not in ("coco", "dataset"):
        raise InputError(f"--categories must be coco or dataset, got '{categories}'.")
    base = Setup.from_dict({
        "checkpoint": checkpoint, "tokenizer": tokenizer, "backbone": backbone, "student_weights": student_weights,
        "skip_blocks": skip_blocks, "mask_blocks": mask_blocks, "prune_spec": prune_spec, "backend": backend,
        "engines": engines, "imgsz": imgsz, "precision": precision, "device": device, "compile": compile,
        "max_classes": max_classes, "text_cache": text_cache, "prompt_mode": prompt_mode,
    }, where="command line", validate=False)  # validated after the dataset and files: those checks need no torch
    setups = load_setups(configs, base, validate=False) if configs else [base]
    for setup in setups:
        if setup.synthetic:
            raise InputError(f"setup '{setup.name}' uses synthetic weights, which are for speed only, never for "
                             "accuracy; give it a real checkpoint.")
        if world > 1 and setup.device == "auto":
            import torch

            if torch.cuda.is_available():
                setup.device = f"cuda:{local_rank}"
    # everything about the dataset is checked before a model loads
    dataset = ev.load_annotations(annotations)
    ev.image_records(dataset, images, max_images)
    names = list(COCO80) if categories == "coco" else ev.dataset_classes(dataset)
    cat_ids = ev.category_ids(names, dataset)
    plan = Outputs(overwrite=overwrite)
    plan.input(annotations, "annotation file")
    plan.input(images, "images folder", contents=True)
    plan.input(configs, "configs file")
    run_files = [ev.RESULTS, ev.SUMMARY, ev.RUN, PREDICTIONS.format(rank=rank)]
    for setup in setups:
        setup.register_inputs(plan)
        setup.plan_text_cache(plan)
        out = output / setup.name if configs else output
        plan.folder(out, "-o/--output", run_files, existing="replace")
        if not overwrite:
            settings = _settings(setup, None, conf, nms, max_det, categories, tile, tile_overlap)
            ev.check_resumable(out, ev.make_run_info(annotations, names, cat_ids, masks, settings),
                               ignore=("fingerprint", "runs_on"))
    if configs:
        plan.file(output / "comparison.json", "-o/--output", existing="replace")
    base.validate("command line")
    for i, setup in enumerate(setups if configs else []):
        setup.validate(configs_where(configs, i))
    from dart.backends.base import set_threads  # torch: imported once the command line has been checked

    set_threads(threads)
    rows, comparison = [], {}
    for setup in setups:
        out = output / setup.name if configs else output
        if rank == 0:
            console.print(f"[bold]{setup.name}[/]: loading {setup.checkpoint} ({setup.backend}, {setup.imgsz or 'default'} px, "
                          f"prune {setup.prune()}) ...", highlight=False)
        detector = setup.build_detector(names, conf=conf, nms=nms, max_det=max_det, masks=masks)
        if rank == 0 and (note := precision_line(detector.backend)):
            console.print(note, highlight=False)
        settings = _settings(setup, detector.backend, conf, nms, max_det, categories, tile, tile_overlap)
        from dart.tiling import tiled

        detector = tiled(detector, tile, overlap=tile_overlap, batch=batch)
        try:
            result = ev.evaluate_coco(detector, images, annotations, out, max_images=max_images, masks=masks,
                                      classes=names, resume=not overwrite, batch=batch, rank=rank, world=world,
                                      settings=settings, progress=rank == 0, coco=dataset)
        except KeyboardInterrupt:
            console.print(f"[yellow]interrupted[/]: predictions so far are kept in {out}; run the same command again "
                          "to resume.")
            raise
        if result is None:
            continue
        for iou_type, metrics in result.metrics.items():
            rows.append((setup.name, iou_type, metrics))
        comparison[setup.name] = {"summary": str(result.summary_path), "metrics": result.metrics,
                                  "setup": setup.describe(), "images": result.images}
        del detector
    if rank != 0:
        return
    console.print(metrics_table(rows, f"COCO evaluation, {rows and comparison[rows[0][0]]['images']} images"))
    if configs:
        write_json(output / "comparison.json", comparison)
        console.print(f"comparison saved to [bold]{output / 'comparison.json'}[/]")
    else:
        console.print(f"summary saved to [bold]{output / 'summary.json'}[/], results to "
                      f"[bold]{output / 'results.json'}[/]")


def _settings(setup, backend, conf: float, nms: float, max_det: int, categories: str, tile: int | None,
              tile_overlap: float) -> dict:
    """What a COCO evaluation records as its settings (``run.json``); a resumed run must match them. The model's
    fingerprint and what actually runs (``auto`` precision resolved) are known once the model is built."""
    if backend is not None:  # (a backend means torch is loaded; without one, checking a resume needs no torch)
        from dart.backends.base import describe_backend
    settings = {"setup": setup.describe(), "fingerprint": backend.fingerprint if backend else None,
                "runs_on": describe_backend(backend) if backend else None, "conf": conf, "nms": nms,
                "max_det": max_det, "categories": categories}
    if tile:
        settings["tile"] = {"size": tile, "overlap": tile_overlap}
    return settings


@app.command("mot")
def mot(
    gt: Annotated[Path, typer.Option(
        "--gt", rich_help_panel=DATA,
        help="Ground truth: a MOT .txt file (frame,id,x,y,w,h,flag,class,visibility), or a folder of <sequence>.txt "
             "files or of MOTChallenge <sequence>/gt/gt.txt folders.")],
    pred: Annotated[Path, typer.Option(
        "--pred", rich_help_panel=DATA,
        help="Tracker output: a MOT .txt file (as dart track --save-mot writes it), or a folder of <sequence>.txt "
             "files named like the ground truth's sequences.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (summary.json).")] = Path(
        "runs/eval/mot"),
    iou: Annotated[float, typer.Option(
        "--iou", min=0.0, max=1.0,
        help="IoU a match needs for MOTA, MOTP, IDF1 and ID switches (HOTA averages IoU 0.05 ... 0.95).")] = 0.5,
    mot17: Annotated[bool, typer.Option(
        "--mot17/--all-gt",
        help="MOT17 rules: only pedestrian ground truth (class 1) with flag 1 counts and predictions on distractors "
             "(static persons, reflections ...) are dropped; --all-gt: every ground-truth row counts.")] = False,
    overwrite: opt.Overwrite = False,
) -> None:
    """Score multi-object tracking output against ground truth: HOTA, DetA, AssA, MOTA, IDF1, ID switches ...

    Example: [bold]dart eval mot --gt MOT17/train --pred runs/track/mot -o runs/eval/mot17 --mot17[/]

    Figures are those of TrackEval (the MOTChallenge evaluator), per sequence and combined.

    A ground-truth sequence with no prediction file is scored as an empty prediction (and said so).
    """
    from dart.eval.mot import evaluate_mot, report_table
    from dart.io import Outputs, write_json

    console = Console()
    plan = Outputs(overwrite=overwrite)
    plan.input(gt, "ground truth", contents=True)
    plan.input(pred, "predictions", contents=True)
    plan.folder(output, "-o/--output", ["summary.json"])
    report = evaluate_mot(gt, pred, iou=iou, mot17=mot17)
    console.print(report_table(report, f"MOT evaluation, {len(report.rows)} sequence"
                                       f"{'s' if len(report.rows) != 1 else ''}"))
    for name in report.missing:
        console.print(f"[yellow]note:[/] no prediction file for sequence '{name}' in {pred}: scored as an empty "
                      "prediction.", highlight=False)
    if report.extra:
        console.print(f"[yellow]note:[/] predictions for {', '.join(report.extra)} have no ground truth in {gt} and "
                      "were not scored.", highlight=False)
    write_json(output / "summary.json", {"gt": str(gt), "pred": str(pred), **report.to_dict()})
    console.print(f"summary saved to [bold]{output / 'summary.json'}[/]")
