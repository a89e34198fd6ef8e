"""``dart text-cache``: build a text-feature cache ahead of time, or show what one holds.

An engine deployment (ONNX / TensorRT stages) needs no PyTorch model at all when its class names are in a text
cache: build the cache once where the checkpoint is, ship it with the engines (``engines/text.safetensors`` is
found without a flag).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from dart.commands import options as opt

D = opt.DEFAULTS

app = typer.Typer(help="Build a text-feature cache for a class list, or show what a cache holds.",
                  no_args_is_help=True, rich_markup_mode="rich")


@app.command("build")
def build(
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Cache file to create or extend (.safetensors). Default with --engines: "
                               "ENGINES/text.safetensors.")] = None,
    engines: Annotated[Optional[Path], typer.Option(
        "--engines", help="Engines folder the cache is for: the checkpoint must be the one they were exported "
                          "from, and the cache goes beside them.")] = None,
    classes: opt.Classes = None,
    classes_file: opt.ClassesFile = None,
    coco: opt.Coco = False,
    exemplar: opt.Exemplars = None,
    imgsz: Annotated[Optional[int], typer.Option(
        "--imgsz", help="Input size the exemplar tokens are computed at (default: the engines', else 1008); text "
                        "features do not depend on it.")] = None,
    checkpoint: opt.Checkpoint = D["checkpoint"],
    tokenizer: opt.Tokenizer = None,
    device: opt.Device = D["device"],
    threads: opt.Threads = None,
) -> None:
    """Encode the class names (or their prompts) with SAM3's text encoder into a cache file; exemplars drawn on
    reference images (-e IMAGE:BOXES=NAME) get their prompt tokens cached too, so engines run them with no model.

    Example: [bold]dart text-cache build --coco --engines engines/[/]  (writes engines/text.safetensors)
    """
    # the command line's files are checked before torch is imported (engines are read with it)
    from dart.classes import exemplar_images, parse_vocabulary, resolve_classes
    from dart.compat import is_torch_file
    from dart.errors import InputError
    from dart.io import Outputs
    from dart.models.loading import check_checkpoint_named
    from dart.models.sam3 import DEFAULT_IMGSZ, validate_imgsz
    from dart.setup import ENGINES_TEXT_CACHE

    console = Console()
    entries = resolve_classes(classes, classes_file, coco, exemplar)
    vocab = parse_vocabulary(entries)
    prompts = vocab.prompts
    if vocab.in_image:
        raise InputError("exemplar boxes without an image are drawn on each detected image, so their tokens cannot be "
                         "cached: give the image they are on (-e IMAGE:x1,y1,x2,y2=NAME).")
    fingerprint = None
    if engines is not None:
        from dart.backends.engine_backend import find_stage_files, infer_engine_kind
        from dart.export.metadata import read_metadata

        stage_files = find_stage_files(engines, infer_engine_kind(engines))
        stage_meta = read_metadata(stage_files[0])
        fingerprint, built = stage_meta.fingerprint, stage_meta.imgsz  # exemplar tokens: at the engines' size
        if imgsz is not None and imgsz != built:
            raise InputError(f"the engines in '{engines}' take {built} px images, not --imgsz {imgsz}; drop --imgsz.")
        imgsz = built
        output = output or engines / ENGINES_TEXT_CACHE
    if output is None:
        raise InputError("say where the cache goes: -o text.safetensors, or --engines DIR (DIR/text.safetensors).")
    check_checkpoint_named(checkpoint)
    imgsz = validate_imgsz(imgsz) if imgsz is not None else DEFAULT_IMGSZ
    plan = Outputs()
    plan.input(checkpoint, "checkpoint", contents=True)
    plan.input(tokenizer, "tokenizer", contents=True)
    plan.input(classes_file, "classes file")
    plan.inputs_from(exemplar_images(entries), "exemplar image")
    if engines is not None:
        plan.inputs_from(stage_files, "engine file")
    plan.file(output, "-o/--output", existing="extend")  # first: -o on the checkpoint is that, not a cache
    if output.is_file() and is_torch_file(output):
        raise InputError(f"'{output}' is a DART research text cache; dart reads such files but never writes into "
                         f"them: convert it (dart convert {output} --checkpoint CKPT -o text.safetensors) or give "
                         "another -o.")
    from dart.backends.base import resolve_device, set_threads
    from dart.backends.torch_backend import TorchBackend
    from dart.models.loading import load_sam3
    from dart.text_cache import TextCache, read_cache_info

    resolve_device(device)
    if output.is_file():
        existing = read_cache_info(output)  # a damaged or foreign file is refused before the model loads
        if fingerprint is not None and existing["fingerprint"] != fingerprint:
            raise InputError(f"the text cache '{output}' belongs to model {existing['fingerprint']}, not to the "
                             f"engines' {fingerprint}; use another -o.")
    set_threads(threads)
    with console.status(f"loading SAM3 from {checkpoint} ..."):
        loaded = load_sam3(checkpoint, tokenizer=tokenizer, imgsz=imgsz)
    if fingerprint is not None and loaded.fingerprint != fingerprint:
        raise InputError(f"the engines in '{engines}' were exported from checkpoint {fingerprint}, but {checkpoint} "
                         f"is {loaded.fingerprint}; pass --checkpoint with the checkpoint they were exported from.")
    cache = TextCache(loaded.fingerprint, output)  # another model's cache is refused here, before any work
    todo = cache.missing(prompts)
    known = len(cache.exemplars)
    if todo or vocab.exemplars:
        backend = TorchBackend(loaded, device=device)
        with console.status(f"encoding {len(todo)} prompts ..."):
            cache.get(prompts, backend.encode_text)
        if vocab.exemplars:
            from dart.detector import Detector

            count = sum(ex is not None for ex in vocab.exemplars)
            with console.status(f"computing the prompt tokens of {count} exemplars ..."):
                Detector(backend, entries, text_cache=cache)  # computes what the cache lacks and saves it
    note = f"; {len(cache.exemplars)} exemplars ({len(cache.exemplars) - known} new)" if cache.exemplars else ""
    console.print(f"{output}: {len(cache.entries)} prompts for model {cache.fingerprint} "
                  f"({len(todo)} new, {len(prompts) - len(todo)} already there){note}", highlight=False)


@app.command("show")
def show(cache: Annotated[Path, typer.Argument(help="A text cache file.")]) -> None:
    """List the prompts in a cache and the model it belongs to (no model is loaded).

    Example: [bold]dart text-cache show engines/text.safetensors[/]
    """
    from dart.text_cache import read_cache_info

    info = read_cache_info(cache)
    made_by = info.get("source") or f"model {info['fingerprint']}, dart {info['dart_version']}"
    table = Table(title=f"{cache}: {made_by}", title_justify="left")
    table.add_column("#", justify="right", style="dim")
    table.add_column("prompt")
    for i, name in enumerate(info["classes"]):
        table.add_row(str(i), str(name))
    for i, key in enumerate(info.get("exemplars") or []):
        table.add_row(f"e{i}", f"exemplar {key} (image hash:boxes)")
    Console().print(table)
