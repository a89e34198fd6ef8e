"""Regenerate ``tests/data/efficientsam3_repvit_reference.json``: the original-layout keys and shapes of
EfficientSAM3's RepViT-M2.3 trunk, and what the trunk's *original* module definition computes on deterministic
weights, for ``tests/test_compat_efficientsam3.py`` to compare dart's timm-based trunk with.

The original RepViT module is not a dart dependency; it comes from a clone of the DART research code
(mkturkcan/DART, ``sam3/backbones/repvit.py``, the module EfficientSAM3 checkpoints were made with)::

    git clone https://github.com/mkturkcan/DART /tmp/DART
    python tests/data/make_efficientsam3_reference.py /tmp/DART     # writes tests/data/efficientsam3_repvit_reference.json

What it records: ``keys`` (every state-dict key of ``repvit_m2_3(distillation=False, num_classes=0)`` with its
shape, in order), and for the weights :func:`deterministic_weights` makes from them and the input
:func:`deterministic_input`, the output of running ``model.features`` in sequence (what EfficientSAM3's trunk
wrapper runs): its shape, its per-channel means, and a strided sample of its values.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import torch

SEED = 20261201
INPUT_SIZE = 112
SAMPLES = 2048
OUT = Path(__file__).with_name("efficientsam3_repvit_reference.json")


def deterministic_weights(keys: list[tuple[str, list[int]]]) -> dict[str, torch.Tensor]:
    """Weights for these keys from one seeded generator, scaled so activations stay moderate through 55 blocks:
    convolutions ~ N(0, 0.25/fan_in), BatchNorm near identity, biases small."""
    gen = torch.Generator().manual_seed(SEED)
    state = {}
    for name, shape in keys:
        if name.endswith("num_batches_tracked"):
            state[name] = torch.zeros(shape, dtype=torch.long)
            continue
        noise = torch.randn(shape, generator=gen)
        if name.endswith("running_var"):
            state[name] = 1.0 + 0.1 * noise.abs()
        elif name.endswith("running_mean") or name.endswith("bias"):
            state[name] = 0.1 * noise
        elif len(shape) == 1:  # BatchNorm weight
            state[name] = 1.0 + 0.1 * noise
        else:
            fan_in = math.prod(shape[1:])
            state[name] = 0.5 * noise / math.sqrt(fan_in)
    return state


def deterministic_input() -> torch.Tensor:
    gen = torch.Generator().manual_seed(SEED + 1)
    return torch.randn(1, 3, INPUT_SIZE, INPUT_SIZE, generator=gen)


def summary(output: torch.Tensor) -> dict:
    flat = output.reshape(-1)
    step = max(1, flat.numel() // SAMPLES)
    return {"shape": list(output.shape), "channel_means": output.mean(dim=(0, 2, 3)).tolist(),
            "sample_step": step, "sample": flat[::step].tolist()}


def main(dart_clone: str) -> None:
    path = Path(dart_clone) / "sam3" / "backbones" / "repvit.py"
    spec = importlib.util.spec_from_file_location("original_repvit", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["original_repvit"] = module
    spec.loader.exec_module(module)
    model = module.repvit_m2_3(distillation=False, num_classes=0).eval()
    keys = [(name, list(t.shape)) for name, t in model.state_dict().items()]
    model.load_state_dict(deterministic_weights(keys), strict=True)
    with torch.no_grad():
        x = deterministic_input()
        for block in model.features:
            x = block(x)
    OUT.write_text(json.dumps({"source": "mkturkcan/DART sam3/backbones/repvit.py repvit_m2_3", "seed": SEED,
                               "input_size": INPUT_SIZE, "keys": keys, "output": summary(x)}) + "\n")
    print(f"wrote {OUT} ({len(keys)} keys, output {list(x.shape)})")


if __name__ == "__main__":
    main(sys.argv[1])
