"""The DART research code's (mkturkcan/DART) distilled students, self-distilled pruned ViTs and text caches.

A DART pruned checkpoint (``distilled/pruned_16blocks.pt``, ``pruned_final.pt``; ``sam3/distillation/
prune_trainer.py``) is a ``torch.save`` dict with ``pruned_state_dict`` (Meta's vision backbone, keys relative to
``backbone.vision_backbone``: ``trunk.*`` and ``convs.*``, with the weights of removed blocks and skipped branches
taken out), ``skip_blocks`` (a list) and ``mask_blocks`` (``"25:attn,28:mlp"``, dart's own form). It holds only the
ViT and its FPN; the rest comes from the SAM3 checkpoint it was trained from.

A DART text cache (``--text-cache classes.pt`` of its demos, ``scripts/build_coco_engine.py``) is a ``torch.save``
dict ``{"class_names": [...], "text": [T, N, D], "mask": [N, T]}``: Meta's text features, sequence first, and
Meta's mask, True on padding. It records no model; :class:`dart.text_cache.TextCache` checks it against the
model's own text encoder before using it.

A DART student checkpoint (``adapter_epochN.pt``, ``adapter_final.pt``, ``distilled/repvit_m2_3_distilled.pt``) is
a ``torch.save`` dict with ``student_state_dict``, the whole student: a timm network built with
``features_only=True, out_indices=(0, 1, 2)`` under ``backbone.``, and one adapter per FPN level under
``adapters.{0,1,2}`` (``proj``: 1x1 conv to the FPN width; ``refine``: 3x3 conv after the bilinear resize); beside
it ``epoch``, ``loss`` and, in epoch files, ``adapter_state_dict`` and optimiser states, which dart ignores.

This is dart's :class:`~dart.students.model.StudentBackbone` with two differences, both recorded in the metadata
of the converted weights: the keys (``backbone.`` -> ``body.``, ``refine`` -> ``smooth``) and the input. DART's timm
network reads SAM3's pixels as they are (mean/std 0.5), where dart's own students renormalise them to ImageNet's
statistics, so converted weights carry ``input_norm="sam3"``.

The file does not name its backbone; it is found by matching the state's keys and shapes against the students
DART defines (built on the ``meta`` device: no memory, no weights), or given with ``--backbone``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from dart.compat import read_torch_file, require
from dart.errors import CheckpointError

WHAT = "DART student checkpoint"
# DART's student configs (sam3/distillation/student_backbone.py) that are dart students of the same name
DART_STUDENTS = ("repvit_m2_3", "tiny_vit_21m", "efficientvit_l1", "efficientvit_l2")
_ADAPTER = re.compile(r"^adapters\.(\d+)\.(proj|refine)\.(weight|bias)$")


def is_dart_student(ckpt: Any) -> bool:
    return isinstance(ckpt, dict) and isinstance(ckpt.get("student_state_dict"), dict)


def map_student_keys(state: dict[str, torch.Tensor], path: str | Path) -> dict[str, torch.Tensor]:
    """DART's student keys -> dart's (``backbone.`` -> ``body.``, ``adapters.i.refine`` -> ``adapters.i.smooth``);
    any other key is refused with a sentence naming it."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("backbone."):
            out["body." + key[len("backbone."):]] = value
            continue
        match = _ADAPTER.match(key)
        if match is None:
            raise CheckpointError(f"{WHAT} '{path}' has the key '{key}', which is neither in its timm backbone "
                                  "('backbone.*') nor in its FPN adapters ('adapters.N.proj/refine.*'); dart reads "
                                  "DART's students only as its distillation saves them.")
        level, part, kind = match.groups()
        out[f"adapters.{level}.{'smooth' if part == 'refine' else 'proj'}.{kind}"] = value
    for level in range(3):
        for part in ("proj", "smooth"):
            if f"adapters.{level}.{part}.weight" not in out:
                original = "refine" if part == "smooth" else part
                raise CheckpointError(f"{WHAT} '{path}' has no 'adapters.{level}.{original}.weight': a DART student "
                                      "has three FPN adapters, each with proj and refine.")
    return out


