"""The PyTorch backend: SAM3's own modules in eager mode, optionally ``torch.compile``-d, in fp32/fp16/bf16."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from contextlib import nullcontext

from dart.allocator import keep_freed_memory
from dart.backends.base import COMPILE_MODES, choose_precision, resolve_device, resolve_precision
from dart.errors import InputError
from dart.models.onednn import onednn_available, use_onednn
from dart.models.sam3 import image_size, text_max_length
from dart.stages import BackboneStage, EncDecStage, TextStage

if TYPE_CHECKING:  # pragma: no cover
    from dart.models.loading import LoadedSam3


PRODUCTS = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.ConvTranspose2d)
CLASS_BUCKETS = (1, 2, 4, 8, 16)  # class counts a compiled encoder-decoder is traced for (beyond: multiples of 16)
STATE_KEYS = ("memory", "queries", "prompt", "prompt_mask")  # return_state's per-(image, class) rows


def class_bucket(count: int) -> int:
    """The class count a compiled encoder-decoder runs for ``count`` classes: the smallest of
    :data:`CLASS_BUCKETS` that holds them, else the next multiple of the largest. So whatever the class list,
    a compiled stage sees at most a handful of shapes and never recompiles after its warm-up."""
    for bucket in CLASS_BUCKETS:
        if count <= bucket:
            return bucket
    step = CLASS_BUCKETS[-1]
    return -(-count // step) * step


def pad_classes(text: torch.Tensor, text_mask: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``text [C, T, D]`` and its mask padded to ``count`` classes by repeating the first class: the added rows
    are real prompts (no all-masked attention), and every (image, class) row of the encoder-decoder is computed
    independently of the others, so the first ``C`` outputs are unchanged."""
    extra = count - text.shape[0]
    if extra <= 0:
        return text, text_mask
    return (torch.cat([text, text[:1].expand(extra, -1, -1)]),
            torch.cat([text_mask, text_mask[:1].expand(extra, -1)]))


def unpad_classes(out: dict[str, torch.Tensor], batch: int, count: int) -> dict[str, torch.Tensor]:
    """The first ``count`` classes of an encoder-decoder output computed for more (see :func:`pad_classes`)."""
    kept = {}
    for key, value in out.items():
        if key in STATE_KEYS:  # rows b * C_padded + c
            value = value.unflatten(0, (batch, -1))[:, :count].flatten(0, 1)
        else:  # [B, C_padded, ...]
            value = value[:, :count]
        kept[key] = value
    return kept


