"""Linear layers as one oneDNN call (dart.models.onednn): the stages compute the same numbers bit for bit in bf16 on
a CPU, fall back to F.linear where the call would not be the same computation, and trace to the same graph."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from transformers.models.sam3.modeling_sam3 import Sam3DecoderMLP, Sam3MLP

from dart.backends.torch_backend import TorchBackend, _cast
from dart.models.onednn import OneDnnLinear, onednn_available, use_onednn
from dart.stages import BackboneStage, EncDecStage
from tests.tiny import TINY_IMGSZ

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this PyTorch/CPU has no bf16 oneDNN")


def _stages(model, dtype):
    backbone = _cast(BackboneStage(model), torch.device("cpu"), dtype).eval()
    encdec = _cast(EncDecStage(model, TINY_IMGSZ), torch.device("cpu"), dtype).eval()
    return backbone, encdec


@torch.inference_mode()
def test_stages_compute_the_same_bf16_numbers(tiny_loaded):
    """The ReLUs keep the encoder-decoder bit for bit; the ViT's GELU, computed before the one rounding to bf16,
    moves the FPN levels by bf16 rounding only, and no further from the fp32 stage than F.gelu after F.linear."""
    model = copy.deepcopy(tiny_loaded.model)
    exact = _stages(copy.deepcopy(model), torch.float32)
    reference = _stages(model, torch.bfloat16)
    fast = copy.deepcopy(reference)
    for stage in fast:
        use_onednn(stage)
    assert any(isinstance(m, OneDnnLinear) and m.activation == "relu" for m in fast[1].modules())
    assert any(isinstance(m, OneDnnLinear) and m.activation == "gelu" for m in fast[0].modules())
    assert not any(type(m) is nn.Linear for stage in fast for m in stage.modules())
    pixels = torch.randn(2, 3, TINY_IMGSZ, TINY_IMGSZ, generator=torch.Generator().manual_seed(0))
    backend = TorchBackend(tiny_loaded, device="cpu")
    text, mask = backend.encode_text(["person", "car", "a red dog"])
    truth = exact[0](pixels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features, fast_features = reference[0](pixels), fast[0](pixels)
        for a, b, want in zip(fast_features, features, truth):
            scale = float(want.abs().max())
            assert float((a.float() - b.float()).abs().max()) < 0.02 * scale
            fused_error = float((a.float() - want).abs().mean())
            plain_error = float((b.float() - want).abs().mean())
            assert fused_error <= 1.05 * plain_error, (fused_error, plain_error)
        want, got = reference[1](*features, text, mask), fast[1](*features, text, mask)
    for key in ("logits", "boxes", "presence"):
        assert torch.equal(got[key], want[key]), key


@torch.inference_mode()
def test_gelu_inside_the_product_is_closer_to_exact():
    """One product with its GELU: fused, it is at least as close to the float64 result as F.gelu after F.linear."""
    generator = torch.Generator().manual_seed(0)
    layer = nn.Linear(64, 256)
    nn.init.normal_(layer.weight, std=0.1, generator=generator)
    x = torch.randn(512, 64, generator=generator).to(torch.bfloat16)
    layer = layer.to(torch.bfloat16)
    truth = F.gelu(F.linear(x.double(), layer.weight.double(), layer.bias.double()))
    plain = F.gelu(F.linear(x, layer.weight, layer.bias)).double()
    layer.__class__ = OneDnnLinear
    layer.activation = "gelu"
    fused = layer(x).double()
    assert fused.dtype == plain.dtype and fused.shape == plain.shape
    assert float((fused - truth).abs().mean()) <= float((plain - truth).abs().mean())


def test_gelu_moves_into_fc1_only_without_dropout(tiny_loaded):
    mlp = copy.deepcopy(tiny_loaded.model.vision_encoder.backbone.layers[0].mlp)
    assert type(mlp) is Sam3MLP and mlp.dropout.p == 0
    with_dropout = copy.deepcopy(mlp)
    with_dropout.dropout.p = 0.1
    use_onednn(mlp)
    assert mlp.fc1.activation == "gelu" and isinstance(mlp.activation_fn, nn.Identity)
    use_onednn(with_dropout)
    assert with_dropout.fc1.activation == "none" and not isinstance(with_dropout.activation_fn, nn.Identity)
    x = torch.randn(3, 5, mlp.fc1.in_features)
    with torch.inference_mode():  # fp32: F.linear, then the GELU inside fc1's fallback
        assert torch.equal(mlp(x), tiny_loaded.model.vision_encoder.backbone.layers[0].mlp(x))


@torch.inference_mode()
def test_modules_fall_back_outside_cpu_bf16(tiny_loaded):
    """fp32 weights, an fp32 input outside autocast, and tracing all run F.linear (and the moved ReLU after it)."""
    mlp = copy.deepcopy(tiny_loaded.model.detr_encoder.layers[0].mlp)
    assert type(mlp) is Sam3MLP and isinstance(mlp.activation_fn, nn.ReLU)
    reference = copy.deepcopy(mlp)
    use_onednn(mlp)
    assert mlp.fc1.activation == "relu" and isinstance(mlp.activation_fn, nn.Identity)
    x = torch.randn(3, 5, mlp.fc1.in_features)
    assert torch.equal(mlp(x), reference(x))  # fp32: F.linear, then the ReLU inside fc1's fallback
    head = copy.deepcopy(tiny_loaded.model.detr_decoder.box_head)
    assert type(head) is Sam3DecoderMLP
    reference_head = copy.deepcopy(head)
    use_onednn(head)
    y = torch.randn(4, head.layer1.in_features)
    assert torch.equal(head(y), reference_head(y))
    traced = torch.jit.trace(use_onednn(copy.deepcopy(reference).to(torch.bfloat16)), x.to(torch.bfloat16))
    assert "mkldnn" not in str(traced.inlined_graph)  # tracing and exports see plain linear layers


def test_backend_uses_it_in_bf16_on_the_cpu_only(tiny_ckpt):
    from dart.models.loading import load_sam3

    fp32 = TorchBackend(load_sam3(tiny_ckpt, imgsz=TINY_IMGSZ), device="cpu", precision="fp32")
    assert not any(isinstance(m, OneDnnLinear) for m in fp32.encdec_stage.modules())
    bf16 = TorchBackend(load_sam3(tiny_ckpt, imgsz=TINY_IMGSZ), device="cpu", precision="bf16")
    assert any(isinstance(m, OneDnnLinear) for m in bf16.backbone_stage.modules())
    assert any(isinstance(m, OneDnnLinear) and m.activation == "relu" for m in bf16.encdec_stage.modules())
