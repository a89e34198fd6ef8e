"""Linear layers as one oneDNN call (dart.models.onednn): the stages compute the same numbers bit for bit in bf16 on
a CPU, fall back to F.linear where the call would not be the same computation, and trace to the same graph."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
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
    model = copy.deepcopy(tiny_loaded.model)
    reference = _stages(model, torch.bfloat16)
    fast = copy.deepcopy(reference)
    for stage in fast:
        use_onednn(stage)
    assert any(isinstance(m, OneDnnLinear) and m.relu for m in fast[1].modules())
    assert not any(type(m) is nn.Linear for stage in fast for m in stage.modules())
    pixels = torch.randn(2, 3, TINY_IMGSZ, TINY_IMGSZ, generator=torch.Generator().manual_seed(0))
    backend = TorchBackend(tiny_loaded, device="cpu")
    text, mask = backend.encode_text(["person", "car", "a red dog"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features, fast_features = reference[0](pixels), fast[0](pixels)
        for a, b in zip(fast_features, features):
            assert torch.equal(a, b)
        want, got = reference[1](*features, text, mask), fast[1](*features, text, mask)
    for key in ("logits", "boxes", "presence"):
        assert torch.equal(got[key], want[key]), key


@torch.inference_mode()
def test_modules_fall_back_outside_cpu_bf16(tiny_loaded):
    """fp32 weights, an fp32 input outside autocast, and tracing all run F.linear (and the moved ReLU after it)."""
    mlp = copy.deepcopy(tiny_loaded.model.detr_encoder.layers[0].mlp)
    assert type(mlp) is Sam3MLP and isinstance(mlp.activation_fn, nn.ReLU)
    reference = copy.deepcopy(mlp)
    use_onednn(mlp)
    assert mlp.fc1.relu and isinstance(mlp.activation_fn, nn.Identity)
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
    assert any(isinstance(m, OneDnnLinear) and m.relu for m in bf16.encdec_stage.modules())
