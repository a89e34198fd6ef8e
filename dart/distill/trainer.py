"""Distillation training: teach a smaller backbone to produce SAM3's FPN features.

Two phases share one loop:

- ``adapter``: a timm student + FPN adapter (:mod:`dart.students`) learns the frozen SAM3 backbone's three FPN
  levels; the encoder-decoder is untouched, so the student plugs into SAM3 as is.
- ``prune``: self-distillation; a copy of SAM3's ViT + FPN with blocks removed (``skip_blocks`` /
  ``mask_blocks``) learns the full backbone's features, recovering what pruning cost.

Loss: MSE per FPN level, weighted 0.15 / 0.20 / 0.65 from high to low resolution (the 1x level feeds the DETR
encoder). AdamW with linear warm-up and a cosine schedule, mixed precision on CUDA (bf16 where supported, else
fp16 with a gradient scaler), a checkpoint (``last.pt``) and the deployable result at the end of every epoch,
``resume`` from ``last.pt``, validation cosine per level, and ``DistributedDataParallel`` when started by
``torchrun`` (NCCL on GPUs, gloo on the CPU). Only rank 0 writes files and draws the progress bar.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from dart.errors import InputError
from dart.models.loading import DEFAULT_CHECKPOINT
from dart.pruning.spec import PruneSpec

PHASES = ("adapter", "prune")
LEVEL_WEIGHTS = (0.15, 0.20, 0.65)
STATE_FILE = "last.pt"
HISTORY_FILE = "history.json"
STUDENT_FILE = "student.safetensors"
PRUNED_DIR = "pruned"


@dataclass
class DistillConfig:
    phase: str
    data_dir: Path
    output: Path = Path("runs/distill")
    checkpoint: str = DEFAULT_CHECKPOINT
    backbone: str = "repvit_m2_3"
    prune: PruneSpec = field(default_factory=PruneSpec)
    imgsz: int = 1008
    epochs: int = 10
    batch: int = 4
    lr: float | None = None  # None: 1e-3 (adapter), 1e-5 (prune)
    weight_decay: float = 0.05
    warmup: float = 0.05  # fraction of all steps
    min_lr_ratio: float = 0.01
    grad_clip: float | None = 1.0
    level_weights: tuple[float, float, float] = LEVEL_WEIGHTS
    val_fraction: float = 0.05
    steps_per_epoch: int | None = None
    workers: int = 2
    device: str = "auto"
    amp: bool = True
    pretrained: bool = True
    cache_dir: Path | None = None
    hflip: bool = True
    resume: bool = False
    exist_ok: bool = False
    seed: int = 0
    tokenizer: str | None = None

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (1e-3 if self.phase == "adapter" else 1e-5)

    def validate(self) -> None:
        from dart.models.sam3 import validate_imgsz

        if self.phase not in PHASES:
            raise InputError(f"unknown phase '{self.phase}': use adapter or prune.")
        if self.phase == "prune" and not self.prune:
            raise InputError("--phase prune needs the blocks to remove: --skip-blocks, --mask-blocks or --prune-spec.")
        if self.phase == "adapter" and self.prune:
            raise InputError("--skip-blocks/--mask-blocks belong to --phase prune; the adapter phase trains a student.")
        validate_imgsz(self.imgsz)
        for name in ("epochs", "batch"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name} must be at least 1, got {getattr(self, name)}.")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise InputError(f"--steps-per-epoch must be at least 1, got {self.steps_per_epoch}.")
        if len(self.level_weights) != 3 or any(w < 0 for w in self.level_weights) or sum(self.level_weights) <= 0:
            raise InputError("--level-weights takes three non-negative numbers (high to low resolution), "
                             "e.g. 0.15,0.20,0.65.")
        if self.learning_rate() <= 0:
            raise InputError(f"--lr must be positive, got {self.lr}.")
        if not 0.0 <= self.warmup < 1.0:
            raise InputError(f"--warmup is a fraction of the steps in [0, 1), got {self.warmup}.")

    def identity(self) -> dict[str, Any]:
        """What a resumed run must share with the run it continues."""
        return {"phase": self.phase, "imgsz": self.imgsz,
                "backbone": self.backbone if self.phase == "adapter" else "sam3", "prune": self.prune.to_dict()}

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["prune"] = self.prune.to_dict()
        return json.loads(json.dumps(data, default=str))


@dataclass
class DistillResult:
    output: Path
    artifact: Path
    history: list[dict[str, Any]]
    step: int
    first_step: int  # the global step the first optimizer step of this run got (1, or after a resume)


def distill_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                 weights: Sequence[float] = LEVEL_WEIGHTS) -> tuple[torch.Tensor, list[float]]:
    """Weighted sum of per-level MSE (computed in float32) and the per-level values."""
    per_level = [F.mse_loss(s.float(), t.float()) for s, t in zip(student, teacher)]
    total = sum(w * l for w, l in zip(weights, per_level))
    return total, [float(l.detach()) for l in per_level]  # type: ignore[return-value]


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float):
    """LR multiplier: linear warm-up to 1, then cosine decay to ``min_ratio``."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


