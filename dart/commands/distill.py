"""``dart distill``: train a student backbone (``--phase adapter``) or recover a pruned ViT (``--phase prune``)
against SAM3's frozen FPN features. Multi-GPU: ``torchrun --nproc_per_node N -m dart distill ...``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from dart.commands import options as opt

D = opt.DEFAULTS
TRAIN = "Training"


def distill(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Folder of unlabeled training images "
                                           "(sub-folders included).")],
    phase: Annotated[str, typer.Option("--phase", help="adapter: train a timm student + FPN adapter; prune: "
                                       "self-distill a pruned SAM3 ViT against the full one.")] = "adapter",
    backbone: Annotated[str, typer.Option("--backbone", help="Student to train in the adapter phase (see `dart "
                                          "plugins`): repvit_m2_3, tiny_vit_21m, efficientvit_l1, efficientvit_l2, "
                                          "...")] = "repvit_m2_3",
    checkpoint: opt.Checkpoint = D["checkpoint"],
    skip_blocks: opt.SkipBlocks = None,
    mask_blocks: opt.MaskBlocks = None,
    prune_spec: opt.PruneSpecFile = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder: last.pt (resumable state), "
                                         "history.json, and student.safetensors (adapter) or pruned/ (prune), "
                                         "rewritten every epoch.")] = Path("runs/distill"),
    imgsz: opt.Imgsz = D["imgsz"],
    epochs: Annotated[int, typer.Option("--epochs", min=1, rich_help_panel=TRAIN, help="Epochs.")] = 10,
    batch: Annotated[int, typer.Option("--batch", min=1, rich_help_panel=TRAIN,
                                       help="Images per step and per process.")] = 4,
    lr: Annotated[Optional[float], typer.Option(
        "--lr", rich_help_panel=TRAIN, help="Peak AdamW learning rate; default 1e-3 (adapter), 1e-5 (prune).")] = None,
    weight_decay: Annotated[float, typer.Option("--weight-decay", min=0.0, rich_help_panel=TRAIN,
                                                help="AdamW weight decay.")] = 0.05,
    warmup: Annotated[float, typer.Option("--warmup", min=0.0, max=0.99, rich_help_panel=TRAIN,
                                          help="Linear warm-up, as a fraction of all steps, before the cosine "
                                               "decay.")] = 0.05,
    level_weights: Annotated[str, typer.Option("--level-weights", rich_help_panel=TRAIN,
                                               help="MSE weights of the 4x, 2x, 1x FPN levels.")] = "0.15,0.20,0.65",
    val_fraction: Annotated[float, typer.Option("--val-fraction", min=0.0, max=0.99, rich_help_panel=TRAIN,
                                                help="Share of the images held out for the per-level validation "
                                                     "cosine.")] = 0.05,
    steps_per_epoch: Annotated[Optional[int], typer.Option("--steps-per-epoch", min=1, rich_help_panel=TRAIN,
                                                           help="Cap the steps of each epoch (default: the whole "
                                                                "folder).")] = None,
    workers: Annotated[int, typer.Option("--workers", min=0, rich_help_panel=TRAIN,
                                         help="Data-loading worker processes.")] = 2,
    device: opt.Device = D["device"],
    amp: Annotated[bool, typer.Option("--amp/--no-amp", rich_help_panel=TRAIN,
                                      help="Mixed precision on CUDA (bf16 where supported, else fp16).")] = True,
    pretrained: Annotated[bool, typer.Option("--pretrained/--no-pretrained", rich_help_panel=TRAIN,
                                             help="Start the student from timm's ImageNet weights (downloaded "
                                                  "once).")] = True,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", rich_help_panel=TRAIN,
                                                      help="Cache the teacher's features here (float16, ~56 MB per "
                                                           "image at 1008 px) instead of recomputing them every "
                                                           "epoch; turns off --hflip.")] = None,
    hflip: Annotated[bool, typer.Option("--hflip/--no-hflip", rich_help_panel=TRAIN,
                                        help="Random horizontal flips (without --cache-dir).")] = True,
    resume: Annotated[bool, typer.Option("--resume", rich_help_panel=TRAIN,
                                         help="Continue the run in --output from its last.pt.")] = False,
    exist_ok: Annotated[bool, typer.Option("--overwrite", "--exist-ok", rich_help_panel=TRAIN,
                                           help="Start a new run in an --output that already holds one (its files "
                                                "are replaced).")] = False,
    seed: Annotated[int, typer.Option("--seed", rich_help_panel=TRAIN, help="Seed for the split, order and "
                                      "flips.")] = 0,
    threads: opt.Threads = None,
) -> None:
    """Distill SAM3's backbone into a student, or into a pruned ViT.

    Examples:
    [bold]dart distill --phase adapter --backbone repvit_m2_3 --data-dir images/ --epochs 10[/]
    [bold]dart distill --phase prune --prune-spec prune.yaml --data-dir images/ -o runs/pruned16[/]
    [bold]torchrun --nproc_per_node 4 -m dart distill --data-dir images/ --backbone efficientvit_l2[/]
    """
    from dart.errors import InputError
    from dart.io import Outputs
    from dart.models.loading import check_checkpoint_named, vit_blocks
    from dart.pruning.spec import resolve_prune_spec

    try:
        weights = tuple(float(w) for w in level_weights.split(","))
    except ValueError as exc:
        raise InputError(f"--level-weights takes three numbers like 0.15,0.20,0.65; got '{level_weights}'.") from exc
    if not data_dir.is_dir():  # the paths first: their mistakes need no torch to find
        raise InputError(f"training images folder '{data_dir}' does not exist or is not a folder.")
    check_checkpoint_named(checkpoint)
    prune = resolve_prune_spec(skip_blocks, mask_blocks, prune_spec)
    from dart.backends.base import resolve_device, set_threads
    from dart.distill import DistillConfig, run_distillation
    from dart.distill.trainer import HISTORY_FILE, PRUNED_DIR, STATE_FILE, STUDENT_FILE

    config = DistillConfig(
        phase=phase, data_dir=data_dir, output=output, checkpoint=checkpoint, backbone=backbone,
        prune=prune, imgsz=imgsz, epochs=epochs, batch=batch,
        lr=lr, weight_decay=weight_decay, warmup=warmup, level_weights=weights, val_fraction=val_fraction,  # type: ignore[arg-type]
        steps_per_epoch=steps_per_epoch, workers=workers, device=device, amp=amp, pretrained=pretrained,
        cache_dir=cache_dir, hflip=hflip and cache_dir is None, resume=resume, exist_ok=exist_ok, seed=seed,
    )
    config.validate()
    resolve_device(device)
    if config.prune and (blocks := vit_blocks(checkpoint)) is not None:
        config.prune.validate(blocks)
    plan = Outputs(overwrite=exist_ok)
    plan.input(data_dir, "training images folder", contents=True)
    plan.input(checkpoint, "checkpoint", contents=True)
    plan.input(prune_spec, "prune spec")
    artifact = STUDENT_FILE if phase == "adapter" else PRUNED_DIR
    plan.folder(output, "-o/--output", [STATE_FILE, HISTORY_FILE, *([artifact] if phase == "adapter" else [])],
                existing="replace")  # an earlier run there: --resume continues it, --overwrite starts over
    if cache_dir is not None:
        plan.folder(cache_dir, "--cache-dir", existing="replace")
    set_threads(threads)
    main = int(os.environ.get("RANK", "0")) == 0
    console = Console(quiet=not main)
    what = f"student {backbone}" if phase == "adapter" else f"pruned SAM3 ({config.prune})"
    console.print(f"distilling SAM3 from [bold]{checkpoint}[/] into {what} ...", highlight=False)
    result = run_distillation(config, progress=main, console=console)
    if main:
        from dart.distill.report import history_table

        console.print(history_table(result.history, f"distillation, {phase} phase"))
        console.print(f"weights: [bold]{result.artifact}[/]  (resumable state: {result.output / 'last.pt'})")
