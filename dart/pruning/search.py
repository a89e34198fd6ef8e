"""Importance search: which ViT blocks (or attention / MLP branches) can go with the least damage.

Phase 1 removes each unit alone and measures how far the three FPN levels drift from the full backbone on
calibration images: a reconstruction loss (MSE per level, combined with the distillation level weights
0.15 / 0.20 / 0.65 from high to low resolution) and the cosine similarity per level. Phase 2 removes units
greedily, one per step: among the ``candidates`` least important remaining units (phase-1 order) it removes the
one whose removal, together with everything already removed, gives the lowest cumulative loss, and reports the
cumulative loss, cosine and the estimated speed-up of the backbone from analytic block FLOPs (global-attention
blocks cost several times a windowed one at 1008 px, so they are flagged).

The result turns into a :class:`~dart.pruning.spec.PruneSpec` for any number of removed units and is saved as a
YAML/JSON file that :meth:`PruneSpec.load` (and so ``--prune-spec`` and recipes) reads directly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dart.allocator import keep_freed_memory
from dart.errors import InputError
from dart.pruning.spec import PruneSpec, temporarily_pruned

LEVEL_WEIGHTS = (0.15, 0.20, 0.65)
LEVEL_NAMES = ("4x", "2x", "1x")
GRANULARITIES = ("block", "sub-block")


# --------------------------------------------------------------------------------------------------- units
@dataclass(frozen=True, order=True)
class Unit:
    """A prunable unit: a whole block (``branch=None``) or its ``attn`` / ``mlp`` branch."""

    block: int
    branch: str | None = None

    def __str__(self) -> str:
        return str(self.block) if self.branch is None else f"{self.block}:{self.branch}"

    @classmethod
    def parse(cls, text: str) -> Unit:
        block, _, branch = str(text).partition(":")
        return cls(int(block), branch or None)


def all_units(num_blocks: int, granularity: str) -> list[Unit]:
    if granularity not in GRANULARITIES:
        raise InputError(f"unknown granularity '{granularity}': use block or sub-block.")
    if granularity == "block":
        return [Unit(i) for i in range(num_blocks)]
    return [Unit(i, br) for i in range(num_blocks) for br in ("attn", "mlp")]


def units_to_spec(units: Sequence[Unit]) -> PruneSpec:
    """Removed units -> spec; a block whose attention and MLP are both removed is skipped as a whole."""
    skip = {u.block for u in units if u.branch is None}
    branches: dict[int, set[str]] = {}
    for u in units:
        if u.branch is not None:
            branches.setdefault(u.block, set()).add(u.branch)
    skip |= {b for b, brs in branches.items() if brs == {"attn", "mlp"}}
    masks = [(b, br) for b, brs in branches.items() if b not in skip for br in brs]
    return PruneSpec.parse(sorted(skip), masks)


# --------------------------------------------------------------------------------------------------- costs
def block_flops(backbone_config: Any, imgsz: int, fpn_channels: int = 256) -> tuple[float, list[tuple[float, float]]]:
    """Analytic forward FLOPs of the backbone at ``imgsz``: ``(rest, [(attn, mlp) per block])``.

    ``rest`` is the patch embedding plus the three FPN levels (what pruning never removes). Windowed blocks
    attend within padded ``window x window`` tiles, global blocks over the whole patch grid.
    """
    d = int(backbone_config.hidden_size)
    inter = int(backbone_config.intermediate_size)
    patch = int(backbone_config.patch_size)
    window = int(backbone_config.window_size)
    global_blocks = set(backbone_config.global_attn_indexes)
    g = imgsz // patch
    costs = []
    for i in range(int(backbone_config.num_hidden_layers)):
        if i in global_blocks or window == 0:
            tokens, context = g * g, g * g
        else:
            padded = math.ceil(g / window) * window
            tokens, context = padded * padded, window * window
        attn = 2 * tokens * 4 * d * d + 4 * tokens * context * d
        mlp = 4 * tokens * d * inter
        costs.append((float(attn), float(mlp)))
    return float(_rest_flops(d, patch, g, fpn_channels)), costs


def _rest_flops(d: int, patch: int, g: int, fpn: int) -> float:
    embed = 2 * g * g * 3 * patch * patch * d
    level4 = 8 * g * g * d * (d // 2) + 8 * (2 * g) ** 2 * (d // 2) * (d // 4) + _proj(d // 4, fpn, 4 * g)
    level2 = 8 * g * g * d * (d // 2) + _proj(d // 2, fpn, 2 * g)
    level1 = _proj(d, fpn, g)
    return embed + level4 + level2 + level1


def _proj(cin: int, fpn: int, size: int) -> float:
    return 2 * size * size * (cin * fpn + 9 * fpn * fpn)


def estimated_speedup(rest: float, costs: list[tuple[float, float]], spec: PruneSpec) -> float:
    """Full backbone FLOPs / pruned backbone FLOPs."""
    total = rest + sum(a + m for a, m in costs)
    removed = sum(costs[b][0] + costs[b][1] for b in spec.skip_blocks)
    removed += sum(costs[b][0 if br == "attn" else 1] for b, br in spec.mask_blocks)
    return total / max(total - removed, 1.0)


# ------------------------------------------------------------------------------------------------- metrics
@dataclass
class FeatureDrift:
    """How far pruned FPN features are from the full backbone's, over the calibration images."""

    loss: float
    mse: tuple[float, float, float]
    cosine: tuple[float, float, float]

    @property
    def mean_cosine(self) -> float:
        return sum(self.cosine) / len(self.cosine)


