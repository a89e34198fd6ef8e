"""dart's bf16 stages with their linear layers as single oneDNN calls (:func:`dart.models.onednn.use_onednn`)
against the same stages with ``F.linear``, alternating in one process on the same full-size weights and inputs: the
largest output difference, and the median seconds of the backbone and of the encoder-decoder per class count.

Both sides run as ``TorchBackend`` runs bf16 on a CPU (products' weights cast, under autocast); random pixels and
text features (speed does not depend on the values). ``--baseline unfused-gelu`` compares instead oneDNN with the
ViT's GELU inside the product against oneDNN with ``F.gelu`` after it, and reports both sides' FPN levels against
the fp32 stage (the fused GELU rounds once, so its values differ).

    python benchmarks/onednn_vs_linear.py sam3.pt --threads 2 --classes 4 --runs 6
    python benchmarks/onednn_vs_linear.py sam3.pt --threads 2 --baseline unfused-gelu --classes --runs 6
"""

from __future__ import annotations

import argparse
import copy
import statistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a SAM3 checkpoint dart loads (random full-size weights are fine)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=6, help="timed pairs of each stage")
    parser.add_argument("--classes", type=int, nargs="*", default=[4])
    parser.add_argument("--baseline", choices=("linear", "unfused-gelu"), default="linear",
                        help="F.linear everywhere, or oneDNN with the ViT's GELU after the product")
    parser.add_argument("--imgsz", type=int, default=1008)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    import torch
    from transformers.activations import ACT2FN

    from dart.backends.torch_backend import _cast
    from dart.bench.timing import alternating
    from dart.export.verify import cosine
    from dart.io import write_json
    from dart.models.loading import load_sam3
    from dart.models.onednn import OneDnnLinear, use_onednn
    from dart.stages import BackboneStage, EncDecStage

    torch.set_num_threads(args.threads)
    cpu, bf16 = torch.device("cpu"), torch.bfloat16
    model = load_sam3(args.checkpoint, imgsz=args.imgsz).model
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(1, 3, args.imgsz, args.imgsz, generator=generator)
    exact = None
    if args.baseline == "unfused-gelu":  # the fp32 stage, before the casts below narrow the model's own modules
        with torch.inference_mode():
            exact = BackboneStage(model, complex_rope=True).eval()(pixels)
    plain = (_cast(BackboneStage(model, complex_rope=True), cpu, bf16).eval(),
             _cast(EncDecStage(model, args.imgsz), cpu, bf16).eval())
    fused = tuple(use_onednn(copy.deepcopy(stage)) for stage in plain)
    base_name = "F.linear"
    if args.baseline == "unfused-gelu":
        base_name = "unfused GELU"
        plain = tuple(use_onednn(stage) for stage in plain)
        for module in plain[0].modules():
            if isinstance(module, OneDnnLinear) and module.activation == "gelu":
                module.activation = "none"
        for layer in plain[0].vit.layers:
            layer.mlp.activation_fn = ACT2FN[layer.mlp.config.hidden_act]
    results: dict = {"threads": args.threads, "runs": args.runs}

    def pairs(name: str, calls: dict) -> None:
        times = alternating(calls, args.runs)
        row = {f"{k}_s": statistics.median(v) for k, v in times.items()}
        row["speedup"] = row[f"{base_name}_s"] / row["oneDNN_s"]
        results[name] = {**results.get(name, {}), **row}
        print(f"{name}: {base_name} {row[f'{base_name}_s']:.3f} s, oneDNN {row['oneDNN_s']:.3f} s "
              f"({row['speedup']:.2f}x)", flush=True)

    with torch.inference_mode(), torch.autocast("cpu", dtype=bf16):
        features = plain[0](pixels)
        fused_features = fused[0](pixels)
        difference = max(float((a.float() - b.float()).abs().max()) for a, b in zip(fused_features, features))
        results["backbone"] = {"largest_difference": difference}
        print(f"backbone: largest difference {difference:.3g}", flush=True)
        if exact is not None:  # both sides against the fp32 stage: worst cosine and mean error over the levels
            for side, got in (("unfused", features), ("fused", fused_features)):
                worst = min(cosine(a.float(), b) for a, b in zip(got, exact))
                error = max(float((a.float() - b).abs().mean()) for a, b in zip(got, exact))
                results["backbone"][f"{side}_vs_fp32"] = {"worst_cosine": worst, "worst_mean_abs": error}
                print(f"backbone, {side} GELU vs fp32: worst cosine {worst:.7f}, worst mean abs {error:.3g}",
                      flush=True)
        del fused_features
        pairs("backbone", {base_name: lambda: plain[0](pixels), "oneDNN": lambda: fused[0](pixels)})
        for classes in args.classes:
            text = torch.randn(classes, 32, 256, generator=generator)
            mask = torch.ones(classes, 32, dtype=torch.bool)
            mask[:, 8:] = False
            want, got = plain[1](*features, text, mask), fused[1](*features, text, mask)
            difference = max(float((got[k].float() - want[k].float()).abs().max()) for k in ("logits", "boxes", "presence"))
            name = f"encdec_{classes}"
            results[name] = {"largest_difference": difference}
            print(f"{name}: largest difference {difference:.3g}", flush=True)
            pairs(name, {base_name: lambda: plain[1](*features, text, mask),
                         "oneDNN": lambda: fused[1](*features, text, mask)})
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
