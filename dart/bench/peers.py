"""dart side by side with the other ways to run SAM3, on the same weights, image and classes.

Systems (``SYSTEMS``), each run as its users run it:

- ``dart-fp32``, ``dart-auto``: dart's PyTorch backend (``--precision fp32`` / ``auto``); classes batched, text from
  a cache, no masks (dart's default);
- ``dart-onnxruntime``, ``dart-openvino``, ``dart-openvino-bf16``: dart's exported stages (``--engines``);
- ``meta-fp32``, ``meta-bf16``: Meta's ``sam3`` package, ``Sam3Processor`` as its README shows it: ``set_image``,
  then ``set_text_prompt`` once per class (text encoder and masks included, as there); bf16 under autocast;
- ``transformers-fp32``: transformers' ``Sam3Model``/``Sam3Processor`` as their docs show it: vision embeddings
  computed once per image, then one forward per prompt and ``post_process_instance_segmentation``;
- ``dart-research-fp32``: the DART research code (``Sam3MultiClassPredictorFast(use_fp16=False,
  detection_only=True)``) from a local clone (``research_repo``); it is not on the package index;
- on CUDA only: ``dart-fp16`` (dart's PyTorch backend in fp16) and ``dart-research-fp16``, the research code's own
  fast path (``use_fp16=True``: its backbone and heads under fp16 autocast), for a same-precision ratio.

Every system runs in a child process of its own (one after another, so they never share the CPU or the GPU), which
reports its load time, the median time of its image part (preprocessing and backbone, once per image) and of its
class part for each class count (everything that depends on the classes), and its peak resident memory. Seconds
per image = image part + class part. ``speedup`` compares each system with the fastest peer (not dart) that computes
in the same precision, at each class count (``speedup_any``: with the fastest in any precision); above 1 is faster.

>>> report = run_peers("sam3.pt", ["dart-fp32", "meta-fp32"], counts=[1, 4], output_dir="runs/peers")
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dart.errors import InputError

SYSTEMS: dict[str, dict[str, Any]] = {
    "dart-fp32": {"family": "dart", "backend": "torch", "precision": "fp32"},
    "dart-auto": {"family": "dart", "backend": "torch", "precision": "auto"},
    "dart-onnxruntime": {"family": "dart", "backend": "onnxruntime", "precision": "fp32", "needs": "engines"},
    "dart-openvino": {"family": "dart", "backend": "openvino", "precision": "fp32", "needs": "engines"},
    "dart-openvino-bf16": {"family": "dart", "backend": "openvino", "precision": "bf16", "needs": "engines"},
    "meta-fp32": {"family": "meta", "precision": "fp32"},
    "meta-bf16": {"family": "meta", "precision": "bf16"},
    "transformers-fp32": {"family": "transformers", "precision": "fp32"},
    "dart-research-fp32": {"family": "research", "precision": "fp32", "needs": "research_repo"},
    "dart-fp16": {"family": "dart", "backend": "torch", "precision": "fp16", "cuda": True},
    "dart-research-fp16": {"family": "research", "precision": "fp16", "needs": "research_repo", "cuda": True},
}
PEER_FAMILIES = ("meta", "transformers", "research")
CONF = 0.5


def default_systems(*, engines: bool, research_repo: bool, cuda: bool = False) -> list[str]:
    """Every system whose inputs are given (engine systems need ``engines``, DART's needs its clone, fp16 ones a
    CUDA device)."""
    have = {"engines": engines, "research_repo": research_repo}
    return [name for name, spec in SYSTEMS.items()
            if have.get(spec.get("needs", ""), True) and (cuda or not spec.get("cuda"))]


def parse_systems(text: str | Sequence[str] | None, *, engines: bool, research_repo: bool,
                  cuda: bool = False) -> list[str]:
    """``"dart-fp32,meta-fp32"`` -> names, checked; ``None`` -> :func:`default_systems`. ``cuda``: the run's device
    is a CUDA GPU (fp16 systems need one)."""
    if text is None:
        return default_systems(engines=engines, research_repo=research_repo, cuda=cuda)
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    if not names:
        raise InputError(f"--systems is empty; choose from {', '.join(SYSTEMS)}.")
    for name in names:
        if name not in SYSTEMS:
            raise InputError(f"unknown system '{name}'; choose from {', '.join(SYSTEMS)}.")
        needs = SYSTEMS[name].get("needs")
        if needs == "engines" and not engines:
            raise InputError(f"{name} runs dart's exported stages: give --engines DIR (from `dart export`).")
        if needs == "research_repo" and not research_repo:
            raise InputError(f"{name} needs a clone of the DART research code: give --research-repo DIR.")
        if SYSTEMS[name].get("cuda") and not cuda:
            raise InputError(f"{name} computes in fp16, which needs a CUDA device: give --device cuda on a machine "
                             "with an NVIDIA GPU.")
    return list(dict.fromkeys(names))


# ------------------------------------------------------------------------------------------- Meta on a CPU
@contextlib.contextmanager
def meta_on_cpu() -> Iterator[None]:
    """Meta's ``sam3`` code (and the DART fork of it) assumes CUDA in three places: the position-encoding cache it
    precomputes when built, the decoder's box-RPB coordinate grid and a ``pin_memory`` in the geometry encoder.
    While the block runs they are sent to the CPU (nothing is changed on a CUDA machine); the results are the
    same, the cache is filled on first use instead."""
    if torch.cuda.is_available():
        yield
        return
    from sam3 import model_builder
    from sam3.model.decoder import TransformerDecoder

    original_coords = TransformerDecoder.__dict__["_get_coords"]
    original_pin = torch.Tensor.pin_memory
    original_sine = model_builder.PositionEmbeddingSine

    def coords(height: int, width: int, device: Any):
        return original_coords.__func__(height, width, "cpu")

    def sine(*args: Any, **kwargs: Any):
        return original_sine(*args, **{**kwargs, "precompute_resolution": None})

    TransformerDecoder._get_coords = staticmethod(coords)
    torch.Tensor.pin_memory = lambda self, *args, **kwargs: self
    model_builder.PositionEmbeddingSine = sine
    try:
        yield
    finally:
        TransformerDecoder._get_coords = original_coords
        torch.Tensor.pin_memory = original_pin
        model_builder.PositionEmbeddingSine = original_sine


def fill_uninitialised(model: torch.nn.Module, seed: int = 0) -> None:
    """Meta's random init (and the DART fork's) leaves the text encoder's positional embedding and projection as
    ``torch.empty`` and the box head's last layer at zero: seeded random values instead, so a random model computes
    finite, varied numbers."""
    generator = torch.Generator().manual_seed(seed + 1)
    text = model.backbone.language_backbone.encoder
    last = model.transformer.decoder.bbox_embed.layers[-1]
    with torch.no_grad():
        for tensor, std in ((text.positional_embedding, 0.01), (text.text_projection, 0.02), (last.weight, 0.02),
                            (last.bias, 0.02)):
            tensor.copy_((torch.randn(tensor.shape, generator=generator) * std).to(tensor.device, tensor.dtype))


def random_meta_model(bpe: str | Path, seed: int = 0, device: str = "cpu") -> torch.nn.Module:
    """A full-size SAM3 image model with random weights, built by the ``sam3`` package on the path (Meta's, or the
    DART research code's fork of it) with its own builder, in eval mode: the weights every peer can read."""
    from sam3.model_builder import build_sam3_image_model

    torch.manual_seed(seed)
    with meta_on_cpu():
        model = build_sam3_image_model(bpe_path=str(bpe), device=device, eval_mode=True, load_from_HF=False,
                                       checkpoint_path=None)
    fill_uninitialised(model, seed)
    return model.eval()


def save_meta_checkpoint(model: torch.nn.Module, path: str | Path) -> Path:
    """``model``'s weights in the layout of Meta's ``sam3.pt`` (``detector.`` keys under ``"model"``, on the CPU),
    written atomically."""
    from dart.io import atomic_path

    state = {f"detector.{key}": value.detach().cpu() for key, value in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"model": state}, tmp)
    return Path(path)


