"""Student backbones: a timm network plus a small FPN adapter that imitates SAM3's three FPN levels.

The student sees the same ``pixel_values`` as SAM3's ViT (``[B, 3, S, S]``, normalised with mean/std 0.5) and
returns ``(fpn_4x, fpn_2x, fpn_1x)``: ``fpn_hidden_size`` channels at 4x, 2x and 1x the ViT patch grid
(``S / 14``), exactly what :class:`dart.stages.BackboneStage` returns, so SAM3's encoder-decoder runs on it
unchanged. The timm network is built with ``features_only=True`` and returns three stages (strides 4, 8, 16 by
default, whose sizes are closest to SAM3's levels at strides 3.5, 7, 14); each level then goes through the
adapter: a 1x1 conv to the FPN width, a bilinear resize to the SAM3 level size and a 3x3 conv.

A student checkpoint (``.safetensors``) records the backbone name, the timm model, the stages and the adapter
shapes; loading it into another student or for another SAM3 width is refused with one sentence. The DART research
code's student checkpoints (``.pt``) are read too, through :mod:`dart.compat.dart_research`; their timm network
reads SAM3's pixels as they are, which their metadata records as ``input_norm="sam3"``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from dart.errors import CheckpointError, DependencyError

STUDENT_FORMAT = 1
SAM3_MEAN = 0.5
SAM3_STD = 0.5
INPUT_NORMS = ("imagenet", "sam3")  # what the timm network reads: renormalised to its own statistics, or as is


def import_timm():
    """timm is only needed when a student is used (``pip install 'dart-detect[train]'``)."""
    try:
        import timm
    except ImportError as exc:
        raise DependencyError("student backbones need timm: pip install 'dart-detect[train]' (or pip install timm).") from exc
    return timm


class FPNAdapter(nn.Module):
    """One FPN level: 1x1 conv (student channels -> FPN width), bilinear resize to the level size, 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.smooth = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = self.proj(features)
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.smooth(x)


class StudentBackbone(nn.Module):
    """``pixel_values [B, 3, S, S]`` -> ``(4x, 2x, 1x)`` FPN features of the ``S / patch_size`` grid."""

    def __init__(self, name: str, timm_name: str, *, fpn_channels: int, patch_size: int = 14,
                 out_indices: Sequence[int] = (0, 1, 2), pretrained: bool = False):
        super().__init__()
        timm = import_timm()
        try:
            self.body = timm.create_model(timm_name, pretrained=pretrained, features_only=True,
                                          out_indices=tuple(out_indices))
        except (OSError, RuntimeError) as exc:
            if not pretrained:
                raise
            raise DependencyError(
                f"cannot fetch the ImageNet weights of {timm_name} from the Hugging Face hub ({exc}); connect once "
                "or start from random weights with --no-pretrained."
            ) from exc
        self.name = name
        self.timm_name = timm_name
        self.out_indices = tuple(int(i) for i in out_indices)
        self.fpn_channels = int(fpn_channels)
        self.patch_size = int(patch_size)
        self.in_channels = [int(c) for c in self.body.feature_info.channels()]
        self.reductions = [int(r) for r in self.body.feature_info.reduction()]
        if len(self.in_channels) != 3:
            raise CheckpointError(f"student {name} must give 3 feature stages, {timm_name} gives {len(self.in_channels)}.")
        self.adapters = nn.ModuleList([FPNAdapter(c, self.fpn_channels) for c in self.in_channels])
        # SAM3 normalises with mean/std 0.5; the timm network expects its own (ImageNet) normalisation.
        self.register_buffer("in_scale", torch.ones(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", torch.zeros(1, 3, 1, 1), persistent=False)
        self.set_input_norm("imagenet")
        self.dart_backbone_name = name

    def set_input_norm(self, norm: str) -> None:
        """``imagenet``: SAM3's pixels are renormalised to the timm network's own statistics (dart's students);
        ``sam3``: the network reads them as they are (the DART research code's students)."""
        if norm not in INPUT_NORMS:
            raise CheckpointError(f"unknown student input normalisation '{norm}': use {' or '.join(INPUT_NORMS)}.")
        self.input_norm = norm
        if norm == "sam3":
            self.in_scale.fill_(1.0)
            self.in_shift.fill_(0.0)
            return
        cfg = getattr(self.body, "pretrained_cfg", None) or {}
        mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406)), dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225)), dtype=torch.float32).view(1, 3, 1, 1)
        self.in_scale.copy_(SAM3_STD / std)
        self.in_shift.copy_((SAM3_MEAN - mean) / std)

    def level_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        gh, gw = height // self.patch_size, width // self.patch_size
        return [(4 * gh, 4 * gw), (2 * gh, 2 * gw), (gh, gw)]

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = pixel_values * self.in_scale.to(pixel_values.dtype) + self.in_shift.to(pixel_values.dtype)
        feats = self.body(x)
        sizes = self.level_sizes(pixel_values.shape[-2], pixel_values.shape[-1])
        return tuple(adapter(f, size) for adapter, f, size in zip(self.adapters, feats, sizes))

    # ------------------------------------------------------------------------------------------ checkpoints
    def metadata(self) -> dict[str, Any]:
        """What a checkpoint must match: backbone name, timm model, stages and adapter shapes."""
        return {
            "format": STUDENT_FORMAT,
            "backbone": self.name,
            "timm_model": self.timm_name,
            "out_indices": list(self.out_indices),
            "in_channels": list(self.in_channels),
            "fpn_channels": self.fpn_channels,
            "patch_size": self.patch_size,
            "input_norm": self.input_norm,
        }

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write the student's weights and metadata to a ``.safetensors`` file (atomically)."""
        return write_student_checkpoint(path, {**self.metadata(), **(extra or {})}, self.state_dict())

    def load_weights(self, path: str | Path) -> dict[str, Any]:
        """Load a student checkpoint (dart's or the DART research code's), refusing one made for another backbone,
        stages or FPN width, strictly (a missing or unexpected key is a sentence naming it)."""
        meta, state = read_student_checkpoint(path, backbone=self.name)
        return self.load_checkpoint(path, meta, state)

    def load_checkpoint(self, path: str | Path, meta: dict[str, Any], state: dict[str, torch.Tensor]
                        ) -> dict[str, Any]:
        """:meth:`load_weights` for a checkpoint already read by :func:`read_student_checkpoint`."""
        from dart.models.loading import key_differences

        check_student_metadata(path, meta, self.metadata())
        self.set_input_norm(str(meta.get("input_norm", "imagenet")))
        mine = self.state_dict()
        missing, unexpected, shaped = key_differences(mine, state)
        if missing or unexpected or shaped:
            detail = (f"'{missing[0]}' is missing" if missing else f"'{unexpected[0]}' is unexpected" if unexpected
                      else f"'{shaped[0]}' has shape {list(state[shaped[0]].shape)}, not {list(mine[shaped[0]].shape)}")
            more = len(missing) + len(unexpected) + len(shaped) - 1
            raise CheckpointError(f"student weights {path} do not fit {self.name}: {detail}"
                                  f"{f' (and {more} more keys)' if more else ''}.")
        self.load_state_dict(state, strict=True)
        return meta


