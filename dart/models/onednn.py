"""SAM3's linear layers as single oneDNN calls on a CPU in bf16, with the bias and a following ReLU in the call.

In bf16 on a CPU, ``F.linear`` runs oneDNN's matrix product already, but through ``addmm``: the bias is first
copied into the whole output, and a ReLU after it (the DETR encoder's and decoder's feed-forward layers, every
``Sam3DecoderMLP``) is one more pass over the output. ``torch.ops.mkldnn._linear_pointwise``, the call PyTorch's own
compiler emits for a CPU linear layer, adds the bias and applies the ReLU to each block of results as it is
written. On the AMX VM of BENCHMARKS.md ("Linear layers as one oneDNN call") that measured 1.04-1.18x on the ViT's
products and 1.7-2.3x on a product followed by a ReLU, with the same values bit for bit: the products are the same
oneDNN kernel, and a ReLU commutes with rounding to bf16.

:func:`use_onednn` changes a stage's modules in place, keeping their parameters, state-dict keys and outputs:

- every ``nn.Linear`` becomes a :class:`OneDnnLinear`, which falls back to ``F.linear`` wherever the oneDNN call is
  not the same computation (not a CPU, not bf16 weights, tracing, exporting, ``torch.compile``);
- a ``Sam3MLP`` whose activation is a ReLU, and every ``Sam3DecoderMLP``, runs its ReLUs inside the products.

``TorchBackend`` calls it on the CPU in bf16 (``tests/test_onednn.py`` proves the stages' outputs unchanged).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers.models.sam3.modeling_sam3 import Sam3DecoderMLP, Sam3MLP

from dart.models.sam3 import capturing_graph


def onednn_available() -> bool:
    """Whether this PyTorch runs bf16 linear layers through oneDNN on this CPU."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class OneDnnLinear(nn.Linear):
    """An ``nn.Linear`` (the same parameters and state dict) computed as one oneDNN call when its weights are bf16
    and its input is on the CPU, in bf16 or under bf16 autocast; ``relu=True`` applies a ReLU to the output (in the
    call, or after ``F.linear`` where it falls back)."""

    relu = False  # set per instance by use_onednn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if (x.device.type == "cpu" and weight.dtype == torch.bfloat16 and not capturing_graph()
                and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))  # no autograd
                and (x.dtype == torch.bfloat16 or (torch.is_autocast_enabled("cpu")
                                                   and torch.get_autocast_dtype("cpu") == torch.bfloat16))):
            bias = None if self.bias is None else self.bias.to(torch.bfloat16)
            return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), weight, bias,
                                                      "relu" if self.relu else "none", [], "")
        out = F.linear(x, weight, self.bias)
        return F.relu(out) if self.relu else out


class _FusedDecoderMLP(Sam3DecoderMLP):
    """``Sam3DecoderMLP`` with the ReLUs computed by its :class:`OneDnnLinear` layers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(x)
        if self.layer3 is not None:
            return self.layer3(self.layer2(x))
        return self.layer2(x)


def use_onednn(stage: nn.Module) -> nn.Module:
    """``stage`` with its linear layers as :class:`OneDnnLinear` and the ReLU of its MLPs inside them (see the
    module's description); changed in place and returned. Calling it again changes nothing."""
    for module in stage.modules():
        if type(module) is nn.Linear:
            module.__class__ = OneDnnLinear
    for module in stage.modules():
        if type(module) is Sam3DecoderMLP:
            module.__class__ = _FusedDecoderMLP
            hidden = [module.layer1] + ([module.layer2] if module.layer3 is not None else [])
            for layer in hidden:
                layer.relu = True
        elif type(module) is Sam3MLP and isinstance(module.activation_fn, nn.ReLU) and isinstance(module.fc1, OneDnnLinear):
            # fc1, dropout, ReLU: the ReLU moves into fc1 (dropout scales by 0 or a positive factor, so the two
            # commute even in training)
            module.fc1.relu = True
            module.activation_fn = nn.Identity()
    return stage
