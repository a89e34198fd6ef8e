"""Find and fix FP16 precision loss: per-block sensitivity, the smallest FP32 block set, and run comparisons.

``bisect`` measures, for every ViT block, the cosine between the FP32 backbone output and the output with only
that block in reduced precision; ranks the blocks by the damage they do; then binary-searches the smallest number
of the most sensitive blocks to keep in FP32 (everything else reduced) that reaches a target cosine. The result is
a :class:`~dart.export.mixed_precision.PrecisionSpec` that ``dart build --precision-spec`` consumes.

Runners (what "reduced precision" means, reported with every result):
- ``torch``: SAM3's PyTorch modules, FP16 on a CUDA GPU, BF16 on the CPU (BF16 keeps fewer mantissa bits than
  FP16, so CPU numbers are a pessimistic stand-in for FP16);
- ``onnxruntime``: the exported ``backbone.onnx`` converted to mixed FP16 exactly as ``dart build`` converts it
  for TensorRT, run by onnxruntime (CUDA provider when present, else CPU).

``compare_runs`` prints cosine / max-abs between any two backends (torch fp32/bf16/fp16, onnxruntime, tensorrt).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dart.errors import InputError
from dart.export.metadata import FPN_NAMES, StageMetadata
from dart.export.mixed_precision import PrecisionSpec, block_positions
from dart.export.verify import Agreement, compare_outputs, cosine

if TYPE_CHECKING:  # pragma: no cover
    from dart.models.loading import LoadedSam3

Features = tuple[torch.Tensor, ...]


def output_cosine(reference: Features, candidate: Features) -> float:
    """The backbone's agreement: the lowest cosine over the FPN levels."""
    return min(cosine(r, c) for r, c in zip(reference, candidate))


# ---------------------------------------------------------------------------------------------- runners
class TorchRunner:
    """The PyTorch backbone with a chosen set of blocks in FP32 and the rest (plus patch embedding and FPN) in
    reduced precision."""

    def __init__(self, loaded: LoadedSam3, pixel_values: torch.Tensor, device: str | torch.device = "auto",
                 dtype: torch.dtype | None = None):
        from dart.backends.base import resolve_device
        from dart.stages import BackboneStage

        self.device = resolve_device(device)
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.bfloat16)
        if self.dtype == torch.float16 and self.device.type == "cpu":
            raise InputError("fp16 needs a CUDA device; on the CPU the reduced precision is bf16.")
        kind = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(self.dtype, str(self.dtype))
        self.name = f"torch {kind} ({self.device.type})"
        model = loaded.model
        spec = getattr(model, "dart_prune_spec", None)
        skipped = set(spec.skip_blocks) if spec else set()
        total = len(model.vision_encoder.backbone.layers) + len(skipped)
        self.blocks = [i for i in range(total) if i not in skipped]  # full-backbone index of each layer
        self.full = BackboneStage(model).to(self.device, torch.float32).eval()
        self.reduced = copy.deepcopy(self.full).to(self.dtype).eval()
        self.pixels = pixel_values.to(self.device, torch.float32)

    @torch.inference_mode()
    def reference(self) -> Features:
        return tuple(t.float().cpu() for t in self.full(self.pixels))

    @torch.inference_mode()
    def run(self, fp32_blocks: set[int]) -> Features:
        low, high = self.reduced, self.full
        pixels = self.pixels.to(self.dtype)
        batch, _, height, width = pixels.shape
        grid_h, grid_w = height // low.patch_size, width // low.patch_size
        hidden = low.vit.embeddings(pixels)
        hidden = low.vit.layer_norm(hidden.view(batch, grid_h, grid_w, -1))
        for position, block in enumerate(self.blocks):
            if block in fp32_blocks:
                hidden = high.vit.layers[position](hidden.float())
            else:
                hidden = low.vit.layers[position](hidden.to(self.dtype))
        spatial = hidden.to(self.dtype).permute(0, 3, 1, 2)
        return tuple(level(spatial).float().cpu() for level in low.fpn)


