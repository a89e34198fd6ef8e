"""dart's DETR decoder loop (:func:`dart.models.decoder.decode`) against ``transformers``' ``Sam3DetrDecoder`` on
the same full-size weights and inputs, alternating in one process: the largest output difference and the median
seconds of each, per class count and precision.

The inputs are what the encoder-decoder hands the decoder for ``C`` classes of one 1008 px image: random encoder
memory ``[C, 5184, 256]``, position encodings and 33-token prompts (speed does not depend on the values). bf16 runs
as ``TorchBackend`` does: the products' weights cast, under autocast.

    python benchmarks/decoder_vs_transformers.py sam3.pt --threads 2 --classes 1 4 16 --runs 6
"""

from __future__ import annotations

import argparse
import contextlib
import statistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a SAM3 checkpoint dart loads (random full-size weights are fine)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=6, help="timed pairs per class count and precision")
    parser.add_argument("--classes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--precision", nargs="+", choices=("fp32", "bf16"), default=["bf16", "fp32"])
    parser.add_argument("--imgsz", type=int, default=1008)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    import torch

    from dart.backends.torch_backend import _cast
    from dart.bench.timing import alternating
    from dart.io import write_json
    from dart.models.decoder import decode
    from dart.models.loading import load_sam3

    torch.set_num_threads(args.threads)
    loaded = load_sam3(args.checkpoint, imgsz=args.imgsz)
    grid = args.imgsz // 14
    results = []
    for precision in args.precision:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        decoder = _cast(loaded.model.detr_decoder, torch.device("cpu"), dtype).eval()
        for classes in args.classes:
            generator = torch.Generator().manual_seed(classes)
            memory = torch.randn(classes, grid * grid, 256, generator=generator)
            pos = torch.randn(classes, grid * grid, 256, generator=generator)
            prompt = torch.randn(classes, 33, 256, generator=generator)
            mask = torch.ones(classes, 33, dtype=torch.bool)
            mask[:, 20:32] = False

            def reduced():
                return torch.autocast("cpu", dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()

            def theirs():
                with reduced():
                    out = decoder(vision_features=memory, text_features=prompt, vision_pos_encoding=pos,
                                  text_mask=mask, spatial_shapes=torch.tensor([[grid, grid]]))
                return out.intermediate_hidden_states[-1]

            def ours():
                with reduced():
                    return decode(decoder, memory, prompt, pos, mask, grid, grid).queries

            with torch.inference_mode():
                difference = float((ours().float() - theirs().float()).abs().max())
                times = alternating({"transformers": theirs, "dart": ours}, args.runs)
            row = {"precision": precision, "classes": classes, "largest_difference": difference,
                   **{f"{k}_s": statistics.median(v) for k, v in times.items()}}
            row["speedup"] = row["transformers_s"] / row["dart_s"]
            results.append(row)
            print(f"{precision} {classes:3d} classes: transformers {row['transformers_s']:.3f} s, "
                  f"dart {row['dart_s']:.3f} s ({row['speedup']:.2f}x), largest difference {difference:.3g}",
                  flush=True)
    if args.json:
        write_json(args.json, {"threads": args.threads, "runs": args.runs, "results": results})


if __name__ == "__main__":
    main()
