"""The ``openvino`` backend: the exported ``backbone.onnx`` + ``encdec.onnx`` compiled by OpenVINO for the CPU.

OpenVINO reads the ONNX files ``dart export`` writes (no conversion step, the dart metadata is read as for
onnxruntime) and compiles them for the CPU with a latency hint. The encoder-decoder's class dimension is dynamic
in the file; OpenVINO runs it 1.06-1.13x faster compiled for fixed shapes (BENCHMARKS.md), so it is compiled once
for each class count it meets (a couple of seconds, the first time; the last few are kept).

Its precision is a hint of its own: ``fp32`` computes in fp32; ``bf16`` lets OpenVINO run in bf16 where the CPU
has native bf16 (AVX512-BF16 or AMX; OpenVINO keeps fp32 otherwise); ``auto`` follows
:func:`dart.backends.base.choose_precision`, as for PyTorch. What it chose is read back from the compiled model.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from dart.backends.base import choose_precision, thread_count
from dart.backends.engine_backend import EngineBackend
from dart.errors import DependencyError, InputError
from dart.export.metadata import ENCDEC_OUTPUTS, FPN_NAMES, MASK_OUTPUT, TOKEN_INPUTS

HINTS = {"fp32": "f32", "bf16": "bf16"}
STATIC_KEPT = 4  # encoder-decoders compiled for fixed shapes kept at once (each holds its own weights)


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

        self._core, self._config = ov.Core(), config
        with unreadable_weights(self.backbone_path, "ONNX file", fix="export it again with `dart export`"):
            self._backbone_source = self._core.read_model(str(self.backbone_path))
        self._backbones: dict[bool, tuple[Any, Any, list[str]]] = {}  # masks -> (compiled, request, output names)
        with unreadable_weights(self.encdec_path, "ONNX file", fix="export it again with `dart export`"):
            self._encdec_source = self._core.read_model(str(self.encdec_path))  # compiled per shape, on first use
        self._static: OrderedDict[tuple, Any] = OrderedDict()  # feed shapes -> (infer request, output names)
        self._expected = expected = [*ENCDEC_OUTPUTS, *([MASK_OUTPUT] if self.supports_masks else [])]
        self._encdec_inputs = [_port_name(port, (*FPN_NAMES, "text", "text_mask", *TOKEN_INPUTS)) for port in self._encdec_source.inputs]
        self._encdec_outputs = [_port_name(port, expected) for port in self._encdec_source.outputs]
        if self._encdec_outputs != expected:
            raise InputError(f"'{self.encdec_path}' has outputs {self._encdec_outputs}, not the {expected} of a dart "
                             "export; export it again.")
        compiled, _, _ = self._backbone_for(self.supports_masks)  # without a mask output, the 1x level is enough
        ran = compiled.get_property("INFERENCE_PRECISION_HINT")  # an ov.Type, printed 'bfloat16'
        self.precision = "bf16" if ran == ov.Type.bf16 else "fp32"  # what OpenVINO actually compiled for

    def _backbone_for(self, masks: bool) -> tuple[Any, Any, list[str]]:
        """``(compiled model, infer request, output names)`` of the backbone with every FPN level (``masks``) or
        with the 1x level alone, which OpenVINO then computes without the mask decoder's two levels (1.05x faster
        in bf16 on a CPU, BENCHMARKS.md); each compiled on first use and kept."""
        if masks not in self._backbones:
            import openvino as ov

            model = self._backbone_source
            if not masks:
                model = model.clone()
                kept = [r for r in model.get_results()
                        if FPN_NAMES[-1] in r.output(0).get_names() | r.input_value(0).get_names()]
                model = ov.Model(kept or model.get_results(), model.get_parameters(), "backbone_1x")
            compiled = self._core.compile_model(model, "CPU", self._config)
            self._backbones[masks] = (compiled, compiled.create_infer_request(),
                                      [_port_name(port, FPN_NAMES) for port in compiled.outputs])
        return self._backbones[masks]

    def _run_backbone(self, pixel_values: torch.Tensor, masks: bool = True) -> tuple[torch.Tensor | None, ...]:
        _, request, names = self._backbone_for(masks)
        result = request.infer({"pixel_values": pixel_values.cpu().numpy()})
        by_name = dict(zip(names, result.to_tuple()))
        return tuple(torch.from_numpy(by_name[name].copy()) if name in by_name else None for name in FPN_NAMES)

    def _run_encdec(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feed = {name: inputs[name].cpu().numpy() for name in self._encdec_inputs}
        request, outputs = self._encdec_for({name: value.shape for name, value in feed.items()})
        result = request.infer(feed)
        return {name: torch.from_numpy(value.copy()) for name, value in zip(outputs, result.to_tuple())}

    def _encdec_for(self, shapes: dict[str, tuple[int, ...]]) -> tuple[Any, list[str]]:
        """The encoder-decoder compiled for these input shapes (compiled on first use, the least recently used
        dropped beyond :data:`STATIC_KEPT`), with its output names in the export's order."""
        key = tuple(shapes.items())
        if key in self._static:
            self._static.move_to_end(key)
            return self._static[key]
        compiled = self._core.compile_model(fixed_shapes(self._encdec_source, shapes), "CPU", self._config)
        self._static[key] = (compiled.create_infer_request(),
                             [_port_name(port, self._expected) for port in compiled.outputs])
        while len(self._static) > STATIC_KEPT:
            self._static.popitem(last=False)
        return self._static[key]


def fixed_shapes(source: Any, shapes: dict[str, Any]) -> Any:
    """A copy of the OpenVINO model ``source`` with its inputs (by ONNX name) reshaped to fixed ``shapes``."""
    model = source.clone()
    ports = {name: port for port in model.inputs for name in port.get_names()}
    model.reshape({ports[name]: list(shape) for name, shape in shapes.items()})
    return model


def _port_name(port: Any, wanted: tuple[str, ...] | list[str] = ()) -> str:
    """The ONNX name of a compiled model's port (OpenVINO may give a tensor several names, the graph's own too)."""
    names = port.get_names()
    for name in wanted:
        if name in names:
            return name
    return port.get_any_name()
