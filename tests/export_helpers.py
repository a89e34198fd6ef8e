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


def engines_with_encdec(folder: Path, engines: Path, loaded, **encdec_options) -> Path:
    """``folder`` holding the tiny backbone of ``engines`` beside an encoder-decoder exported with ``encdec_options``
    (unsimplified, unverified: the tests compare it with PyTorch themselves)."""
    import shutil

    from dart.export.onnx_export import export_encdec

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(engines / "backbone.onnx", folder / "backbone.onnx")
    export_encdec(loaded, folder / "encdec.onnx", simplify=False, verify=False, **encdec_options)
    return folder