# ----------------------------------------------------------------------------------------------- distributed
@dataclass
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialized: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistEnv:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1); NCCL on CUDA, gloo on CPU."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistEnv(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), True)


def _resolve_device(config: DistillConfig) -> torch.device:
    from dart.backends.base import resolve_device

    device = resolve_device(config.device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device.type == "cuda" and world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise InputError(f"torchrun started {world} processes per node but this node has "
                             f"{torch.cuda.device_count()} GPU(s); lower --nproc_per_node.")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    return device


# -------------------------------------------------------------------------------------------------- models
def build_models(config: DistillConfig, loaded) -> tuple[nn.Module, nn.Module, nn.Module | None]:
    """``(teacher, student, pruned_holder)``: the frozen full SAM3 backbone and the trainable student."""
    from dart.pruning.spec import apply_pruning
    from dart.stages import BackboneStage

    model = loaded.model
    if getattr(model, "dart_prune_spec", None):
        raise InputError("distillation needs the full (unpruned) SAM3 checkpoint as the teacher.")
    teacher = BackboneStage(model).eval().requires_grad_(False)
    if config.phase == "adapter":
        from dart.students import build_backbone

        if config.backbone == "sam3":
            raise InputError("--phase adapter trains a student backbone; pick one such as --backbone repvit_m2_3 "
                             "(sam3 itself is distilled with --phase prune).")
        student = build_backbone(config.backbone, model, pretrained=config.pretrained)
        return teacher, student.train(), None
    holder = nn.Module()
    holder.vision_encoder = copy.deepcopy(model.vision_encoder)
    apply_pruning(holder, config.prune)
    student = BackboneStage(holder).requires_grad_(True)
    return teacher, student.train(), holder


# --------------------------------------------------------------------------------------------------- train
def run_distillation(config: DistillConfig, *, progress: bool = True, console: Any = None) -> DistillResult:
    """Train as ``config`` says; returns the per-epoch history (see the module docstring for what is written)."""
    config.validate()
    device = _resolve_device(config)
    env = init_distributed(device)
    try:
        return _Trainer(config, device, env, progress, console).run()
    finally:
        if env.initialized:
            import torch.distributed as dist

            dist.destroy_process_group()


class _Trainer:
    def __init__(self, config: DistillConfig, device: torch.device, env: DistEnv, progress: bool, console: Any):
        self.config = config
        self.device = device
        self.env = env
        self.progress = progress and env.main
        self.console = console
        self.output = Path(config.output)

    # ---------------------------------------------------------------------------------------------- setup
    def _check_output(self) -> Path | None:
        state = self.output / STATE_FILE
        if self.output.exists() and not self.output.is_dir():
            raise InputError(f"output '{self.output}' exists and is not a folder.")
        if self.config.resume:
            if not state.is_file():
                raise InputError(f"nothing to resume: {state} does not exist; start without --resume.")
            return state
        if state.exists() and not self.config.exist_ok:
            raise InputError(f"'{self.output}' already holds a distillation run; pass --resume to continue it, "
                             "--overwrite to start over in it, or another --output.")
        return None

    def _datasets(self, teacher: nn.Module, fingerprint: str):
        from dart.distill.data import ImageFolderDataset, list_images, split_train_val

        paths = list_images(self.config.data_dir)
        train, val = split_train_val(paths, self.config.val_fraction, seed=self.config.seed)
        cache = None
        if self.config.cache_dir is not None:
            from dart.distill.cache import TeacherCache

            key = {"fingerprint": fingerprint, "imgsz": self.config.imgsz, "levels": 3}
            cache = TeacherCache(self.config.cache_dir, key)
            self._fill_cache(cache, teacher, [*train, *val])
        return ImageFolderDataset(train, self.config.imgsz, cache), ImageFolderDataset(val, self.config.imgsz, cache)

    @torch.inference_mode()
    def _fill_cache(self, cache, teacher: nn.Module, paths: list[Path]) -> None:
        from dart.distill.data import ImageFolderDataset

        todo = [p for p in paths if not cache.has(p)]
        mine = todo[self.env.rank::self.env.world]
        dataset = ImageFolderDataset(mine, self.config.imgsz)
        with self._bar() as bar:
            task = bar.add_task("teacher cache", total=len(mine), loss="", extra="")
            for start in range(0, len(mine), self.config.batch):
                idx, batch = [], []
                for i in range(start, min(start + self.config.batch, len(mine))):
                    try:
                        batch.append(dataset.pixels(i))
                        idx.append(i)
                    except InputError:
                        pass  # unreadable: the training dataset skips it too
                if batch:
                    with self._autocast():
                        feats = teacher(torch.stack(batch).to(self.device))
                    for j, i in enumerate(idx):
                        cache.save(mine[i], [f[j] for f in feats])
                bar.advance(task, min(self.config.batch, len(mine) - start))
        self._barrier()

    def _loader(self, dataset, shuffle: bool):
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset, num_replicas=self.env.world, rank=self.env.rank, shuffle=shuffle,
                                     seed=self.config.seed, drop_last=False)
        loader = DataLoader(dataset, batch_size=self.config.batch, sampler=sampler, num_workers=self.config.workers,
                            pin_memory=self.device.type == "cuda", drop_last=False,
                            persistent_workers=self.config.workers > 0)
        return loader, sampler

    # ------------------------------------------------------------------------------------------ precision
    def _amp_dtype(self) -> torch.dtype | None:
        if not self.config.amp or self.device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def _autocast(self):
        import contextlib

        dtype = self._amp_dtype()
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=dtype)

    # ------------------------------------------------------------------------------------------------ run
    def run(self) -> DistillResult:
        from dart.models.loading import load_sam3

        config = self.config
        state_file = self._check_output()
        torch.manual_seed(config.seed)
        loaded = load_sam3(config.checkpoint, imgsz=config.imgsz, tokenizer=config.tokenizer)
        teacher, student, holder = build_models(config, loaded)
        teacher.to(self.device)
        student.to(self.device)
        self.loaded, self.holder, self.student = loaded, holder, student
        train_set, val_set = self._datasets(teacher, loaded.fingerprint)
        train_loader, sampler = self._loader(train_set, shuffle=True)
        val_loader, _ = self._loader(val_set, shuffle=False) if len(val_set) else (None, None)
        steps_per_epoch = len(train_loader)
        if config.steps_per_epoch is not None:
            steps_per_epoch = min(steps_per_epoch, config.steps_per_epoch)
        total_steps = steps_per_epoch * config.epochs

        model: nn.Module = student
        if self.env.initialized:
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(student, device_ids=[self.device.index] if self.device.type == "cuda"
                                            else None)
        params = [p for p in student.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate(), weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(total_steps, int(config.warmup * total_steps), config.min_lr_ratio))
        scaler = torch.amp.GradScaler("cuda", enabled=self._amp_dtype() == torch.float16)

        start_epoch, step, history = 0, 0, []
        if state_file is not None:
            start_epoch, step, history = self._load_state(state_file, optimizer, scheduler, scaler)
        first_step = step + 1
        for epoch in range(start_epoch, config.epochs):
            sampler.set_epoch(epoch)
            model.train()
            train_loss, step = self._train_epoch(model, teacher, train_loader, optimizer, scheduler, scaler, epoch,
                                                 steps_per_epoch, step)
            record: dict[str, Any] = {"epoch": epoch + 1, "step": step, "train_loss": train_loss,
                                      "lr": optimizer.param_groups[0]["lr"]}
            if val_loader is not None:
                record.update(self._validate(student, teacher, val_loader))
            history.append(record)
            if self.env.main:
                self._save(epoch + 1, step, history, optimizer, scheduler, scaler)
                if self.console is not None:
                    self.console.print(_epoch_line(record, config.epochs), highlight=False)
            self._barrier()
        return DistillResult(self.output, self._artifact_path(), history, step, first_step)

    def _train_epoch(self, model, teacher, loader, optimizer, scheduler, scaler, epoch, steps, step):
        config = self.config
        total, count = 0.0, 0
        generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        with self._bar() as bar:
            task = bar.add_task(f"epoch {epoch + 1}/{config.epochs}", total=steps, loss="", extra="")
            for i, batch in enumerate(loader):
                if i >= steps:
                    break
                pixels = batch["pixels"].to(self.device, non_blocking=True)
                flip = None
                if config.hflip and "teacher" not in batch:
                    flip = torch.rand(pixels.shape[0], generator=generator) < 0.5
                    pixels = torch.where(flip.to(self.device)[:, None, None, None], pixels.flip(-1), pixels)
                with torch.no_grad(), self._autocast():
                    target = batch["teacher"] if "teacher" in batch else teacher(pixels)
                target = tuple(t.to(self.device, non_blocking=True) for t in target)
                with self._autocast():
                    output = model(pixels)
                loss, _ = distill_loss(output, target, config.level_weights)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if config.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(self.student.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                value = self._mean(float(loss.detach()))
                total += value
                count += 1
                bar.update(task, advance=1, loss=f"loss {value:.4g}", extra=f"lr {scheduler.get_last_lr()[0]:.2e}")
        return total / max(count, 1), step

    @torch.inference_mode()
    def _validate(self, student, teacher, loader) -> dict[str, Any]:
        student.eval()
        sums = torch.zeros(5, dtype=torch.float64)  # loss*n, cos 4x*n, cos 2x*n, cos 1x*n, n
        for batch in loader:
            pixels = batch["pixels"].to(self.device)
            with self._autocast():
                target = batch["teacher"] if "teacher" in batch else teacher(pixels)
                output = student(pixels)
            target = tuple(t.to(self.device) for t in target)
            n = pixels.shape[0]
            loss, _ = distill_loss(output, target, self.config.level_weights)
            sums[0] += float(loss) * n
            for lv in range(3):
                cos = F.cosine_similarity(output[lv].float().flatten(1), target[lv].float().flatten(1), dim=1)
                sums[1 + lv] += float(cos.sum())
            sums[4] += n
        if self.env.initialized:
            import torch.distributed as dist

            dist.all_reduce(sums)
        n = max(float(sums[4]), 1.0)
        student.train()
        return {"val_loss": float(sums[0]) / n, "val_cosine": [float(sums[1 + lv]) / n for lv in range(3)]}

    def _mean(self, value: float) -> float:
        if not self.env.initialized:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t[0]) / self.env.world

    def _barrier(self) -> None:
        if self.env.initialized:
            import torch.distributed as dist

            dist.barrier()

    def _bar(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[loss]}"), TextColumn("{task.fields[extra]}"), TimeRemainingColumn(),
                        disable=not self.progress, console=self.console)

    # ---------------------------------------------------------------------------------------- checkpoints
    def _artifact_path(self) -> Path:
        return self.output / (STUDENT_FILE if self.config.phase == "adapter" else PRUNED_DIR)

    def _save(self, epoch: int, step: int, history, optimizer, scheduler, scaler) -> None:
        from dart.io import atomic_path, write_json

        self.output.mkdir(parents=True, exist_ok=True)
        state = {
            "format": 1,
            "identity": {**self.config.identity(), "teacher": self.loaded.fingerprint},
            "config": self.config.to_json(),
            "epoch": epoch,
            "step": step,
            "history": history,
            "student": self.student.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": torch.get_rng_state(),
        }
        with atomic_path(self.output / STATE_FILE) as tmp:
            torch.save(state, tmp)
        write_json(self.output / HISTORY_FILE, history)
        extra = {"imgsz": self.config.imgsz, "epoch": epoch, "step": step,
                 "teacher_fingerprint": self.loaded.fingerprint}
        if history and "val_cosine" in history[-1]:
            extra["val_cosine"] = history[-1]["val_cosine"]
        if self.config.phase == "adapter":
            self.student.save(self.output / STUDENT_FILE, extra=extra)
        else:
            self._save_pruned(extra)

    def _save_pruned(self, extra: dict[str, Any]) -> None:
        from dart.pruning.checkpoint import save_pruned

        model = self.loaded.model
        full_vision = model.vision_encoder
        model.vision_encoder = self.holder.vision_encoder  # the distilled, pruned ViT + FPN
        model.dart_prune_spec = self.config.prune
        try:
            save_pruned(model, self.output / PRUNED_DIR, tokenizer_source=self.loaded.tokenizer_source,
                        source=str(self.config.checkpoint), extra={"distill": extra})
        finally:
            model.vision_encoder = full_vision
            del model.dart_prune_spec

    def _load_state(self, path: Path, optimizer, scheduler, scaler) -> tuple[int, int, list]:
        from dart.errors import CheckpointError

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file means the same
            raise CheckpointError(f"cannot resume from {path}: the file is unreadable ({exc}).") from exc
        mine = {**self.config.identity(), "teacher": self.loaded.fingerprint}
        theirs = state.get("identity", {})
        for key in mine:
            if theirs.get(key) != mine[key]:
                raise InputError(f"cannot resume {path}: it was trained with {key} = {theirs.get(key)}, this run has "
                                 f"{mine[key]}; use the same settings or another --output.")
        if state["epoch"] >= self.config.epochs:
            raise InputError(f"{path} already finished {state['epoch']} epochs; raise --epochs to train longer.")
        self.student.load_state_dict(state["student"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        return int(state["epoch"]), int(state["step"]), list(state["history"])


def _epoch_line(record: dict[str, Any], epochs: int) -> str:
    line = f"epoch {record['epoch']}/{epochs}  step {record['step']}  train loss {record['train_loss']:.4g}"
    if "val_cosine" in record:
        cos = "  ".join(f"{name} {c:.4f}" for name, c in zip(("4x", "2x", "1x"), record["val_cosine"]))
        line += f"  val loss {record['val_loss']:.4g}  val cosine {cos}"
    return line
