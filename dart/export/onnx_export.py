"""Export dart's two stages to ONNX: ``backbone.onnx`` and ``encdec.onnx``.

- Backbone: ``pixel_values [1, 3, S, S]`` -> ``fpn_4x, fpn_2x, fpn_1x`` (at 1008 px: 288², 144², 72², 256 channels),
  optionally pruned (blocks removed from the graph, or attention/MLP branches skipped).
- Encoder-decoder: ``fpn_1x [1, D, s, s]`` (plus ``fpn_4x``, ``fpn_2x`` with masks), ``text [C, 32, D]`` and
  ``text_mask [C, 32]`` (int32, 1 = token) -> ``logits [C, Q]``, ``boxes [C, Q, 4]`` (normalised xyxy),
  ``presence [C, 1]`` and, with masks, ``masks [C, Q, 4s, 4s]`` mask logits. The sine position encoding is a
  constant inside the graph. The class axis is dynamic (1..max) by default. Unless exported with
  ``exemplar_boxes=0`` it also takes ``prompt_tokens [C, G, D]`` and ``prompt_tokens_mask [C, G]`` (int32): the
  prompt tokens of exemplar classes computed on a reference image (:mod:`dart.prompts`), all-zero mask for text
  classes; ``G`` (boxes + 1) is fixed, so only the class axis is dynamic.

Attention is exported in eager form by default: an explicit ``softmax(Q·Kᵀ·scale)`` (transformers' "eager"
implementation), with SAM3's real-valued (cos/sin) 2-D RoPE; ``attn="sdpa"`` exports the fused-op form instead.
Graphs are simplified with onnxslim, carry :class:`~dart.export.metadata.StageMetadata`, are written atomically
(external data when over 2 GB) and verify themselves with onnxruntime against PyTorch.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from dart import __version__
from dart.errors import DependencyError, InputError
from dart.export.metadata import (
    ENCDEC_OUTPUTS,
    FPN_NAMES,
    MASK_OUTPUT,
    TOKEN_INPUTS,
    StageMetadata,
    check_attention_form,
    write_onnx_metadata,
)
from dart.export.verify import DEFAULT_MIN_COSINE, Agreement, check, compare_outputs
from dart.prompts import DEFAULT_EXEMPLAR_BOXES, check_prompt_mode
from dart.models.sam3 import image_size, set_image_size, text_max_length, validate_imgsz
from dart.pruning import PruneSpec, apply_pruning
from dart.stages import BackboneStage, EncDecStage

if TYPE_CHECKING:  # pragma: no cover
    from dart.models.loading import LoadedSam3

DEFAULT_OPSET = 17
EXTERNAL_DATA_LIMIT = 1_800_000_000  # protobuf refuses files of 2 GiB; keep a margin for the graph itself
VERIFY_CLASSES = ("person", "car", "dog", "bicycle", "bus", "cat", "truck", "bird")
# A dynamic class axis is traced and checked with at most this many classes: the graph is the same for any count,
# and the eager encoder's attention holds about 1.9 GB per class at 1008 px (4 classes: 13.5 GB peak, 16: killed at
# 24 GB), so tracing at --max-classes made the export's memory grow with a number the graph does not depend on.
TRACE_CLASSES = 2
# What exporting the encoder-decoder holds at its peak, fitted to the same measurements (full-size SAM3 at 1008 px:
# 9.8 GB traced at 2 classes, 13.5 GB at 4): about 1.8x the model's fp32 weights (the model, the features, onnx's
# copy of the graph) plus, per traced class, about 2.2 fp32 score matrices of the DETR encoder's self-attention.
EXPORT_WEIGHTS_FACTOR = 1.8
EXPORT_SCORE_MATRICES = 2.2


def encdec_export_bytes(model: nn.Module, classes: int) -> int:
    """About how much memory :func:`export_encdec` needs to trace and check ``model`` at ``classes`` classes."""
    weights = 4 * sum(p.numel() for p in model.parameters())
    patch = int(model.config.vision_config.backbone_config.patch_size)
    tokens = (image_size(model) // patch) ** 2
    heads = int(model.config.detr_encoder_config.num_attention_heads)
    return int(EXPORT_WEIGHTS_FACTOR * weights + EXPORT_SCORE_MATRICES * classes * heads * tokens**2 * 4)


def traced_classes(max_classes: int, dynamic_classes: bool) -> int:
    """How many classes the encoder-decoder export traces: a static axis is ``max_classes`` wide."""
    return min(max_classes, TRACE_CLASSES) if dynamic_classes else max_classes


def available_memory_bytes() -> int | None:
    """The memory the system could give this process now (Linux's ``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None

Progress = Callable[[str], None]


@dataclass
class ExportResult:
    path: Path
    metadata: StageMetadata
    nodes: int
    size_bytes: int
    external_data: bool
    simplified: bool
    agreement: list[Agreement] = field(default_factory=list)  # per output, worst over the verified class counts
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------- wrappers
class EncDecExport(nn.Module):
    """:class:`EncDecStage` for one image, with the I/O of ``encdec.onnx`` (batch axis dropped)."""

    def __init__(self, stage: EncDecStage, masks: bool, tokens: bool = False):
        super().__init__()
        self.stage = stage
        self.with_masks = masks
        self.with_tokens = tokens

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        geometry: dict[str, torch.Tensor] = {}
        if self.with_tokens:
            *inputs, tokens, tokens_mask = inputs
            geometry = {"tokens": tokens, "tokens_mask": tokens_mask != 0}
        if self.with_masks:
            fpn_4x, fpn_2x, fpn_1x, text, text_mask = inputs
        else:
            fpn_1x, text, text_mask = inputs
            fpn_4x = fpn_2x = fpn_1x  # unused without masks
        mask = text_mask != 0
        out = self.stage(fpn_4x, fpn_2x, fpn_1x, text, mask, return_state=self.with_masks, **geometry)
        logits, boxes, presence = out["logits"][0], out["boxes"][0], out["presence"][0][:, None]
        if not self.with_masks:
            return logits, boxes, presence
        classes = text.shape[0]
        pred = self.stage.mask_decoder(
            decoder_queries=out["queries"],
            backbone_features=[f.expand(classes, -1, -1, -1) for f in (fpn_4x, fpn_2x, fpn_1x)],
            encoder_hidden_states=out["memory"],
            prompt_features=out["prompt"],
            prompt_mask=out["prompt_mask"],
        ).pred_masks
        return logits, boxes, presence, pred


def encdec_input_names(masks: bool, tokens: bool = False) -> list[str]:
    return [*(FPN_NAMES if masks else FPN_NAMES[-1:]), "text", "text_mask", *(TOKEN_INPUTS if tokens else ())]


def sample_prompt_tokens(stage: EncDecStage, fpn_1x: torch.Tensor, count: int, width: int
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt tokens ``[count, width, D]`` + int32 mask for verifying an export: the first class gets the real
    tokens of two exemplar boxes (a positive and a negative) on this image, the others none (text classes)."""
    boxes = torch.tensor([[[[0.35, 0.4, 0.3, 0.4], [0.75, 0.7, 0.2, 0.25]]]])
    labels = torch.tensor([[[1, 0]]])
    with torch.inference_mode():
        geometry = stage.prompt_geometry(fpn_1x, 1, boxes, labels)
    assert geometry is not None
    found, found_mask = geometry[0][0][:width], geometry[1][0][:width]
    tokens = torch.zeros(count, width, found.shape[-1])
    mask = torch.zeros(count, width, dtype=torch.int32)
    tokens[0, :len(found)], mask[0, :len(found_mask)] = found, found_mask.to(torch.int32)
    return tokens, mask


def encdec_output_names(masks: bool) -> list[str]:
    return [*ENCDEC_OUTPUTS, *([MASK_OUTPUT] if masks else [])]


# -------------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def attention_form(model: nn.Module, form: str) -> Iterator[None]:
    """Switch every transformers attention of ``model`` to ``form`` ("eager" or "sdpa"), restoring it after."""
    check_attention_form(form)
    previous = getattr(model.config, "_attn_implementation", None) or "sdpa"
    model.set_attn_implementation(form)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def prepare_model(loaded: LoadedSam3, imgsz: int | None = None, prune: PruneSpec | None = None) -> PruneSpec:
    """Set the image size and apply ``prune`` (unless the model already carries that pruning); return the spec
    the model now has."""
    model = loaded.model
    if imgsz is not None:
        validate_imgsz(imgsz)
        if image_size(model) != imgsz:
            set_image_size(model, imgsz)
    current: PruneSpec = getattr(model, "dart_prune_spec", PruneSpec())
    if prune and prune != current:
        apply_pruning(model, prune)  # refuses a model that is already pruned differently
        current = prune
    return current


def full_block_count(model: nn.Module) -> int:
    spec: PruneSpec = getattr(model, "dart_prune_spec", PruneSpec())
    return len(model.vision_encoder.backbone.layers) + len(spec.skip_blocks)


def sample_pixels(imgsz: int, image: str | Path | np.ndarray | None = None) -> torch.Tensor:
    """``pixel_values [1, 3, S, S]`` of ``image``, or of a synthetic test picture (shapes, edges, gradients)."""
    import cv2

    from dart.preprocess import preprocess, to_rgb

    if image is None:
        rng = np.random.default_rng(0)
        size = 480
        yy, xx = np.mgrid[0:size, 0:size]
        img = np.stack([xx * 255 // size, yy * 255 // size, (xx + yy) * 127 // size], -1).astype(np.uint8)
        img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
        cv2.rectangle(img, (60, 80), (220, 300), (20, 20, 230), -1)
        cv2.circle(img, (340, 320), 90, (240, 200, 10), -1)
        cv2.line(img, (0, 450), (479, 380), (255, 255, 255), 6)
        image = img
    return preprocess([to_rgb(image)], imgsz)


def sample_text(loaded: LoadedSam3, count: int, hidden: int, length: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Text features for ``count`` real class names (random features if no tokenizer can be found)."""
    from dart.errors import CheckpointError
    from dart.models.tokenizer import tokenize
    from dart.stages import TextStage

    names = [VERIFY_CLASSES[i % len(VERIFY_CLASSES)] for i in range(count)]
    try:
        input_ids, attention_mask = tokenize(loaded.tokenizer(), names, length)
    except CheckpointError:
        gen = torch.Generator().manual_seed(0)
        mask = torch.zeros(count, length, dtype=torch.int32)
        mask[:, :4] = 1
        return torch.randn(count, length, hidden, generator=gen), mask, "random text features (no tokenizer found)"
    with torch.inference_mode():
        text = TextStage(loaded.model).eval()(input_ids, attention_mask)
    return text.float(), attention_mask.to(torch.int32), f"text of {', '.join(names)}"


def _onnx_modules():
    try:
        import onnx
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise DependencyError(
            f"exporting needs onnx and onnxruntime ({exc.name} is missing); install them with "
            "`pip install 'dart-detect[onnx]'`."
        ) from exc
    return onnx


def _tensor_bytes(model: Any) -> int:
    total = 0
    for init in model.graph.initializer:
        if init.raw_data:
            total += len(init.raw_data)
        else:
            total += 4 * max(len(init.float_data), len(init.int32_data), len(init.int64_data) * 2)
    return total


@contextlib.contextmanager
def staged_onnx(model: Any, path: Path) -> Iterator[tuple[Path, bool]]:
    """Write ``model`` into a temporary folder beside ``path`` and yield ``(staged file, external data used)``;
    it replaces ``path`` only if the block succeeds (a failed check leaves an earlier file untouched). Weights go
    to ``<name>.data`` beside the file when it would pass protobuf's 2 GB limit."""
    import onnx

    from dart.io import commit, default_mode, staging_folder

    data_name = path.name + ".data"
    external = _tensor_bytes(model) > EXTERNAL_DATA_LIMIT
    with staging_folder(path) as tmp_dir:
        tmp_file = tmp_dir / path.name
        if external:
            onnx.save_model(model, str(tmp_file), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
        else:
            onnx.save_model(model, str(tmp_file))
        yield tmp_file, external
        for staged in tmp_dir.iterdir():
            os.chmod(staged, default_mode())  # onnx writes external data private; give it a normal file's mode
        if external:
            commit(tmp_dir / data_name, path.parent / data_name)
        commit(tmp_file, path)
        if not external and (path.parent / data_name).exists():
            (path.parent / data_name).unlink()  # a stale weights file of an earlier, larger export


def save_onnx(model: Any, path: Path) -> bool:
    """Write ``model`` to ``path`` atomically (external data when needed); returns whether it used external data."""
    with staged_onnx(model, path) as (_, external):
        pass
    return external


@contextlib.contextmanager
def _export_graph(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, *, input_names: Sequence[str],
                  output_names: Sequence[str], dynamic_axes: dict[str, dict[int, str]], opset: int, simplify: bool,
                  metadata: StageMetadata, progress: Progress) -> Iterator[tuple[Path, ExportResult]]:
    """Trace, simplify and stage the graph; yields the staged file to verify, installed at ``path`` on success."""
    onnx = _onnx_modules()
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dart-export-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        progress("tracing the PyTorch graph")
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, args, str(raw), input_names=list(input_names), output_names=list(output_names),
                dynamic_axes=dynamic_axes or None, opset_version=opset, do_constant_folding=True, dynamo=False,
            )
        simplified = False
        model = None
        if simplify:
            progress("simplifying with onnxslim")
            try:
                import onnxslim

                model = onnxslim.slim(str(raw))
                simplified = model is not None
            except ImportError:
                notes.append("onnxslim is not installed, so the graph was not simplified")
            except Exception as exc:  # noqa: BLE001 - a simplifier failure must not lose the export
                notes.append(f"onnxslim failed ({type(exc).__name__}: {exc}); the graph was kept unsimplified")
        if model is None:
            model = onnx.load(str(raw))
        write_onnx_metadata(model, metadata)
    with staged_onnx(model, path) as (staged, external):
        size = sum(f.stat().st_size for f in staged.parent.iterdir())
        result = ExportResult(path, metadata, len(model.graph.node), size, external, simplified, notes=notes)
        yield staged, result
        progress(f"wrote {path}")


def _ort_session(path: Path, providers: Sequence[str] | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]))