def _cast(stage: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """``stage`` on ``device`` with the weights of its matrix products and convolutions (nearly all of its
    parameters) in ``dtype`` and everything else (norms, position embeddings, tokens, buffers) in fp32: under
    autocast the products run in ``dtype`` while whatever is added to the residual stream keeps it fp32."""
    stage = stage.to(device, torch.float32)
    if dtype != torch.float32:
        for module in stage.modules():
            if isinstance(module, PRODUCTS):
                module.to(dtype)
    return stage


def check_unshared(loaded: LoadedSam3, device: torch.device, dtype: torch.dtype) -> None:
    """Claim ``loaded`` for a backend on ``device`` in ``dtype``, or raise :class:`InputError` where that would
    give wrong numbers: the backend prepares the modules in place (moved, products narrowed by :func:`_cast`), so
    another backend already on the same modules with another device or precision would be changed under it, and a
    deep copy of weights already narrowed would compute fp32 on rounded values."""
    wanted = (str(device), str(dtype).removeprefix("torch."))
    if loaded.prepared_for is not None:
        model_id, *claimed = loaded.prepared_for
        shared = model_id == id(loaded.model)
        if shared and tuple(claimed) != wanted:
            raise InputError(
                f"this loaded SAM3 model already runs in a backend as {claimed[1]} on {claimed[0]}, which shares its "
                f"modules and changes them in place; for {wanted[1]} on {wanted[0]} too, load it again or "
                "copy.deepcopy() it before building the first backend.")
        if not shared and claimed[1] != "float32" and wanted[1] != claimed[1]:
            raise InputError(
                f"this copy of a SAM3 model was taken after a backend rounded its weights to {claimed[1]}; for "
                f"{wanted[1]}, load it again or copy.deepcopy() it before building the first backend.")
    loaded.prepared_for = (id(loaded.model), *wanted)


class TorchBackend:
    name = "torch"
    supports_masks = True
    takes_exemplar_boxes = True  # the geometry encoder runs here, so boxes may be on the detected image
    has_text_encoder = True
    max_classes: int | None = None

    def __init__(self, loaded: LoadedSam3, *, device: str | torch.device = "auto", precision: str = "fp32",
                 compile: str | None = None, backbone: torch.nn.Module | None = None, prompt_mode: str = "meta",
                 class_buckets: bool | None = None):
        """``backbone``: a module that replaces SAM3's ViT + FPN (a student from :mod:`dart.students`); it must
        map ``pixel_values`` to the same three FPN levels as :class:`BackboneStage`.

        ``class_buckets``: run the encoder-decoder for a class count of :func:`class_bucket` (the text padded,
        the outputs cut back); default: on when compiled, so a compiled stage is traced for fixed shapes (CUDA
        graphs under ``reduce-overhead``) and a new class list never recompiles it."""
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            keep_freed_memory()  # freed activations reused from the heap, not mapped afresh (dart.allocator)
        self.precision, self.precision_reason = choose_precision(precision, self.device)
        self.dtype = resolve_precision(self.precision, self.device)
        check_unshared(loaded, self.device, self.dtype)
        self.loaded = loaded
        self.fingerprint = loaded.fingerprint
        model = loaded.model
        self.imgsz = image_size(model)
        self.text_length = text_max_length(model)
        self._tokenizer = None
        self.text_stage = TextStage(model).to(self.device).eval()  # text stays fp32: it runs once per class list
        stage = backbone if backbone is not None else loaded.backbone_stage()
        if isinstance(stage, BackboneStage):
            # measured faster on a CPU, the same numbers (BENCHMARKS.md); eager only: compiled, the stage runs
            # transformers' layers (stages.py). The CUDA path keeps them until it is measured there
            stage.complex_rope = self.device.type == "cpu"
        self.backbone_name = getattr(stage, "dart_backbone_name", "sam3")
        self.backbone_stage = _cast(stage, self.device, self.dtype).eval()
        self.encdec_stage = _cast(EncDecStage(model, self.imgsz, prompt_mode), self.device, self.dtype).eval()
        self.encdec_stage.geometry_encoder.float()  # exemplar boxes run it in fp32 (stages.py); autocast does the rest
        if self.device.type == "cpu" and self.dtype == torch.bfloat16 and onednn_available():
            # linear layers as one oneDNN call each, bias and ReLU inside: the same numbers, measured faster
            # (dart.models.onednn, BENCHMARKS.md); compiled or exported, they fall back to F.linear themselves
            use_onednn(self.backbone_stage)
            use_onednn(self.encdec_stage)
        self.prompt_mode = prompt_mode
        self.compile_mode = compile
        self._backbone = self.backbone_stage
        self._encdec = self.encdec_stage
        self.class_buckets = compile is not None if class_buckets is None else bool(class_buckets)
        # CUDA graphs (reduce-overhead) hand back outputs that their next replay overwrites: the detector keeps
        # several (class chunks, the video pipeline's frames), so under them every output is copied out
        self._copy_outputs = compile == "reduce-overhead"
        if compile is not None:
            if compile not in COMPILE_MODES:
                raise InputError(f"unknown compile mode '{compile}': use {', '.join(COMPILE_MODES)}.")
            from dart import noise

            noise.quiet_compiler()
            self._backbone = torch.compile(self.backbone_stage, mode=compile)
            self._encdec = torch.compile(self.encdec_stage, mode=compile, dynamic=not self.class_buckets)

    def _reduced(self):
        """In bf16/fp16 the stages run under autocast on fp32 inputs (pixels, text features), with only the weights
        of matrix products and convolutions cast (:func:`_cast`): those run in the narrow format, while the
        residual stream, LayerNorm and the scores stay fp32. Measured on SAM3's weights this is much closer to fp32
        than casting everything (BENCHMARKS.md, "bf16 on a CPU")."""
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @torch.inference_mode()
    def backbone(self, pixel_values: torch.Tensor, masks: bool = True) -> tuple[torch.Tensor | None, ...]:
        """FPN features ``(4x, 2x, 1x)``; ``masks=False``: ``(None, None, 1x)``, all detection needs (a student
        backbone computes every level either way)."""
        pixel_values = pixel_values.to(self.device, torch.float32)
        with self._reduced():
            if masks or not isinstance(self.backbone_stage, BackboneStage):
                features = self._backbone(pixel_values)
            else:
                features = self._backbone(pixel_values, masks=False)
        if self._copy_outputs:
            return tuple(None if f is None else f.clone() for f in features)
        return features

    @torch.inference_mode()
    def encdec(self, features: tuple[torch.Tensor, ...], text: torch.Tensor, text_mask: torch.Tensor,
               return_state: bool = False, **geometry: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """``geometry``: exemplar ``boxes``/``box_labels`` or fixed prompt ``tokens``/``tokens_mask``
        (:meth:`dart.stages.EncDecStage.prompt_geometry`)."""
        text = text.to(self.device, torch.float32)
        text_mask = text_mask.to(self.device)
        extra = {k: v.to(self.device) for k, v in geometry.items() if v is not None}
        if extra:  # exemplar shapes vary: eager, not compiled
            with self._reduced():
                return self.encdec_stage(*features, text, text_mask, return_state=return_state, **extra)
        classes, batch = text.shape[0], features[-1].shape[0]
        if self.class_buckets:
            text, text_mask = pad_classes(text, text_mask, class_bucket(classes))
        with self._reduced():
            out = self._encdec(*features, text, text_mask, return_state=return_state)
        if text.shape[0] != classes:
            out = unpad_classes(out, batch, classes)
        return {k: v.clone() for k, v in out.items()} if self._copy_outputs else out

    @torch.inference_mode()
    def exemplar_tokens(self, features: tuple[torch.Tensor, ...], boxes: torch.Tensor, labels: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompt tokens of exemplar ``boxes [K, 4]`` (normalised cx, cy, w, h) with ``labels [K]`` on the image
        whose ``features`` are given (one image): ``(tokens [G, D] float32 cpu, mask [G] bool cpu)``, what the
        geometry encoder gives that image for those boxes."""
        with self._reduced():
            return self.encdec_stage.reference_tokens(features[-1], boxes, labels)

    @torch.inference_mode()
    def masks(self, features: tuple[torch.Tensor, ...], state: dict[str, torch.Tensor], text: torch.Tensor,
              text_mask: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        text = text.to(self.device, torch.float32)
        with self._reduced():
            return self.encdec_stage.masks(features, state, text, text_mask.to(self.device), pairs.to(self.device))

    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = self.loaded.tokenizer()
        return self._tokenizer

    def tokenize(self, names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        from dart.models.tokenizer import tokenize

        return tokenize(self.tokenizer(), names, self.text_length)

    @torch.inference_mode()
    def encode_text(self, names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        input_ids, attention_mask = self.tokenize(names)
        features = self.text_stage(input_ids.to(self.device), attention_mask.to(self.device))
        return features.float().cpu(), attention_mask.bool()
