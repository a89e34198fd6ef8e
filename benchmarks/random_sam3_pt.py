"""Random full-size SAM3 weights in Meta's ``sam3.pt`` layout, made by the ``sam3`` package's own builder (Meta's
from the package index, or the DART research code's fork when its clone comes first on ``PYTHONPATH``): the file
`dart bench peers` gives every system, where the real weights cannot be downloaded. Speed does not depend on the
values. On a CUDA machine the model is built on the GPU (seconds) and saved from the CPU.

    PYTHONPATH=DART python benchmarks/random_sam3_pt.py /tmp/sam3.pt --bpe DART/sam3/assets/bpe_simple_vocab_16e6.txt.gz
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="the sam3.pt to write")
    parser.add_argument("--bpe", required=True, help="CLIP's bpe_simple_vocab_16e6.txt.gz (the builder needs it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="where to build (default: cuda when there is one)")
    args = parser.parse_args()

    import torch

    from dart.bench.peers import random_meta_model, save_meta_checkpoint

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    model = random_meta_model(args.bpe, args.seed, device=device)
    params = sum(p.numel() for p in model.parameters())
    path = save_meta_checkpoint(model, args.output)
    print(f"{path}: {params / 1e6:.0f} M parameters, built on {device} and saved in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
