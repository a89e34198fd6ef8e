"""Export dart's stages to ONNX, check them, and build TensorRT engines from them.

- :mod:`dart.export.onnx_export`: ``export_backbone`` / ``export_encdec`` (simplified, metadata, self-verified).
- :mod:`dart.export.metadata`: :class:`StageMetadata` stored in ONNX files and engine sidecars; mismatch checks.
- :mod:`dart.export.verify`: cosine / max-abs agreement between two runs of a stage.
- :mod:`dart.export.tensorrt_build`: ``build_engine`` (FP16, FP32 layers, timing cache, progress).
"""

from dart.export.metadata import StageMetadata, read_metadata

__all__ = ["StageMetadata", "read_metadata"]
