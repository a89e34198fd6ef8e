"""Helpers around ``transformers``' ``Sam3Model``: image size, fingerprints and the text max length.

dart composes SAM3's own submodules into its stages (see :mod:`dart.stages`); nothing here re-implements
the architecture.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from dart.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import Sam3Model

PATCH_SIZE = 14
DEFAULT_IMGSZ = 1008
# Meta's ViT builds every LayerNorm with eps 1e-5 (``partial(nn.LayerNorm, eps=1e-5)`` in sam3/model/vitdet.py);
# transformers' Sam3ViTConfig defaults to 1e-6, and configs converted from sam3.pt carry that default.
META_VIT_LAYER_NORM_EPS = 1e-5


def follow_meta(model: Sam3Model) -> Sam3Model:
    """Compute what Meta's SAM3 computes where ``transformers``' port differs from it (Meta's code trained the
    weights), whatever the checkpoint's config says:

    - the ViT's LayerNorms use eps 1e-5 (the only LayerNorms that read ``layer_norm_eps``; every other SAM3
      LayerNorm uses PyTorch's default 1e-5 in both implementations);
    - presence logits are not clamped: Meta's decoder computes ``presence.clamp(-10, 10)`` but never assigns the
      result, while ``transformers`` clamps. A clamp at infinity is the identity.

    The prediction-score clamp at ±12 is applied by both and kept. Returns ``model``, changed in place."""
    from torch import nn

    backbone = model.vision_encoder.backbone
    for config in (backbone.config, model.config.vision_config.backbone_config):
        config.layer_norm_eps = META_VIT_LAYER_NORM_EPS
    for module in backbone.modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = META_VIT_LAYER_NORM_EPS
    model.detr_decoder.clamp_presence_logit_max_val = float("inf")
    return model


def capturing_graph() -> bool:
    """Whether the code runs under tracing, ``torch.compile`` or an ONNX export: dart's eager-only forms
    (:mod:`dart.models.rope`, :mod:`dart.models.onednn`) then step aside for the modules' own, which those capture."""
    import torch

    return bool(torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export())


def validate_imgsz(imgsz: int, patch_size: int = PATCH_SIZE) -> int:
    """Return ``imgsz`` if it is a positive multiple of the ViT patch size, else raise one sentence."""
    if isinstance(imgsz, bool) or not isinstance(imgsz, int) or imgsz <= 0 or imgsz % patch_size:
        lower = max(patch_size, (int(imgsz) // patch_size) * patch_size) if isinstance(imgsz, int) else patch_size
        raise InputError(
            f"imgsz must be a positive multiple of {patch_size} (the ViT patch size), got {imgsz}; "
            f"try {lower} or {lower + patch_size}."
        )
    return imgsz


def image_size(model: Sam3Model) -> int:
    """The square input size the model is currently set up for."""
    size = model.config.vision_config.backbone_config.image_size
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def set_image_size(model: Sam3Model, imgsz: int) -> None:
    """Set the model up for ``imgsz`` x ``imgsz`` inputs.

    The windowed ViT blocks are size-agnostic and the absolute position embedding is tiled per input, but the
    global-attention blocks hold RoPE positions computed for one grid size: they are recomputed here with
    SAM3's own ``precompute_positions`` so any multiple of 14 works without reloading weights.
    """
    backbone = model.vision_encoder.backbone
    patch = backbone.config.patch_size
    validate_imgsz(imgsz, patch)
    backbone.config.image_size = imgsz
    model.config.vision_config.backbone_config.image_size = imgsz
    grid = imgsz // patch
    model.config.vision_config.backbone_feature_sizes = [[grid * 4, grid * 4], [grid * 2, grid * 2], [grid, grid]]
    for layer in backbone.layers:
        if layer.window_size == 0:
            positions = layer.precompute_positions(backbone.config, 0)
            layer.position_ids = positions.to(layer.position_ids.device)


def text_max_length(model: Sam3Model) -> int:
    """Token length the text encoder is padded to (32 for SAM3)."""
    return int(model.config.text_config.max_position_embeddings)


def fingerprint_state_dict(state_dict: dict[str, torch.Tensor], config_json: str = "") -> str:
    """A stable 16-hex-digit fingerprint of a set of weights.

    Hashes every tensor's name, shape and dtype plus a strided sample of up to 4096 of its values (in float32),
    and the model config; computing it for the full 840M-parameter model takes well under a second, and any
    fine-tune, conversion error or different checkpoint changes it.
    """
    import torch

    digest = hashlib.sha256(config_json.encode())
    for name in sorted(state_dict):
        tensor = state_dict[name]
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        flat = tensor.detach().reshape(-1)
        if flat.numel() == 0 or flat.is_meta:
            continue
        step = max(1, flat.numel() // 4096)
        sample = flat[::step].to(device="cpu", dtype=torch.float32).contiguous()
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def fingerprint_model(model: Sam3Model, backbone: torch.nn.Module | None = None) -> str:
    """Fingerprint of a loaded model's weights and architecture (independent of the image size it is set to);
    ``backbone``: a backbone the checkpoint brings instead of the ViT (EfficientSAM3), whose weights count too."""
    config = model.config.to_dict()
    vision = config.get("vision_config", {})
    vision.pop("backbone_feature_sizes", None)
    vision.get("backbone_config", {}).pop("image_size", None)
    for key in ("_name_or_path", "transformers_version", "dtype", "torch_dtype", "_attn_implementation_autoset"):
        config.pop(key, None)
    state = model.state_dict()
    if backbone is not None:
        name = getattr(backbone, "dart_backbone_name", type(backbone).__name__)
        state.update({f"dart_backbone.{name}.{k}": v for k, v in backbone.state_dict().items()
                      if not k.startswith("fpn.")})  # the neck is the model's own, counted once
    return fingerprint_state_dict(state, json.dumps(_architecture(config), sort_keys=True, default=str))


def _architecture(config: dict) -> dict:
    """The numeric shape-defining parts of a config (drop ids and names that do not change the weights)."""
    keep: dict = {}
    for key, value in config.items():
        if isinstance(value, dict):
            keep[key] = _architecture(value)
        elif isinstance(value, (int, float, list, tuple)) and not isinstance(value, bool) and not key.endswith(
            "_token_id"
        ):
            keep[key] = value
    return keep