def write_student_checkpoint(path: str | Path, meta: dict[str, Any], state: dict[str, torch.Tensor]) -> Path:
    """A student checkpoint: ``state`` as safetensors with ``meta`` under ``dart_student`` (atomically)."""
    from safetensors.torch import save_file

    from dart.io import atomic_path

    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"dart_student": json.dumps(meta)})
    return path


def read_student_checkpoint(path: str | Path, *, tensors: bool = True, backbone: str | None = None
                            ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(metadata, state_dict)`` of a student ``.safetensors`` file (``tensors=False``: metadata only), or of a
    DART research checkpoint (``.pt``; ``backbone`` names its student when known, else it is found)."""
    from safetensors import safe_open

    from dart.compat import is_torch_file
    from dart.models.loading import unreadable_weights

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"student weights '{path}' do not exist; train them with `dart distill --phase adapter`.")
    if is_torch_file(path):
        from dart.compat.dart_research import read_dart_student

        return read_dart_student(path, backbone)
    with unreadable_weights(path, "student weights", fix="train them again with `dart distill --phase adapter`"):
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("dart_student")
            state = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    if raw is None:
        raise CheckpointError(f"'{path}' is not a dart student checkpoint (no backbone metadata); "
                              "train one with `dart distill --phase adapter`.")
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise CheckpointError(f"'{path}' has corrupt student metadata; re-save it.") from exc
    if meta.get("format") != STUDENT_FORMAT:
        raise CheckpointError(f"'{path}' is a student checkpoint of format {meta.get('format')}; this dart reads "
                              f"format {STUDENT_FORMAT}.")
    return meta, state


CHECKED = (("backbone", "backbone"), ("timm_model", "timm model"), ("out_indices", "feature stages"),
           ("in_channels", "adapter input channels"), ("fpn_channels", "FPN channels"), ("patch_size", "patch size"))


def check_student_metadata(path: str | Path, meta: dict[str, Any], mine: dict[str, Any]) -> None:
    """Refuse, with one sentence, a checkpoint whose recorded backbone or adapter shapes differ from ``mine``
    (only the keys present in ``mine`` are compared)."""
    for key, label in CHECKED:
        if key in mine and meta.get(key) != mine[key]:
            raise CheckpointError(
                f"student weights {path} were trained for {label} {meta.get(key)}, but this is {mine[key]} "
                f"({mine.get('backbone')} for a SAM3 with {mine.get('fpn_channels')} FPN channels); "
                f"use --backbone {meta.get('backbone')} or weights trained for {mine.get('backbone')}."
            )
