"""dart's DETR decoder loop and box bias (dart.models.decoder) against transformers' Sam3DetrDecoder on the same
weights and inputs: the bias bit for bit, the decoder's outputs to float rounding, in fp32 and under bf16 autocast."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F

from dart.backends.torch_backend import _cast
from dart.models.decoder import box_bias, decode


def _inputs(decoder, rows: int, height: int, width: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    width_d = decoder.config.hidden_size
    memory = torch.randn(rows, height * width, width_d, generator=generator)
    pos = torch.randn(rows, height * width, width_d, generator=generator)
    prompt = torch.randn(rows, 7, width_d, generator=generator)
    mask = torch.ones(rows, 7, dtype=torch.bool)
    mask[0, 5:] = False  # one row with padding: the text mask is really applied
    return memory, pos, prompt, mask


def _reduced(dtype):
    return torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32)


@torch.inference_mode()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_box_bias_is_transformers_padded_rpb_matrix(tiny_loaded, dtype):
    decoder = _cast(copy.deepcopy(tiny_loaded.model.detr_decoder), torch.device("cpu"), dtype).eval()
    queries = decoder.config.num_queries
    boxes = torch.rand(3, queries, 4, generator=torch.Generator().manual_seed(1)) * 0.8 + 0.1
    height, width = 5, 7  # not square: rows and columns cannot be swapped unnoticed
    with _reduced(dtype):
        expected = F.pad(decoder._get_rpb_matrix(boxes, (torch.tensor(height), torch.tensor(width))), (0, 0, 1, 0))
        got = box_bias(decoder, boxes, height, width)
    assert got.shape == expected.shape == (3, decoder.config.num_attention_heads, queries + 1, height * width)
    assert got.dtype == expected.dtype
    assert torch.equal(got, expected)
    assert got[:, :, 0].abs().max() == 0  # the presence token's row


@torch.inference_mode()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_computes_what_transformers_decoder_computes(tiny_loaded, dtype):
    from transformers.models.sam3.modeling_sam3 import inverse_sigmoid

    decoder = _cast(copy.deepcopy(tiny_loaded.model.detr_decoder), torch.device("cpu"), dtype).eval()
    height, width = 6, 4
    memory, pos, prompt, mask = _inputs(decoder, 3, height, width)
    with _reduced(dtype):
        out = decoder(vision_features=memory, text_features=prompt, vision_pos_encoding=pos, text_mask=mask,
                      spatial_shapes=torch.tensor([[height, width]]))
        queries = out.intermediate_hidden_states[-1]
        boxes = (decoder.box_head(queries) + inverse_sigmoid(out.reference_boxes[-1])).sigmoid()
        got = decode(decoder, memory, prompt, pos, mask, height, width)
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(got.queries, queries, **tolerance)
    torch.testing.assert_close(got.boxes, boxes, **tolerance)
    torch.testing.assert_close(got.presence, out.presence_logits[-1, :, 0], **tolerance)
    if dtype == torch.float32:
        assert (got.queries - queries).abs().max() < 1e-6