class OnnxRuntimeRunner:
    """``backbone.onnx`` as FP32 (reference) and as mixed FP16 with chosen blocks in FP32, in onnxruntime."""

    def __init__(self, onnx_path: str | Path, pixel_values: torch.Tensor, providers: Sequence[str] | None = None):
        import onnx

        from dart.backends.onnxruntime_backend import resolve_providers
        from dart.export.metadata import check_stage, read_onnx_metadata

        self.path = Path(onnx_path)
        self.meta: StageMetadata = read_onnx_metadata(self.path)
        check_stage(self.meta, "backbone", self.path)
        self.model = onnx.load(str(self.path))
        self.providers = list(providers or resolve_providers("auto"))
        where = "cuda" if self.providers[0].startswith("CUDA") else "cpu"
        self.name = f"onnxruntime fp16 graph ({where})"
        self.blocks = sorted(block_positions(self.meta)) if self.meta.num_blocks else []
        self.pixels = pixel_values.float().cpu().numpy()
        self._nodes = [n.name for n in self.model.graph.node]

    def _session(self, model: Any):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        return ort.InferenceSession(model.SerializeToString(), options, providers=self.providers)

    def _outputs(self, model: Any) -> Features:
        outs = self._session(model).run(list(FPN_NAMES), {"pixel_values": self.pixels})
        return tuple(torch.from_numpy(o).float() for o in outs)

    def reference(self) -> Features:
        return self._outputs(self.model)

    def run(self, fp32_blocks: set[int]) -> Features:
        from dart.export.mixed_precision import to_mixed_fp16

        spec = PrecisionSpec(tuple(sorted(fp32_blocks)))
        nodes = spec.node_names(self._nodes, self.meta) if fp32_blocks else []
        return self._outputs(to_mixed_fp16(copy.deepcopy(self.model), nodes))


# ----------------------------------------------------------------------------------------------- bisect
@dataclass
class BisectResult:
    runner: str
    target: float
    all_reduced: float  # cosine with every block in reduced precision
    per_block: dict[int, float]  # block -> cosine with only that block reduced
    ranking: list[int]  # most damaging first
    fp32_blocks: tuple[int, ...]
    final: float  # cosine with fp32_blocks in FP32
    reached: bool
    trials: list[tuple[int, float]] = field(default_factory=list)  # (blocks kept FP32, cosine) in search order

    @property
    def spec(self) -> PrecisionSpec:
        return PrecisionSpec(tuple(sorted(self.fp32_blocks)))

    def save(self, path: str | Path) -> None:
        self.spec.save(path, stage="backbone", target_cosine=self.target, measured={
            "runner": self.runner, "all_reduced_cosine": self.all_reduced, "final_cosine": self.final,
            "reached": self.reached, "per_block_cosine": {str(b): c for b, c in self.per_block.items()},
        })


def bisect(runner: Any, target: float = 0.999, progress: Callable[[str], None] | None = None) -> BisectResult:
    """Per-block sensitivity, then the smallest prefix of the ranking kept in FP32 that reaches ``target``."""
    if not 0.0 < target <= 1.0:
        raise InputError(f"--target-cosine must be in (0, 1], got {target}.")
    say = progress or (lambda _: None)
    blocks = list(runner.blocks)
    if not blocks:
        raise InputError("the backbone has no ViT blocks to keep in FP32 (is it a student backbone?).")
    reference = runner.reference()
    every = set(blocks)
    say("all blocks reduced")
    all_reduced = output_cosine(reference, runner.run(set()))
    per_block: dict[int, float] = {}
    for i, block in enumerate(blocks):
        say(f"block {block} alone reduced ({i + 1}/{len(blocks)})")
        per_block[block] = output_cosine(reference, runner.run(every - {block}))
    ranking = sorted(blocks, key=lambda b: (per_block[b], b))
    trials: list[tuple[int, float]] = [(0, all_reduced)]
    if all_reduced >= target:
        return BisectResult(runner.name, target, all_reduced, per_block, ranking, (), all_reduced, True, trials)
    scores: dict[int, float] = {0: all_reduced}

    def score(k: int) -> float:
        if k not in scores:
            say(f"{k} most sensitive blocks in FP32")
            scores[k] = output_cosine(reference, runner.run(set(ranking[:k])))
            trials.append((k, scores[k]))
        return scores[k]

    low, high = 0, len(ranking)  # score(low) < target; find the smallest k with score(k) >= target
    if score(high) < target:
        return BisectResult(runner.name, target, all_reduced, per_block, ranking, tuple(ranking), scores[high], False,
                            trials)
    while high - low > 1:
        mid = (low + high) // 2
        if score(mid) >= target:
            high = mid
        else:
            low = mid
    return BisectResult(runner.name, target, all_reduced, per_block, ranking, tuple(ranking[:high]), scores[high],
                        True, trials)