def _worst(rows_per_run: list[list[Agreement]]) -> list[Agreement]:
    """Per output, the row with the lowest cosine over several verification runs."""
    worst: dict[str, Agreement] = {}
    for rows in rows_per_run:
        for r in rows:
            if r.name not in worst or not r.cosine > worst[r.name].cosine:
                worst[r.name] = r
    return list(worst.values())


def _noop(_: str) -> None:
    pass


# -------------------------------------------------------------------------------------------- exports
def export_backbone(
    loaded: LoadedSam3,
    output: str | Path,
    *,
    imgsz: int | None = None,
    prune: PruneSpec | None = None,
    attn: str = "eager",
    opset: int = DEFAULT_OPSET,
    simplify: bool = True,
    verify: bool = True,
    image: str | Path | np.ndarray | None = None,
    min_cosine: float = DEFAULT_MIN_COSINE,
    backbone_name: str = "sam3",
    module: nn.Module | None = None,
    progress: Progress = _noop,
) -> ExportResult:
    """Export the backbone (ViT + FPN, optionally pruned) of ``loaded`` to ``output``.

    ``module`` replaces SAM3's ViT with another backbone producing the same three FPN levels (a student);
    ``backbone_name`` is then recorded in the metadata.
    """
    output = Path(output)
    if module is None and loaded.backbone is not None:  # the checkpoint's own backbone (EfficientSAM3)
        module, backbone_name = loaded.backbone, loaded.backbone.dart_backbone_name
    spec = prepare_model(loaded, imgsz, prune)
    model = loaded.model
    size = image_size(model)
    meta = StageMetadata(
        stage="backbone", imgsz=size, fingerprint=loaded.fingerprint, dart_version=__version__, backbone=backbone_name,
        prune=spec.to_dict(), num_blocks=full_block_count(model), attn=attn, text_length=text_max_length(model),
        hidden_size=int(model.config.vision_config.fpn_hidden_size), checkpoint=str(loaded.source), opset=opset,
    )
    pixels = sample_pixels(size, image)
    with attention_form(model, attn):
        stage = (module or BackboneStage(model)).eval()
        with _export_graph(
            stage, (pixels,), output, input_names=["pixel_values"], output_names=list(FPN_NAMES), dynamic_axes={},
            opset=opset, simplify=simplify, metadata=meta, progress=progress,
        ) as (staged, result):
            if verify:
                progress("verifying with onnxruntime")
                with torch.inference_mode():
                    reference = dict(zip(FPN_NAMES, stage(pixels)))
                got = _ort_session(staged).run(None, {"pixel_values": pixels.numpy()})
                result.agreement = compare_outputs(reference, dict(zip(FPN_NAMES, got)))
                check(result.agreement, min_cosine, f"backbone export {output}")
    return result


