"""Pruned checkpoints: a SAM3 folder that carries its own prune spec and is pruned again on load.

Layout of a pruned checkpoint folder (what :func:`save_pruned` writes)::

    config.json          the *full* SAM3 config (the architecture before pruning)
    model.safetensors    the weights the pruned model still has, keyed by full-backbone block indices
                         (``vision_encoder.backbone.layers.12.…``): removed blocks and skipped branches are absent
    dart_prune.json      {"format": 1, "skip_blocks": [...], "mask_blocks": ["25:attn", ...], "num_blocks": 32, ...}
    tokenizer files      copied from the source checkpoint when it had them

:func:`dart.models.loading.load_sam3` notices ``dart_prune.json`` beside the weights and loads through
:func:`load_pruned`, which builds the full architecture, loads the weights strictly (the only missing weights
allowed are exactly those the spec removes), then applies the spec: ``dart detect --checkpoint pruned/`` needs
no prune flags.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dart.errors import CheckpointError, InputError
from dart.io import atomic_folder
from dart.pruning.spec import PruneSpec, apply_pruning, kept_blocks

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

PRUNE_FILE = "dart_prune.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = 1
LAYER_PREFIX = "vision_encoder.backbone.layers."
TOKENIZER_GLOBS = ("tokenizer*", "vocab.json", "merges.txt", "special_tokens_map.json")


def find_prune_file(path: str | Path) -> Path | None:
    """``dart_prune.json`` of a checkpoint folder (or beside a ``.safetensors`` file), if there is one."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    candidate = folder / PRUNE_FILE
    return candidate if candidate.is_file() else None


def read_prune_file(path: str | Path) -> tuple[PruneSpec, dict[str, Any]]:
    """The spec and the metadata recorded in a ``dart_prune.json``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable dart prune file ({exc}); re-save the pruned checkpoint.") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a dart prune file of format {FORMAT}; re-save the pruned checkpoint.")
    num_blocks = data.get("num_blocks")
    try:
        spec = PruneSpec.parse(data.get("skip_blocks"), data.get("mask_blocks"), num_blocks)
    except InputError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    return spec, data


def pruned_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights with ViT block keys renamed back to full-backbone indices."""
    spec: PruneSpec = getattr(model, "dart_prune_spec", PruneSpec())
    num_blocks = int(model.vision_encoder.backbone.config.num_hidden_layers)
    kept = kept_blocks(spec, num_blocks)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        if key.startswith(LAYER_PREFIX):
            index, rest = key[len(LAYER_PREFIX):].split(".", 1)
            key = f"{LAYER_PREFIX}{kept[int(index)]}.{rest}"
        out[key] = tensor.detach().to("cpu").contiguous()
    return out


def save_pruned(model: nn.Module, folder: str | Path, *, tokenizer_source: str | Path | None = None,
                source: str | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write a pruned (or self-distilled) SAM3 model as a checkpoint folder that re-applies its spec on load.

    The folder is assembled beside its destination and swapped in at the end, so an existing checkpoint there is
    replaced whole or not at all.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"output '{folder}' exists and is not a folder.")
    spec: PruneSpec = getattr(model, "dart_prune_spec", PruneSpec())
    num_blocks = int(model.vision_encoder.backbone.config.num_hidden_layers)
    info = {"format": FORMAT, **spec.to_dict(), "num_blocks": num_blocks, "source": source}
    if extra:
        info.update(extra)
    with atomic_folder(folder) as staging:
        model.config.to_json_file(str(staging / "config.json"))
        save_file(pruned_state_dict(model), str(staging / WEIGHTS_FILE), metadata={"format": "pt",
                                                                                  "dart_prune": json.dumps(info)})
        if tokenizer_source is not None and Path(tokenizer_source).is_dir():
            for pattern in TOKENIZER_GLOBS:
                for file in Path(tokenizer_source).glob(pattern):
                    shutil.copy2(file, staging / file.name)
        (staging / PRUNE_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return folder


def expected_missing(model: nn.Module, spec: PruneSpec) -> set[str]:
    """State-dict keys of a full model that a checkpoint pruned with ``spec`` does not store."""
    prefixes = [f"{LAYER_PREFIX}{b}." for b in spec.skip_blocks]
    prefixes += [f"{LAYER_PREFIX}{b}.{'attention' if br == 'attn' else 'mlp'}." for b, br in spec.mask_blocks]
    return {key for key in model.state_dict() if key.startswith(tuple(prefixes))}


def load_pruned(path: str | Path) -> nn.Module:
    """Load a pruned checkpoint folder (or its ``.safetensors`` file) and apply its recorded spec."""
    from transformers import Sam3Config, Sam3Model

    from dart.models.loading import _read_safetensors, unreadable_weights

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    prune_file = find_prune_file(path)
    if prune_file is None:
        raise CheckpointError(f"{path} has no {PRUNE_FILE}, so it is not a pruned dart checkpoint.")
    spec, _info = read_prune_file(prune_file)
    weights = path if path.is_file() else folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"pruned checkpoint {folder} has no {WEIGHTS_FILE}; re-save it with `dart prune apply`.")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"pruned checkpoint {folder} has no config.json; re-save it with `dart prune apply`.")
    with unreadable_weights(config_file, "SAM3 config", fix="re-save the pruned checkpoint with `dart prune apply`"):
        config = Sam3Config.from_json_file(str(config_file))
    state_dict = _read_safetensors(weights)
    with unreadable_weights(weights, "pruned checkpoint", fix="re-save it with `dart prune apply`"):
        model, info = Sam3Model.from_pretrained(None, config=config, state_dict=state_dict, output_loading_info=True,
                                                dtype="float32")
    missing = set(map(str, info.get("missing_keys") or ()))
    expected = expected_missing(model, spec)
    problems = []
    if missing - expected:
        problems.append(f"missing {sorted(missing - expected)[0]}")
    if expected - missing:
        problems.append(f"holds {sorted(expected - missing)[0]}, which its spec ({spec}) removes")
    for kind in ("unexpected_keys", "mismatched_keys"):
        keys = sorted(str(k) for k in info.get(kind) or ())
        if keys:
            problems.append(f"{len(keys)} {kind.replace('_', ' ')} ({keys[0]})")
    if problems:
        raise CheckpointError(f"pruned checkpoint {folder} does not match its {PRUNE_FILE}: " + "; ".join(problems) + ".")
    model.eval()
    apply_pruning(model, spec)
    return model
