"""``dart convert``: rewrite weights made by other projects in dart's own safetensors layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from dart.commands import options as opt


def convert(
    source: Annotated[Path, typer.Argument(
        help="The foreign file (.pt): a DART research student checkpoint, pruned checkpoint or text cache, or an "
             "EfficientSAM3 checkpoint.")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="File to write (.safetensors), or a folder (then FOLDER/<name>.safetensors); for a "
                               "pruned checkpoint, the checkpoint folder to write.")],
    backbone: Annotated[Optional[str], typer.Option(
        "--backbone", help="The student a DART checkpoint holds (default: found from its keys and shapes).")] = None,
    checkpoint: Annotated[Optional[str], typer.Option(
        "--checkpoint", "-m", help="For a DART text cache: the SAM3 checkpoint it was made with (it is checked "
                                   "against it); for a DART pruned checkpoint: the SAM3 checkpoint it was pruned "
                                   "from (the rest of the model).")] = None,
    overwrite: opt.Overwrite = False,
) -> None:
    """Rewrite a foreign weight file in dart's layout, read with torch.load(weights_only=True) and loaded strictly.

    Example: [bold]dart convert distilled/repvit_m2_3_distilled.pt -o weights/[/]
    """
    from dart.compat.convert import FOLDER_OUTPUTS, convert as run, default_name, detect_format
    from dart.io import Outputs, file_or_folder

    kind = detect_format(source)
    plan = Outputs(overwrite=overwrite)
    plan.input(source, "weight file", required=True)
    plan.input(checkpoint, "checkpoint", contents=True)
    if kind in FOLDER_OUTPUTS:  # a pruned checkpoint folder, written whole
        target = output
        plan.folder(target, "-o/--output", whole=True)
    else:
        target = file_or_folder(output, default_name(source, kind), (".safetensors",))
        plan.file(target, "-o/--output")
    result = run(source, target, kind=kind, backbone=backbone, checkpoint=checkpoint)
    Console().print(f"wrote [bold]{result.output}[/]: {result.summary}", highlight=False)
