"""Meta's own SAM3 (the ``sam3`` package, whose code trained the weights) as the reference dart is compared with.

:func:`build_meta_model` runs Meta's ``build_sam3_image_model`` itself, with every module it constructs made small
(the builder hard-codes SAM3's full size, so the classes it calls are wrapped to take smaller widths, depths and
image size) and with the three CUDA-only spots of Meta's code sent to the CPU: the position-encoding cache
precompute, the decoder's box-RPB coordinate grid and a ``pin_memory`` in the geometry encoder. Meta leaves a few
parameters uninitialised (``torch.empty``) or at zero; they are filled with seeded random values so that every
part of the model matters. :data:`SMALL_CONFIG` is the same architecture as a ``transformers`` ``Sam3Config``.

This is test scaffolding: a random small model, never a product default.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from dart.bench.peers import fill_uninitialised, meta_on_cpu

IMGSZ = 112
SMALL = {
    # Meta's class name -> keyword arguments that replace the builder's full-size values
    "ViT": dict(img_size=IMGSZ, pretrain_img_size=56, embed_dim=64, depth=4, num_heads=2, window_size=4,
                global_att_blocks=(1, 3), drop_path_rate=0.0),
    "PositionEmbeddingSine": dict(precompute_resolution=None),  # the precompute is a cache, filled on first use
    "VETextEncoder": dict(width=64, heads=2, layers=2),
    "TransformerEncoderLayer": dict(dim_feedforward=256),
    "TransformerEncoderFusion": dict(num_layers=2),
    "TransformerDecoderLayer": dict(dim_feedforward=256),
    "TransformerDecoder": dict(num_layers=2, num_queries=20, resolution=IMGSZ),
    "MLP": dict(hidden_dim=256),  # the dot-product scoring's prompt MLP (the only MLP the builder makes itself)
    "SequenceGeometryEncoder": dict(num_layers=1),
}
SMALL_CONFIG = dict(
    vision_config=dict(
        backbone_config=dict(model_type="sam3_vit_model", hidden_size=64, intermediate_size=296,  # 4.625 x 64
                             num_hidden_layers=4, num_attention_heads=2, window_size=4, global_attn_indexes=[1, 3],
                             image_size=IMGSZ, pretrain_image_size=56, patch_size=14),
        fpn_hidden_size=256,
    ),
    text_config=dict(vocab_size=49408, hidden_size=64, intermediate_size=256, projection_dim=512, num_hidden_layers=2,
                     num_attention_heads=2, max_position_embeddings=32, hidden_act="gelu"),  # CLIP's default: quick_gelu
    geometry_encoder_config=dict(hidden_size=256, num_layers=1, num_attention_heads=8, intermediate_size=256),
    detr_encoder_config=dict(hidden_size=256, num_layers=2, num_attention_heads=8, intermediate_size=256),
    detr_decoder_config=dict(hidden_size=256, num_layers=2, num_attention_heads=8, intermediate_size=256,
                             num_queries=20),
    mask_decoder_config=dict(hidden_size=256, num_attention_heads=8),
)


def _shrunk(cls: type, overrides: dict[str, Any]):
    @functools.wraps(cls, updated=())
    def make(*args: Any, **kwargs: Any):
        return cls(*args, **{**kwargs, **overrides})

    return make


cpu_fallbacks = meta_on_cpu  # Meta's CUDA-only spots sent to the CPU: dart's peer benchmark needs the same


def import_meta():
    """Meta's builder module (its import warns about CUDA autocast on a CPU machine: silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sam3 import model_builder

    return model_builder


@contextlib.contextmanager
def shrunk_builder() -> Iterator[Any]:
    """Meta's builder module with every class it constructs made small (:data:`SMALL`) while the block runs."""
    builder = import_meta()
    saved = {name: getattr(builder, name) for name in SMALL}
    try:
        for name, overrides in SMALL.items():
            setattr(builder, name, _shrunk(saved[name], overrides))
        yield builder
    finally:
        for name, cls in saved.items():
            setattr(builder, name, cls)


def build_meta_model(bpe_path: str | Path, seed: int = 0):
    """Meta's SAM3 image model, built by Meta's own builder at :data:`SMALL` sizes, random weights, eval mode, CPU."""
    torch.manual_seed(seed)
    with shrunk_builder() as builder, cpu_fallbacks():
        model = builder.build_sam3_image_model(bpe_path=str(bpe_path), device="cpu", eval_mode=True,
                                               load_from_HF=False, checkpoint_path=None)
    fill_uninitialised(model, seed)
    return model.eval()


def match_detections(got, expected: list[tuple[int, float, Any]]) -> list[tuple[int, int]]:
    """Pair dart's detections with Meta's (``(class, score, xyxy)`` rows) class by class, by the closest boxes
    (a minimum-cost assignment: random weights give many queries the same score, so an order by score is not a
    pairing). Returns ``(dart index, Meta index)`` pairs."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    pairs = []
    for c in sorted({e[0] for e in expected} | set(int(k) for k in got.class_ids)):
        mine = [i for i in range(len(got)) if int(got.class_ids[i]) == c]
        theirs = [j for j, e in enumerate(expected) if e[0] == c]
        if len(mine) != len(theirs):
            raise AssertionError(f"class {c}: dart kept {len(mine)} detections, Meta {len(theirs)}")
        cost = np.array([[np.abs(got.xyxy[i] - expected[j][2]).max() for j in theirs] for i in mine])
        rows, cols = linear_sum_assignment(cost)
        pairs += [(mine[r], theirs[k]) for r, k in zip(rows, cols)]
    return pairs


def save_as_sam3_pt(model: torch.nn.Module, folder: Path) -> Path:
    """Meta's state dict in ``sam3.pt`` layout (``detector.`` keys under ``"model"``), with the matching
    ``transformers`` config beside it."""
    from transformers import Sam3Config

    from dart.bench.peers import save_meta_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    path = save_meta_checkpoint(model, folder / "sam3.pt")
    Sam3Config(**SMALL_CONFIG).to_json_file(str(folder / "config.json"))
    return path
