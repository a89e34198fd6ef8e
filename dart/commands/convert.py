"""``dart convert``: rewrite weights made by other projects in dart's own safetensors layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from dart.commands import options as opt


def convert(
    source: Annotated[Path, typer.Argument(
        help="The foreign file: a DART research student checkpoint or text cache (.pt).")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="File to write (.safetensors), or a folder (then FOLDER/<name>.safetensors).")],
    backbone: Annotated[Optional[str], typer.Option(
        "--backbone", help="The student a DART checkpoint holds (default: found from its keys and shapes).")] = None,
    checkpoint: Annotated[Optional[str], typer.Option(
        "--checkpoint", "-m", help="For a DART text cache: the SAM3 checkpoint it was made with (it is checked "
                                   "against it, and the converted cache records it).")] = None,
    overwrite: opt.Overwrite = False,
) -> None:
    """Rewrite a foreign weight file in dart's layout, read with torch.load(weights_only=True) and loaded strictly.

    Example: [bold]dart convert distilled/repvit_m2_3_distilled.pt -o weights/[/]
    """
    from dart.compat.convert import convert as run, default_name, detect_format
    from dart.io import Outputs, file_or_folder

    kind = detect_format(source)
    target = file_or_folder(output, default_name(source, kind), (".safetensors",))
    plan = Outputs(overwrite=overwrite)
    plan.input(source, "weight file", required=True)
    plan.input(checkpoint, "checkpoint", contents=True)
    plan.file(target, "-o/--output")
    result = run(source, target, kind=kind, backbone=backbone, checkpoint=checkpoint)
    Console().print(f"wrote [bold]{result.output}[/]: {result.summary}", highlight=False)
