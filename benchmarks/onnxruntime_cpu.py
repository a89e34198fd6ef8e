"""Which onnxruntime CPU session settings make dart's exported stages fastest (issue 13's tuning, with numbers).

Runs the backbone and the encoder-decoder (4 classes) of one engines folder under several ``SessionOptions``
variants, one after another in this process, and prints the session build time and the median run time of each,
with the ratio to the variant dart ships. Inputs are random (speed does not depend on their values).

    python benchmarks/onnxruntime_cpu.py /tmp/engines --threads 2 --runs 3 --json /tmp/ort_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np


def variants(ort, threads: int) -> dict[str, dict]:
    level = ort.GraphOptimizationLevel
    return {
        "dart (all, spinning)": {"level": level.ORT_ENABLE_ALL},
        "extended": {"level": level.ORT_ENABLE_EXTENDED},
        "all, no spinning": {"level": level.ORT_ENABLE_ALL, "config": {"session.intra_op.allow_spinning": "0"}},
        "all, no memory arena": {"level": level.ORT_ENABLE_ALL, "arena": False},
        # last: at SAM3's full size this one needed more than 24 GB and was killed on the development VM
        "basic": {"level": level.ORT_ENABLE_BASIC},
    }


def session(ort, path: Path, threads: int, spec: dict):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.graph_optimization_level = spec["level"]
    options.enable_cpu_mem_arena = spec.get("arena", True)
    for key, value in spec.get("config", {}).items():
        options.add_session_config_entry(key, value)
    start = time.perf_counter()
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return sess, time.perf_counter() - start


def median_run(sess, feed: dict, warmup: int, runs: int) -> float:
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("engines", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    results = []
    for name, spec in variants(ort, args.threads).items():
        if args.only and name not in args.only:
            continue
        row = {"variant": name}
        backbone, row["backbone_build_s"] = session(ort, args.engines / "backbone.onnx", args.threads, spec)
        size = backbone.get_inputs()[0].shape[-1]
        pixels = rng.standard_normal((1, 3, size, size), dtype=np.float32)
        row["backbone_s"] = median_run(backbone, {"pixel_values": pixels}, args.warmup, args.runs)
        fpn = backbone.run(["fpn_1x"], {"pixel_values": pixels})[0]
        del backbone
        encdec, row["encdec_build_s"] = session(ort, args.engines / "encdec.onnx", args.threads, spec)
        n = args.classes
        feed = {"fpn_1x": fpn, "text": rng.standard_normal((n, 32, 256), dtype=np.float32),
                "text_mask": np.ones((n, 32), dtype=np.int32)}
        row["encdec_s"] = median_run(encdec, feed, args.warmup, args.runs)
        del encdec
        results.append(row)
        print(json.dumps(row), flush=True)
    base = results[0]
    print(f"\nonnxruntime {ort.__version__}, {args.threads} threads, {args.classes} classes, medians of {args.runs}")
    print(f"{'variant':<24}{'build s':>9}{'backbone s':>12}{'x':>7}{'encdec s':>10}{'x':>7}")
    for r in results:
        print(f"{r['variant']:<24}{r['backbone_build_s'] + r['encdec_build_s']:>9.1f}{r['backbone_s']:>12.2f}"
              f"{base['backbone_s'] / r['backbone_s']:>7.2f}{r['encdec_s']:>10.2f}{base['encdec_s'] / r['encdec_s']:>7.2f}")
    if args.json:
        args.json.write_text(json.dumps({"onnxruntime": ort.__version__, "threads": args.threads,
                                         "classes": args.classes, "runs": args.runs, "results": results}, indent=1))


if __name__ == "__main__":
    main()
