"""SAM3's DETR decoder loop, with the box relative-position bias built in the layout attention reads.

In every decoder layer the queries' cross-attention to the image carries a bias per (query, pixel, head): the sum of
a term for the pixel's row and a term for its column, each an MLP of the row's (column's) distance to the query's
reference box. ``transformers``' ``Sam3DetrDecoder`` adds the two terms into ``[B, Q, h, w, heads]``, permutes that
into ``[B, heads, Q, h*w]`` with a copy and pads a zero row for the presence token with another: three passes over
the largest tensor of the class part (``4 x 8 x 201 x 5184`` values per layer at 4 classes and 1008 px). On a CPU
at 4 classes in bf16 those passes were about a quarter of the encoder-decoder's time (BENCHMARKS.md, "The decoder's
box bias written once").

:func:`box_bias` permutes and pads the two small terms instead, so that one broadcast add writes the bias straight
into ``[B, heads, Q + 1, h*w]``: every value is the same sum of the same two numbers, and the presence row is
``0 + 0``. :func:`decode` is the decoder's own loop around it, calling the decoder's own layers, heads and
embeddings, and keeping only what dart reads (the last layer's queries, boxes and presence logits). The first
layer's bias is computed once: its reference boxes are the learned reference points, the same for every image and
class. ``tests/test_decoder.py`` proves both equal to ``transformers``' decoder on the same inputs.

The whole form is plain tensor operations, so exports, tracing and ``torch.compile`` run it too.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.sam3.modeling_sam3 import box_cxcywh_to_xyxy, inverse_sigmoid


class Decoded(NamedTuple):
    queries: torch.Tensor  # [N, Q, D]: the last layer's queries after the output LayerNorm
    boxes: torch.Tensor  # [N, Q, 4]: the last layer's refined boxes, normalised cx, cy, w, h
    presence: torch.Tensor  # [N]: the last layer's presence logit


def _log_deltas(coords: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Signed log-scale distances ``[N, Q, n, 2]`` of ``coords [n]`` to the box edges ``edges [N, Q, 2]``, as
    SAM3 encodes them (``sign(8d) * log2(|8d| + 1) / log2(8)``)."""
    batch, queries, _ = edges.shape
    deltas = (coords.view(1, -1, 1) - edges.reshape(-1, 1, 2)).view(batch, queries, -1, 2) * 8
    return torch.sign(deltas) * torch.log2(torch.abs(deltas) + 1.0) / math.log2(8)


def box_bias(decoder: nn.Module, reference_boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The vision cross-attention bias ``[N, heads, Q + 1, height * width]`` of ``reference_boxes [N, Q, 4]``
    (normalised cx, cy, w, h), with the presence token's zero row first: what ``transformers`` computes with
    ``F.pad(decoder._get_rpb_matrix(reference_boxes, (height, width)), (0, 0, 1, 0))``."""
    boxes = box_cxcywh_to_xyxy(reference_boxes)
    rows = torch.arange(0, height, device=boxes.device, dtype=boxes.dtype) / height
    columns = torch.arange(0, width, device=boxes.device, dtype=boxes.dtype) / width
    by_row = decoder.box_rpb_embed_y(_log_deltas(rows, boxes[..., 1:4:2]))  # [N, Q, height, heads]
    by_column = decoder.box_rpb_embed_x(_log_deltas(columns, boxes[..., 0:3:2]))  # [N, Q, width, heads]
    # heads first and a zero query row for the presence token, on the small terms: [N, heads, Q + 1, n]
    # (contiguous, so that the sum is laid out as it is indexed and flattening it copies nothing)
    by_row = nn.functional.pad(by_row.permute(0, 3, 1, 2).contiguous(), (0, 0, 1, 0))
    by_column = nn.functional.pad(by_column.permute(0, 3, 1, 2).contiguous(), (0, 0, 1, 0))
    return (by_row[..., :, None] + by_column[..., None, :]).flatten(-2)


def decode(decoder: nn.Module, memory: torch.Tensor, prompt: torch.Tensor, memory_pos: torch.Tensor,
           prompt_mask: torch.Tensor, height: int, width: int) -> Decoded:
    """``transformers``' ``Sam3DetrDecoder.forward`` over the encoder ``memory [N, h*w, D]`` (with its position
    encoding) and the prompts ``[N, T, D]`` (``prompt_mask [N, T]``, True = valid), for an ``height x width``
    grid, returning the last layer's outputs (:class:`Decoded`)."""
    batch = memory.shape[0]
    reference = decoder.reference_points.weight.sigmoid()[None]  # [1, Q, 4]: the same for every row
    hidden = torch.cat([decoder.presence_token.weight, decoder.query_embed.weight])[None].expand(batch, -1, -1)
    text_mask = create_bidirectional_mask(config=decoder.config, inputs_embeds=hidden, attention_mask=prompt_mask,
                                          encoder_hidden_states=prompt)
    bias = box_bias(decoder, reference, height, width).expand(batch, -1, -1, -1)
    reference = reference.expand(batch, -1, -1)
    for index, layer in enumerate(decoder.layers):
        if index:
            bias = box_bias(decoder, reference, height, width)
        query_pos = decoder.ref_point_head(decoder.position_encoding.encode_boxes(reference))
        hidden = layer(hidden, query_pos=query_pos, text_features=prompt, vision_features=memory,
                       vision_pos_encoding=memory_pos, text_cross_attn_mask=text_mask, vision_cross_attn_mask=bias)
        queries = decoder.output_layer_norm(hidden[:, 1:])
        reference = (decoder.box_head(queries) + inverse_sigmoid(reference)).sigmoid()
    limit = decoder.clamp_presence_logit_max_val
    presence = decoder.presence_head(decoder.presence_layer_norm(hidden[:, :1])).squeeze(-1).clamp(-limit, limit)
    return Decoded(queries, reference, presence[:, 0])
