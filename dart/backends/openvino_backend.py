"""The ``openvino`` backend: the exported ``backbone.onnx`` + ``encdec.onnx`` compiled by OpenVINO for the CPU.

OpenVINO reads the ONNX files ``dart export`` writes (no conversion step, the dart metadata is read as for
onnxruntime) and compiles them for the CPU with a latency hint. Its precision is a hint of its own: ``fp32``
computes in fp32; ``bf16`` lets OpenVINO run in bf16 where the CPU has native bf16 (AVX512-BF16 or AMX; OpenVINO
keeps fp32 otherwise); ``auto`` follows :func:`dart.backends.base.choose_precision`, as for PyTorch. What it chose
is read back from the compiled model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dart.backends.base import choose_precision, thread_count
from dart.backends.engine_backend import EngineBackend
from dart.errors import DependencyError, InputError
from dart.export.metadata import ENCDEC_OUTPUTS, FPN_NAMES, MASK_OUTPUT, TOKEN_INPUTS

HINTS = {"fp32": "f32", "bf16": "bf16"}


class OpenVinoBackend(EngineBackend):
    """Runs the exported ONNX stages with OpenVINO on the CPU. Tensors are handed over as host arrays."""

    name = "openvino"

    def __init__(self, backbone: str | Path, encdec: str | Path, *, device: str = "auto", precision: str = "auto",
                 threads: int | None = None, **kwargs: Any):
        try:
            import openvino as ov
        except ImportError as exc:
            raise DependencyError("the openvino backend needs OpenVINO; `pip install 'dart-detect[openvino]'`.") from exc
        if str(device) not in ("auto", "cpu"):
            raise InputError(f"the openvino backend runs on the CPU; use --device cpu (or auto), not '{device}'.")
        super().__init__(backbone, encdec, **kwargs)
        chosen, self.precision_reason = choose_precision(precision, torch.device("cpu"))
        if chosen not in HINTS:
            raise InputError(f"the openvino backend computes in fp32 or bf16, not {chosen}.")
        config = {"INFERENCE_PRECISION_HINT": HINTS[chosen], "PERFORMANCE_HINT": "LATENCY"}
        threads = threads or thread_count()
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        from dart.models.loading import unreadable_weights

        core = ov.Core()
        compiled = []
        for path in (self.backbone_path, self.encdec_path):
            with unreadable_weights(path, "ONNX file", fix="export it again with `dart export`"):
                compiled.append(core.compile_model(str(path), "CPU", config))
        self._backbone_model, self._encdec_model = compiled
        self._backbone_request = self._backbone_model.create_infer_request()
        self._encdec_request = self._encdec_model.create_infer_request()
        expected = [*ENCDEC_OUTPUTS, *([MASK_OUTPUT] if self.supports_masks else [])]
        self._encdec_inputs = [_port_name(port, (*FPN_NAMES, "text", "text_mask", *TOKEN_INPUTS)) for port in self._encdec_model.inputs]
        self._encdec_outputs = [_port_name(port, expected) for port in self._encdec_model.outputs]
        self._backbone_outputs = [_port_name(port, FPN_NAMES) for port in self._backbone_model.outputs]
        if self._encdec_outputs != expected:
            raise InputError(f"'{self.encdec_path}' has outputs {self._encdec_outputs}, not the {expected} of a dart "
                             "export; export it again.")
        ran = self._backbone_model.get_property("INFERENCE_PRECISION_HINT")  # an ov.Type, printed 'bfloat16'
        self.precision = "bf16" if ran == ov.Type.bf16 else "fp32"  # what OpenVINO actually compiled for

    def _run_backbone(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        result = self._backbone_request.infer({"pixel_values": pixel_values.cpu().numpy()})
        by_name = dict(zip(self._backbone_outputs, result.to_tuple()))
        return tuple(torch.from_numpy(by_name[name].copy()) for name in FPN_NAMES)

    def _run_encdec(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feed = {name: inputs[name].cpu().numpy() for name in self._encdec_inputs}
        result = self._encdec_request.infer(feed)
        return {name: torch.from_numpy(value.copy()) for name, value in zip(self._encdec_outputs, result.to_tuple())}


def _port_name(port: Any, wanted: tuple[str, ...] | list[str] = ()) -> str:
    """The ONNX name of a compiled model's port (OpenVINO may give a tensor several names, the graph's own too)."""
    names = port.get_names()
    for name in wanted:
        if name in names:
            return name
    return port.get_any_name()
