"""SAM3's ViT layer with its 2D rotary position embedding applied as one complex multiplication.

``transformers``' ``Sam3ViTLayer`` rotates the queries and keys of every layer with ``rotate_pairwise`` (unbind,
negate, stack) and four real products and sums, and rebuilds the frequency layout with a ``cat`` each call. Meta's
ViT does the same rotation as one complex product, as RoPE is defined. On a CPU the real form costs about 8 % of the
bf16 image part (torch profiler: ``cat``, ``neg`` and the extra ``mul``/``add``), and the rotation alone runs 5-9x
faster as one product (BENCHMARKS.md, "The ViT's rotary embedding as one complex product").

:func:`vit_layers` runs the layers with their own modules (norms, projections, MLP, SDPA) and their own frequencies
(computed once per call for each window size, which is all they depend on), changing only how the rotation is
computed: the same numbers to float rounding, proved against the layer it stands in for by ``tests/test_rope.py``.

Used by :class:`dart.stages.BackboneStage` in eager PyTorch (``complex_rope=True``, what ``TorchBackend`` sets on
the CPU, where it was measured). Exports (ONNX has no complex type) and ``torch.compile`` (inductor fuses the real
form itself) call the layers unchanged. A layer whose attention is not SAM3's (a pruned branch, a replaced module)
is called unchanged too.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from transformers.models.sam3.modeling_sam3 import Sam3ViTRoPEAttention, window_partition, window_unpartition


def complex_frequencies(layer: nn.Module, like: torch.Tensor) -> torch.Tensor:
    """The layer's rotation ``[tokens, head_dim / 2]`` as unit complex numbers: ``transformers``' own cos and sin
    for its position ids (each pair of dims shares one angle, so every second column is taken)."""
    cos, sin = layer.rotary_emb(like, layer.position_ids)  # [1, tokens, head_dim], pairs repeated
    return torch.complex(cos[0, :, ::2].float(), sin[0, :, ::2].float())


def rotate(x: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """``x [..., tokens, head_dim]`` rotated pair by pair (dims 2i, 2i+1 as one complex number), computed in fp32
    and returned in ``x``'s dtype, as ``transformers``' ``apply_rotary_pos_emb_2d`` does."""
    real = x.float()
    out = torch.empty_like(real)  # x's own layout, so SDPA reads q and k as it does from transformers' form
    torch.mul(torch.view_as_complex(real.unflatten(-1, (-1, 2))), frequencies,
              out=torch.view_as_complex(out.unflatten(-1, (-1, 2))))
    return out.type_as(x)


def rope_attention(attention: Sam3ViTRoPEAttention, hidden: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """``Sam3ViTRoPEAttention`` on ``hidden [B, h, w, D]`` with the rotation of :func:`rotate`."""
    batch, height, width, _ = hidden.shape
    shape = (batch, height * width, attention.num_attention_heads, attention.head_dim)
    query = rotate(attention.q_proj(hidden).view(shape).transpose(1, 2), frequencies)
    key = rotate(attention.k_proj(hidden).view(shape).transpose(1, 2), frequencies)
    value = attention.v_proj(hidden).view(shape).transpose(1, 2)
    out = nn.functional.scaled_dot_product_attention(query, key, value, scale=attention.scaling)
    return attention.o_proj(out.transpose(1, 2).reshape(batch, height, width, -1))


def uses_rope_attention(layer: nn.Module) -> bool:
    """Whether :func:`vit_layer` can compute ``layer``'s attention itself: SAM3's own RoPE attention, in the SDPA
    form, not in training (no dropout)."""
    attention = getattr(layer, "attention", None)
    return (type(attention) is Sam3ViTRoPEAttention and not layer.training
            and getattr(attention.config, "_attn_implementation", "sdpa") in (None, "sdpa"))


def vit_layers(layers: Iterable[nn.Module], hidden: torch.Tensor) -> torch.Tensor:
    """``hidden [B, h, w, D]`` through ``layers`` (``transformers`` ``Sam3ViTLayer`` s) with :func:`vit_layer`.
    A layer's positions depend only on its window size (``Sam3ViTLayer.precompute_positions``), so the frequencies
    are computed once for each window size, not once per layer."""
    frequencies: dict[int, torch.Tensor] = {}
    for layer in layers:
        hidden = vit_layer(layer, hidden, frequencies)
    return hidden


def vit_layer(layer: nn.Module, hidden: torch.Tensor, frequencies: dict[int, torch.Tensor] | None = None
              ) -> torch.Tensor:
    """``layer(hidden)`` for a ``transformers`` ``Sam3ViTLayer`` (``hidden [B, h, w, D]``), its RoPE attention
    computed by :func:`rope_attention`; any other layer is simply called. ``frequencies``: a cache by window size
    shared by the layers of one call (see :func:`vit_layers`)."""
    if not uses_rope_attention(layer):
        return layer(hidden)
    residual = hidden
    hidden = layer.layer_norm1(hidden)
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        # the q, k and v projections would each cast the LayerNorm's output to autocast's dtype: cast it once,
        # before the window partition copies it (the same values, a third of the casts, half the bytes copied)
        hidden = hidden.to(torch.get_autocast_dtype(device))
    if layer.window_size > 0:
        height, width = hidden.shape[1], hidden.shape[2]
        hidden, padded = window_partition(hidden, layer.window_size)
    cache = {} if frequencies is None else frequencies
    if layer.window_size not in cache:
        cache[layer.window_size] = complex_frequencies(layer, hidden)
    hidden = rope_attention(layer.attention, hidden, cache[layer.window_size])
    if layer.window_size > 0:
        hidden = window_unpartition(hidden, layer.window_size, padded, (height, width))
    hidden = residual + hidden
    return hidden + layer.mlp(layer.layer_norm2(hidden))
