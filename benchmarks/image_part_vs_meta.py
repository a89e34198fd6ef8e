"""dart's image part (transformers' ViT with dart's RoPE, and the FPN, as dart runs it on a CPU) against Meta's ``sam3`` trunk and neck, side by
side in one process on the same ``sam3.pt`` and the same pixels: where the per-image time goes, part by part.

Both models are loaded from one Meta checkpoint; the runs alternate (dart, Meta, dart, ...) so that a machine whose
speed drifts affects both alike. First the three FPN levels are compared (they must agree to float noise), then the
median seconds of each part are printed.

``--precision bf16`` runs each as its bf16 peer row does: dart with its products' weights cast, under autocast and
with its linear layers as oneDNN calls (``TorchBackend``), Meta's model as it is under bf16 autocast. ``--profile`` adds the operators that took the most
time in one more run of each (torch profiler, self CPU time).

    python benchmarks/image_part_vs_meta.py sam3.pt --bpe bpe_simple_vocab_16e6.txt.gz --threads 2 --runs 3
    python benchmarks/image_part_vs_meta.py sam3.pt --bpe bpe_simple_vocab_16e6.txt.gz --precision bf16 --profile
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="Meta's sam3.pt (random full-size weights are fine: speed only)")
    parser.add_argument("--bpe", required=True, help="CLIP's bpe_simple_vocab_16e6.txt.gz (Meta's builder needs it)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--imgsz", type=int, default=1008)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--profile", action="store_true", help="also print each side's costliest operators")
    parser.add_argument("--json", help="also write the medians here")
    args = parser.parse_args()

    import contextlib

    import torch

    from dart.backends.torch_backend import _cast
    from dart.bench.peers import meta_on_cpu
    from dart.models.loading import load_sam3
    from dart.models.onednn import onednn_available, use_onednn
    from dart.models.rope import vit_layers
    from dart.stages import BackboneStage

    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    stage = _cast(BackboneStage(load_sam3(args.checkpoint, imgsz=args.imgsz).model), torch.device("cpu"), dtype).eval()
    if dtype == torch.bfloat16 and onednn_available():
        use_onednn(stage)  # as TorchBackend runs bf16 on a CPU

    def reduced():
        return torch.autocast("cpu", dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    with meta_on_cpu():
        from sam3.model_builder import build_sam3_image_model

        meta = build_sam3_image_model(bpe_path=args.bpe, device="cpu", eval_mode=True,
                                      checkpoint_path=args.checkpoint, load_from_HF=False)
    vision = meta.backbone.vision_backbone
    pixels = torch.randn(1, 3, args.imgsz, args.imgsz, generator=torch.Generator().manual_seed(0))
    grid = args.imgsz // stage.patch_size

    def dart_parts():
        t0 = time.perf_counter()
        hidden = stage.vit.layer_norm(stage.vit.embeddings(pixels).view(1, grid, grid, -1))
        t1 = time.perf_counter()
        hidden = vit_layers(stage.vit.layers, hidden)  # as TorchBackend runs them on the CPU
        t2 = time.perf_counter()
        levels = [level(hidden.permute(0, 3, 1, 2)) for level in stage.fpn]
        t3 = time.perf_counter()
        return {"embeddings": t1 - t0, "vit_blocks": t2 - t1, "fpn": t3 - t2}, levels

    def meta_parts():
        t0 = time.perf_counter()
        features = vision.trunk(pixels)[-1]
        t1 = time.perf_counter()
        levels = [vision.convs[i](features) for i in range(3)]
        t2 = time.perf_counter()
        return {"trunk": t1 - t0, "fpn": t2 - t1}, levels

    with torch.inference_mode(), meta_on_cpu(), reduced():  # both sides under the same autocast
        (_, mine), (_, theirs) = dart_parts(), meta_parts()  # also the warm-up
        for i, (a, b) in enumerate(zip(mine, theirs)):
            print(f"FPN level {i}: largest difference {float((a - b).abs().max()):.2e} (largest |value| "
                  f"{float(b.abs().max()):.2f})")
        dart_runs, meta_runs = [], []
        for run in range(args.runs):
            dart_runs.append(dart_parts()[0])
            meta_runs.append(meta_parts()[0])
            print(f"run {run}: dart {dart_runs[-1]}  meta {meta_runs[-1]}", flush=True)
        if args.profile:
            for name, parts in (("dart", dart_parts), ("meta", meta_parts)):
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                    parts()
                print(f"{name}: costliest operators (self CPU time, one run)")
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    medians = {"dart": {k: statistics.median(r[k] for r in dart_runs) for k in dart_runs[0]},
               "meta": {k: statistics.median(r[k] for r in meta_runs) for k in meta_runs[0]}}
    for system, parts in medians.items():
        print(f"{system}: " + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items()) + f", total {sum(parts.values()):.2f} s")
    if args.json:
        from dart.io import write_json

        write_json(args.json, {"threads": args.threads, "runs": args.runs, "imgsz": args.imgsz,
                               "precision": args.precision, "medians": medians,
                               "dart_runs": dart_runs, "meta_runs": meta_runs})


if __name__ == "__main__":
    main()
