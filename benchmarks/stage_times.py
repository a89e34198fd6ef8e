"""dart's PyTorch path stage by stage on one device: backbone and encoder-decoder milliseconds in every precision,
eager and ``torch.compile``-d, the cosine of every precision against fp32, peak memory and the attention kernels
that actually run.

Random full-size SAM3 weights (speed does not depend on the values; ``--synthetic-config`` for another size), one
fixed 1280x720 frame at ``--imgsz``, text features from SAM3's own text encoder on random tokens. For every precision
(fp32 first, as the reference):

- backbone ms (ViT + FPN, once per image; also without masks, when only the 1x level is computed) and
  encoder-decoder ms for each class count, in chunks of ``--max-classes`` as the detector runs them (no masks),
  medians of ``--runs`` calls timed after ``--warmup``;
- the FPN levels' cosine against fp32 (the worst level), and the encoder-decoder's logits cosine, box and presence
  largest differences at 4 classes, fed fp32's features (the stage alone) and its own (the whole path);
- peak allocated GPU memory of the precision's runs;
- with ``--compile MODE`` (the precisions in ``--compile-precisions``): the same stages compiled, the time the
  first call took (the compilation) and the times after it. The class counts are padded to buckets (1, 2, 4, 8,
  16), so ``--compile-counts`` decides how many encoder-decoder shapes get compiled.
- on CUDA, the attention kernels the profiler saw in one backbone and one encoder-decoder call.

Writes ``--json`` (everything) and ``--markdown`` (the rows BENCHMARKS.md takes). Each part that fails records its
error and the others still run; ``--budget-s`` skips the compiled parts once that many seconds have passed.

    python benchmarks/stage_times.py --device cuda --json stages.json --markdown stages.md
    python benchmarks/stage_times.py --device cpu --synthetic-config tiny.json --imgsz 112 --runs 2   # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import gc
import time
import traceback
from typing import Any

import torch

from dart.export.verify import cosine

ATTENTION_WORDS = ("flash", "fmha", "attention", "attn", "efficient", "sdpa", "softmax")


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def to_cpu(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: v.float().cpu() for k, v in value.items()}
    return tuple(v.float().cpu() for v in value)


class Bench:
    def __init__(self, args: argparse.Namespace):
        from dart.backends.base import resolve_device
        from dart.bench.class_scaling import bench_image
        from dart.bench.synthetic import synthetic_sam3
        from dart.preprocess import preprocess, to_rgb

        self.args = args
        self.device = resolve_device(args.device)
        self.start = time.perf_counter()
        self.loaded = synthetic_sam3(args.synthetic_config, imgsz=args.imgsz)
        self.pixels = preprocess([to_rgb(bench_image())], args.imgsz, self.device)
        self.counts = [int(c) for c in args.counts.split(",") if c]
        self.compile_counts = [int(c) for c in args.compile_counts.split(",") if c]
        self.text = self._text(max(self.counts + self.compile_counts + [4]))
        self.reference: dict[str, Any] = {}
        self.on_rows = None  # called with the rows so far after every part

    def _text(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM3's text encoder on ``count`` random token sequences of 3-8 tokens: realistic text features."""
        from dart.models.sam3 import text_max_length
        from dart.stages import TextStage

        model = self.loaded.model
        length = text_max_length(model)
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(1, int(model.config.text_config.vocab_size), (count, length), generator=generator)
        lengths = torch.randint(3, 9, (count,), generator=generator)
        mask = torch.arange(length)[None] < lengths[:, None]
        with torch.inference_mode():
            features = TextStage(model).eval()(ids * mask, mask.long())
        return features.float(), mask

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def timed(self, fn, runs: int) -> float:
        """Median milliseconds of ``runs`` calls after ``--warmup`` untimed ones (CUDA events on a GPU, no sync
        between the calls; the wall clock on a CPU)."""
        from dart.bench.timing import stage_timer

        for _ in range(self.args.warmup):
            fn()
        timer = stage_timer(self.device)
        for _ in range(runs):
            with timer("call"):
                fn()
        return timer.summary()["call"]["median"]

    def encdec(self, backend, features, count: int) -> list[dict[str, torch.Tensor]]:
        """The encoder-decoder over ``count`` classes in chunks of ``--max-classes``, as the detector runs it."""
        text, mask = self.text
        step = self.args.max_classes
        return [backend.encdec(features, text[s:min(s + step, count)], mask[s:min(s + step, count)])
                for s in range(0, count, step)]

    def runs_for(self, count: int) -> int:
        return self.args.runs if count <= 16 else max(3, self.args.runs // 4)

    def accuracy(self, backend, features) -> dict[str, float]:
        """Against fp32: FPN cosine (worst level), then the encoder-decoder at 4 classes fed fp32's features (the
        stage alone) and this precision's own (the whole path)."""
        ref = self.reference
        fpn = to_cpu(features)
        result = {"fpn_cosine": min(cosine(a, b) for a, b in zip(fpn, ref["fpn"]))}
        ref_features = tuple(f.to(self.device) for f in ref["fpn"])
        for name, feats in (("stage", ref_features), ("path", features)):
            out = to_cpu(self.encdec(backend, feats, 4)[0])
            result[f"logits_cosine_{name}"] = cosine(out["logits"], ref["out"]["logits"])
            result[f"boxes_max_abs_{name}"] = max_abs(out["boxes"], ref["out"]["boxes"])
            result[f"presence_max_abs_{name}"] = max_abs(out["presence"], ref["out"]["presence"])
        return result

    def kernels(self, backend, features) -> dict[str, list[str]]:
        """The attention kernels CUDA ran for one backbone call and one 4-class encoder-decoder call."""
        from torch.profiler import ProfilerActivity, profile

        seen: dict[str, list[str]] = {}
        for part, fn in (("backbone", lambda: backend.backbone(self.pixels)),
                         ("encdec", lambda: self.encdec(backend, features, 4))):
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                fn()
                self.sync()
            names = {}
            for event in prof.key_averages():
                name = event.key
                if any(word in name.lower() for word in ATTENTION_WORDS):
                    names[name[:120]] = names.get(name[:120], 0.0) + float(
                        getattr(event, "device_time_total", getattr(event, "cuda_time_total", 0.0)))
            seen[part] = [f"{name} ({us / 1000:.2f} ms)" for name, us in sorted(names.items(), key=lambda x: -x[1])]
        return seen

    def eager(self, precision: str) -> dict[str, Any]:
        from dart.backends.torch_backend import TorchBackend

        row: dict[str, Any] = {"precision": precision, "mode": "eager"}
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        backend = TorchBackend(copy.deepcopy(self.loaded), device=self.device, precision=precision)
        row["ran_as"] = backend.precision
        features = backend.backbone(self.pixels)
        row["backbone_ms"] = self.timed(lambda: backend.backbone(self.pixels), self.args.runs)
        row["backbone_no_masks_ms"] = self.timed(lambda: backend.backbone(self.pixels, masks=False), self.args.runs)
        row["encdec_ms"] = {}
        for count in self.counts:
            row["encdec_ms"][str(count)] = self.timed(lambda: self.encdec(backend, features, count),
                                                      self.runs_for(count))
        if precision == "fp32":
            self.reference = {"fpn": to_cpu(features), "out": to_cpu(self.encdec(backend, features, 4)[0])}
        row.update(self.accuracy(backend, features))
        if self.device.type == "cuda":
            row["peak_memory_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
            try:
                row["attention_kernels"] = self.kernels(backend, features)
            except Exception as exc:  # the profiler is a help, not a result
                row["attention_kernels"] = {"error": f"{type(exc).__name__}: {exc}"}
        del backend, features
        return row

    def compiled(self, precision: str, mode: str) -> dict[str, Any]:
        from dart.backends.torch_backend import TorchBackend

        row: dict[str, Any] = {"precision": precision, "mode": f"compile {mode}"}
        backend = TorchBackend(copy.deepcopy(self.loaded), device=self.device, precision=precision, compile=mode)
        start = time.perf_counter()
        features = backend.backbone(self.pixels)
        self.sync()
        row["backbone_compile_s"] = round(time.perf_counter() - start, 1)
        row["backbone_ms"] = self.timed(lambda: backend.backbone(self.pixels), self.args.runs)
        row["backbone_no_masks_ms"] = self.timed(lambda: backend.backbone(self.pixels, masks=False), self.args.runs)
        row["encdec_ms"], row["encdec_compile_s"] = {}, {}
        for count in self.compile_counts:
            start = time.perf_counter()
            self.encdec(backend, features, count)
            self.sync()
            row["encdec_compile_s"][str(count)] = round(time.perf_counter() - start, 1)
            row["encdec_ms"][str(count)] = self.timed(lambda: self.encdec(backend, features, count),
                                                      self.runs_for(count))
        row.update(self.accuracy(backend, features))
        del backend, features
        return row

    def part(self, rows: list[dict[str, Any]], precision: str, mode: str, fn) -> None:
        """Run one part, keep its row (or its error), and write the report so far: a run stopped at its time limit
        keeps every part that finished."""
        print(f"== {precision} {mode}", flush=True)
        try:
            row = fn()
        except Exception as exc:  # one part failing must not lose the others' numbers
            traceback.print_exc()
            row = {"precision": precision, "mode": mode, "error": f"{type(exc).__name__}: {exc}"}
        print({k: v for k, v in row.items() if k != "attention_kernels"}, flush=True)
        rows.append(row)
        if self.on_rows is not None:
            self.on_rows(rows)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def run(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        precisions = [p for p in self.args.precisions.split(",") if p and p != "fp32"]
        for precision in ["fp32", *precisions]:
            self.part(rows, precision, "eager", lambda: self.eager(precision))
        if self.args.compile != "none":
            for precision in [p for p in self.args.compile_precisions.split(",") if p]:
                spent = time.perf_counter() - self.start
                if self.args.budget_s and spent > self.args.budget_s:
                    rows.append({"precision": precision, "mode": f"compile {self.args.compile}",
                                 "error": f"skipped: {spent:.0f} s spent of a {self.args.budget_s:.0f} s budget"})
                    continue
                self.part(rows, precision, f"compile {self.args.compile}",
                          lambda: self.compiled(precision, self.args.compile))
        return rows


def markdown(report: dict[str, Any]) -> str:
    """The rows BENCHMARKS.md takes: one per precision and mode."""
    counts = report["settings"]["counts"]
    lines = [f"{report['header']}", "",
             "| precision | mode | backbone ms | backbone ms, no masks | "
             + " | ".join(f"enc-dec ms, {c} cl." for c in counts)
             + " | FPN cosine | logits cosine (stage / path) | box max abs (stage) | peak GPU MB |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in counts) + " | --- | --- | --- | --- |"]

    def num(value: Any, digits: int = 2) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    for row in report["rows"]:
        if "error" in row:
            lines.append(f"| {row['precision']} | {row['mode']} | {row['error']} |")
            continue
        encdec = [num(row["encdec_ms"].get(str(c))) for c in counts]
        compile_note = f" (compiled in {row['backbone_compile_s']} s)" if "backbone_compile_s" in row else ""
        lines.append(
            f"| {row['precision']} | {row['mode']} | {num(row['backbone_ms'])}{compile_note} | "
            f"{num(row.get('backbone_no_masks_ms'))} | " + " | ".join(encdec)
            + f" | {num(row['fpn_cosine'], 6)} | {num(row['logits_cosine_stage'], 6)} / "
              f"{num(row['logits_cosine_path'], 6)} | {num(row['boxes_max_abs_stage'], 4)} | "
              f"{num(row.get('peak_memory_mb'), 0)} |")
    kernels = [row for row in report["rows"] if isinstance(row.get("attention_kernels"), dict)]
    for row in kernels:
        for part, names in row["attention_kernels"].items():
            lines.append(f"\n{row['precision']} {part} attention kernels: " + ("; ".join(names) if names else "none seen"))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--synthetic-config", help="a Sam3Config JSON instead of the full size (smoke runs)")
    parser.add_argument("--imgsz", type=int, default=1008)
    parser.add_argument("--precisions", default="fp16,bf16", help="besides fp32, the reference")
    parser.add_argument("--counts", default="1,2,4,8,16,80")
    parser.add_argument("--max-classes", type=int, default=16)
    parser.add_argument("--compile", default="reduce-overhead", help="torch.compile mode, or none")
    parser.add_argument("--compile-precisions", default="bf16,fp16")
    parser.add_argument("--compile-counts", default="4,80")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--budget-s", type=float, default=0.0, help="skip compiled parts after this many seconds")
    parser.add_argument("--threads", type=int, help="CPU threads (CPU runs)")
    parser.add_argument("--json", required=True)
    parser.add_argument("--markdown")
    args = parser.parse_args()

    from pathlib import Path

    from dart.backends.base import set_threads
    from dart.bench.environment import environment, header
    from dart.io import write_json, write_text

    set_threads(args.threads)
    bench = Bench(args)
    env = environment(bench.device)
    settings = {k: v for k, v in vars(args).items() if k not in ("json", "markdown")}
    settings["counts"] = bench.counts
    report = {"benchmark": "stage-times", "environment": env, "header": header(env), "settings": settings,
              "weights": "random full-size SAM3 (synthetic)" if not args.synthetic_config else args.synthetic_config,
              "rows": []}

    def save(rows: list[dict[str, Any]]) -> None:
        report["rows"] = rows
        report["seconds"] = round(time.perf_counter() - bench.start, 1)
        write_json(Path(args.json), report)
        if args.markdown:
            write_text(Path(args.markdown), markdown(report))

    bench.on_rows = save
    save(bench.run())
    print(markdown(report))


if __name__ == "__main__":
    main()
