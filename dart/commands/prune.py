"""``dart prune``: find the ViT blocks SAM3 can lose (``search``), write a pruned checkpoint (``apply``), and
read a search or spec file back (``show``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from dart.commands import options as opt

D = opt.DEFAULTS

app = typer.Typer(help="Prune SAM3's ViT backbone: importance search, pruned checkpoints, spec files.",
                  no_args_is_help=True, rich_markup_mode="rich")

SEARCH_FILES = ("prune_spec.yaml", "prune_search.json", "prune_curve.png")
NumPrune = Annotated[Optional[int], typer.Option(
    "--num-prune", min=1, help="With a search file: take the spec after this many greedy steps (default: all).")]


@app.command()
def search(
    calib_dir: Annotated[Path, typer.Option("--calib-dir", help="Folder of calibration images.")],
    checkpoint: opt.Checkpoint = D["checkpoint"],
    num_images: Annotated[int, typer.Option("--num-images", min=1, help="Calibration images used (a seeded "
                                            "random sample of the folder).")] = 20,
    granularity: Annotated[str, typer.Option("--granularity", help="block: whole blocks; sub-block: attention "
                                             "and MLP branches separately.")] = "block",
    num_prune: Annotated[int, typer.Option("--num-prune", min=1, help="Units removed by the greedy phase "
                                           "(the saved spec removes this many).")] = 16,
    candidates: Annotated[int, typer.Option("--candidates", min=1, help="Least important remaining units "
                                            "re-scored at each greedy step (1: follow the phase-1 order).")] = 4,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for prune_spec.yaml (spec + full search), "
                                         "prune_search.json and prune_curve.png.")] = Path("runs/prune"),
    imgsz: opt.Imgsz = D["imgsz"],
    device: opt.Device = D["device"],
    precision: opt.Precision = D["precision"],
    batch: Annotated[int, typer.Option("--batch", min=1, help="Calibration images per forward pass.")] = 4,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the calibration sample.")] = 0,
    overwrite: opt.Overwrite = False,
    threads: opt.Threads = None,
) -> None:
    """Rank ViT blocks by how much removing them changes the FPN features, then remove them greedily.

    Example: [bold]dart prune search --calib-dir images/ --num-images 20 --num-prune 16 -o runs/prune[/]
    """
    from dart.models.loading import check_checkpoint_named

    check_checkpoint_named(checkpoint)  # before torch: a mistaken path needs no model code to find
    from dart.backends.base import resolve_device, resolve_precision, set_threads
    from dart.errors import InputError
    from dart.io import Outputs
    from dart.models.loading import load_sam3, vit_blocks
    from dart.models.sam3 import validate_imgsz
    from dart.pruning.report import importance_table, steps_table
    from dart.pruning.search import (GRANULARITIES, calibration_images, calibration_pixels, check_num_prune,
                                     importance_search, plot_search)

    console = Console()
    if granularity not in GRANULARITIES:
        raise InputError(f"unknown granularity '{granularity}': use block or sub-block.")
    validate_imgsz(imgsz)
    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)
    if (blocks := vit_blocks(checkpoint)) is not None:
        check_num_prune(num_prune, blocks, granularity)
    paths = calibration_images(calib_dir, num_images, seed=seed)
    plan = Outputs(overwrite=overwrite)
    plan.input(calib_dir, "calibration folder", contents=True)
    plan.input(checkpoint, "checkpoint", contents=True)
    plan.folder(output, "-o/--output", SEARCH_FILES)
    set_threads(threads)
    console.print(f"loading SAM3 from [bold]{checkpoint}[/] ...", highlight=False)
    loaded = load_sam3(checkpoint, imgsz=imgsz)
    pixels = calibration_pixels(paths, imgsz)
    with _progress() as (bar, report):
        result = importance_search(loaded.model, pixels, granularity=granularity, num_prune=num_prune,
                                   candidates=candidates, device=dev, dtype=dtype, batch=batch, progress=report)
    result.checkpoint = str(checkpoint)
    console.print(importance_table(result))
    console.print(steps_table(result))
    spec_file = result.save(output / SEARCH_FILES[0])
    result.save(output / SEARCH_FILES[1])
    curve = plot_search(result, output / SEARCH_FILES[2])
    console.print(f"spec ({result.spec_at()}): [bold]{spec_file}[/]  curve: [bold]{curve}[/]\n"
                  f"use it with [bold]--prune-spec {spec_file}[/] (detect, export, distill --phase prune) or "
                  f"`dart prune show {spec_file} --num-prune N --save spec.yaml` for another step.", highlight=False)


class _progress:
    """A rich progress bar fed by the search's ``progress(description, done, total)`` callback."""

    def __enter__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn())
        self.tasks: dict[str, int] = {}
        self.bar.__enter__()
        return self.bar, self.report

    def report(self, description: str, done: int, total: int) -> None:
        if description not in self.tasks:
            self.tasks[description] = self.bar.add_task(description, total=total)
        self.bar.update(self.tasks[description], completed=done, total=total)

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)