def bisect_table(result: BisectResult):
    from rich.table import Table

    table = Table(title=f"per-block sensitivity ({result.runner}); cosine of the backbone output vs FP32",
                  title_justify="left")
    table.add_column("block", justify="right")
    table.add_column("cosine, only this block reduced", justify="right")
    table.add_column("rank", justify="right")
    table.add_column("kept FP32")
    rank = {b: i + 1 for i, b in enumerate(result.ranking)}
    for block, value in result.per_block.items():
        table.add_row(str(block), f"{value:.6f}", str(rank[block]), "yes" if block in result.fp32_blocks else "")
    return table


# ---------------------------------------------------------------------------------------------- compare
@dataclass
class RunSpec:
    kind: str  # torch | onnxruntime | openvino | tensorrt
    precision: str = "fp32"  # torch and openvino
    path: Path | None = None  # engines folder (onnxruntime / tensorrt)

    @classmethod
    def parse(cls, text: str) -> RunSpec:
        """``torch:fp32`` ``torch:bf16`` ``torch:fp16`` ``onnxruntime:DIR`` ``openvino:DIR`` ``openvino-bf16:DIR``
        ``tensorrt:DIR``."""
        kind, _, rest = text.partition(":")
        kind = kind.strip().lower()
        if kind == "torch":
            precision = rest or "fp32"
            if precision not in ("fp32", "fp16", "bf16"):
                raise InputError(f"run '{text}': torch precision must be fp32, fp16 or bf16.")
            return cls("torch", precision)
        engine_kinds = {"onnxruntime": "onnxruntime", "ort": "onnxruntime", "tensorrt": "tensorrt", "trt": "tensorrt",
                        "openvino": "openvino", "openvino-bf16": "openvino"}
        if kind in engine_kinds:
            if not rest:
                raise InputError(f"run '{text}' needs a folder with the stage files, e.g. {kind}:engines/.")
            return cls(engine_kinds[kind], "bf16" if kind == "openvino-bf16" else "fp32", path=Path(rest))
        raise InputError(f"unknown run '{text}': use torch:fp32, torch:bf16, torch:fp16, onnxruntime:DIR, "
                         "openvino:DIR, openvino-bf16:DIR or tensorrt:DIR.")

    def __str__(self) -> str:
        if self.kind == "torch":
            return f"torch:{self.precision}"
        kind = "openvino-bf16" if self.kind == "openvino" and self.precision == "bf16" else self.kind
        return f"{kind}:{self.path}"


def make_backends(runs: Sequence[RunSpec], loaded: LoadedSam3 | None, device: str = "auto") -> list[Any]:
    """The backends of ``runs``, in order. A torch backend prepares its modules in place (device, narrowed
    weights), so every torch run after the first gets its own copy of the weights, taken before any backend is
    built: a copy of weights already narrowed to bf16 would give an fp32 run bf16 values."""
    from dart.backends.engine_backend import engine_backend

    torch_runs = [i for i, run in enumerate(runs) if run.kind == "torch"]
    if torch_runs and loaded is None:
        raise InputError(f"run '{runs[torch_runs[0]]}' needs --checkpoint.")
    sources = {i: loaded if n == 0 else copy.deepcopy(loaded) for n, i in enumerate(torch_runs)}
    backends = []
    for i, run in enumerate(runs):
        if run.kind == "torch":
            from dart.backends.torch_backend import TorchBackend

            run_device = "cpu" if run.precision == "bf16" and device == "auto" else device
            backends.append(TorchBackend(sources[i], device=run_device, precision=run.precision))
        else:
            extra = {"precision": run.precision} if run.kind == "openvino" else {}
            backends.append(engine_backend(run.kind, engines=run.path, device=device, text_checkpoint=loaded, **extra))
    return backends


