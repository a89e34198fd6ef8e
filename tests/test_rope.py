"""dart's ViT layer with the RoPE as one complex product (dart.models.rope) against transformers' Sam3ViTLayer on
the same weights: the same numbers to float rounding, windowed and global layers, fp32 and bf16, pruned too."""

from __future__ import annotations

import copy

import pytest
import torch

from dart.models.rope import uses_rope_attention, vit_layer
from dart.stages import BackboneStage
from tests.tiny import TINY_IMGSZ


def _pixels(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, TINY_IMGSZ, TINY_IMGSZ, generator=torch.Generator().manual_seed(seed))


@torch.inference_mode()
def test_each_layer_computes_what_transformers_layer_computes(tiny_loaded):
    stage = BackboneStage(tiny_loaded.model).eval()
    grid = TINY_IMGSZ // stage.patch_size
    hidden = stage.vit.layer_norm(stage.vit.embeddings(_pixels()).view(2, grid, grid, -1))
    windows = set()
    for layer in stage.vit.layers:
        assert uses_rope_attention(layer)
        windows.add(layer.window_size)
        expected, got = layer(hidden), vit_layer(layer, hidden)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        hidden = expected
    assert 0 in windows and len(windows) == 2  # global and windowed layers both checked


@torch.inference_mode()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_backbone_stage_with_complex_rope_matches_transformers(tiny_loaded, dtype):
    from dart.backends.torch_backend import _cast

    reference = _cast(BackboneStage(copy.deepcopy(tiny_loaded.model)), torch.device("cpu"), dtype).eval()
    fast = copy.copy(reference)
    fast.complex_rope = True
    pixels = _pixels(1)
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        expected, got = reference(pixels), fast(pixels)
    for a, b in zip(got, expected):
        if dtype == torch.float32:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        else:  # one bf16 rounding apart at most, somewhere in the ViT
            cosine = torch.nn.functional.cosine_similarity(a.flatten().float(), b.flatten().float(), dim=0)
            assert float(cosine) > 0.9999


@torch.inference_mode()
def test_pruned_branches_and_training_fall_back_to_the_layer(tiny_ckpt):
    from dart.models.loading import load_sam3
    from dart.pruning.spec import PruneSpec, apply_pruning

    loaded = load_sam3(tiny_ckpt, imgsz=TINY_IMGSZ)
    apply_pruning(loaded.model, PruneSpec.parse(None, "1:attn,2:mlp"))
    stage = BackboneStage(loaded.model).eval()
    assert not uses_rope_attention(stage.vit.layers[1])  # its attention is a zero branch now
    assert uses_rope_attention(stage.vit.layers[2])  # only its MLP is masked
    fast = copy.copy(stage)
    fast.complex_rope = True
    for a, b in zip(fast(_pixels(2)), stage(_pixels(2))):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    stage.train()
    assert not uses_rope_attention(stage.vit.layers[0])


def test_the_torch_backend_uses_it_and_traced_graphs_do_not(tiny_loaded):
    import warnings

    from dart.backends.torch_backend import TorchBackend

    backend = TorchBackend(tiny_loaded, device="cpu", precision="fp32")
    assert backend.backbone_stage.complex_rope
    stage = copy.copy(backend.backbone_stage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on transformers' shape arithmetic
        traced = torch.jit.trace(stage, (_pixels(),), check_trace=False)
    assert "view_as_complex" not in str(traced.inlined_graph)  # ONNX has no complex type: exports get the real form
