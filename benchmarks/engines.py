"""GPU benchmark of dart's exported stages (the numbers BENCHMARKS.md asks for).

Prints, for one setup:
- backbone latency (ms) and encoder-decoder latency for 1/2/4/8/16 classes (ms), CUDA-synchronised medians;
- FP16 cosine vs FP32 per stage (engine outputs vs the PyTorch FP32 model on the same input);
- end-to-end FPS of ``Detector.detect`` at 4 classes (preprocess + backbone + encdec + post-processing).

Weights need not be real for speed: without --checkpoint a randomly initialised full-size SAM3 (transformers'
default ``Sam3Config``) is used, and the cosine column then describes random weights, not facebook/sam3.

    python benchmarks/engines.py --workdir /tmp/dart-bench                      # TensorRT FP16, 1008 px
    python benchmarks/engines.py --checkpoint facebook/sam3 --workdir /tmp/b    # real weights
    python benchmarks/engines.py --backend onnxruntime --tiny --workdir /tmp/b  # CPU smoke test of this script
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn, warmup: int, runs: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def random_checkpoint(folder: Path, tiny: bool) -> Path:
    """A transformers-format SAM3 folder with random weights (full size, or the tests' tiny model)."""
    if (folder / "config.json").is_file():
        return folder
    if tiny:
        from tests.tiny import save_tiny_checkpoint

        return save_tiny_checkpoint(folder)
    from transformers import Sam3Config, Sam3Model

    torch.manual_seed(0)
    Sam3Model(Sam3Config()).eval().save_pretrained(folder)
    from tests.tiny import tiny_tokenizer  # a tokenizer only for encoding class names; speed does not depend on it

    tiny_tokenizer().save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="SAM3 weights (default: random full-size weights)")
    parser.add_argument("--tiny", action="store_true", help="use the tests' tiny model (smoke test, not a benchmark)")
    parser.add_argument("--imgsz", type=int, default=1008)
    parser.add_argument("--backend", default="tensorrt", choices=["tensorrt", "onnxruntime"])
    parser.add_argument("--max-classes", type=int, default=16)
    parser.add_argument("--classes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--fps-classes", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--attn", default="eager", choices=["eager", "sdpa"])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "dart-bench")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from dart.backends.engine_backend import engine_backend
    from dart.backends.torch_backend import TorchBackend
    from dart.detector import Detector
    from dart.export.onnx_export import export_backbone, export_encdec, sample_pixels
    from dart.export.verify import cosine
    from dart.models.loading import load_sam3
    from tests.conftest import make_image

    console = Console()
    imgsz = 112 if args.tiny else args.imgsz
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    ckpt = args.checkpoint or random_checkpoint(work / ("tiny" if args.tiny else "random_sam3"), args.tiny)
    loaded = load_sam3(ckpt, imgsz=imgsz)
    onnx_dir = work / f"onnx_{imgsz}_{args.attn}"
    if not (onnx_dir / "encdec.onnx").is_file():
        console.print(f"exporting to {onnx_dir} ...")
        export_backbone(loaded, onnx_dir / "backbone.onnx", attn=args.attn, verify=False)
        export_encdec(loaded, onnx_dir / "encdec.onnx", max_classes=args.max_classes, attn=args.attn, verify=False)
    setups = {"fp32": onnx_dir}
    if args.backend == "tensorrt":
        from dart.export.tensorrt_build import build_engine

        setups = {}
        for precision in ("fp32", "fp16"):
            folder = work / f"trt_{imgsz}_{args.attn}_{precision}"
            for stage in ("backbone", "encdec"):
                if not (folder / f"{stage}.engine").is_file():
                    console.print(f"building {folder / stage}.engine ...")
                    build_engine(onnx_dir / f"{stage}.onnx", folder / f"{stage}.engine", fp16=precision == "fp16",
                                 timing_cache=work / "timing.cache", opt_classes=4)
            setups[precision] = folder
    device = "cuda" if torch.cuda.is_available() else "cpu"
    reference = TorchBackend(loaded, device=device)
    pixels = sample_pixels(imgsz, make_image(720, 1280)).to(reference.device)
    names = [f"class{i}" for i in range(max(args.classes + [args.fps_classes]))]
    text, text_mask = reference.encode_text(names)
    with torch.inference_mode():
        ref_feats = reference.backbone(pixels)
        ref_out = reference.encdec(ref_feats, text[:4].to(reference.device), text_mask[:4].to(reference.device))
    results: dict = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                     "backend": args.backend, "imgsz": imgsz, "attn": args.attn,
                     "weights": "random" if args.checkpoint is None else str(args.checkpoint), "setups": {}}
    for precision, folder in setups.items():
        backend = engine_backend(args.backend, engines=folder, device=device, text_checkpoint=loaded)
        feats = backend.backbone(pixels)
        row: dict = {"backbone_ms": timed(lambda: backend.backbone(pixels), args.warmup, args.runs)}
        for count in args.classes:
            t, m = text[:count].to(backend.device), text_mask[:count].to(backend.device)
            row[f"encdec_ms_{count}"] = timed(lambda: backend.encdec(feats, t, m), args.warmup, args.runs)
        out = backend.encdec(feats, text[:4].to(backend.device), text_mask[:4].to(backend.device))
        row["cosine_backbone"] = min(cosine(a, b) for a, b in zip(ref_feats, feats))
        row["cosine_encdec_logits"] = cosine(ref_out["logits"], out["logits"])
        row["cosine_encdec_boxes"] = cosine(ref_out["boxes"], out["boxes"])
        det = Detector(backend, names[: args.fps_classes], text_cache=None)
        frame = make_image(720, 1280)
        row["e2e_fps"] = 1000.0 / timed(lambda: det.detect(frame), args.warmup, args.runs)
        results["setups"][precision] = row

    table = Table(title=f"{args.backend} on {results['device']}, {imgsz}px, attention {args.attn}, "
                        f"{results['weights']} weights", title_justify="left")
    table.add_column("metric")
    for precision in results["setups"]:
        table.add_column(precision, justify="right")
    for key in next(iter(results["setups"].values())):
        table.add_row(key, *[f"{results['setups'][p][key]:.4f}" if key.startswith("cosine")
                             else f"{results['setups'][p][key]:.2f}" for p in results["setups"]])
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