def run_outputs(backend: Any, pixels: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
                ) -> dict[str, torch.Tensor]:
    """Backbone FPN levels and encoder-decoder outputs of one backend, as float32 CPU tensors."""
    with torch.inference_mode():
        feats = backend.backbone(pixels.to(backend.device, backend.dtype))
        out = dict(zip(FPN_NAMES, (f.float().cpu() for f in feats)))
        step = backend.max_classes or text.shape[0]
        parts = [backend.encdec(feats, text[s:s + step], text_mask[s:s + step]) for s in range(0, text.shape[0], step)]
        for key in ("logits", "boxes", "presence"):
            out[key] = torch.cat([p[key].float().cpu() for p in parts], 1)
    return out


def compare_runs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[Agreement]:
    return compare_outputs(a, b, [k for k in a if k in b])


@dataclass(frozen=True)
class DetectionAgreement:
    """How far two runs' final detections agree on one image: each run's detections after the detector's own
    thresholds and NMS, paired class by class (a minimum-cost assignment on IoU), a pair counting as matched at
    ``iou`` or more."""

    conf: float
    iou: float
    reference: int  # detections of the first run
    other: int  # detections of the second run
    matched: int
    mean_iou: float  # over the matched pairs (1.0 when there are none)
    max_score_diff: float  # over the matched pairs

    @property
    def agreement(self) -> float:
        """Matched pairs over the larger of the two counts: 1.0 when both runs detect the same objects."""
        larger = max(self.reference, self.other)
        return 1.0 if larger == 0 else self.matched / larger

    def sentence(self) -> str:
        return (f"detections at conf {self.conf:g}: {self.reference} and {self.other}, {self.matched} matched (same "
                f"class, IoU >= {self.iou:g}): agreement {100 * self.agreement:.1f} %, mean IoU {self.mean_iou:.4f}, "
                f"largest score difference {self.max_score_diff:.4f}")


def detection_agreement(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], *, conf: float = 0.3,
                        nms: float | None = 0.7, iou: float = 0.5) -> DetectionAgreement:
    """Final detections of the first image of two :func:`run_outputs` results, compared (:class:`DetectionAgreement`)."""
    from scipy.optimize import linear_sum_assignment
    from torchvision.ops import box_iou

    from dart.postprocess import PostprocessConfig, select

    cfg = PostprocessConfig(conf=conf, nms_iou=nms)
    picked = [select(run["logits"][0], run["boxes"][0], run["presence"][0], cfg) for run in (a, b)]
    matched, ious, score_diffs = 0, [], []
    for c in sorted(set(picked[0].class_ids.tolist()) | set(picked[1].class_ids.tolist())):
        mine, theirs = (sel.class_ids == c for sel in picked)
        if not mine.any() or not theirs.any():
            continue
        overlap = box_iou(picked[0].boxes[mine], picked[1].boxes[theirs]).numpy()
        rows, cols = linear_sum_assignment(-overlap)
        for r, k in zip(rows, cols):
            if overlap[r, k] >= iou:
                matched += 1
                ious.append(float(overlap[r, k]))
                score_diffs.append(abs(float(picked[0].scores[mine][r] - picked[1].scores[theirs][k])))
    return DetectionAgreement(conf=conf, iou=iou, reference=len(picked[0].scores), other=len(picked[1].scores),
                              matched=matched, mean_iou=sum(ious) / len(ious) if ious else 1.0,
                              max_score_diff=max(score_diffs, default=0.0))
