"""SAM3's linear layers as single oneDNN calls on a CPU in bf16, with the bias and a following ReLU or GELU in the
call.

In bf16 on a CPU, ``F.linear`` runs oneDNN's matrix product already, but through ``addmm``: the bias is first
copied into the whole output, and an activation after it (the DETR encoder's and decoder's feed-forward ReLU,
every ``Sam3DecoderMLP``'s ReLUs, the ViT's MLP GELU) is one more pass over the output.
``torch.ops.mkldnn._linear_pointwise``, the call PyTorch's own compiler emits for a CPU linear layer, adds the bias
and applies the activation to each block of results as it is written. On the AMX VMs of BENCHMARKS.md ("Linear
layers as one oneDNN call") that measured 1.04-1.18x on the ViT's products, 1.7-2.3x on a product followed by a
ReLU and 1.4x on the ViT's first MLP product with its GELU.

- A ReLU keeps the values bit for bit: the products are the same oneDNN kernel, and a ReLU commutes with rounding
  to bf16.
- The GELU (exact, erf) is computed on the fp32 accumulator before the one rounding to bf16, where ``F.gelu`` after
  ``F.linear`` rounds the product to bf16, computes the GELU and rounds again. So the values change by bf16
  rounding, towards the exact result: on the full-size ViT product the mean error against float64 falls by a third
  (BENCHMARKS.md).

:func:`use_onednn` changes a stage's modules in place, keeping their parameters, state-dict keys and outputs:

- every ``nn.Linear`` becomes a :class:`OneDnnLinear`, which falls back to ``F.linear`` (and the activation after
  it) wherever the oneDNN call is not the same computation (not a CPU, not bf16 weights, tracing, exporting,
  ``torch.compile``);
- a ``Sam3MLP`` whose activation is a ReLU, or an exact GELU with no dropout before it, and every
  ``Sam3DecoderMLP``, runs its activations inside the products.

``TorchBackend`` calls it on the CPU in bf16 (``tests/test_onednn.py`` proves the stages' outputs unchanged, and the
GELU's no further from fp32 than before).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers.activations import GELUActivation
from transformers.models.sam3.modeling_sam3 import Sam3DecoderMLP, Sam3MLP

from dart.models.sam3 import capturing_graph

ACTIVATIONS = {"none": lambda x: x, "relu": F.relu, "gelu": F.gelu}  # what OneDnnLinear applies when it falls back
_ONEDNN_ALGORITHM = {"none": "", "relu": "", "gelu": "none"}  # oneDNN's argument: "none" is the exact (erf) GELU


def onednn_available() -> bool:
    """Whether this PyTorch runs bf16 linear layers through oneDNN on this CPU."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class OneDnnLinear(nn.Linear):
    """An ``nn.Linear`` (the same parameters and state dict) computed as one oneDNN call when its weights are bf16
    and its input is on the CPU, in bf16 or under bf16 autocast; ``activation`` (``"relu"``, ``"gelu"``) is applied
    to the output (in the call, or after ``F.linear`` where it falls back)."""

    activation = "none"  # set per instance by use_onednn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if (x.device.type == "cpu" and weight.dtype == torch.bfloat16 and not capturing_graph()
                and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))  # no autograd
                and (x.dtype == torch.bfloat16 or (torch.is_autocast_enabled("cpu")
                                                   and torch.get_autocast_dtype("cpu") == torch.bfloat16))):
            bias = None if self.bias is None else self.bias.to(torch.bfloat16)
            return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), weight, bias, self.activation, [],
                                                      _ONEDNN_ALGORITHM[self.activation])
        return ACTIVATIONS[self.activation](F.linear(x, weight, self.bias))


class _FusedDecoderMLP(Sam3DecoderMLP):
    """``Sam3DecoderMLP`` with the ReLUs computed by its :class:`OneDnnLinear` layers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(x)
        if self.layer3 is not None:
            return self.layer3(self.layer2(x))
        return self.layer2(x)


def _fusable_activation(mlp: Sam3MLP) -> str | None:
    """The activation of ``mlp`` that :class:`OneDnnLinear` can apply inside ``fc1``, or None. A ReLU commutes with
    the dropout between them (it scales by 0 or a positive factor); a GELU does not, so only with no dropout."""
    act = mlp.activation_fn
    if isinstance(act, nn.ReLU):
        return "relu"
    exact_gelu = ((type(act) is GELUActivation and act.act is F.gelu)
                  or (type(act) is nn.GELU and act.approximate == "none"))
    return "gelu" if exact_gelu and mlp.dropout.p == 0 else None


def use_onednn(stage: nn.Module) -> nn.Module:
    """``stage`` with its linear layers as :class:`OneDnnLinear` and the activations of its MLPs inside them (see
    the module's description); changed in place and returned. Calling it again changes nothing."""
    for module in stage.modules():
        if type(module) is nn.Linear:
            module.__class__ = OneDnnLinear
    for module in stage.modules():
        if type(module) is Sam3DecoderMLP:
            module.__class__ = _FusedDecoderMLP
            hidden = [module.layer1] + ([module.layer2] if module.layer3 is not None else [])
            for layer in hidden:
                layer.activation = "relu"
        elif type(module) is Sam3MLP and isinstance(module.fc1, OneDnnLinear):
            activation = _fusable_activation(module)
            if activation is not None:
                module.fc1.activation = activation
                module.activation_fn = nn.Identity()
    return stage