def export_encdec(
    loaded: LoadedSam3,
    output: str | Path,
    *,
    imgsz: int | None = None,
    max_classes: int = 4,
    dynamic_classes: bool = True,
    masks: bool = False,
    attn: str = "eager",
    prompt_mode: str = "meta",
    opset: int = DEFAULT_OPSET,
    simplify: bool = True,
    verify: bool = True,
    image: str | Path | np.ndarray | None = None,
    min_cosine: float = DEFAULT_MIN_COSINE,
    exemplar_boxes: int = DEFAULT_EXEMPLAR_BOXES,
    progress: Progress = _noop,
) -> ExportResult:
    """Export the encoder-decoder (+ box head, scoring, presence; mask decoder with ``masks``) to ``output``;
    ``exemplar_boxes`` (0: none) sizes the prompt-token input that exemplar classes use."""
    if max_classes < 1:
        raise InputError(f"max_classes must be at least 1, got {max_classes}.")
    if exemplar_boxes < 0:
        raise InputError(f"exemplar_boxes must be 0 or more, got {exemplar_boxes}.")
    width = exemplar_boxes + 1 if exemplar_boxes else 0
    output = Path(output)
    prepare_model(loaded, imgsz, None)
    model = loaded.model
    size = image_size(model)
    hidden = int(model.config.vision_config.fpn_hidden_size)
    length = text_max_length(model)
    meta = StageMetadata(
        stage="encdec", imgsz=size, fingerprint=loaded.fingerprint, dart_version=__version__, max_classes=max_classes,
        dynamic_classes=dynamic_classes, masks=masks, attn=attn, prompt_mode=check_prompt_mode(prompt_mode),
        text_length=length, hidden_size=hidden, prompt_tokens=width,
        checkpoint=str(loaded.source), opset=opset, num_blocks=full_block_count(model),
    )
    pixels = sample_pixels(size, image)
    with attention_form(model, attn):
        # The encoder-decoder reads the full model's features: verify on the unpruned backbone when possible.
        with torch.inference_mode():
            features = loaded.backbone_stage().eval()(pixels)
        # static: the graph is max_classes wide; dynamic: 1 and 2 classes prove the axis (any count runs the same graph)
        traced = traced_classes(max_classes, dynamic_classes)
        text, text_mask, text_note = sample_text(loaded, traced, hidden, length)
        stage = EncDecStage(model, size, prompt_mode).eval()
        wrapper = EncDecExport(stage, masks, tokens=width > 0).eval()
        inputs = encdec_input_names(masks, tokens=width > 0)
        outputs = encdec_output_names(masks)
        feats = features if masks else features[-1:]
        extra: tuple[torch.Tensor, ...] = ()
        if width:
            extra = sample_prompt_tokens(stage, features[-1], traced, width)
            text_note += ", exemplar tokens for the first class"
        axes: dict[str, dict[int, str]] = {}
        if dynamic_classes:
            axes = {name: {0: "classes"} for name in ("text", "text_mask", *TOKEN_INPUTS[:len(extra)], *outputs)}
        with _export_graph(
            wrapper, (*feats, text, text_mask, *extra), output, input_names=inputs, output_names=outputs,
            dynamic_axes=axes, opset=opset, simplify=simplify, metadata=meta, progress=progress,
        ) as (staged, result):
            if verify:
                progress(f"verifying with onnxruntime ({text_note})")
                session = _ort_session(staged)
                runs = []
                for count in sorted({1, traced}) if dynamic_classes else [traced]:
                    args = (*feats, text[:count], text_mask[:count], *(t[:count] for t in extra))
                    with torch.inference_mode():
                        reference = dict(zip(outputs, wrapper(*args)))
                    got = session.run(None, {n: a.numpy() for n, a in zip(inputs, args)})
                    runs.append(compare_outputs(reference, dict(zip(outputs, got))))
                result.agreement = _worst(runs)
                check(result.agreement, min_cosine, f"encoder-decoder export {output}")
    return result
