"""What the ``onnxruntime`` and ``tensorrt`` backends share: reading and checking stage metadata, one-image
engine calls for batches, class padding for fixed-size engines, masks from the engine's mask output, and an
optional, lazily loaded PyTorch text encoder.

An engine backend has no text encoder of its own. Class names come from a text cache; only when a name is
missing from it is the PyTorch SAM3 model loaded (from ``text_checkpoint``), so a run with a complete text cache
never loads PyTorch weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dart.errors import InputError
from dart.export.metadata import (
    FPN_NAMES,
    MASK_OUTPUT,
    TOKEN_INPUTS,
    StageMetadata,
    check_expected,
    check_pair,
    check_stage,
    read_metadata,
)
from dart.prompts import DEFAULT_EXEMPLAR_BOXES
from dart.pruning import PruneSpec

if TYPE_CHECKING:  # pragma: no cover
    from dart.models.loading import LoadedSam3

ENGINE_SUFFIX = {"onnxruntime": ".onnx", "openvino": ".onnx", "tensorrt": ".engine"}


def find_stage_files(directory: str | Path, kind: str) -> tuple[Path, Path]:
    """``backbone<suffix>`` and ``encdec<suffix>`` in ``directory`` for backend ``kind``."""
    directory = Path(directory)
    suffix = ENGINE_SUFFIX.get(kind)
    if suffix is None:
        raise InputError(f"backend '{kind}' does not run engine files; use onnxruntime, openvino or tensorrt.")
    if not directory.is_dir():
        raise InputError(f"engines folder '{directory}' does not exist.")
    found = []
    for stage in ("backbone", "encdec"):
        path = directory / f"{stage}{suffix}"
        if not path.is_file():
            step = "dart export" if suffix == ".onnx" else "dart build"
            raise InputError(f"'{directory}' has no {path.name}; create it with `{step}` or pass its path explicitly.")
        found.append(path)
    return found[0], found[1]


class EngineBackend:
    """Base of the backends that run exported stages (subclasses implement ``_run_backbone``/``_run_encdec``)."""

    name = "engine"
    has_text_encoder = False

    def __init__(self, backbone: str | Path, encdec: str | Path, *, imgsz: int | None = None,
                 prune: PruneSpec | None = None, fingerprint: str | None = None, prompt_mode: str | None = None,
                 text_checkpoint: str | Path | LoadedSam3 | None = None, tokenizer: str | Path | None = None):
        self.backbone_path, self.encdec_path = Path(backbone), Path(encdec)
        for path in (self.backbone_path, self.encdec_path):
            if not path.is_file():
                raise InputError(f"engine file '{path}' does not exist.")
        self.backbone_meta: StageMetadata = read_metadata(self.backbone_path)
        self.encdec_meta: StageMetadata = read_metadata(self.encdec_path)
        check_stage(self.backbone_meta, "backbone", self.backbone_path)
        check_stage(self.encdec_meta, "encdec", self.encdec_path)
        check_pair(self.backbone_meta, self.encdec_meta)
        for meta, path in ((self.backbone_meta, self.backbone_path), (self.encdec_meta, self.encdec_path)):
            check_expected(meta, path, imgsz=imgsz, prune=prune, fingerprint=fingerprint, prompt_mode=prompt_mode)
        self.imgsz = self.backbone_meta.imgsz
        self.fingerprint = self.backbone_meta.fingerprint
        self.max_classes: int | None = self.encdec_meta.max_classes
        self.dynamic_classes = self.encdec_meta.dynamic_classes
        self.supports_masks = self.encdec_meta.masks
        self.text_length = self.encdec_meta.text_length
        self.prompt_mode = self.encdec_meta.prompt_mode
        self.prompt_tokens = self.encdec_meta.prompt_tokens  # width of the graph's exemplar-token input (0: none)
        self.takes_exemplar_boxes = False  # boxes on the detected image need the geometry encoder: PyTorch only
        self._geometry_stage: Any = None
        self._loaded: Any = None
        self.dtype = torch.float32  # engines take and return float32 tensors (FP16 lives inside)
        self.device = torch.device("cpu")
        self._text_source = text_checkpoint
        self._tokenizer_source = tokenizer
        self._text_stage: Any = None
        self._tokenizer: Any = None
        self.has_text_encoder = text_checkpoint is not None

    @property
    def prune(self) -> PruneSpec:
        return self.backbone_meta.prune_spec

    # ---------------------------------------------------------------------------------- subclass hooks
    def _run_backbone(self, pixel_values: torch.Tensor, masks: bool = True) -> tuple[torch.Tensor | None, ...]:
        """One image's FPN levels; with ``masks=False`` a subclass may leave the mask decoder's levels None."""
        raise NotImplementedError

    def _run_encdec(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------ Backend API
    @torch.inference_mode()
    def backbone(self, pixel_values: torch.Tensor, masks: bool = True) -> tuple[torch.Tensor | None, ...]:
        """Run the backbone engine image by image (engines are built for one image). ``masks=False`` with an
        encoder-decoder exported without masks (whose graph takes the 1x level alone): OpenVINO leaves out the
        levels only the mask decoder reads (None); onnxruntime and TensorRT compute every level their graph has."""
        masks = masks or self.supports_masks  # an encoder-decoder with a mask output takes every level as input
        pixel_values = pixel_values.to(self.device, torch.float32)
        size = tuple(pixel_values.shape[-2:])
        if size != (self.imgsz, self.imgsz):
            raise InputError(f"the backbone engine takes {self.imgsz}x{self.imgsz} images, got {size[0]}x{size[1]}.")
        outs = [self._run_backbone(pixel_values[i:i + 1].contiguous(), masks) for i in range(pixel_values.shape[0])]
        if len(outs) == 1:
            return tuple(outs[0])
        return tuple(None if level[0] is None else torch.cat(level) for level in zip(*outs))

    @torch.inference_mode()
    def encdec(self, features: tuple[torch.Tensor, ...], text: torch.Tensor, text_mask: torch.Tensor,
               return_state: bool = False, **geometry: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """As the PyTorch backend's; of the exemplar inputs, engines take prompt ``tokens``/``tokens_mask`` (from a
        reference image), not boxes on the detected image."""
        if geometry.get("boxes") is not None:
            raise InputError("exemplar boxes on the detected image need SAM3's geometry encoder, which the exported "
                             "stages do not hold: draw them on a reference image (IMAGE:BOXES=NAME) or use "
                             "--backend torch.")
        tokens, tokens_mask = geometry.get("tokens"), geometry.get("tokens_mask")
        batch, classes = features[-1].shape[0], text.shape[0]
        step = self.max_classes or classes
        per_image = []
        for b in range(batch):
            feats = tuple(None if f is None else f[b:b + 1] for f in features)
            chunks = [self._encdec_chunk(feats, text[s:s + step], text_mask[s:s + step],
                                         None if tokens is None else tokens[s:s + step],
                                         None if tokens_mask is None else tokens_mask[s:s + step])
                      for s in range(0, classes, step)]
            per_image.append({k: torch.cat([c[k] for c in chunks]) for k in chunks[0]})
        out = {
            "logits": torch.stack([p["logits"] for p in per_image]),
            "boxes": torch.stack([p["boxes"] for p in per_image]),
            "presence": torch.stack([p["presence"].reshape(-1) for p in per_image]),
        }
        if return_state and self.supports_masks:
            out["masks"] = torch.cat([p[MASK_OUTPUT] for p in per_image])  # [B * C, Q, h, w]
        return out

    def _token_inputs(self, count: int, tokens: torch.Tensor | None, tokens_mask: torch.Tensor | None
                      ) -> dict[str, torch.Tensor]:
        """The graph's ``prompt_tokens``/``prompt_tokens_mask`` for ``count`` classes, padded to its width."""
        width = self.prompt_tokens
        given = tokens is not None and tokens_mask is not None and bool(tokens_mask.any())
        if not width:
            if given:
                self._require_token_input()
            return {}
        hidden = self.encdec_meta.hidden_size
        padded = torch.zeros(count, width, hidden)
        padded_mask = torch.zeros(count, width, dtype=torch.int32)
        if given:
            assert tokens is not None and tokens_mask is not None
            used = int(tokens_mask.sum(-1).max())
            if used > width:
                raise InputError(f"an exemplar prompt here has {used - 1} boxes, but the encoder-decoder "
                                 f"'{self.encdec_path}' takes at most {width - 1}; export it with --exemplar-boxes "
                                 f"{used - 1} or more.")
            keep = min(width, tokens.shape[1])
            padded[:len(tokens), :keep] = tokens[:, :keep].float().cpu()
            padded_mask[:len(tokens), :keep] = tokens_mask[:, :keep].to(torch.int32).cpu()
        return {TOKEN_INPUTS[0]: padded, TOKEN_INPUTS[1]: padded_mask}

    def _encdec_chunk(self, feats: tuple[torch.Tensor, ...], text: torch.Tensor, text_mask: torch.Tensor,
                      tokens: torch.Tensor | None = None, tokens_mask: torch.Tensor | None = None
                      ) -> dict[str, torch.Tensor]:
        count = text.shape[0]
        extra = self._token_inputs(count, tokens, tokens_mask)
        if not self.dynamic_classes and self.max_classes and count < self.max_classes:
            pad = self.max_classes - count  # a fixed-size engine: repeat the last class, drop its results
            text = torch.cat([text, text[-1:].expand(pad, -1, -1)])
            text_mask = torch.cat([text_mask, text_mask[-1:].expand(pad, -1)])
            extra = {name: torch.cat([value, value[-1:].expand(pad, *value.shape[1:])]) for name, value in extra.items()}
        inputs = {"text": text.to(self.device, torch.float32).contiguous(),
                  "text_mask": text_mask.to(self.device, torch.int32).contiguous()}
        for name, value in extra.items():
            inputs[name] = value.to(self.device).contiguous()
        levels = FPN_NAMES if self.supports_masks else FPN_NAMES[-1:]
        all_levels = dict(zip(FPN_NAMES, feats))
        for name in levels:
            inputs[name] = all_levels[name].to(self.device, torch.float32).contiguous()
        out = self._run_encdec(inputs)
        return {k: v[:count] for k, v in out.items()}

    @torch.inference_mode()
    def exemplar_tokens(self, features: tuple[torch.Tensor, ...], boxes: torch.Tensor, labels: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompt tokens of exemplar boxes on a reference image (see the PyTorch backend's): the engines
        computed its features; SAM3's geometry encoder comes from the checkpoint given for the text encoder (a
        text cache that already holds these tokens needs none)."""
        self._require_token_input()
        if not self.has_text_encoder:
            from dart.errors import CacheError

            raise CacheError("these exemplar boxes are not in the text cache, and the engines hold no geometry "
                             "encoder to compute them: pass --checkpoint (the one the engines were exported from) "
                             "once, or build the cache with `dart text-cache build --exemplar ...`.")
        if self._geometry_stage is None:
            from dart.stages import EncDecStage

            self._text_encoder()  # loads (and checks) the checkpoint
            self._geometry_stage = EncDecStage(self._loaded, self.imgsz, self.prompt_mode).eval()
        return self._geometry_stage.reference_tokens(features[-1].float().cpu(), boxes, labels)

    def _require_token_input(self) -> None:
        """Refuse exemplar classes on an encoder-decoder exported without the prompt-token input."""
        if not self.prompt_tokens:
            raise InputError(f"'{self.encdec_path}' takes text classes only: export the encoder-decoder again "
                             f"(`dart export encdec`, which takes exemplars of up to {DEFAULT_EXEMPLAR_BOXES} boxes by "
                             "default) to run exemplar classes on it.")

    def masks(self, features: tuple[torch.Tensor, ...], state: dict[str, torch.Tensor], text: torch.Tensor,
              text_mask: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        if MASK_OUTPUT not in state:
            raise InputError(f"the encoder-decoder '{self.encdec_path}' was exported without masks; export it with "
                             "--masks.")
        flat = pairs[:, 0].to(torch.long) * text.shape[0] + pairs[:, 1].to(torch.long)
        return state[MASK_OUTPUT][flat.to(state[MASK_OUTPUT].device)]

    # ------------------------------------------------------------------------------------ text encoder
    def _text_encoder(self):
        if self._text_stage is None:
            from dart.models.loading import LoadedSam3, load_sam3
            from dart.stages import TextStage

            source = self._text_source
            loaded = source if isinstance(source, LoadedSam3) else load_sam3(source, imgsz=self.imgsz,
                                                                             tokenizer=self._tokenizer_source)
            if loaded.fingerprint != self.fingerprint:
                raise InputError(
                    f"the engines were built from checkpoint {self.fingerprint}, but the checkpoint given for the "
                    f"text encoder ({loaded.source}) is {loaded.fingerprint}; pass --checkpoint with the checkpoint "
                    "the engines were exported from."
                )
            self._tokenizer = loaded.tokenizer()
            self._text_stage = TextStage(loaded.model).eval()
            self._loaded = loaded.model
        return self._text_stage, self._tokenizer

    @torch.inference_mode()
    def encode_text(self, names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.has_text_encoder:
            raise InputError("this engine backend has no text encoder; give a text cache that holds every class or "
                             "a checkpoint to encode new class names.")
        from dart.models.tokenizer import tokenize

        stage, tokenizer = self._text_encoder()
        input_ids, attention_mask = tokenize(tokenizer, names, self.text_length)
        # a shared LoadedSam3 may have been moved to a GPU by a PyTorch backend: the text runs where its weights are
        where = next(stage.parameters()).device
        features = stage(input_ids.to(where), attention_mask.to(where))
        return features.float().cpu(), attention_mask.bool()

    def describe(self) -> str:
        return (f"{self.name}: {self.backbone_path.name} ({self.backbone_meta.describe()}), "
                f"{self.encdec_path.name} ({self.encdec_meta.describe()})")


def engine_backend(kind: str, backbone: str | Path | None = None, encdec: str | Path | None = None, *,
                   engines: str | Path | None = None, **kwargs: Any) -> EngineBackend:
    """Build the ``onnxruntime`` or ``tensorrt`` backend (found through the ``dart.backends`` entry points) from
    explicit stage files or an ``engines`` folder holding ``backbone.*`` and ``encdec.*``."""
    from dart.plugins.registry import load

    if kind not in ENGINE_SUFFIX:
        raise InputError(f"backend '{kind}' does not run exported stages; use onnxruntime, openvino or tensorrt.")
    if backbone is None or encdec is None:
        if engines is None:
            raise InputError(f"the {kind} backend needs --engines DIR or both --backbone-engine and --encdec-engine.")
        found = find_stage_files(engines, kind)
        backbone, encdec = backbone or found[0], encdec or found[1]
    backend_cls = load("dart.backends", kind)
    return backend_cls(backbone, encdec, **kwargs)


def onnx_runner(device: str = "auto") -> str:
    """The backend that runs ``.onnx`` stages when none is named: OpenVINO on a CPU where it is installed (on a
    CPU it ran dart's stages 1.1x faster than onnxruntime in fp32, and in bf16 where the CPU has it: BENCHMARKS.md),
    else onnxruntime (which also reaches a CUDA GPU through its provider)."""
    import importlib.util

    on_cpu = str(device) == "cpu" or (str(device) == "auto" and not torch.cuda.is_available())
    if on_cpu and importlib.util.find_spec("openvino") is not None:
        from dart.plugins.registry import available

        if any(name == "openvino" for name, _, _ in available("dart.backends")):
            return "openvino"
    return "onnxruntime"


def infer_engine_kind(engines: str | Path | None = None, backbone: str | Path | None = None,
                      device: str = "auto") -> str:
    """``tensorrt`` for ``.engine`` files; for ``.onnx`` files :func:`onnx_runner` (OpenVINO on a CPU where it is
    installed, else onnxruntime), from a file or a folder's content."""
    if backbone is not None:
        return onnx_runner(device) if Path(backbone).suffix.lower() == ".onnx" else "tensorrt"
    if engines is not None:
        folder = Path(engines)
        if (folder / "backbone.engine").is_file():
            return "tensorrt"
        if (folder / "backbone.onnx").is_file():
            return onnx_runner(device)
        raise InputError(f"'{folder}' holds neither backbone.engine nor backbone.onnx; create them with `dart export` "
                         "and `dart build`, or pass --backbone-engine and --encdec-engine.")
    raise InputError("an engine backend needs --engines DIR or --backbone-engine and --encdec-engine.")
