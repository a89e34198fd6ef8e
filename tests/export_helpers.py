"""Tiny exported stages shared by the export, backend and precision tests (exported once per test session)."""

from __future__ import annotations

from pathlib import Path

from tests.tiny import TINY_IMGSZ


def tiny_engines(tmp_path_factory, tiny_ckpt) -> Path:
    """A folder with backbone.onnx (simplified) and encdec.onnx (classes 1..3 dynamic, with masks)."""
    from dart.export.onnx_export import export_backbone, export_encdec
    from dart.models.loading import load_sam3

    folder = tmp_path_factory.getbasetemp() / "tiny_engines"
    if not (folder / "encdec.onnx").is_file():
        loaded = load_sam3(tiny_ckpt, imgsz=TINY_IMGSZ)
        export_backbone(loaded, folder / "backbone.onnx")
        export_encdec(loaded, folder / "encdec.onnx", max_classes=3, masks=True, simplify=False)
    return folder