@app.command()
def apply(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder of the pruned checkpoint (config, weights, "
                                         "dart_prune.json, tokenizer).")],
    checkpoint: opt.Checkpoint = D["checkpoint"],
    skip_blocks: opt.SkipBlocks = None,
    mask_blocks: opt.MaskBlocks = None,
    prune_spec: opt.PruneSpecFile = None,
    num_prune: NumPrune = None,
    overwrite: opt.Overwrite = False,
    threads: opt.Threads = None,
) -> None:
    """Write a pruned checkpoint: the removed blocks are gone from its weights and it re-applies its spec on load.

    Example: [bold]dart prune apply --prune-spec runs/prune/prune_spec.yaml -o sam3-pruned/[/] then
    [bold]dart detect img.jpg -c person --checkpoint sam3-pruned/[/]
    """
    from dart.errors import InputError
    from dart.io import Outputs
    from dart.models.loading import check_checkpoint_named, load_sam3, vit_blocks
    from dart.pruning.checkpoint import find_prune_file, save_pruned
    from dart.pruning.spec import apply_pruning, resolve_prune_spec

    console = Console()
    check_checkpoint_named(checkpoint)
    if num_prune is not None:
        if prune_spec is None:
            raise InputError("--num-prune picks a step of a search file; give it with --prune-spec.")
        spec = _spec_from_search(prune_spec, num_prune)
    else:
        spec = resolve_prune_spec(skip_blocks, mask_blocks, prune_spec)
    if not spec:
        raise InputError("nothing to prune: give --skip-blocks, --mask-blocks or --prune-spec.")
    if find_prune_file(checkpoint) is None and (blocks := vit_blocks(checkpoint)) is not None:
        spec.validate(blocks)
    plan = Outputs(overwrite=overwrite)
    plan.input(checkpoint, "checkpoint", contents=True)
    plan.input(prune_spec, "prune spec")
    plan.folder(output, "-o/--output", whole=True)
    from dart.backends.base import set_threads  # torch: once the files are checked

    set_threads(threads)
    console.print(f"loading SAM3 from [bold]{checkpoint}[/] ...", highlight=False)
    loaded = load_sam3(checkpoint)
    before = sum(p.numel() for p in loaded.model.parameters())
    apply_pruning(loaded.model, spec)
    after = sum(p.numel() for p in loaded.model.parameters())
    save_pruned(loaded.model, output, tokenizer_source=loaded.tokenizer_source, source=str(checkpoint))
    console.print(f"pruned ({spec}): {before / 1e6:.1f}M -> {after / 1e6:.1f}M parameters; saved to "
                  f"[bold]{output}[/]", highlight=False)


@app.command()
def show(
    file: Annotated[Path, typer.Argument(help="A prune_spec.yaml / prune_search.json from `dart prune search`, or "
                                              "any spec file.")],
    num_prune: NumPrune = None,
    save: Annotated[Optional[Path], typer.Option("--save", help="Write the spec (after --num-prune steps) to this "
                                                 ".yaml/.json file.")] = None,
    overwrite: opt.Overwrite = False,
) -> None:
    """Print a search's tables (or a spec) and optionally save the spec after N greedy steps.

    Example: [bold]dart prune show runs/prune/prune_spec.yaml --num-prune 8 --save prune8.yaml[/]
    """
    from dart.errors import InputError
    from dart.pruning.report import importance_table, steps_table
    from dart.pruning.spec import PruneSpec

    console = Console()
    if save is not None:
        from dart.io import Outputs

        plan = Outputs(overwrite=overwrite)
        plan.input(file, "spec file")
        plan.file(save, "--save")
    result = _try_search(file)
    if result is None:
        if num_prune is not None:
            raise InputError(f"'{file}' is a plain spec without search steps; --num-prune needs a search file.")
        spec = PruneSpec.load(file)
        console.print(f"{file}: {spec}", highlight=False)
    else:
        spec = result.spec_at(num_prune)
        console.print(importance_table(result))
        console.print(steps_table(result, num_prune))
        console.print(f"spec after {num_prune or len(result.steps)} steps: {spec}", highlight=False)
    if save is not None:
        if result is not None:
            result.save(save, num_prune)
        else:
            spec.save(save)
        console.print(f"saved to [bold]{save}[/]")


def _try_search(path: Path):
    from dart.io import read_yaml
    from dart.pruning.search import SearchResult

    data = read_yaml(path, "file")
    if isinstance(data, dict) and "search" in data:
        return SearchResult.load(path)
    return None


def _spec_from_search(path: Path, num_prune: int):
    from dart.errors import InputError

    result = _try_search(path)
    if result is None:
        raise InputError(f"'{path}' is a plain spec without search steps; --num-prune needs a search file.")
    return result.spec_at(num_prune)