def _body_signature(timm_name: str, out_indices: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a timm ``features_only`` network, built on the meta device (no memory, no weights)."""
    from dart.students.model import import_timm

    timm = import_timm()
    with torch.device("meta"):
        body = timm.create_model(timm_name, pretrained=False, features_only=True, out_indices=out_indices)
    return {f"body.{k}": tuple(v.shape) for k, v in body.state_dict().items()}


def find_backbone(state: dict[str, torch.Tensor], path: str | Path, backbone: str | None = None) -> str:
    """The DART student whose timm network has exactly the state's ``body.*`` keys and shapes (``backbone``, when
    given, is checked instead of searched)."""
    from dart.students.registry import STUDENTS

    body = {k: tuple(v.shape) for k, v in state.items() if k.startswith("body.")}
    candidates = [backbone] if backbone else list(DART_STUDENTS)
    for name in candidates:
        if name not in STUDENTS:
            raise CheckpointError(f"--backbone {name} is not a student dart knows; DART's are "
                                  f"{', '.join(DART_STUDENTS)}.")
        spec = STUDENTS[name]
        signature = _body_signature(spec.timm_name, spec.out_indices)
        if signature == body:
            return name
        if backbone:
            missing = sorted(set(signature) - set(body))
            extra = sorted(set(body) - set(signature))
            shaped = sorted(k for k in set(body) & set(signature) if body[k] != signature[k])
            detail = (f"'{missing[0].replace('body.', 'backbone.', 1)}' is missing" if missing else
                      f"'{extra[0].replace('body.', 'backbone.', 1)}' is unexpected" if extra else
                      f"'{shaped[0].replace('body.', 'backbone.', 1)}' has shape {list(body[shaped[0]])}, not "
                      f"{list(signature[shaped[0]])}")
            raise CheckpointError(f"{WHAT} '{path}' is not a {name} student: {detail}.")
    raise CheckpointError(f"{WHAT} '{path}' matches none of DART's students ({', '.join(DART_STUDENTS)}); if it "
                          "is one of them, say which with --backbone.")


def read_dart_student(path: str | Path, backbone: str | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(metadata, state_dict)`` in dart's student layout from a DART student checkpoint (see the module
    docstring); the metadata is what :meth:`StudentBackbone.metadata` records, plus where it came from."""
    from dart.students.model import STUDENT_FORMAT
    from dart.students.registry import STUDENTS

    ckpt = read_torch_file(path, WHAT)
    raw = require(ckpt, "student_state_dict", path, WHAT)
    state = map_student_keys({str(k): v for k, v in raw.items() if isinstance(v, torch.Tensor)}, path)
    name = find_backbone(state, path, backbone)
    spec = STUDENTS[name]
    meta = {
        "format": STUDENT_FORMAT,
        "backbone": name,
        "timm_model": spec.timm_name,
        "out_indices": list(spec.out_indices),
        "in_channels": [int(state[f"adapters.{i}.proj.weight"].shape[1]) for i in range(3)],
        "fpn_channels": int(state["adapters.0.proj.weight"].shape[0]),
        "patch_size": 14,
        "input_norm": "sam3",
        "source": f"DART research checkpoint {Path(path).name}",
    }
    if isinstance(ckpt.get("epoch"), int):
        meta["epoch"] = ckpt["epoch"]
    if isinstance(ckpt.get("mask_blocks"), str) and ckpt["mask_blocks"]:
        meta["teacher_mask_blocks"] = ckpt["mask_blocks"]
    return meta, state


TEXT_WHAT = "DART text cache"


def is_dart_text_cache(ckpt: Any) -> bool:
    return isinstance(ckpt, dict) and {"class_names", "text", "mask"} <= set(ckpt)


def read_dart_text_cache(path: str | Path) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """``(names, features [N, T, D], mask [N, T] True on tokens)`` of a DART text cache (see the module
    docstring); a file of another shape is one sentence."""
    ckpt = read_torch_file(path, TEXT_WHAT)
    names = require(ckpt, "class_names", path, TEXT_WHAT, list)
    text = require(ckpt, "text", path, TEXT_WHAT, torch.Tensor)
    mask = require(ckpt, "mask", path, TEXT_WHAT, torch.Tensor)
    if text.dim() != 3 or mask.dim() != 2 or text.shape[1] != len(names) or tuple(mask.shape) != (len(names),
                                                                                                    text.shape[0]):
        raise CheckpointError(f"{TEXT_WHAT} '{path}' holds text {list(text.shape)} and mask {list(mask.shape)} for "
                              f"{len(names)} classes; a DART cache holds text [tokens, classes, width] and mask "
                              "[classes, tokens].")
    return [str(n) for n in names], text.transpose(0, 1).float().contiguous(), ~mask.bool()


PRUNED_WHAT = "DART pruned checkpoint"
VISION_PREFIX = "backbone.vision_backbone."


def is_dart_pruned(ckpt: Any) -> bool:
    return isinstance(ckpt, dict) and isinstance(ckpt.get("pruned_state_dict"), dict)


def read_dart_pruned(path: str | Path, num_blocks: int | None = None):
    """``(spec, state)`` of a DART pruned checkpoint: its :class:`~dart.pruning.PruneSpec` and its vision weights
    renamed to ``transformers``' ``Sam3Model`` keys (through dart's Meta key map)."""
    from dart.errors import InputError
    from dart.models.meta_keymap import convert_meta_state_dict
    from dart.pruning import PruneSpec

    ckpt = read_torch_file(path, PRUNED_WHAT)
    raw = require(ckpt, "pruned_state_dict", path, PRUNED_WHAT)
    skip = ckpt.get("skip_blocks") or []
    masks = ckpt.get("mask_blocks") or ""
    try:
        spec = PruneSpec.parse(list(skip), masks, num_blocks)
    except InputError as exc:
        raise CheckpointError(f"{PRUNED_WHAT} '{path}': {exc}") from exc
    outside = [k for k in raw if not str(k).startswith(("trunk.", "convs.", "sam2_convs."))]
    if outside:
        raise CheckpointError(f"{PRUNED_WHAT} '{path}' has the key '{outside[0]}', which is not in SAM3's vision "
                              "backbone (trunk.*, convs.*); dart reads the files DART's prune trainer saves.")
    meta_keys = {VISION_PREFIX + str(k): v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    try:
        state = convert_meta_state_dict(meta_keys)
    except CheckpointError as exc:
        raise CheckpointError(f"{PRUNED_WHAT} '{path}': {exc}") from exc
    return spec, state
