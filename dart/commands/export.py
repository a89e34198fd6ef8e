"""``dart export backbone`` / ``dart export encdec``: the two stages as verified ONNX files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from dart.commands import options as opt
from dart.prompts import DEFAULT_EXEMPLAR_BOXES

D = opt.DEFAULTS
EXPORT = "Export"

app = typer.Typer(
    name="export",
    help="Export the backbone and the encoder-decoder to ONNX (simplified, with metadata, verified against PyTorch).",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

Attn = Annotated[str, typer.Option(
    "--attn", rich_help_panel=EXPORT,
    help="Attention form: eager (explicit softmax(Q·Kᵀ), accurate in FP16) or sdpa (the fused-op form).")]
Opset = Annotated[int, typer.Option("--opset", min=17, rich_help_panel=EXPORT,
                                    help="ONNX opset (17+ exports LayerNorm as one node).")]
Simplify = Annotated[bool, typer.Option("--simplify/--no-simplify", rich_help_panel=EXPORT,
                                        help="Simplify the graph with onnxslim.")]
Verify = Annotated[bool, typer.Option("--verify/--no-verify", rich_help_panel=EXPORT,
                                      help="Run the graph in onnxruntime and compare every output with PyTorch.")]
VerifyImage = Annotated[Optional[Path], typer.Option(
    "--image", rich_help_panel=EXPORT, help="Image used for the verification (default: a synthetic test picture).")]
MinCosine = Annotated[float, typer.Option("--min-cosine", min=0.0, max=1.0, rich_help_panel=EXPORT,
                                          help="Verification fails below this cosine similarity with PyTorch.")]


def _render(console: Console, result, title: str) -> None:
    from rich.table import Table

    from dart.export.verify import agreement_table

    meta = result.metadata
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("file", f"{result.path}" + (f" (+ {result.path.name}.data)" if result.external_data else ""))
    table.add_row("size", f"{result.size_bytes / 1e6:.1f} MB")
    table.add_row("nodes", f"{result.nodes}" + (" (onnxslim)" if result.simplified else " (not simplified)"))
    table.add_row("imgsz", str(meta.imgsz))
    if meta.stage == "backbone":
        table.add_row("backbone", meta.backbone)
        table.add_row("pruning", str(meta.prune_spec))
    else:
        table.add_row("classes", f"1..{meta.max_classes} (dynamic)" if meta.dynamic_classes
                      else f"{meta.max_classes} (fixed)")
        table.add_row("masks", "yes" if meta.masks else "no")
        table.add_row("prompt mode", meta.prompt_mode)
    table.add_row("attention", meta.attn)
    table.add_row("checkpoint", f"{meta.checkpoint} ({meta.fingerprint})")
    console.print(table)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    if result.agreement:
        console.print(agreement_table(result.agreement, "onnxruntime vs PyTorch", min_cosine=None))
    else:
        console.print("[yellow]not verified[/] (--no-verify)")


def _plan(output: Path, default_name: str, overwrite: bool, imgsz: int, attn: str, image: Path | None,
          checkpoint: str, tokenizer: str | None, **inputs: Path | str | None) -> Path:
    """Everything an export can check before it loads the model: values, inputs, and the ONNX file (with the
    ``.data`` file beside it that a large graph needs) against inputs, earlier exports and the file system."""
    from dart.errors import InputError
    from dart.export.metadata import check_attention_form
    from dart.io import Outputs, file_or_folder
    from dart.models.loading import check_checkpoint_named
    from dart.models.sam3 import validate_imgsz

    validate_imgsz(imgsz)
    check_attention_form(attn)
    check_checkpoint_named(checkpoint)
    if image is not None and not image.is_file():
        raise InputError(f"image '{image}' does not exist.")
    target = file_or_folder(output, default_name, (".onnx",))
    plan = Outputs(overwrite=overwrite)
    plan.input(checkpoint, "checkpoint", contents=True)
    plan.input(tokenizer, "tokenizer", contents=True)
    plan.input(image, "verification image")
    for what, path in inputs.items():
        plan.input(path, what.replace("_", " "))
    plan.file(target, "-o/--output")
    plan.file(target.with_name(target.name + ".data"), "-o/--output (its .data weights file)")
    return target


def _progress(console: Console):
    status = console.status("exporting ...")
    status.start()

    def update(message: str) -> None:
        status.update(f"{message} ...")

    return status, update


@app.command("backbone")
def backbone(
    checkpoint: opt.Checkpoint = D["checkpoint"],
    tokenizer: opt.Tokenizer = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="ONNX file to write, or a folder (then "
                                         "FOLDER/backbone.onnx).")] = Path("engines/backbone.onnx"),
    imgsz: opt.Imgsz = D["imgsz"],
    skip_blocks: opt.SkipBlocks = None,
    mask_blocks: opt.MaskBlocks = None,
    prune_spec: opt.PruneSpecFile = None,
    backbone_name: opt.Backbone = None,
    student_weights: opt.StudentWeights = None,
    attn: Attn = "eager",
    opset: Opset = 17,
    simplify: Simplify = True,
    verify: Verify = True,
    image: VerifyImage = None,
    min_cosine: MinCosine = 0.999,
    overwrite: opt.Overwrite = False,
    threads: opt.Threads = None,
) -> None:
    """Export the backbone (ViT + FPN, optionally pruned, or a student) to ONNX.

    Input [bold]pixel_values[/] [1,3,S,S]; outputs [bold]fpn_4x, fpn_2x, fpn_1x[/] (at 1008 px: 288², 144², 72²).

    Example: [bold]dart export backbone --imgsz 1008 --skip-blocks 5,10 -o engines/backbone.onnx[/]
    """
    from dart.errors import InputError
    from dart.models.loading import load_sam3, vit_blocks
    from dart.pruning.spec import resolve_prune_spec

    console = Console()
    output = _plan(output, "backbone.onnx", overwrite, imgsz, attn, image, checkpoint, tokenizer,
                   prune_spec=prune_spec, student_weights=student_weights)
    prune = resolve_prune_spec(skip_blocks, mask_blocks, prune_spec)
    student = student_weights is not None or (backbone_name not in (None, "sam3"))
    if student:
        from dart.students import student_name_of

        if student_weights is None:
            raise InputError(f"--backbone {backbone_name} needs --student-weights FILE (from `dart distill`).")
        if prune:
            raise InputError("--skip-blocks/--mask-blocks prune SAM3's ViT, which a student backbone replaces; give "
                             "one or the other.")
        name = backbone_name or student_name_of(student_weights)
    elif prune and (blocks := vit_blocks(checkpoint)) is not None:
        prune.validate(blocks)
    from dart.backends.base import set_threads  # torch: imported once the command line has been checked
    from dart.export.onnx_export import export_backbone

    set_threads(threads)
    with console.status(f"loading SAM3 from {checkpoint} ..."):
        loaded = load_sam3(checkpoint, imgsz=imgsz, tokenizer=tokenizer)
    module = None
    if student:
        from dart.students import build_backbone

        module = build_backbone(name, loaded.model, weights=student_weights)
    else:
        name = "sam3"
    status, update = _progress(console)
    try:
        result = export_backbone(loaded, output, imgsz=imgsz, prune=prune or None, attn=attn, opset=opset,
                                 simplify=simplify, verify=verify, image=image, min_cosine=min_cosine,
                                 backbone_name=name, module=module, progress=update)
    finally:
        status.stop()
    _render(console, result, "backbone export")


def _warn_if_short_of_memory(console: Console, model, max_classes: int, dynamic_classes: bool) -> None:
    """A warning, before minutes of tracing, where the export will likely need more memory than the system has
    (the kernel would then stop it with no sentence of dart's)."""
    from dart.export.onnx_export import available_memory_bytes, encdec_export_bytes, traced_classes

    traced = traced_classes(max_classes, dynamic_classes)
    need, have = encdec_export_bytes(model, traced), available_memory_bytes()
    if have is None or need <= have:
        return
    advice = (f"--static-classes traces all {traced} classes at once: a dynamic class axis (the default) traces "
              f"{traced_classes(max_classes, True)} whatever --max-classes" if not dynamic_classes
              else "close other programs, or export on a machine with more memory")
    console.print(f"[yellow]warning:[/] this export needs about {need / 1e9:.1f} GB of memory and {have / 1e9:.1f} GB "
                  f"is available, so the system may stop it; {advice}.", highlight=False)


@app.command("encdec")
def encdec(
    checkpoint: opt.Checkpoint = D["checkpoint"],
    tokenizer: opt.Tokenizer = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="ONNX file to write, or a folder (then "
                                         "FOLDER/encdec.onnx).")] = Path("engines/encdec.onnx"),
    imgsz: opt.Imgsz = D["imgsz"],
    max_classes: Annotated[int, typer.Option(
        "--max-classes", min=1, help="Most classes one call takes (more are chunked by the Detector).")] = 4,
    dynamic_classes: Annotated[bool, typer.Option(
        "--dynamic-classes/--static-classes",
        help="Dynamic class axis 1..max (1 class does not pay for max); static: always max (padded).")] = True,
    masks: Annotated[bool, typer.Option("--masks/--no-masks",
                                        help="Also output mask logits [C,Q,4s,4s] (needed for --masks).")] = False,
    attn: Attn = "eager",
    prompt_mode: Annotated[str, typer.Option(
        "--prompt-mode", rich_help_panel=EXPORT,
        help="meta: class prompts are text tokens plus the geometry token (SAM3); dart: text tokens only (the DART "
             "research code). Recorded in the file; engines built from it run that way.")] = D["prompt_mode"],
    exemplar_boxes: Annotated[int, typer.Option(
        "--exemplar-boxes", min=0, rich_help_panel=EXPORT,
        help="Most boxes of one exemplar prompt the graph takes: it gets a prompt_tokens [C, boxes+1, D] input "
             "for exemplar classes (tokens computed on a reference image). 0: text classes only.")] = (
        DEFAULT_EXEMPLAR_BOXES),
    opset: Opset = 17,
    simplify: Simplify = True,
    verify: Verify = True,
    image: VerifyImage = None,
    min_cosine: MinCosine = 0.999,
    overwrite: opt.Overwrite = False,
    threads: opt.Threads = None,
) -> None:
    """Export the encoder-decoder (DETR encoder + decoder, box head, scoring, presence; mask decoder with --masks).

    Inputs [bold]fpn_1x[/] [1,D,s,s] (+ fpn_4x, fpn_2x with --masks), [bold]text[/] [C,32,D], [bold]text_mask[/]
    [C,32] int32, [bold]prompt_tokens[/] [C,G,D] + [bold]prompt_tokens_mask[/] [C,G] (exemplar classes); outputs
    [bold]logits[/] [C,Q], [bold]boxes[/] [C,Q,4] (xyxy, 0..1), [bold]presence[/] [C,1].

    Example: [bold]dart export encdec --imgsz 1008 --max-classes 4 -o engines/encdec.onnx[/]
    """
    from dart.models.loading import load_sam3
    from dart.prompts import check_prompt_mode

    console = Console()
    check_prompt_mode(prompt_mode)
    output = _plan(output, "encdec.onnx", overwrite, imgsz, attn, image, checkpoint, tokenizer)
    from dart.backends.base import set_threads  # torch: imported once the command line has been checked
    from dart.export.onnx_export import export_encdec

    set_threads(threads)
    with console.status(f"loading SAM3 from {checkpoint} ..."):
        loaded = load_sam3(checkpoint, imgsz=imgsz, tokenizer=tokenizer)
    _warn_if_short_of_memory(console, loaded.model, max_classes, dynamic_classes)
    status, update = _progress(console)
    try:
        result = export_encdec(loaded, output, imgsz=imgsz, max_classes=max_classes, dynamic_classes=dynamic_classes,
                               masks=masks, attn=attn, prompt_mode=prompt_mode, opset=opset, simplify=simplify,
                               verify=verify, image=image, min_cosine=min_cosine, exemplar_boxes=exemplar_boxes,
                               progress=update)
    finally:
        status.stop()
    _render(console, result, "encoder-decoder export")
