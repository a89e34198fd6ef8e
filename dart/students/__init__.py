"""Student backbones: small timm networks with an FPN adapter that stand in for SAM3's ViT.

>>> from dart.students import build_backbone
>>> student = build_backbone("repvit_m2_3", loaded.model, weights="repvit.safetensors")
>>> fpn_4x, fpn_2x, fpn_1x = student(pixel_values)
"""

from dart.students.model import FPNAdapter, StudentBackbone, read_student_checkpoint
from dart.students.registry import STUDENTS, StudentSpec, backbone_names, build_backbone, student_name_of

__all__ = ["FPNAdapter", "STUDENTS", "StudentBackbone", "StudentSpec", "backbone_names", "build_backbone",
           "read_student_checkpoint", "student_name_of"]
