"""Peak memory and time of one encoder-decoder call against the classes it takes, in onnxruntime and OpenVINO.

Each (runtime, class count) runs in a fresh process, so its peak RSS is its own: the file is loaded (onnxruntime
session with dart's CPU settings, or an OpenVINO model compiled for the CPU), then called twice with random FPN
features and text; the second call is the time reported. The file should be a dynamic-class export at least as wide
as the largest count (``dart export encdec --max-classes 16``).

    python benchmarks/engine_memory.py engines/encdec.onnx --classes 1 4 8 16 --threads 2 --json /tmp/mem.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one_call(runtime: str, path: str, classes: int, threads: int) -> dict:
    """Load ``path`` in ``runtime``, call it twice at ``classes`` classes; peak RSS and the second call's time."""
    import numpy as np

    rng = np.random.default_rng(0)
    feeds = {"fpn_1x": None, "text": rng.standard_normal((classes, 32, 256), dtype=np.float32),
             "text_mask": np.ones((classes, 32), np.int32)}

    def blank(name: str, dims: list, real: bool):
        if name == "fpn_1x":
            return rng.standard_normal(dims, dtype=np.float32)
        return np.zeros(dims, np.float32 if real else np.int32)

    if runtime == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.log_severity_level = threads, 3
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        for i in session.get_inputs():
            if feeds.get(i.name) is None:
                dims = [d if isinstance(d, int) else classes for d in i.shape]
                feeds[i.name] = blank(i.name, dims, "float" in i.type)
        names = [i.name for i in session.get_inputs()]
        call = lambda: session.run(None, {n: feeds[n] for n in names})  # noqa: E731
    else:
        import openvino as ov

        compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads})
        for i in compiled.inputs:
            name = i.get_any_name()
            if feeds.get(name) is None:
                dims = [classes if d.is_dynamic else d.get_length() for d in i.get_partial_shape()]
                feeds[name] = blank(name, dims, i.get_element_type().is_real())
        request = compiled.create_infer_request()
        names = [i.get_any_name() for i in compiled.inputs]
        call = lambda: request.infer({n: feeds[n] for n in names})  # noqa: E731
    call()
    start = time.perf_counter()
    call()
    seconds = time.perf_counter() - start
    return {"runtime": runtime, "classes": classes, "seconds": seconds,
            "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("encdec", help="a dynamic-class encdec.onnx from `dart export encdec`")
    parser.add_argument("--classes", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--runtimes", nargs="+", default=["onnxruntime", "openvino"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--one", nargs=2, metavar=("RUNTIME", "CLASSES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_call(args.one[0], args.encdec, int(args.one[1]), args.threads)))
        return
    rows = []
    print(f"{'runtime':<12} {'classes':>7} {'peak GB':>8} {'s / call':>9}")
    for runtime in args.runtimes:
        for classes in args.classes:
            done = subprocess.run([sys.executable, __file__, args.encdec, "--threads", str(args.threads),
                                   "--one", runtime, str(classes)], capture_output=True, text=True)
            if done.returncode:
                print(f"{runtime:<12} {classes:>7} failed (exit {done.returncode}; killed for memory if -9)")
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{runtime:<12} {classes:>7} {row['peak_gb']:>8.2f} {row['seconds']:>9.2f}", flush=True)
    if args.json:
        from dart.io import write_json

        write_json(args.json, {"threads": args.threads, "rows": rows})


if __name__ == "__main__":
    main()
