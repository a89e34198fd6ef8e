"""OpenVINO's encoder-decoder compiled for the dynamic class dimension of the exported file against the same file
reshaped to fixed shapes (what :class:`dart.backends.openvino_backend.OpenVinoBackend` compiles per class count),
alternating in one process: compile seconds, the largest output difference and the median seconds per call.

Random FPN features and text (speed does not depend on the values), one image, the text mask with 5 valid tokens,
no exemplar tokens.

    python benchmarks/openvino_static_shapes.py engines/encdec.onnx --classes 1 4 16 --precision bf16 --runs 4
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("encdec", help="an encdec.onnx written by `dart export encdec`")
    parser.add_argument("--classes", type=int, nargs="+", default=[4])
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=4, help="timed pairs per class count")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    import numpy as np
    import openvino as ov

    from dart.backends.openvino_backend import HINTS, fixed_shapes
    from dart.bench.timing import alternating
    from dart.io import write_json

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": HINTS[args.precision], "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": str(args.threads)}
    start = time.perf_counter()
    dynamic = core.compile_model(args.encdec, "CPU", config).create_infer_request()
    results: dict = {"precision": args.precision, "threads": args.threads, "runs": args.runs,
                     "compile_dynamic_s": time.perf_counter() - start}
    source = core.read_model(args.encdec)
    shapes = {port.get_any_name(): port.get_partial_shape() for port in source.inputs}
    rng = np.random.default_rng(0)
    for classes in args.classes:
        fixed = {name: [d.get_length() if d.is_static else classes for d in shape] for name, shape in shapes.items()}
        start = time.perf_counter()
        static = core.compile_model(fixed_shapes(source, fixed), "CPU", config).create_infer_request()
        compile_s = time.perf_counter() - start
        feed = {}
        for name, shape in fixed.items():
            if name.endswith("mask"):
                mask = np.zeros(shape, np.int32)
                mask[:, :5] = 1 if name == "text_mask" else 0
                feed[name] = mask
            elif name.startswith("prompt"):
                feed[name] = np.zeros(shape, np.float32)
            else:
                feed[name] = rng.standard_normal(shape, dtype=np.float32)
        want, got = dynamic.infer(feed).to_tuple(), static.infer(feed).to_tuple()
        difference = max(float(np.abs(a - b).max()) for a, b in zip(want, got))
        times = alternating({"dynamic": lambda: dynamic.infer(feed), "static": lambda: static.infer(feed)}, args.runs)
        row = {"compile_static_s": compile_s, "largest_difference": difference,
               **{f"{k}_s": statistics.median(v) for k, v in times.items()}, "pairs": times}
        row["speedup"] = row["dynamic_s"] / row["static_s"]
        results[f"classes_{classes}"] = row
        print(f"{classes} classes: dynamic {row['dynamic_s']:.3f} s, static {row['static_s']:.3f} s "
              f"({row['speedup']:.2f}x; compiled in {compile_s:.1f} s; largest difference {difference:.3g})", flush=True)
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
