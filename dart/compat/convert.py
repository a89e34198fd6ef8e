"""``dart convert``: a foreign weight file rewritten in dart's own safetensors layout, so later loads need no pickle.

Formats (found from the file's contents, not its name):

- a DART research student checkpoint (``student_state_dict``) -> a dart student checkpoint
  (``--student-weights``), with the backbone found or given (:mod:`dart.compat.dart_research`);
- a DART research text cache (``class_names``, ``text``, ``mask``) -> a dart text cache, checked against the
  checkpoint's text encoder and stamped with its fingerprint (it needs ``checkpoint``);
- a DART research pruned checkpoint (``pruned_state_dict``, ``skip_blocks``, ``mask_blocks``) -> a dart pruned
  checkpoint folder (``--checkpoint FOLDER`` prunes itself on load): the SAM3 ``checkpoint`` it was trained from,
  with DART's vision weights loaded over it strictly and its blocks removed;
- an EfficientSAM3 checkpoint (:mod:`dart.compat.efficientsam3`) -> the same tensors as one ``.safetensors``
  file (``--checkpoint FILE``), checked to load to the same model (fingerprint) first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dart.errors import CheckpointError

FORMATS = {"dart-student": "DART research student checkpoint", "dart-text-cache": "DART research text cache",
           "dart-pruned": "DART research pruned checkpoint", "efficientsam3": "EfficientSAM3 checkpoint"}
FOLDER_OUTPUTS = ("dart-pruned",)  # kinds written as a checkpoint folder, not one file


@dataclass
class Converted:
    kind: str  # a key of FORMATS
    output: Path
    summary: str  # one line for the user


def detect_format(path: str | Path) -> str:
    """Which foreign format ``path`` holds (a key of :data:`FORMATS`); anything else is one sentence."""
    from dart.compat import is_torch_file, read_torch_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"'{path}' does not exist.")
    if not is_torch_file(path):
        raise CheckpointError(f"'{path}' is not a PyTorch file; dart converts {', '.join(FORMATS.values())} files.")
    from dart.compat.dart_research import is_dart_pruned, is_dart_student, is_dart_text_cache  # torch: a real file
    ckpt: Any = read_torch_file(path, "weight file")
    if is_dart_student(ckpt):
        return "dart-student"
    if is_dart_text_cache(ckpt):
        return "dart-text-cache"
    if is_dart_pruned(ckpt):
        return "dart-pruned"
    if _efficientsam3_state(ckpt) is not None:
        return "efficientsam3"
    keys = ", ".join(sorted(map(str, ckpt))[:6]) if isinstance(ckpt, dict) else type(ckpt).__name__
    raise CheckpointError(f"'{path}' is none of the formats dart converts ({', '.join(FORMATS.values())}); it holds "
                          f"{keys}.")


def default_name(path: str | Path, kind: str) -> str:
    return Path(path).stem if kind in FOLDER_OUTPUTS else f"{Path(path).stem}.safetensors"


def convert(path: str | Path, output: str | Path, *, kind: str | None = None, backbone: str | None = None,
            checkpoint: Any = None) -> Converted:
    """Rewrite ``path`` at ``output`` (a ``.safetensors`` file) in dart's layout; ``checkpoint`` (a path, hub id or
    :class:`~dart.models.loading.LoadedSam3`) is the model a text cache is checked against."""
    kind = kind or detect_format(path)
    output = Path(output)
    if kind == "dart-text-cache":
        return _convert_text_cache(path, output, checkpoint)
    if kind == "dart-pruned":
        return _convert_pruned(path, output, checkpoint)
    if kind == "efficientsam3":
        return _convert_efficientsam3(path, output)
    if kind == "dart-student":
        from dart.compat.dart_research import read_dart_student
        from dart.students.model import write_student_checkpoint

        meta, state = read_dart_student(path, backbone)
        write_student_checkpoint(output, meta, state)
        return Converted(kind, output, f"{meta['backbone']} student ({len(state)} tensors, FPN width "
                                       f"{meta['fpn_channels']}): use it with --student-weights {output}")
    raise CheckpointError(f"dart cannot convert {kind} files.")  # pragma: no cover - FORMATS lists every kind


def _convert_text_cache(path: str | Path, output: Path, checkpoint: Any) -> Converted:
    from dart.backends.torch_backend import TorchBackend
    from dart.errors import InputError
    from dart.models.loading import LoadedSam3, load_sam3
    from dart.text_cache import TextCache

    if checkpoint is None:
        raise InputError(f"'{path}' is a DART text cache, which records no model: pass --checkpoint with the "
                         "checkpoint it was made with (dart checks the cache against it and records it).")
    loaded = checkpoint if isinstance(checkpoint, LoadedSam3) else load_sam3(checkpoint)
    cache = TextCache(loaded.fingerprint, path)
    cache.verify(TorchBackend(loaded, device="cpu").encode_text)
    cache.path, cache.dirty = output, True
    cache.save()
    return Converted("dart-text-cache", output, f"{len(cache.entries)} classes for model {loaded.fingerprint}: use it "
                                                f"with --text-cache {output}")


def _convert_pruned(path: str | Path, output: Path, checkpoint: Any) -> Converted:
    from dart.errors import InputError
    from dart.models.loading import LoadedSam3, key_differences, load_sam3
    from dart.pruning import apply_pruning
    from dart.pruning.checkpoint import expected_missing, save_pruned
    from dart.compat.dart_research import PRUNED_WHAT, read_dart_pruned

    if checkpoint is None:
        raise InputError(f"'{path}' is a DART pruned checkpoint, which holds only the ViT: pass --checkpoint with the "
                         "SAM3 checkpoint it was pruned from (the rest of the model comes from it).")
    loaded = checkpoint if isinstance(checkpoint, LoadedSam3) else load_sam3(checkpoint)
    model = loaded.model
    if getattr(model, "dart_prune_spec", None):
        raise InputError(f"--checkpoint {loaded.source} is already pruned; give the full SAM3 checkpoint.")
    num_blocks = len(model.vision_encoder.backbone.layers)
    spec, state = read_dart_pruned(path, num_blocks)
    mine = model.state_dict()
    _, unexpected, shaped = key_differences(mine, state)
    vision = {k for k in mine if k.startswith("vision_encoder.") and "position_ids" not in k}
    fpn_unused = {k for k in vision if k.startswith("vision_encoder.neck.fpn_layers.3.")}  # never stored by DART
    # DART also drops the norm in front of a skipped branch, which then has no input: it may be absent too
    norms = {f"vision_encoder.backbone.layers.{b}.layer_norm{1 if branch == 'attn' else 2}."
             for b, branch in spec.mask_blocks}
    unused = {k for k in vision if k.startswith(tuple(norms))} if norms else set()
    missing = sorted(vision - set(state) - expected_missing(model, spec) - fpn_unused - unused)
    removed = sorted(set(state) & expected_missing(model, spec))
    for problem, keys in (("is not in this SAM3 model", unexpected), ("has another shape here", shaped),
                          ("is missing (and not removed by its pruning)", missing),
                          (f"belongs to a block its pruning ({spec}) removes", removed)):
        if keys:
            raise CheckpointError(f"{PRUNED_WHAT} '{path}' does not fit --checkpoint {loaded.source}: '{keys[0]}' "
                                  f"{problem}.")
    model.load_state_dict(state, strict=False)  # every key checked above; the rest stays the base checkpoint's
    apply_pruning(model, spec)
    save_pruned(model, output, tokenizer_source=loaded.source if Path(str(loaded.source)).is_dir() else None,
                source=f"DART research pruned checkpoint {Path(path).name} over {loaded.source}")
    return Converted("dart-pruned", output, f"SAM3 pruned {spec} ({len(state)} vision tensors from {Path(path).name}): "
                                            f"use it with --checkpoint {output}")


def _efficientsam3_state(ckpt: Any) -> dict[str, Any] | None:
    """The state dict of an EfficientSAM3 checkpoint (as is, or under ``model``), else None."""
    from dart.compat.efficientsam3 import is_efficientsam3

    state = ckpt.get("model") if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict) else ckpt
    return state if isinstance(state, dict) and is_efficientsam3(state) else None


def _convert_efficientsam3(path: str | Path, output: Path) -> Converted:
    from safetensors.torch import save_file

    from dart.compat import read_torch_file
    from dart.io import atomic_path
    from dart.models.loading import load_sam3

    before = load_sam3(path)  # refuses, with a sentence, a file that does not load strictly
    state = _efficientsam3_state(read_torch_file(path, "EfficientSAM3 checkpoint"))
    tensors = {key: value.contiguous() for key, value in state.items()}
    with atomic_path(output) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "efficientsam3", "source": Path(path).name,
                                                "backbone": before.backbone.dart_backbone_name})
        after = load_sam3(tmp)
        if after.fingerprint != before.fingerprint:  # pragma: no cover - the same tensors under the same names
            raise CheckpointError(f"'{output}' would not load to the model '{path}' holds; nothing was written.")
    return Converted("efficientsam3", output, f"{before.backbone.dart_backbone_name} ({len(tensors)} tensors, model "
                                              f"{before.fingerprint}): use it with --checkpoint {output}")
