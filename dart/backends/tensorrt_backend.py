"""The ``tensorrt`` backend: ``backbone.engine`` + ``encdec.engine`` on one CUDA device.

Buffers are torch CUDA tensors handed to TensorRT by address (no pycuda, no host copies): the backbone's FPN
outputs are the encoder-decoder's inputs as they lie in GPU memory.

Streams: an engine runs on the caller's current PyTorch stream when the caller chose one (``dart video`` runs the
backbone and the encoder-decoder on two streams, so the backbone of frame t+1 overlaps the encoder-decoder of
frame t). Called from the default stream, each engine runs on a stream of its own, ordered with the default
stream by stream waits (TensorRT adds device-wide synchronisation when it is given the legacy default stream).
With ``cuda_graph=True`` each input shape is captured once in a CUDA graph and replayed (static engines need one
graph; a dynamic class axis gets one graph per class count). Captures are thread-local, so one engine can be
captured while the other runs in another thread.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from dart.backends.engine_backend import EngineBackend
from dart.errors import DartError, InputError
from dart.export.metadata import FPN_NAMES


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8,
             trt.bool: torch.bool}
    for name, value in (("int64", torch.int64), ("bfloat16", torch.bfloat16), ("uint8", torch.uint8)):
        if hasattr(trt, name):
            table[getattr(trt, name)] = value
    if dtype not in table:
        raise DartError(f"the engine uses tensor type {dtype}, which dart cannot hand over from PyTorch.")
    return table[dtype]


class _Engine:
    """One deserialised engine with its execution context, run on torch CUDA tensors."""

    def __init__(self, trt: Any, runtime: Any, path: Path, device: torch.device, cuda_graph: bool):
        self.trt = trt
        self.path = path
        self.device = device
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise InputError(f"TensorRT cannot load '{path}': it was built by another TensorRT version or for another "
                             "GPU; build it again on this machine with `dart build`.")
        self.context = self.engine.create_execution_context()
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.dtypes: dict[str, torch.dtype] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(name)
            self.dtypes[name] = _torch_dtype(trt, self.engine.get_tensor_dtype(name))
        self.cuda_graph = cuda_graph
        self.stream = torch.cuda.Stream(device=device)  # used when the caller runs on the default stream
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, dict[str, torch.Tensor], dict[str, torch.Tensor]]] = {}
        self._warm: set[tuple] = set()

    def _bind(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for name in self.inputs:
            tensor = inputs[name]
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        return outputs

    def _enqueue(self, stream: torch.cuda.Stream) -> None:
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise DartError(f"TensorRT failed to run '{self.path.name}'.")

    def __call__(self, inputs: dict[str, torch.Tensor], stream: torch.cuda.Stream) -> dict[str, torch.Tensor]:
        with torch.cuda.stream(stream):  # ordered after the caller's work (the backend made ``stream`` wait)
            inputs = {n: inputs[n].to(self.device, self.dtypes[n]).contiguous() for n in self.inputs}
        key = tuple((n, tuple(inputs[n].shape)) for n in self.inputs)
        if self.cuda_graph and key in self._graphs:
            graph, static_in, static_out = self._graphs[key]
            with torch.cuda.stream(stream):
                for n in self.inputs:
                    static_in[n].copy_(inputs[n], non_blocking=True)
                graph.replay()
                return {n: t.clone() for n, t in static_out.items()}
        with torch.cuda.stream(stream):
            outputs = self._bind(inputs)
            self._enqueue(stream)
        if self.cuda_graph and key not in self._graphs:
            if key in self._warm:
                self._capture(key, inputs, stream)
            self._warm.add(key)  # the first run of a shape flushes TensorRT's deferred work before capture
        return outputs

    def _capture(self, key: tuple, inputs: dict[str, torch.Tensor], stream: torch.cuda.Stream) -> None:
        static_in = {n: t.clone() for n, t in inputs.items()}
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.stream(stream):
                static_out = self._bind(static_in)
                self._enqueue(stream)  # settle shapes and addresses outside the capture
            stream.synchronize()
            with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
                self._enqueue(stream)
            self._graphs[key] = (graph, static_in, static_out)
        except Exception as exc:  # noqa: BLE001 - an engine that cannot be captured still runs
            warnings.warn(f"CUDA graph capture failed for {self.path.name} ({exc}); running it without graphs.",
                          stacklevel=2)
            self.cuda_graph = False


class TensorRTBackend(EngineBackend):
    """Runs the two TensorRT engines with GPU-resident tensors, on a CUDA stream, optionally as CUDA graphs."""

    name = "tensorrt"

    def __init__(self, backbone: str | Path, encdec: str | Path, *, device: str = "auto", cuda_graph: bool = False,
                 **kwargs: Any):
        from dart.backends.base import resolve_device
        from dart.export.tensorrt_build import import_tensorrt, tensorrt_logger

        super().__init__(backbone, encdec, **kwargs)
        trt = import_tensorrt()
        dev = resolve_device("cuda" if str(device) == "auto" else device)
        if dev.type != "cuda":
            raise InputError(f"the tensorrt backend runs on a CUDA device, not '{device}'.")
        self.device = dev
        self.cuda_graph = cuda_graph
        with torch.cuda.device(dev):
            self._logger = tensorrt_logger(trt)
            self._runtime = trt.Runtime(self._logger)
            self._backbone_engine = _Engine(trt, self._runtime, self.backbone_path, dev, cuda_graph)
            self._encdec_engine = _Engine(trt, self._runtime, self.encdec_path, dev, cuda_graph)
        missing = [n for n in FPN_NAMES if n not in self._backbone_engine.outputs]
        if missing:
            raise InputError(f"'{self.backbone_path}' has no output '{missing[0]}'; build it from a dart export.")

    def _run(self, engine: _Engine, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        current = torch.cuda.current_stream(self.device)
        if current != torch.cuda.default_stream(self.device):
            with torch.cuda.device(self.device):  # the caller's stream orders everything
                outputs = engine(inputs, current)
        else:
            engine.stream.wait_stream(current)  # inputs written on PyTorch's stream are ready
            with torch.cuda.device(self.device):
                outputs = engine(inputs, engine.stream)
            current.wait_stream(engine.stream)  # later PyTorch work sees the outputs
            for tensor in outputs.values():
                tensor.record_stream(current)
        return {n: t.float() if t.is_floating_point() else t for n, t in outputs.items()}

    def _run_backbone(self, pixel_values: torch.Tensor, masks: bool = True) -> tuple[torch.Tensor, ...]:
        out = self._run(self._backbone_engine, {"pixel_values": pixel_values})
        return tuple(out[n] for n in FPN_NAMES)

    def _run_encdec(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self._run(self._encdec_engine, inputs)
