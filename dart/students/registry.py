"""The backbones registered in the ``dart.backbones`` entry-point group.

Every entry point is a *backbone factory*: called with the loaded SAM3 model (``Sam3Model``), it returns an
``nn.Module`` mapping ``pixel_values [B, 3, S, S]`` to SAM3's three FPN levels ``(4x, 2x, 1x)``:

- ``sam3``: SAM3's own ViT + FPN (:class:`dart.stages.BackboneStage`), full or pruned (pruning is applied to
  the SAM3 model beforehand, by ``--skip-blocks`` / ``--mask-blocks`` or a pruned checkpoint);
- one factory per timm student (:class:`StudentBackbone`), with ``weights=`` a student checkpoint from
  ``dart distill --phase adapter`` (or none, for training and benchmarks).

A third-party package adds a backbone by registering such a factory under ``[project.entry-points."dart.backbones"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from dart.errors import InputError
from dart.students.model import StudentBackbone, check_student_metadata, read_student_checkpoint


@dataclass(frozen=True)
class StudentSpec:
    """A registered student: the timm model and which of its stages feed the three FPN levels."""

    name: str
    timm_name: str
    out_indices: tuple[int, int, int] = (0, 1, 2)
    description: str = ""


STUDENTS: dict[str, StudentSpec] = {
    spec.name: spec
    for spec in (
        StudentSpec("repvit_m2_3", "repvit_m2_3", description="RepViT-M2.3, mobile CNN, 22M params in 3 stages"),
        StudentSpec("repvit_m0_9", "repvit_m0_9", description="RepViT-M0.9, the smallest RepViT"),
        StudentSpec("tiny_vit_21m", "tiny_vit_21m_224", description="TinyViT-21M, windowed ViT (MobileSAM-style)"),
        StudentSpec("tiny_vit_5m", "tiny_vit_5m_224", description="TinyViT-5M"),
        StudentSpec("efficientvit_l1", "efficientvit_l1", description="EfficientViT-L1 (MIT), linear attention"),
        StudentSpec("efficientvit_l2", "efficientvit_l2", description="EfficientViT-L2 (MIT), linear attention"),
        StudentSpec("efficientvit_b0", "efficientvit_b0", description="EfficientViT-B0 (MIT), the smallest"),
    )
}


def sam3_dims(sam3: Any) -> tuple[int, int]:
    """``(fpn_hidden_size, patch_size)`` of a SAM3 model (or a ``Sam3Config``)."""
    config = getattr(sam3, "config", sam3)
    vision = config.vision_config
    return int(vision.fpn_hidden_size), int(vision.backbone_config.patch_size)


class StudentFactory:
    """``factory(sam3, weights=None, pretrained=False) -> StudentBackbone`` for one registered student."""

    def __init__(self, spec: StudentSpec):
        self.spec = spec
        self.name = spec.name

    def __call__(self, sam3: Any, *, weights: str | Path | None = None, pretrained: bool = False) -> StudentBackbone:
        fpn_channels, patch = sam3_dims(sam3)
        if weights is not None:  # read once; a mismatch is refused before the network is built
            meta, state = read_student_checkpoint(weights, backbone=self.spec.name)
            check_student_metadata(weights, meta, {"backbone": self.spec.name, "fpn_channels": fpn_channels,
                                                   "patch_size": patch})
        student = StudentBackbone(self.spec.name, self.spec.timm_name, fpn_channels=fpn_channels, patch_size=patch,
                                  out_indices=self.spec.out_indices, pretrained=pretrained and weights is None)
        if weights is not None:
            student.load_checkpoint(weights, meta, state)
        return student.eval()

    def __repr__(self) -> str:
        return f"StudentFactory({self.spec.name!r} -> timm {self.spec.timm_name!r})"


class Sam3BackboneFactory:
    """``factory(sam3) -> BackboneStage``: SAM3's own ViT and FPN, with whatever pruning the model carries."""

    name = "sam3"

    def __call__(self, sam3: nn.Module, *, weights: str | Path | None = None, pretrained: bool = False) -> nn.Module:
        from dart.stages import BackboneStage

        if weights is not None:
            raise InputError("the sam3 backbone takes its weights from --checkpoint; --student-weights is for "
                             "student backbones.")
        stage = BackboneStage(sam3)
        stage.dart_backbone_name = "sam3"
        return stage

    def __repr__(self) -> str:
        return "Sam3BackboneFactory()"


# Entry-point targets (pyproject ``[project.entry-points."dart.backbones"]``).
sam3 = Sam3BackboneFactory()
repvit_m2_3 = StudentFactory(STUDENTS["repvit_m2_3"])
repvit_m0_9 = StudentFactory(STUDENTS["repvit_m0_9"])
tiny_vit_21m = StudentFactory(STUDENTS["tiny_vit_21m"])
tiny_vit_5m = StudentFactory(STUDENTS["tiny_vit_5m"])
efficientvit_l1 = StudentFactory(STUDENTS["efficientvit_l1"])
efficientvit_l2 = StudentFactory(STUDENTS["efficientvit_l2"])
efficientvit_b0 = StudentFactory(STUDENTS["efficientvit_b0"])


def backbone_names() -> list[str]:
    """Every backbone registered in ``dart.backbones`` (this package's and third-party ones)."""
    from dart.plugins.registry import available

    return [name for name, _, _ in available("dart.backbones")]


def get_factory(name: str):
    """The factory registered under ``name`` (built-ins are found even when the package metadata is stale)."""
    from dart.plugins.registry import available, load

    if name not in {n for n, _, _ in available("dart.backbones")} and (name == "sam3" or name in STUDENTS):
        return globals()[name]
    return load("dart.backbones", name)


def build_backbone(name: str, sam3: nn.Module, *, weights: str | Path | None = None,
                   pretrained: bool = False) -> nn.Module:
    """Build the registered backbone ``name`` for a loaded SAM3 model (see the module docstring)."""
    factory = get_factory(name)
    return factory(sam3, weights=weights, pretrained=pretrained)


def student_name_of(weights: str | Path) -> str:
    """The backbone name a student checkpoint was trained for."""
    from dart.students.model import read_student_checkpoint

    meta, _ = read_student_checkpoint(weights, tensors=False)
    return str(meta["backbone"])
