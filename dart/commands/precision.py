"""``dart precision bisect`` / ``dart precision compare``: find and fix FP16 precision loss."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from dart.commands import options as opt

D = opt.DEFAULTS

app = typer.Typer(
    name="precision",
    help="Find the blocks that lose accuracy in FP16 (bisect) and compare any two runs (compare).",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

Image = Annotated[Optional[Path], typer.Option(
    "--image", help="Image to measure on (default: a synthetic test picture; a real photo is better).")]


@app.command("bisect")
def bisect_command(
    checkpoint: opt.Checkpoint = D["checkpoint"],
    tokenizer: opt.Tokenizer = None,
    onnx: Annotated[Optional[Path], typer.Option(
        "--onnx", help="Measure this backbone.onnx as the mixed-FP16 graph `dart build` makes, in onnxruntime "
                       "(instead of the PyTorch model).")] = None,
    image: Image = None,
    imgsz: opt.Imgsz = D["imgsz"],
    skip_blocks: opt.SkipBlocks = None,
    mask_blocks: opt.MaskBlocks = None,
    prune_spec: opt.PruneSpecFile = None,
    target_cosine: Annotated[float, typer.Option(
        "--target-cosine", min=0.0, max=1.0, help="Cosine with the FP32 backbone output the spec must reach.")] = 0.999,
    device: opt.Device = D["device"],
    output: Annotated[Path, typer.Option("--output", "-o", help="Precision spec file to write (JSON).")] = Path(
        "precision.json"),
    overwrite: opt.Overwrite = False,
    threads: opt.Threads = None,
) -> None:
    """Per-block FP16-vs-FP32 cosine of the backbone output, then the smallest set of blocks kept in FP32 that
    reaches --target-cosine, written as a precision spec for [bold]dart build --precision-spec[/].

    Runs with PyTorch (FP16 on a CUDA GPU, BF16 on the CPU) or, with --onnx, with onnxruntime on the mixed-FP16
    graph; the output says which.

    Example: [bold]dart precision bisect --image street.jpg --target-cosine 0.999 -o precision.json[/]
    """
    # the command line's files are checked before torch is imported
    from dart.errors import InputError
    from dart.io import Outputs
    from dart.models.loading import check_checkpoint_named, vit_blocks
    from dart.models.sam3 import validate_imgsz
    from dart.pruning.spec import resolve_prune_spec

    console = Console()
    if image is not None and not image.is_file():
        raise InputError(f"image '{image}' does not exist.")
    if onnx is not None and not onnx.is_file():
        raise InputError(f"ONNX file '{onnx}' does not exist.")
    plan = Outputs(overwrite=overwrite)
    plan.inputs_from([image, onnx, prune_spec], "input")
    plan.input(checkpoint, "checkpoint", contents=True)
    plan.file(output, "-o/--output")
    if onnx is None:
        check_checkpoint_named(checkpoint)
        validate_imgsz(imgsz)
        prune = resolve_prune_spec(skip_blocks, mask_blocks, prune_spec)
        if prune and (blocks := vit_blocks(checkpoint)) is not None:
            prune.validate(blocks)
    from dart.backends.base import resolve_device, set_threads
    from dart.export.onnx_export import sample_pixels
    from dart.precision import OnnxRuntimeRunner, TorchRunner, bisect, bisect_table

    if onnx is None:
        resolve_device(device)
    set_threads(threads)
    if onnx is not None:
        from dart.backends.onnxruntime_backend import resolve_providers
        from dart.export.metadata import read_onnx_metadata

        meta = read_onnx_metadata(onnx)
        runner = OnnxRuntimeRunner(onnx, sample_pixels(meta.imgsz, image), resolve_providers(device))
    else:
        from dart.models.loading import load_sam3
        from dart.pruning import apply_pruning

        console.print(f"loading SAM3 from [bold]{checkpoint}[/] ...", highlight=False)
        loaded = load_sam3(checkpoint, imgsz=imgsz, tokenizer=tokenizer)
        if prune:
            apply_pruning(loaded.model, prune)
        runner = TorchRunner(loaded, sample_pixels(imgsz, image), device)
    console.print(f"measuring with [bold]{runner.name}[/]"
                  + (" (BF16 has fewer mantissa bits than FP16: a pessimistic stand-in)" if "bf16" in runner.name
                     else ""), highlight=False)
    with console.status("measuring ...") as status:
        result = bisect(runner, target_cosine, progress=lambda m: status.update(f"{m} ..."))
    console.print(bisect_table(result))
    console.print(f"all blocks reduced: cosine {result.all_reduced:.6f}; with {len(result.fp32_blocks)} block(s) in "
                  f"FP32 ({', '.join(map(str, sorted(result.fp32_blocks))) or 'none'}): cosine {result.final:.6f} "
                  f"(target {target_cosine})", highlight=False)
    if not result.reached:
        console.print("[yellow]the target is not reached even with every block in FP32[/]: the remaining loss is in "
                      "the patch embedding / FPN; add them with --fp32-layers (e.g. '/fpn*') or lower the target.")
    result.save(output)
    console.print(f"precision spec written to [bold]{output}[/]; use it with "
                  f"[bold]dart build --onnx backbone.onnx --fp16 --precision-spec {output}[/]", highlight=False)


@app.command("compare")
def compare_command(
    run_a: Annotated[str, typer.Argument(help="First run: torch:fp32, torch:bf16, torch:fp16, onnxruntime:DIR, "
                                              "openvino:DIR, openvino-bf16:DIR, tensorrt:DIR (the reference).")],
    run_b: Annotated[str, typer.Argument(help="Second run, same forms.")],
    checkpoint: opt.Checkpoint = D["checkpoint"],
    tokenizer: opt.Tokenizer = None,
    image: Image = None,
    classes: Annotated[Optional[list[str]], typer.Option(
        "--classes", "-c", rich_help_panel=opt.DETECTION,
        help="Class names to compare (repeat the flag or separate with commas; default: person car).")] = None,
    text_cache: opt.TextCachePath = None,
    conf: opt.Conf = D["conf"],
    imgsz: opt.Imgsz = D["imgsz"],
    device: opt.Device = D["device"],
    threads: opt.Threads = None,
) -> None:
    """Cosine and max-abs error of every backbone and encoder-decoder output between two runs, and how far their
    final detections agree.

    Example: [bold]dart precision compare torch:fp32 onnxruntime:engines/ --image street.jpg -c person car[/]
    """
    # the command line's files are checked before torch is imported
    from dart.classes import resolve_classes
    from dart.errors import InputError
    from dart.io import Outputs
    from dart.models.loading import check_checkpoint_named

    console = Console()
    names = resolve_classes(classes or ["person", "car"], None, False)
    if image is not None and not image.is_file():
        raise InputError(f"image '{image}' does not exist.")
    if text_cache is not None:
        plan = Outputs()
        plan.input(checkpoint, "checkpoint", contents=True)
        plan.input(image, "image")
        plan.file(text_cache, "--text-cache", existing="extend")
    from dart.backends.base import set_threads
    from dart.export.onnx_export import sample_pixels
    from dart.export.verify import agreement_table
    from dart.precision import RunSpec, compare_runs, detection_agreement, make_backends, run_outputs
    from dart.text_cache import TextCache

    runs = [RunSpec.parse(run_a), RunSpec.parse(run_b)]
    if any(r.kind == "torch" for r in runs) or text_cache is None:
        check_checkpoint_named(checkpoint)
    set_threads(threads)
    loaded = None
    if any(r.kind == "torch" for r in runs) or text_cache is None:
        from dart.models.loading import load_sam3

        console.print(f"loading SAM3 from [bold]{checkpoint}[/] ...", highlight=False)
        engine_meta = None
        for r in runs:
            if r.kind != "torch":
                from dart.backends.engine_backend import find_stage_files
                from dart.export.metadata import read_metadata

                engine_meta = read_metadata(find_stage_files(r.path, r.kind)[0])
        loaded = load_sam3(checkpoint, imgsz=engine_meta.imgsz if engine_meta else imgsz, tokenizer=tokenizer)
    backends = make_backends(runs, loaded, device)
    if backends[0].imgsz != backends[1].imgsz:
        raise InputError(f"{runs[0]} runs at imgsz {backends[0].imgsz} but {runs[1]} at {backends[1].imgsz}.")
    if backends[0].fingerprint != backends[1].fingerprint:
        raise InputError(f"{runs[0]} comes from checkpoint {backends[0].fingerprint} but {runs[1]} from "
                         f"{backends[1].fingerprint}; compare runs of the same model.")
    encoder = next((b for b in backends if b.has_text_encoder), None)
    text, text_mask = TextCache(backends[0].fingerprint, text_cache).get(
        names, encoder.encode_text if encoder is not None else None)
    pixels = sample_pixels(backends[0].imgsz, image)
    with console.status("running ..."):
        outputs = [run_outputs(b, pixels, text, text_mask) for b in backends]
    console.print(agreement_table(compare_runs(*outputs), f"{runs[1]} vs {runs[0]} ({', '.join(names)})"))
    console.print(detection_agreement(*outputs, conf=conf).sentence(), highlight=False)
