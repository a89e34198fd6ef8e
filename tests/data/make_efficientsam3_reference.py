"""Regenerate ``tests/data/efficientsam3_reference.json``: the original-layout keys and shapes of EfficientSAM3's
trunks (RepViT-M2.3, TinyViT-11M, EfficientViT-B1), and what each trunk's *original* module definition computes on
deterministic weights, for ``tests/test_compat_efficientsam3.py`` to compare dart's timm-based trunks with.

The original modules are not dart dependencies; they come from a clone of the DART research code
(mkturkcan/DART, ``sam3/backbones/``: the modules EfficientSAM3 checkpoints were made with, imported as the
package ``sam3.backbones`` without running ``sam3/__init__.py``)::

    git clone https://github.com/mkturkcan/DART /tmp/DART
    python tests/data/make_efficientsam3_reference.py /tmp/DART     # writes tests/data/efficientsam3_reference.json

What it records per trunk: ``keys`` (every state-dict key of the original module with its shape, in order), and
for the weights :func:`deterministic_weights` makes from them and the input :func:`deterministic_input`, the
output of the trunk as EfficientSAM3's wrappers run it (RepViT: ``model.features`` in sequence; TinyViT:
``patch_embed``, then ``layers``, the tokens reshaped to a square map; EfficientViT: ``model(x)["stage_final"]``):
its shape, its per-channel means, and a
strided sample of its values. TinyViT is built for the input size (224 here; EfficientSAM3 builds it for 1008,
which changes no weight shape).
"""

from __future__ import annotations

import importlib
import json
import math
import sys
import types
from pathlib import Path

import torch

SEED = 20261201
SAMPLES = 2048
OUT = Path(__file__).with_name("efficientsam3_reference.json")
TRUNKS = {  # dart.backbones name: (original module, factory, factory kwargs, input size)
    "efficientsam3_repvit_m2_3": ("sam3.backbones.repvit", "repvit_m2_3", {"distillation": False, "num_classes": 0},
                                  112),
    "efficientsam3_tiny_vit_11m": ("sam3.backbones.tiny_vit", "tiny_vit_11m_224", {"img_size": 224, "num_classes": 0},
                                   224),
    "efficientsam3_efficientvit_b1": ("sam3.backbones.efficientvit.efficientvit.backbone", "efficientvit_backbone_b1",
                                      {}, 112),
}


def deterministic_weights(keys: list[tuple[str, list[int]]]) -> dict[str, torch.Tensor]:
    """Weights for these keys from one seeded generator, scaled so activations stay moderate through every block:
    matrices and convolutions ~ N(0, 0.25/fan_in), norms near identity, biases small."""
    gen = torch.Generator().manual_seed(SEED)
    state = {}
    for name, shape in keys:
        if name.endswith("num_batches_tracked"):
            state[name] = torch.zeros(shape, dtype=torch.long)
            continue
        noise = torch.randn(shape, generator=gen)
        if name.endswith("running_var"):
            state[name] = 1.0 + 0.1 * noise.abs()
        elif name.endswith("running_mean") or name.endswith("bias") or name.endswith("attention_biases"):
            state[name] = 0.1 * noise
        elif len(shape) == 1:  # a norm's weight
            state[name] = 1.0 + 0.1 * noise
        else:
            fan_in = math.prod(shape[1:])
            state[name] = 0.5 * noise / math.sqrt(fan_in)
    return state


def deterministic_input(size: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(SEED + 1)
    return torch.randn(1, 3, size, size, generator=gen)


def summary(output: torch.Tensor) -> dict:
    flat = output.reshape(-1)
    step = max(1, flat.numel() // SAMPLES)
    return {"shape": list(output.shape), "channel_means": output.mean(dim=(0, 2, 3)).tolist(),
            "sample_step": step, "sample": flat[::step].tolist()}


def run_trunk(model, x: torch.Tensor) -> torch.Tensor:
    if hasattr(model, "input_stem"):  # EfficientViT
        return model(x)["stage_final"]
    if hasattr(model, "features"):  # RepViT
        for block in model.features:
            x = block(x)
        return x
    x = model.patch_embed(x)  # TinyViT
    for layer in model.layers:
        x = layer(x)
    batch, length, channels = x.shape
    side = int(length ** 0.5)
    return x.view(batch, side, side, channels).permute(0, 3, 1, 2)


def main(dart_clone: str) -> None:
    package = types.ModuleType("sam3")  # the package's own __init__ imports Meta's whole model: not needed here
    package.__path__ = [str(Path(dart_clone) / "sam3")]
    sys.modules["sam3"] = package
    out = {"source": "mkturkcan/DART sam3/backbones", "seed": SEED, "trunks": {}}
    for name, (module_name, factory, kwargs, size) in TRUNKS.items():
        module = importlib.import_module(module_name)
        model = getattr(module, factory)(**kwargs)
        keys = [(key, list(t.shape)) for key, t in model.state_dict().items()
                if not key.startswith(("head.", "norm_head."))]  # the classifier EfficientSAM3 never runs
        model.load_state_dict(deterministic_weights(keys), strict=False)
        model.eval()  # after loading: the original TinyViT caches its attention biases when eval() is called
        with torch.no_grad():
            result = run_trunk(model, deterministic_input(size))
        out["trunks"][name] = {"factory": f"{module_name}:{factory}", "input_size": size, "keys": keys,
                               "output": summary(result)}
        print(f"{name}: {len(keys)} keys, output {list(result.shape)}")
    OUT.write_text(json.dumps(out) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
