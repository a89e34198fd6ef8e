"""Build TensorRT engines from dart's ONNX exports.

``build_engine`` parses the ONNX file from disk (so external weight files are found beside it), adds an
optimisation profile for the dynamic class axis (1..max classes), and builds a strongly typed network:
with ``fp16`` the graph is first converted to FP16 with the layers of a :class:`PrecisionSpec` kept in FP32
(:func:`dart.export.mixed_precision.to_mixed_fp16`), which is how TensorRT 10 and 11 both express mixed precision.
A timing cache file makes rebuilds fast; a progress monitor reports the builder's phases. The ONNX metadata is
written next to the engine (``X.engine.json``) with the precision it was built at.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dart.errors import DartError, DependencyError, InputError
from dart.export.metadata import StageMetadata, read_onnx_metadata, write_engine_metadata
from dart.export.mixed_precision import PrecisionSpec, to_mixed_fp16

GIB = 1 << 30


@dataclass
class BuildResult:
    engine: Path
    metadata: StageMetadata
    seconds: float
    size_bytes: int
    fp32_nodes: list[str] = field(default_factory=list)
    tensorrt_version: str = ""


def import_tensorrt():
    """``tensorrt`` and a CUDA device, or one sentence saying what is missing."""
    import torch

    if not torch.cuda.is_available():
        raise DependencyError("building or running TensorRT engines needs a CUDA GPU, and none is available here; "
                              "use the onnxruntime backend on this machine.")
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise DependencyError("TensorRT is not installed; install it with `pip install 'dart-detect[tensorrt]'`.") from exc
    return trt


def tensorrt_logger(trt: Any, verbose: bool = False):
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)


def _progress_monitor(trt: Any, update: Callable[[str, int, int], None]):
    """A ``trt.IProgressMonitor`` forwarding phases and steps to ``update(phase, step, total)``."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:  # TensorRT < 10
        return None

    class Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self):
            base.__init__(self)
            self.steps: dict[str, int] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            self.steps[phase_name] = num_steps
            update(phase_name, 0, num_steps)

        def step_complete(self, phase_name, step):
            update(phase_name, step + 1, self.steps.get(phase_name, step + 1))
            return True

        def phase_finish(self, phase_name):
            total = self.steps.pop(phase_name, 1)
            update(phase_name, total, total)

    return Monitor()


@contextlib.contextmanager
def _parse_source(onnx_path: Path, fp16: bool, spec: PrecisionSpec, meta: StageMetadata
                  ) -> Iterator[tuple[Path, list[str]]]:
    """The ONNX file TensorRT parses: the export itself (FP32) or a mixed-FP16 copy in a temporary folder."""
    if not fp16:
        yield onnx_path, []
        return
    import onnx

    from dart.export.onnx_export import save_onnx

    model = onnx.load(str(onnx_path))  # loads external data from beside the file
    fp32_nodes = spec.node_names([n.name for n in model.graph.node], meta)
    mixed = to_mixed_fp16(model, fp32_nodes)
    tmp = Path(tempfile.mkdtemp(prefix="dart-fp16-"))
    try:
        path = tmp / onnx_path.name
        save_onnx(mixed, path)
        yield path, fp32_nodes
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    fp16: bool = True,
    precision: PrecisionSpec | None = None,
    workspace_gb: float | None = None,
    timing_cache: str | Path | None = None,
    opt_classes: int | None = None,
    verbose: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> BuildResult:
    """Build ``engine_path`` from a dart ONNX export (needs TensorRT and a CUDA GPU)."""
    from dart.io import atomic_path, write_bytes

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    meta = read_onnx_metadata(onnx_path)
    spec = precision or PrecisionSpec()
    if spec and not fp16:
        raise InputError("--fp32-layers/--precision-spec only mean something with --fp16.")
    if workspace_gb is not None and workspace_gb <= 0:
        raise InputError(f"--workspace must be positive (GB), got {workspace_gb}.")
    trt = import_tensorrt()
    logger = tensorrt_logger(trt, verbose)
    start = time.perf_counter()
    with _parse_source(onnx_path, fp16, spec, meta) as (source, fp32_nodes):
        builder = trt.Builder(logger)
        flags = 0
        if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        elif fp16:
            raise DependencyError(f"TensorRT {trt.__version__} cannot build strongly typed networks; install "
                                  "TensorRT 10 or newer.")
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(source)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise DartError(f"TensorRT could not parse {onnx_path}: {errors[0] if errors else 'unknown error'}.")
        config = builder.create_builder_config()
        if workspace_gb is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * GIB))
        _add_profile(trt, builder, network, config, meta, opt_classes)
        cache_bytes = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).is_file() else b""
        cache = config.create_timing_cache(cache_bytes)
        config.set_timing_cache(cache, ignore_mismatch=True)
        monitor = _progress_monitor(trt, progress) if progress else None
        if monitor is not None:
            config.progress_monitor = monitor
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise DartError(f"TensorRT failed to build an engine from {onnx_path}; rerun with --verbose for its log.")
        with atomic_path(engine_path) as tmp:
            with open(tmp, "wb") as f:
                f.write(serialized)
        if timing_cache:
            write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    engine_meta = replace(meta, precision="fp16" if fp16 else "fp32",
                          fp32_layers=[*(f"block {b}" for b in spec.fp32_blocks), *spec.fp32_layers])
    write_engine_metadata(engine_path, engine_meta)
    return BuildResult(engine_path, engine_meta, time.perf_counter() - start, engine_path.stat().st_size, fp32_nodes,
                       str(trt.__version__))


def _add_profile(trt: Any, builder: Any, network: Any, config: Any, meta: StageMetadata, opt_classes: int | None):
    """One optimisation profile: the class axis spans 1..max_classes (optimised for ``opt_classes``)."""
    dynamic = False
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        if all(d >= 0 for d in shape):
            continue
        dynamic = True
        if shape[0] >= 0 or any(d < 0 for d in shape[1:]):
            raise InputError(f"input '{tensor.name}' has dynamic axes other than the class axis; export it again.")
        high = int(meta.max_classes or 1)
        opt = min(high, max(1, opt_classes or high))
        profile.set_shape(tensor.name, [1, *shape[1:]], [opt, *shape[1:]], [high, *shape[1:]])
    if dynamic:
        config.add_optimization_profile(profile)