# ------------------------------------------------------------------------------------------------ runners
class Runner:
    """One system: ``image(bgr) -> state`` (once per image) and ``classes(state, names) -> detections kept``."""

    runs_on = ""
    precision = "fp32"  # what the system computes in, as it reports it

    def image(self, bgr: np.ndarray) -> Any:
        raise NotImplementedError

    def classes(self, state: Any, names: list[str]) -> int:
        raise NotImplementedError


def _pil(bgr: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


class DartRunner(Runner):
    def __init__(self, spec: dict[str, Any]):
        from dart.detector import Detector

        common = {"conf": CONF, "text_cache": spec["text_cache"]}
        if spec["backend"] == "torch":
            self.detector = Detector.from_pretrained(spec["checkpoint"], device=spec["device"],
                                                     precision=spec["precision"], imgsz=spec["imgsz"],
                                                     tokenizer=spec.get("tokenizer"), **common)
        else:
            self.detector = Detector.from_engines(engines=spec["engines"], backend=spec["backend"],
                                                  device=spec["device"], checkpoint=spec["checkpoint"],
                                                  tokenizer=spec.get("tokenizer"),
                                                  backend_options={"precision": spec["precision"]}
                                                  if spec["backend"] == "openvino" else None, **common)
        from dart.backends.base import describe_backend

        ran = describe_backend(self.detector.backend)
        self.precision = ran["precision"]
        self.runs_on = f"dart {ran['backend']} {ran['precision']} {ran['device']}"
        self._names: list[str] | None = None

    def image(self, bgr: np.ndarray) -> Any:
        pixels, sizes = self.detector.prepare([bgr])
        return self.detector.run_backbone(pixels), sizes

    def classes(self, state: Any, names: list[str]) -> int:
        features, sizes = state
        if names != self._names:  # from the cache: a dictionary lookup per name
            self.detector.set_classes(names)
            self._names = list(names)
        return len(self.detector.finish(self.detector.run_heads(features, 1, sizes), sizes)[0])


class MetaRunner(Runner):
    def __init__(self, spec: dict[str, Any]):
        self.device = torch.device(spec["device"])
        self.precision = spec["precision"]
        with meta_on_cpu():
            from sam3.model.sam3_image_processor import Sam3Processor
            from sam3.model_builder import build_sam3_image_model

            model = build_sam3_image_model(bpe_path=spec["bpe"], device=self.device.type, eval_mode=True,
                                           checkpoint_path=spec["meta_checkpoint"], load_from_HF=False)
            self.processor = Sam3Processor(model, resolution=spec["imgsz"], device=self.device.type,
                                           confidence_threshold=CONF)
        self.runs_on = f"meta sam3 {self.precision} {self.device}"

    def image(self, bgr: np.ndarray) -> Any:
        with meta_on_cpu(), torch.inference_mode(), _autocast(self.device, self.precision):
            return self.processor.set_image(_pil(bgr))

    def classes(self, state: Any, names: list[str]) -> int:
        kept = 0
        with meta_on_cpu(), torch.inference_mode(), _autocast(self.device, self.precision):
            for name in names:
                state = self.processor.set_text_prompt(prompt=name, state=state)
                kept += len(state["scores"])
        return kept


class TransformersRunner(Runner):
    def __init__(self, spec: dict[str, Any]):
        from transformers import Sam3Model, Sam3Processor

        self.device = torch.device(spec["device"])
        self.model = Sam3Model.from_pretrained(spec["hf_folder"]).to(self.device).eval()
        self.processor = Sam3Processor.from_pretrained(spec["hf_folder"])
        self.precision = "fp32"
        self.runs_on = f"transformers fp32 {self.device}"

    def image(self, bgr: np.ndarray) -> Any:
        inputs = self.processor(images=_pil(bgr), return_tensors="pt").to(self.device)
        with torch.inference_mode():
            return self.model.get_vision_features(pixel_values=inputs.pixel_values), inputs.get("original_sizes")

    def classes(self, state: Any, names: list[str]) -> int:
        vision_embeds, sizes = state
        kept = 0
        with torch.inference_mode():
            for name in names:
                text = self.processor(text=name, return_tensors="pt").to(self.device)
                outputs = self.model(vision_embeds=vision_embeds, input_ids=text.input_ids,
                                     attention_mask=text.attention_mask)
                results = self.processor.post_process_instance_segmentation(
                    outputs, threshold=CONF, mask_threshold=0.5, target_sizes=sizes.tolist())
                kept += len(results[0]["scores"])
        return kept


class ResearchRunner(Runner):
    """The DART research predictor; its ``sam3`` package (a fork of Meta's) comes first on the child's path."""

    def __init__(self, spec: dict[str, Any]):
        self.device = torch.device(spec["device"])
        with meta_on_cpu():
            from sam3.model.sam3_multiclass_fast import Sam3MultiClassPredictorFast
            from sam3.model_builder import build_sam3_image_model

            model = build_sam3_image_model(bpe_path=spec["bpe"], device=self.device.type, eval_mode=True,
                                           checkpoint_path=spec["meta_checkpoint"], load_from_HF=False)
            self.predictor = Sam3MultiClassPredictorFast(model, resolution=spec["imgsz"], device=self.device.type,
                                                         use_fp16=spec["precision"] == "fp16", detection_only=True)
        self.precision = spec["precision"]
        self.runs_on = f"DART research {self.precision} {self.device}"
        self._names: list[str] | None = None

    def image(self, bgr: np.ndarray) -> Any:
        with meta_on_cpu(), torch.inference_mode():
            return self.predictor.set_image(_pil(bgr))

    def classes(self, state: Any, names: list[str]) -> int:
        with meta_on_cpu(), torch.inference_mode():
            if names != self._names:  # its text embeddings are computed once per class list, as dart's
                self.predictor.set_classes(names)
                self._names = list(names)
            return len(self.predictor.predict(state, confidence_threshold=CONF)["scores"])


RUNNERS: dict[str, Callable[[dict[str, Any]], Runner]] = {
    "dart": DartRunner, "meta": MetaRunner, "transformers": TransformersRunner, "research": ResearchRunner,
}


# ----------------------------------------------------------------------------------------- one system
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    _sync(device)
    start = time.perf_counter()
    value = fn()
    _sync(device)
    return time.perf_counter() - start, value


def _status_mb(field: str) -> float | None:
    """One memory field of ``/proc/self/status`` (Linux) in MB, or None where there is no such file."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB: Linux's ``VmHWM`` (the high-water mark of this process's
    own memory; ``ru_maxrss`` would also count the parent's, which Linux carries over an ``exec``), else
    ``ru_maxrss`` (KiB on Linux, bytes on macOS)."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def current_rss_mb() -> float:
    """This process's resident memory now, in MB (``VmRSS``: the same counters as :func:`peak_rss_mb`)."""
    rss = _status_mb("VmRSS")
    return float("nan") if rss is None else rss


def measure_system(spec: dict[str, Any], log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Load one system and time it; ``spec`` is what :func:`run_peers` writes for a child (also usable in-process).
    Every class count is timed ``runs`` times (``runs_large`` above 16 classes) after ``warmup`` untimed calls at
    each class-chunk shape the counts meet (``min(count, MAX_CLASSES_PER_BATCH)`` classes: a shape's first call can pay for setting it
    up, e.g. OpenVINO compiling the encoder-decoder for it), so no timed call includes a system's set-up."""
    from dart import allocator
    from dart.backends.base import set_threads
    from dart.bench.class_scaling import bench_image, class_names
    from dart.detector import MAX_CLASSES_PER_BATCH

    threads = set_threads(spec.get("threads"))
    device = torch.device("cuda" if spec["device"] == "auto" and torch.cuda.is_available()
                          else "cpu" if spec["device"] == "auto" else spec["device"])
    spec = {**spec, "device": str(device)}
    image = bench_image(spec.get("image"))
    counts = list(spec["counts"])
    start = time.perf_counter()
    runner = RUNNERS[SYSTEMS[spec["system"]]["family"]]({**SYSTEMS[spec["system"]], **spec})
    load_s = time.perf_counter() - start
    row: dict[str, Any] = {"system": spec["system"], "family": SYSTEMS[spec["system"]]["family"],
                           "runs_on": runner.runs_on, "precision": runner.precision, "threads": threads, "load_s": round(load_s, 2),
                           "rss_after_load_mb": current_rss_mb(), "cpu_allocator": allocator.describe()}
    log(f"loaded in {load_s:.1f} s ({runner.runs_on})")
    for _ in range(spec["warmup"]):
        warm = runner.image(image)
        for shape in sorted({min(count, MAX_CLASSES_PER_BATCH) for count in counts}):
            runner.classes(warm, class_names(shape))
    image_times, state = [], None
    for _ in range(spec["runs"]):
        seconds, state = _timed(lambda: runner.image(image), device)
        image_times.append(seconds)
    row["image_s"] = statistics.median(image_times)
    log(f"image part {row['image_s']:.2f} s")
    row["class_s"], row["detections"], row["class_runs"] = {}, {}, {}
    for count in counts:
        names = class_names(count)
        runs = spec["runs"] if count <= MAX_CLASSES_PER_BATCH else spec["runs_large"]
        times = []
        for _ in range(runs):
            seconds, kept = _timed(lambda: runner.classes(state, names), device)
            times.append(seconds)
        row["class_s"][str(count)] = statistics.median(times)
        row["detections"][str(count)] = kept
        row["class_runs"][str(count)] = runs
        log(f"{count} classes: class part {row['class_s'][str(count)]:.2f} s")
    row["per_image_s"] = {k: row["image_s"] + v for k, v in row["class_s"].items()}
    # Linux updates the high-water mark lazily (per-thread counters folded in later), so a sample taken earlier can
    # read a fraction of a MB above it: the peak is at least every sample.
    row["peak_rss_mb"] = max(peak_rss_mb(), row["rss_after_load_mb"])
    if device.type == "cuda":
        row["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return row


def _child_main(spec_path: str, result_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    with contextlib.redirect_stdout(sys.stderr):  # peers print as they load; the result goes to a file
        row = measure_system(spec, log=lambda line: print(f"[{spec['system']}] {line}", file=sys.stderr, flush=True))
    Path(result_path).write_text(json.dumps(row))


# --------------------------------------------------------------------------------------------- the run
def prepare_weights(checkpoint: str | Path, work: Path, names: Sequence[str],
                    tokenizer: str | Path | None = None, *, transformers: bool = True) -> dict[str, Any]:
    """From Meta's ``sam3.pt`` (or a folder holding one): the paths each system reads, made before any system is
    timed. dart's systems share a text cache of ``names`` (dart encodes a vocabulary once; DART does too);
    transformers gets the same weights converted by dart's key map and saved with ``save_pretrained`` (with a
    processor), unless the folder already holds a transformers checkpoint or ``transformers`` is false (no
    transformers system runs)."""
    from dart.detector import Detector
    from dart.models.loading import _load_local
    from dart.models.tokenizer import bpe_tokenizer, installed_bpe_vocab

    path = Path(checkpoint).expanduser()
    meta = path / "sam3.pt" if path.is_dir() else path
    if not meta.is_file():
        raise InputError(f"'{checkpoint}' is not Meta's sam3.pt (nor a folder holding one): every peer reads that "
                         "file (e.g. from the facebook/sam3 hub repo).")
    bpe = Path(tokenizer) if tokenizer else installed_bpe_vocab()
    if bpe is None or not bpe.is_file():
        raise InputError("the peers need CLIP's BPE vocabulary (bpe_simple_vocab_16e6.txt.gz): give --tokenizer FILE "
                         "or `pip install open-clip-torch`.")
    from dart.models.loading import _config_beside, _quiet_transformers, load_sam3

    _quiet_transformers()
    imgsz = int(_config_beside(meta).vision_config.backbone_config.image_size)  # the checkpoint's own size
    hf = path if path.is_dir() and (path / "config.json").is_file() and any(path.glob("*.safetensors")) else None
    if hf is None and transformers:
        from transformers import Sam3ImageProcessor, Sam3Processor

        hf = work / "transformers"
        model, _, _ = _load_local(meta)  # as transformers has it (no follow_meta)
        model.save_pretrained(hf)
        del model
        Sam3Processor(image_processor=Sam3ImageProcessor(size={"height": imgsz, "width": imgsz}),
                      tokenizer=bpe_tokenizer(bpe)).save_pretrained(hf)
    cache = work / "text.safetensors"
    detector = Detector.from_loaded(load_sam3(meta, imgsz=imgsz, tokenizer=bpe), device="cpu", precision="fp32",
                                    text_cache=cache)
    detector.set_classes(list(names))
    detector.text_cache.save()
    del detector
    return {"meta_checkpoint": str(meta), "checkpoint": str(meta), "hf_folder": str(hf) if hf else None, "bpe": str(bpe),
            "tokenizer": str(bpe), "imgsz": imgsz, "text_cache": str(cache)}


def run_peers(checkpoint: str | Path, systems: Sequence[str], *, counts: Sequence[int] = (1, 4, 80),
              image: str | Path | None = None, engines: str | Path | None = None,
              research_repo: str | Path | None = None, tokenizer: str | Path | None = None, device: str = "auto",
              threads: int | None = None, warmup: int = 1, runs: int = 2, runs_large: int = 1,
              timeout_s: float | None = None, rounds: int = 1,
              on_line: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run every system in its own child process, one after another; returns the report (see module doc).
    A system that fails gets its error's last line in its row instead of numbers; the others still run.

    ``rounds`` above 1 runs the whole sequence that many times, alternately forwards and backwards (A B C, C B A,
    ...), and gives each system the medians over its rounds (:func:`merge_rounds`): a machine whose speed drifts
    during a long run then weighs on every system alike, not on the ones that ran last."""
    from dart.backends.base import set_threads
    from dart.bench.environment import environment, header

    from dart.bench.class_scaling import class_names

    if rounds < 1:
        raise InputError(f"rounds must be 1 or more, got {rounds}.")
    threads = set_threads(threads)
    measured: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
    with tempfile.TemporaryDirectory(prefix="dart-peers-") as tmp:
        work = Path(tmp)
        on_line("preparing the weights every system reads ...")
        paths = prepare_weights(checkpoint, work, class_names(max(counts)), tokenizer,
                                transformers=any(SYSTEMS[s]["family"] == "transformers" for s in systems))
        for round_index in range(rounds):
            order = list(systems) if round_index % 2 == 0 else list(reversed(systems))
            for name in order:
                spec = {"system": name, **paths, "engines": str(engines) if engines else None,
                        "image": str(image) if image is not None else None,
                        "counts": list(counts), "device": device, "threads": threads, "warmup": warmup,
                        "runs": runs, "runs_large": runs_large}
                on_line(f"{name} ..." if rounds == 1 else f"{name} (round {round_index + 1} of {rounds}) ...")
                measured[name].append(_run_child(spec, work, research_repo, timeout_s, on_line))
    rows = [merge_rounds(measured[name]) for name in systems]
    run_device = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    env = environment(run_device)
    report = {"benchmark": "peers", "environment": env, "header": header(env),
              "settings": {"counts": list(counts), "warmup": warmup, "runs": runs, "runs_large": runs_large,
                           "rounds": rounds,
                           "threads": threads, "conf": CONF, "checkpoint": str(checkpoint),
                           "image": str(image) if image else "synthetic 1280x720 frame", "imgsz": paths["imgsz"]},
              "systems": rows}
    add_speedups(report)
    return report


def merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One system's row from its rounds: the medians of its times (load, image part, class part and seconds per
    image at each count, each taken over the rounds that measured it), its highest peak memory, and each round's
    seconds per image under ``rounds``. Failed rounds are left out and counted in ``failed_rounds``; a system
    that failed every round keeps its first error."""
    import statistics

    ok = [row for row in rounds if "per_image_s" in row]
    if len(rounds) == 1 or not ok:
        return rounds[0]
    row = dict(ok[0])
    for key in ("load_s", "image_s"):
        if all(key in r for r in ok):
            row[key] = statistics.median(r[key] for r in ok)
    for key in ("class_s", "per_image_s"):
        counts = [count for count in ok[0][key] if all(count in r.get(key, {}) for r in ok)]
        row[key] = {count: statistics.median(r[key][count] for r in ok) for count in counts}
    for key in ("peak_rss_mb", "peak_cuda_mb", "rss_after_load_mb"):
        if any(key in r for r in ok):
            row[key] = max(r[key] for r in ok if key in r)
    row["rounds"] = [r["per_image_s"] for r in ok]
    if len(ok) < len(rounds):
        row["failed_rounds"] = len(rounds) - len(ok)
    return row


def _run_child(spec: dict[str, Any], work: Path, research_repo: str | Path | None, timeout_s: float | None,
               on_line: Callable[[str], None], extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    name = spec["system"]
    spec_path, result_path = work / f"{name}.spec.json", work / f"{name}.result.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, **(extra_env or {})}
    if SYSTEMS[name]["family"] == "research":
        env["PYTHONPATH"] = os.pathsep.join([str(Path(research_repo).resolve()), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "dart.bench.peers", str(spec_path), str(result_path)]
    lines: list[str] = []
    try:
        with subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              errors="replace") as child:
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            for line in child.stderr:  # type: ignore[union-attr]
                line = line.rstrip()
                lines.append(line)
                if line.startswith(f"[{name}] "):
                    on_line("  " + line[len(name) + 3:])
                if deadline is not None and time.monotonic() > deadline:
                    child.kill()
                    return {"system": name, "error": f"stopped after {timeout_s:.0f} s (--timeout)"}
            code = child.wait()
    except OSError as exc:
        return {"system": name, "error": f"could not start: {exc}"}
    if code == 0 and result_path.is_file():
        return json.loads(result_path.read_text())
    errors = [line for line in lines if line.strip() and not line.startswith(f"[{name}] ")]
    return {"system": name, "error": errors[-1] if errors else f"exited with code {code}"}


def add_speedups(report: dict[str, Any]) -> None:
    """Per system and class count: ``speedup`` over the fastest peer (not dart) computing in the same precision
    (fp32 against fp32, bf16 against bf16) and ``speedup_any`` over the fastest peer in any precision; above 1 is
    faster. ``best_peer[precision][count]`` names the peers."""
    ok = [row for row in report["systems"] if "per_image_s" in row]
    report["best_peer"] = {}
    for precision in sorted({row.get("precision", "fp32") for row in ok}) + ["any"]:
        for count in map(str, report["settings"]["counts"]):
            peers = [row for row in ok if row["family"] in PEER_FAMILIES and count in row["per_image_s"]
                     and precision in ("any", row.get("precision", "fp32"))]
            if not peers:
                continue
            best = min(peers, key=lambda row: row["per_image_s"][count])
            report["best_peer"].setdefault(precision, {})[count] = best["system"]
            key = "speedup_any" if precision == "any" else "speedup"
            for row in ok:
                if count in row["per_image_s"] and precision in ("any", row.get("precision", "fp32")):
                    row.setdefault(key, {})[count] = best["per_image_s"][count] / row["per_image_s"][count]


def write_report(report: dict[str, Any], output: str | Path, stem: str = "peers") -> tuple[Path, Path]:
    """``<stem>.json`` and ``<stem>.png`` (seconds per image vs classes, one line per system)."""
    from dart.bench.plot import line_plot
    from dart.io import write_json

    output = Path(output)
    json_path, png_path = output / f"{stem}.json", output / f"{stem}.png"
    write_json(json_path, report)
    series = {row["system"]: [(int(k), v) for k, v in row["per_image_s"].items()]
              for row in report["systems"] if "per_image_s" in row}
    line_plot(series, png_path, title="seconds per image vs number of classes (lower is faster)", xlabel="classes",
              ylabel="s / image", subtitle=f"{report['environment']['device']}, {report['settings']['imgsz']} px")
    return json_path, png_path


if __name__ == "__main__":
    _child_main(*sys.argv[1:3])