def feature_drift(outputs: Sequence[Sequence[torch.Tensor]], reference: Sequence[Sequence[torch.Tensor]],
                  weights: Sequence[float] = LEVEL_WEIGHTS) -> FeatureDrift:
    """Per-level MSE and cosine (per image, flattened features, averaged) over batches of FPN outputs."""
    levels = len(weights)
    sq = [0.0] * levels
    count = [0] * levels
    cos = [0.0] * levels
    images = 0
    for out, ref in zip(outputs, reference):
        images += ref[0].shape[0]
        for lv in range(levels):
            a, b = out[lv].float(), ref[lv].float()
            sq[lv] += float((a - b).pow(2).sum())
            count[lv] += b.numel()
            cos[lv] += float(nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1).sum())
    mse = tuple(s / max(c, 1) for s, c in zip(sq, count))
    cosine = tuple(min(c / max(images, 1), 1.0) for c in cos)
    return FeatureDrift(sum(w * m for w, m in zip(weights, mse)), mse, cosine)  # type: ignore[arg-type]


class FeatureScorer:
    """Scores candidate specs on one unpruned SAM3 model: FPN drift vs the full backbone on fixed images."""

    def __init__(self, model: nn.Module, pixels: torch.Tensor, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, batch: int = 4):
        from dart.stages import BackboneStage

        self.model = model
        self.device = torch.device(device)
        if self.device.type == "cpu":
            keep_freed_memory()  # one backbone run per candidate: its activations reused, as in TorchBackend
        self.dtype = dtype
        self.stage = BackboneStage(model).to(self.device, dtype).eval()
        self.batches = [pixels[i:i + batch] for i in range(0, len(pixels), max(1, batch))]
        self.reference = self._run()

    @torch.inference_mode()
    def _run(self) -> list[tuple[torch.Tensor, ...]]:
        return [tuple(self.stage(b.to(self.device, self.dtype))) for b in self.batches]

    def score(self, spec: PruneSpec) -> FeatureDrift:
        with temporarily_pruned(self.model, spec):
            outputs = self._run()
        return feature_drift(outputs, self.reference)


# -------------------------------------------------------------------------------------------------- search
@dataclass
class UnitImportance:
    unit: str
    global_attn: bool
    loss: float
    cosine: list[float]
    speedup: float


@dataclass
class SearchStep:
    step: int
    unit: str
    global_attn: bool
    loss: float
    cosine: list[float]
    speedup: float
    spec: dict[str, list]


@dataclass
class SearchResult:
    """Phase 1 (``importance``, least important first) and phase 2 (``steps``, cumulative)."""

    granularity: str
    num_blocks: int
    global_blocks: list[int]
    imgsz: int
    num_images: int
    importance: list[UnitImportance] = field(default_factory=list)
    steps: list[SearchStep] = field(default_factory=list)
    checkpoint: str | None = None

    def spec_at(self, num_prune: int | None = None) -> PruneSpec:
        """The spec after ``num_prune`` greedy steps (all steps when ``None``)."""
        if not self.steps:
            return PruneSpec()
        n = len(self.steps) if num_prune is None else num_prune
        if not 1 <= n <= len(self.steps):
            raise InputError(f"the search has {len(self.steps)} steps; pick a number between 1 and {len(self.steps)}.")
        return PruneSpec.from_dict(self.steps[n - 1].spec, self.num_blocks)

    def to_dict(self, num_prune: int | None = None) -> dict[str, Any]:
        return {"prune": self.spec_at(num_prune).to_dict(), "search": asdict(self)}

    def save(self, path: str | Path, num_prune: int | None = None) -> Path:
        """Write ``{prune: {skip_blocks, mask_blocks}, search: {...}}`` as YAML (``.yaml``/``.yml``) or JSON.

        The ``prune`` section is the spec after ``num_prune`` steps; ``PruneSpec.load`` reads it directly.
        """
        import json

        import yaml

        from dart.io import write_text

        path = Path(path)
        data = self.to_dict(num_prune)
        if path.suffix.lower() in {".yaml", ".yml"}:
            text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120)
        elif path.suffix.lower() == ".json":
            text = json.dumps(data, indent=2) + "\n"
        else:
            raise InputError(f"spec file '{path}' must end in .yaml, .yml or .json.")
        write_text(path, text)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SearchResult:
        from dart.io import read_yaml

        data = read_yaml(path, "search file")
        try:
            search = dict(data["search"])
            search["importance"] = [UnitImportance(**u) for u in search.get("importance", [])]
            search["steps"] = [SearchStep(**s) for s in search.get("steps", [])]
            return cls(**search)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"'{path}' is not a dart prune search file (no valid 'search' section).") from exc


