"""The ``onnxruntime`` backend: ``backbone.onnx`` + ``encdec.onnx`` on the CPU or CUDA execution provider."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dart.backends.base import thread_count
from dart.backends.engine_backend import EngineBackend
from dart.errors import DependencyError, InputError
from dart.export.metadata import ENCDEC_OUTPUTS, FPN_NAMES, MASK_OUTPUT

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# Most classes one encoder-decoder call takes on the CPU provider, whatever the export allows. onnxruntime runs the
# exported (eager) attention as explicit score matrices: about 1.05 GB more per class at 1008 px (4 classes peak at
# 4.9 GB, 16 at 17.1 GB), while the time per class is the same from 4 classes up (BENCHMARKS.md, "onnxruntime's
# memory per class"). A dynamic class axis makes the split free; a fixed-size graph runs at its own width.
CPU_CLASSES_PER_CALL = 4


def resolve_providers(device: str = "auto", providers: Sequence[str] | None = None) -> list[str]:
    """Execution providers for ``device``: ``cpu``; ``cuda``/``cuda:N`` (needs onnxruntime-gpu); ``auto``: CUDA when
    onnxruntime offers it, else the CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if providers:
        unknown = [p for p in providers if p not in available]
        if unknown:
            raise DependencyError(f"onnxruntime here has no {unknown[0]}; available: {', '.join(available)}.")
        return list(providers)
    device = str(device)
    if device == "cpu":
        return [CPU]
    if device.startswith("cuda"):
        if CUDA not in available:
            raise DependencyError(
                f"device '{device}' needs onnxruntime's CUDA provider, which this onnxruntime lacks; install "
                "onnxruntime-gpu or use --device cpu."
            )
        return [CUDA, CPU]
    if device != "auto":
        raise InputError(f"unknown device '{device}': use auto, cpu, cuda or cuda:N.")
    return [CUDA, CPU] if CUDA in available else [CPU]


class OnnxRuntimeBackend(EngineBackend):
    """Runs the exported ONNX stages with onnxruntime. Tensors are handed over as host arrays."""

    name = "onnxruntime"

    def __init__(self, backbone: str | Path, encdec: str | Path, *, device: str = "auto",
                 providers: Sequence[str] | None = None, threads: int | None = None, **kwargs: Any):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise DependencyError("the onnxruntime backend needs onnxruntime; `pip install 'dart-detect[onnx]'`.") from exc
        super().__init__(backbone, encdec, **kwargs)
        self.providers = resolve_providers(device, providers)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        threads = threads or thread_count()
        if threads:
            options.intra_op_num_threads = threads
        provider_options = None
        if str(device).startswith("cuda:"):
            provider_options = [{"device_id": int(str(device).split(":")[1])} if p == CUDA else {}
                                for p in self.providers]
        from dart.models.loading import unreadable_weights

        sessions = []
        for path in (self.backbone_path, self.encdec_path):
            with unreadable_weights(path, "ONNX file", fix="export it again with `dart export`"):
                sessions.append(ort.InferenceSession(str(path), options, providers=self.providers,
                                                     provider_options=provider_options))
        self._backbone_session, self._encdec_session = sessions
        if self.providers[0] == CPU and self.dynamic_classes and (self.max_classes or 0) > CPU_CLASSES_PER_CALL:
            self.max_classes = CPU_CLASSES_PER_CALL
        self._encdec_inputs = [i.name for i in self._encdec_session.get_inputs()]
        self._encdec_outputs = [o.name for o in self._encdec_session.get_outputs()]
        expected = [*ENCDEC_OUTPUTS, *([MASK_OUTPUT] if self.supports_masks else [])]
        if self._encdec_outputs != expected:
            raise InputError(f"'{self.encdec_path}' has outputs {self._encdec_outputs}, not the {expected} of a dart "
                             "export; export it again.")

    def _run_backbone(self, pixel_values: torch.Tensor, masks: bool = True) -> tuple[torch.Tensor, ...]:
        # every level, whatever ``masks`` says: onnxruntime runs the whole graph for any subset of its outputs
        # (measured: the 1x level alone took as long as all three, BENCHMARKS.md)
        outs = self._backbone_session.run(list(FPN_NAMES), {"pixel_values": pixel_values.cpu().numpy()})
        return tuple(torch.from_numpy(o) for o in outs)

    def _run_encdec(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feed = {name: inputs[name].cpu().numpy() for name in self._encdec_inputs}
        outs = self._encdec_session.run(self._encdec_outputs, feed)
        return {name: torch.from_numpy(o) for name, o in zip(self._encdec_outputs, outs)}
