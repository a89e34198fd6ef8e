"""From SAM3's per-class query outputs to final boxes: scores, presence early exit, thresholds, NMS, top-k.

``score = sigmoid(query logit) x sigmoid(presence logit)``. Since both factors are at most 1, a class whose
presence probability is below the confidence threshold cannot produce a detection: it is skipped before any
box or mask work (the presence early exit). With the default ``presence_thresh = conf`` the exit is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import batched_nms, nms


@dataclass(frozen=True)
class PostprocessConfig:
    conf: float = 0.3
    nms_iou: float | None = 0.7  # per-class NMS; None disables it
    agnostic_iou: float | None = None  # class-agnostic NMS after the per-class one; None disables it
    max_det: int = 300
    presence_thresh: float | None = None  # None -> conf (exact early exit)

    @property
    def presence_cutoff(self) -> float:
        return self.conf if self.presence_thresh is None else self.presence_thresh


@dataclass
class Selection:
    """Detections of one image before they become :class:`~dart.detections.Detections`."""

    class_ids: torch.Tensor  # [N] index into the class (prompt) list
    query_ids: torch.Tensor  # [N] decoder query index
    scores: torch.Tensor  # [N]
    boxes: torch.Tensor  # [N, 4] normalised xyxy


def present_classes(presence_logits: torch.Tensor, cfg: PostprocessConfig,
                    conf: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean mask over classes that pass the presence early exit (``[..., C]``); ``conf [C]`` gives each class
    its own threshold (and so its own exact cutoff, unless ``presence_thresh`` is set)."""
    if conf is None or cfg.presence_thresh is not None:
        return presence_logits.sigmoid() >= cfg.presence_cutoff
    return presence_logits.sigmoid() >= conf.to(presence_logits.device)


def score_threshold(cfg: PostprocessConfig, conf: torch.Tensor | None, device: torch.device) -> float | torch.Tensor:
    """What a ``[..., C, Q]`` score must exceed: ``cfg.conf``, or ``conf [C]`` per class (broadcast over queries)."""
    return cfg.conf if conf is None else conf.to(device)[:, None]


def scores_from_logits(logits: torch.Tensor, presence_logits: torch.Tensor) -> torch.Tensor:
    """``[..., C, Q]`` query logits and ``[..., C]`` presence logits -> detection scores in [0, 1]."""
    return logits.float().sigmoid() * presence_logits.float().sigmoid()[..., None]


def select(logits: torch.Tensor, boxes: torch.Tensor, presence: torch.Tensor, cfg: PostprocessConfig,
           groups: torch.Tensor | None = None, conf: torch.Tensor | None = None) -> Selection:
    """One image: ``logits [C, Q]``, ``boxes [C, Q, 4]``, ``presence [C]`` -> thresholded, NMS-ed, top-k.

    ``groups [C]`` (optional) puts several prompts in one class: the per-class NMS then runs over each group, so
    the prompts of one class do not report the same object twice. ``class_ids`` stay prompt indices.
    ``conf [C]`` (optional) replaces ``cfg.conf`` with a threshold per class."""
    present = present_classes(presence, cfg, conf)
    scores = scores_from_logits(logits, presence)
    scores = torch.where(present[:, None], scores, torch.zeros_like(scores))
    class_ids, query_ids = torch.nonzero(scores > score_threshold(cfg, conf, scores.device), as_tuple=True)
    kept_scores = scores[class_ids, query_ids]
    kept_boxes = boxes[class_ids, query_ids].float()
    if cfg.nms_iou is not None and len(kept_scores):
        nms_ids = class_ids if groups is None else groups.to(class_ids.device)[class_ids]
        keep = batched_nms(kept_boxes, kept_scores, nms_ids, cfg.nms_iou)
        class_ids, query_ids, kept_scores, kept_boxes = class_ids[keep], query_ids[keep], kept_scores[keep], kept_boxes[keep]
    if cfg.agnostic_iou is not None and len(kept_scores):
        keep = nms(kept_boxes, kept_scores, cfg.agnostic_iou)
        class_ids, query_ids, kept_scores, kept_boxes = class_ids[keep], query_ids[keep], kept_scores[keep], kept_boxes[keep]
    order = torch.argsort(kept_scores, descending=True, stable=True)[: cfg.max_det]
    return Selection(class_ids[order], query_ids[order], kept_scores[order], kept_boxes[order])


def to_pixels(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Normalised xyxy -> original-image pixels, clipped to the image (the resize is a plain stretch)."""
    scale = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
    out = boxes * scale
    out[:, 0::2] = out[:, 0::2].clamp(0, width)
    out[:, 1::2] = out[:, 1::2].clamp(0, height)
    return out


def upsample_masks(mask_logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Low-resolution mask logits ``[N, h, w]`` -> boolean masks ``[N, H, W]`` at the original size."""
    if mask_logits.numel() == 0:
        return torch.zeros((0, height, width), dtype=torch.bool, device=mask_logits.device)
    up = torch.nn.functional.interpolate(mask_logits[:, None].float(), size=(height, width), mode="bilinear",
                                         align_corners=False)
    return up[:, 0] > 0