ProgressFn = Callable[[str, int, int], None]


def check_num_prune(num_prune: int, num_blocks: int, granularity: str = "block") -> None:
    """At least one unit must stay: a whole block (``block``) or both branches of one (``sub-block``)."""
    units = len(all_units(num_blocks, granularity))
    most = units - (1 if granularity == "block" else 2)
    if not 1 <= num_prune <= most:
        raise InputError(f"--num-prune must be between 1 and {most} for {granularity} granularity (the backbone has "
                         f"{num_blocks} blocks), got {num_prune}.")


def importance_search(
    model: nn.Module,
    pixels: torch.Tensor,
    *,
    granularity: str = "block",
    num_prune: int = 16,
    candidates: int = 4,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    batch: int = 4,
    progress: ProgressFn | None = None,
) -> SearchResult:
    """Run both phases on an unpruned SAM3 model with calibration ``pixels [N, 3, S, S]``.

    ``candidates`` is how many of the least important remaining units phase 2 re-scores at each step (1: follow
    the phase-1 order; more: a better greedy choice at ``candidates`` x the cost).
    """
    backbone = model.vision_encoder.backbone
    config = backbone.config
    num_blocks = int(config.num_hidden_layers)
    if len(backbone.layers) != num_blocks or getattr(model, "dart_prune_spec", None):
        raise InputError("the importance search needs the unpruned checkpoint, not a pruned one.")
    units = all_units(num_blocks, granularity)
    check_num_prune(num_prune, num_blocks, granularity)
    if candidates < 1:
        raise InputError(f"--candidates must be at least 1, got {candidates}.")
    global_blocks = sorted(int(i) for i in config.global_attn_indexes)
    imgsz = int(pixels.shape[-1])
    rest, costs = block_flops(config, imgsz, int(model.config.vision_config.fpn_hidden_size))
    scorer = FeatureScorer(model, pixels, device=device, dtype=dtype, batch=batch)
    report = progress or (lambda *_: None)

    result = SearchResult(granularity, num_blocks, global_blocks, imgsz, len(pixels))
    phase1: list[tuple[float, Unit]] = []
    for i, unit in enumerate(units):
        report("phase 1: each unit alone", i, len(units))
        spec = units_to_spec([unit])
        drift = scorer.score(spec)
        phase1.append((drift.loss, unit))
        result.importance.append(UnitImportance(str(unit), unit.block in global_blocks, drift.loss,
                                                list(drift.cosine), estimated_speedup(rest, costs, spec)))
    report("phase 1: each unit alone", len(units), len(units))
    order = [u for _, u in sorted(phase1, key=lambda t: (t[0], t[1]))]
    result.importance.sort(key=lambda r: (r.loss, Unit.parse(r.unit)))

    removed: list[Unit] = []
    for step in range(num_prune):
        report("phase 2: greedy removal", step, num_prune)
        remaining = [u for u in order if u not in removed]
        best: tuple[float, Unit, FeatureDrift, PruneSpec] | None = None
        for unit in remaining[:candidates]:
            spec = units_to_spec([*removed, unit])
            drift = scorer.score(spec)
            if best is None or drift.loss < best[0]:
                best = (drift.loss, unit, drift, spec)
        assert best is not None
        _, unit, drift, spec = best
        removed.append(unit)
        result.steps.append(SearchStep(step + 1, str(unit), unit.block in global_blocks, drift.loss,
                                       list(drift.cosine), estimated_speedup(rest, costs, spec), spec.to_dict()))
    report("phase 2: greedy removal", num_prune, num_prune)
    return result


