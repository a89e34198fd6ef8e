"""``dart build``: a TensorRT engine from a dart ONNX export (needs a CUDA GPU and TensorRT)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from dart.commands import options as opt


def build(
    onnx: Annotated[Path, typer.Option("--onnx", help="ONNX file from `dart export` (external .data beside it is found).")],
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Engine file to write, or a folder (then FOLDER/<onnx name>.engine). Default: the ONNX "
                              "path with .engine.")] = None,
    fp16: Annotated[bool, typer.Option("--fp16/--fp32", help="Build in FP16 (mixed with --fp32-layers) or all FP32.")] = True,
    fp32_layers: Annotated[Optional[str], typer.Option(
        "--fp32-layers",
        help="Keep these in FP32: ViT block numbers of the full backbone and/or ONNX node-name globs, "
             "e.g. 5,12,'/fpn*'.")] = None,
    precision_spec: Annotated[Optional[Path], typer.Option(
        "--precision-spec", help="Precision spec file from `dart precision bisect` (instead of --fp32-layers).")] = None,
    workspace: Annotated[Optional[float], typer.Option(
        "--workspace", help="Builder workspace limit in GB (default: TensorRT's, the whole GPU).")] = None,
    timing_cache: Annotated[Optional[Path], typer.Option(
        "--timing-cache", help="Timing cache file, read if present and updated after the build (faster rebuilds).")] = None,
    opt_classes: Annotated[Optional[int], typer.Option(
        "--opt-classes", min=1, help="Class count the encoder-decoder is tuned for (default: its max classes).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Print TensorRT's own log.")] = False,
    overwrite: opt.Overwrite = False,
) -> None:
    """Build a TensorRT engine from an exported stage, and write its metadata beside it (X.engine.json).

    Example: [bold]dart build --onnx engines/backbone.onnx --fp16 --precision-spec precision.json[/]
    """
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from dart.errors import InputError
    from dart.export.metadata import read_onnx_metadata
    from dart.export.mixed_precision import PrecisionSpec
    from dart.export.tensorrt_build import build_engine, import_tensorrt
    from dart.export.metadata import sidecar_path
    from dart.io import Outputs, file_or_folder

    console = Console()
    if fp32_layers and precision_spec:
        raise InputError("give --fp32-layers or --precision-spec, not both.")
    meta = read_onnx_metadata(onnx)  # a bad file is refused before anything else
    spec = PrecisionSpec.load(precision_spec) if precision_spec else PrecisionSpec.parse(fp32_layers)
    default = onnx.with_suffix(".engine")
    engine = file_or_folder(output, default.name, (".engine", ".plan", ".trt")) if output else default
    plan = Outputs(overwrite=overwrite)
    plan.input(onnx, "ONNX file")
    plan.input(onnx.with_name(onnx.name + ".data"), "ONNX weights file")
    plan.input(precision_spec, "precision spec")
    plan.file(engine, "-o/--output")
    plan.file(sidecar_path(engine), "-o/--output (its metadata file)")
    if timing_cache is not None:
        plan.file(timing_cache, "--timing-cache", existing="extend")
    import_tensorrt()  # no GPU / no TensorRT: one sentence, before any work
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def update(phase: str, step: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=max(total, 1))
            bar.update(tasks[phase], completed=step, total=max(total, 1))

        result = build_engine(onnx, engine, fp16=fp16, precision=spec, workspace_gb=workspace,
                              timing_cache=timing_cache, opt_classes=opt_classes, verbose=verbose, progress=update)
    table = Table(title=f"TensorRT {result.tensorrt_version} engine", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("engine", f"{result.engine} ({result.size_bytes / 1e6:.1f} MB)")
    table.add_row("metadata", f"{result.engine}.json")
    table.add_row("stage", meta.describe())
    table.add_row("precision", result.metadata.precision + (f", FP32: {spec} ({len(result.fp32_nodes)} nodes)"
                                                              if spec else ""))
    table.add_row("build time", f"{result.seconds:.1f} s")
    if timing_cache:
        table.add_row("timing cache", str(timing_cache))
    console.print(table)
