"""Distillation: train student backbones (``adapter`` phase) or recover a pruned ViT (``prune`` phase) against
SAM3's frozen FPN features, on a folder of unlabeled images."""

from dart.distill.trainer import DistillConfig, DistillResult, distill_loss, run_distillation

__all__ = ["DistillConfig", "DistillResult", "distill_loss", "run_distillation"]