# ------------------------------------------------------------------------------------------- calibration
def calibration_images(folder: str | Path, num_images: int, *, seed: int = 0) -> list[Path]:
    """``num_images`` images of a folder (a seeded random sample when it has more; sorted)."""
    from dart.images import expand_images

    if num_images < 1:
        raise InputError(f"--num-images must be at least 1, got {num_images}.")
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"calibration folder '{folder}' does not exist or is not a folder.")
    images = expand_images([str(folder)])
    if len(images) > num_images:
        images = sorted(random.Random(seed).sample(images, num_images))
    return images


def calibration_pixels(paths: Sequence[Path], imgsz: int) -> torch.Tensor:
    """Preprocessed ``pixel_values [N, 3, imgsz, imgsz]`` (float32, CPU) of the calibration images."""
    from dart.preprocess import load_image, preprocess, to_rgb

    return torch.cat([preprocess([to_rgb(load_image(p))], imgsz) for p in paths])


# ---------------------------------------------------------------------------------------------------- plot
def plot_search(result: SearchResult, path: str | Path, size: tuple[int, int] = (900, 520)) -> Path:
    """A PNG of the greedy curve (OpenCV): mean FPN cosine (blue, left axis) and estimated speed-up (orange,
    right axis) against the number of removed units; global-attention removals are marked in red."""
    import cv2
    import numpy as np

    from dart.io import write_image

    width, height = size
    left, right, top, bottom = 80, 80, 50, 60
    img = np.full((height, width, 3), 255, np.uint8)
    steps = [0] + [s.step for s in result.steps]
    cosine = [1.0] + [sum(s.cosine) / len(s.cosine) for s in result.steps]
    speed = [1.0] + [s.speedup for s in result.steps]
    n = max(steps[-1], 1)
    c_lo = min(min(cosine), 0.99)
    c_lo = math.floor(c_lo * 100) / 100
    s_hi = max(max(speed), 1.01)
    s_hi = math.ceil(s_hi * 10) / 10
    pw, ph = width - left - right, height - top - bottom

    def x_of(i: float) -> int:
        return int(left + pw * i / n)

    def y_of(v: float, lo: float, hi: float) -> int:
        return int(top + ph * (1 - (v - lo) / max(hi - lo, 1e-9)))

    font, grey, black = cv2.FONT_HERSHEY_SIMPLEX, (200, 200, 200), (0, 0, 0)
    blue, orange, red = (200, 90, 30), (30, 140, 255), (40, 40, 220)
    for k in range(6):
        y = top + ph * k // 5
        cv2.line(img, (left, y), (left + pw, y), grey, 1)
        c_val = 1.0 - (1.0 - c_lo) * k / 5
        s_val = s_hi - (s_hi - 1.0) * k / 5
        cv2.putText(img, f"{c_val:.3f}", (8, y + 5), font, 0.45, blue, 1, cv2.LINE_AA)
        cv2.putText(img, f"{s_val:.2f}x", (left + pw + 8, y + 5), font, 0.45, orange, 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (left + pw, top + ph), black, 1)
    tick = max(1, n // 16)
    for i in range(0, n + 1, tick):
        cv2.line(img, (x_of(i), top + ph), (x_of(i), top + ph + 5), black, 1)
        cv2.putText(img, str(i), (x_of(i) - 6, top + ph + 20), font, 0.45, black, 1, cv2.LINE_AA)
    cv2.putText(img, f"{result.granularity}s removed", (left + pw // 2 - 60, height - 15), font, 0.5, black, 1,
                cv2.LINE_AA)
    cv2.putText(img, f"prune search: {result.num_images} images, {result.imgsz}px  -  mean FPN cosine (blue), "
                     "est. speed-up (orange), global-attention block (red)", (left - 60, 30), font, 0.45, black, 1,
                cv2.LINE_AA)
    c_pts = np.array([[x_of(i), y_of(v, c_lo, 1.0)] for i, v in zip(steps, cosine)], np.int32)
    s_pts = np.array([[x_of(i), y_of(v, 1.0, s_hi)] for i, v in zip(steps, speed)], np.int32)
    cv2.polylines(img, [s_pts], False, orange, 2, cv2.LINE_AA)
    cv2.polylines(img, [c_pts], False, blue, 2, cv2.LINE_AA)
    for (x, y), s in zip(c_pts[1:], result.steps):
        cv2.circle(img, (int(x), int(y)), 4, red if s.global_attn else blue, -1, cv2.LINE_AA)
    path = Path(path)
    write_image(path, img)
    return path
