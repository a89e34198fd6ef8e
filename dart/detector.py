"""The :class:`Detector`: SAM3 as a multi-class open-vocabulary detector on any backend.

Per image the backbone runs once; text features are computed once per class list (and cached to disk when
a text cache is given); the encoder-decoder runs batched over ``images x classes`` in chunks of at most
``max_classes_per_batch`` classes; post-processing applies the presence early exit, the confidence threshold,
per-class NMS, optional class-agnostic NMS and a top-k cap, and maps boxes back to original pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dart.backends.base import Backend
from dart.classes import parse_vocabulary
from dart.detections import Detections
from dart.errors import InputError
from dart.models.loading import DEFAULT_CHECKPOINT, LoadedSam3
from dart.models.sam3 import DEFAULT_IMGSZ, validate_imgsz
from dart.postprocess import (
    PostprocessConfig,
    present_classes,
    score_threshold,
    scores_from_logits,
    select,
    to_pixels,
    upsample_masks,
)
from dart.preprocess import ImageInput, preprocess, to_rgb
from dart.prompts import PAD_LABEL, Prompt, exemplar_key, image_digest, normalized_boxes
from dart.pruning import PruneSpec
from dart.text_cache import TextCache
from dart.timing import StageTimer

MAX_CLASSES_PER_BATCH = 16  # classes per encoder-decoder call by default; more run in chunks of this many


def _is_student(backbone: str | None, student_weights: str | Path | None) -> bool:
    return student_weights is not None or backbone not in (None, "", "sam3")


class Detector:
    """Multi-class detection with SAM3.

    >>> det = Detector.from_pretrained("facebook/sam3", classes=["person", "car"])
    >>> dets = det.detect("street.jpg")          # -> Detections (xyxy in original pixels)
    """

    def __init__(
        self,
        backend: Backend,
        classes: Sequence[str] | None = None,
        *,
        conf: float = 0.3,
        nms: float | None = 0.7,
        class_agnostic_nms: float | None = None,
        max_det: int = 300,
        max_classes_per_batch: int = MAX_CLASSES_PER_BATCH,
        masks: bool = False,
        presence_thresh: float | None = None,
        text_cache: str | Path | TextCache | None = None,
        class_conf: Mapping[str, float] | None = None,
    ):
        for name, value in (("conf", conf), ("nms", nms), ("class_agnostic_nms", class_agnostic_nms),
                            ("presence_thresh", presence_thresh)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise InputError(f"{name} must be between 0 and 1, got {value}.")
        self.class_conf = dict(class_conf or {})
        for name, value in self.class_conf.items():
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise InputError(f"the threshold of class '{name}' must be between 0 and 1, got {value}.")
        if max_det < 1:
            raise InputError(f"max_det must be at least 1, got {max_det}.")
        if max_classes_per_batch < 1:
            raise InputError(f"max_classes_per_batch must be at least 1, got {max_classes_per_batch}.")
        if masks and not backend.supports_masks:
            raise InputError(f"the {backend.name} backend was built without mask outputs; rebuild it with masks.")
        self.backend = backend
        self.post = PostprocessConfig(conf=conf, nms_iou=nms, agnostic_iou=class_agnostic_nms, max_det=max_det,
                                      presence_thresh=presence_thresh)
        limit = backend.max_classes or max_classes_per_batch
        self.max_classes_per_batch = min(max_classes_per_batch, limit)
        self.masks = masks
        if isinstance(text_cache, TextCache):
            if text_cache.fingerprint != backend.fingerprint:
                raise InputError("the text cache belongs to another model than this backend.")
            self.text_cache = text_cache
        else:
            self.text_cache = TextCache(backend.fingerprint, text_cache)
        self.timer = StageTimer()
        self._classes: list[str] = []
        self._prompts: list[str] = []
        self._prompt_class: torch.Tensor | None = None  # prompt index -> class index, when classes have prompts
        self._conf: torch.Tensor | None = None  # score threshold per prompt, with class_conf
        self._text: tuple[torch.Tensor, torch.Tensor] | None = None
        self._vocab = None
        self._labels: list[str] = []  # each prompt as written, when some class has prompts or exemplars
        self._in_image: dict[int, Prompt] = {}  # prompt index -> exemplar whose boxes are on the detected image
        self._tokens: tuple[torch.Tensor, torch.Tensor] | None = None  # prompt tokens from reference images [P, G, D]
        if classes is not None:
            self.set_classes(classes)

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | Path = DEFAULT_CHECKPOINT,
        classes: Sequence[str] | None = None,
        *,
        device: str = "auto",
        precision: str = "fp32",
        imgsz: int = DEFAULT_IMGSZ,
        compile: str | None = None,
        tokenizer: str | Path | None = None,
        prune: PruneSpec | None = None,
        backbone: str | None = None,
        student_weights: str | Path | None = None,
        prompt_mode: str = "meta",
        **kwargs: Any,
    ) -> Detector:
        """Load SAM3 weights (hub id, folder, ``.safetensors`` or Meta ``sam3.pt``) on the PyTorch backend,
        optionally with a pruned backbone, or with a student backbone (``backbone="repvit_m2_3"`` and
        ``student_weights`` from ``dart distill``; the name defaults to the one recorded in the weights)."""
        from dart.models.loading import load_sam3

        validate_imgsz(imgsz)
        if _is_student(backbone, student_weights):
            if student_weights is None:
                raise InputError(f"--backbone {backbone} needs --student-weights FILE (a student trained with "
                                 "`dart distill --phase adapter`).")
            if prune:
                raise InputError("--skip-blocks/--mask-blocks prune SAM3's ViT, which a student backbone replaces; "
                                 "give one or the other.")
        loaded = load_sam3(checkpoint, imgsz=imgsz, tokenizer=tokenizer)
        return cls.from_loaded(loaded, classes, device=device, precision=precision, compile=compile, prune=prune,
                               backbone=backbone, student_weights=student_weights, prompt_mode=prompt_mode, **kwargs)

    @classmethod
    def from_loaded(
        cls,
        loaded: LoadedSam3,
        classes: Sequence[str] | None = None,
        *,
        device: str = "auto",
        precision: str = "fp32",
        compile: str | None = None,
        prune: PruneSpec | None = None,
        backbone: str | None = None,
        student_weights: str | Path | None = None,
        prompt_mode: str = "meta",
        **kwargs: Any,
    ) -> Detector:
        """The PyTorch backend on an already loaded SAM3 (pruned in place when ``prune`` is given). A student
        ``backbone`` without ``student_weights`` gets a random adapter: for speed measurements only."""
        from dart.plugins.registry import load
        from dart.pruning import apply_pruning

        if loaded.backbone is not None and (prune or _is_student(backbone, student_weights)):
            raise InputError(f"checkpoint {loaded.source} brings its own backbone "
                             f"({loaded.backbone.dart_backbone_name}); --skip-blocks/--mask-blocks, --backbone and "
                             "--student-weights replace or prune SAM3's ViT, which it does not have.")
        if prune:
            apply_pruning(loaded.model, prune)
        extra: dict[str, Any] = {}
        if _is_student(backbone, student_weights):
            from dart.students import build_backbone, student_name_of

            name = backbone if backbone not in (None, "sam3") else student_name_of(student_weights)
            extra["backbone"] = build_backbone(name, loaded.model, weights=student_weights)
        backend = load("dart.backends", "torch")(loaded, device=device, precision=precision, compile=compile,
                                                 prompt_mode=prompt_mode, **extra)
        return cls(backend, classes, **kwargs)

    @classmethod
    def from_engines(
        cls,
        backbone: str | Path | None = None,
        encdec: str | Path | None = None,
        classes: Sequence[str] | None = None,
        *,
        engines: str | Path | None = None,
        backend: str = "tensorrt",
        device: str = "auto",
        checkpoint: str | Path | None = None,
        tokenizer: str | Path | None = None,
        imgsz: int | None = None,
        prune: PruneSpec | None = None,
        prompt_mode: str | None = None,
        backend_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Detector:
        """Run exported stages (``backend="onnxruntime"`` on ``.onnx`` files, ``"tensorrt"`` on ``.engine`` files),
        given explicitly or as ``backbone.*``/``encdec.*`` in an ``engines`` folder.

        Class names come from ``text_cache=`` (see :class:`Detector`); ``checkpoint`` is loaded, lazily, only to
        encode names missing from it. ``imgsz``/``prune``, when given, must match what the stages were built for.
        """
        from dart.backends.engine_backend import engine_backend

        engine = engine_backend(backend, backbone, encdec, engines=engines, device=device, imgsz=imgsz, prune=prune,
                                prompt_mode=prompt_mode, text_checkpoint=checkpoint, tokenizer=tokenizer,
                                **(backend_options or {}))
        return cls(engine, classes, **kwargs)

    # ----------------------------------------------------------------------------------------------- classes
    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    @property
    def prompts(self) -> list[str]:
        """What the text encoder reads: the class names, or their prompts (``"vehicle=car|truck"``)."""
        return list(self._prompts)

    @property
    def class_prompts(self) -> dict[str, list[str]] | None:
        """``{class: [its prompts as written]}`` where some class has prompts or exemplars, else None."""
        return None if self._vocab is None else self._vocab.class_labels

    @property
    def prompt_labels(self) -> list[str]:
        """Each prompt as written: its text, or an exemplar's ``[IMAGE:]BOXES[|TEXT]``."""
        return list(self._labels) if self._labels else list(self._prompts)

    def set_classes(self, names: Sequence[str] | Mapping[str, Any]) -> None:
        """Set the vocabulary: class names, entries with prompts (``"vehicle=car|truck|bus"``: every prompt is
        detected and reported as that class), exemplar entries (``"ref.jpg:120,40,180,90=widget"``) or a
        ``{name: prompt(s)}`` mapping whose prompts are texts or :class:`~dart.prompts.Prompt` objects::

            det.set_classes({"widget": Prompt(boxes=[(120, 40, 180, 90)]), "person": "person"})

        Text features come from the cache or the text encoder (once per prompt); the prompt tokens of exemplars on
        a reference image are computed here, once, on that image."""
        vocab = parse_vocabulary(names if isinstance(names, Mapping) else list(names))
        if vocab.exemplars:
            self._check_exemplars(vocab)
        unknown = [name for name in self.class_conf if name not in vocab.names]
        if unknown:
            raise InputError(f"a threshold is given for '{unknown[0]}', which is not one of the classes "
                             f"({', '.join(vocab.names)}).")
        encode = self.backend.encode_text if self.backend.has_text_encoder else None
        with self.timer("text"):
            self._text = self.text_cache.get(vocab.prompts, encode)
        in_image = vocab.in_image
        with self.timer("exemplars"):
            tokens = self._exemplar_tokens(vocab)
        self._vocab = vocab
        self._classes, self._prompts = vocab.names, vocab.prompts
        self._labels = [] if vocab.plain else vocab.labels
        self._in_image, self._tokens = in_image, tokens
        self._prompt_class = None if vocab.plain else torch.tensor(vocab.prompt_class, dtype=torch.long)
        self._conf = None
        if self.class_conf:
            self._conf = torch.tensor([self.class_conf.get(vocab.names[c], self.post.conf) for c in vocab.prompt_class],
                                      dtype=torch.float32)

    @property
    def has_in_image_exemplars(self) -> bool:
        """Some exemplar boxes are drawn on the detected image itself (no reference image)."""
        return bool(self._in_image)

    def exemplar_marks(self, image: ImageInput | None = None) -> list[tuple[tuple[float, ...], bool, int]]:
        """The exemplar boxes drawn on ``image`` as ``(xyxy, positive, class_id)``: those of in-image exemplars,
        and those of exemplars whose reference image is this file (for the dashed boxes of annotated outputs)."""
        marks = []
        here = Path(image).resolve() if isinstance(image, (str, Path)) else None
        for index, prompt in enumerate(self._vocab.exemplars if self._vocab else []):
            if prompt is None:
                continue
            drawn_here = prompt.in_image or (here is not None and isinstance(prompt.image, (str, Path))
                                             and Path(prompt.image).resolve() == here)
            if drawn_here:
                class_id = self._vocab.prompt_class[index]
                marks += [(box, True, class_id) for box in prompt.boxes]
                marks += [(box, False, class_id) for box in prompt.negative]
        return marks

    def anchor_exemplars(self, image: ImageInput) -> None:
        """Make ``image`` the reference of every exemplar drawn on the detected image (a video's first frame):
        their prompt tokens are computed on it once and used on every later image."""
        if not self._in_image:
            return
        vocab = self._vocab
        classes: dict[str, list[Any]] = {name: [] for name in vocab.names}
        for index, (text, prompt) in enumerate(zip(vocab.prompts, vocab.exemplars or [None] * len(vocab.prompts))):
            if prompt is not None and prompt.in_image:
                prompt = Prompt(prompt.text, prompt.boxes, prompt.negative, image=image, _label=prompt.describe())
            classes[vocab.names[vocab.prompt_class[index]]].append(text if prompt is None else prompt)
        self.set_classes(classes)

    def _check_exemplars(self, vocab) -> None:
        """What this backend cannot run is refused before any work: boxes on the detected image need the geometry
        encoder (PyTorch); exemplars on reference images need an encoder-decoder that takes prompt tokens."""
        backend = self.backend
        if any(ex is not None and ex.in_image for ex in vocab.exemplars) and not getattr(
                backend, "takes_exemplar_boxes", False):
            raise InputError(f"exemplar boxes on the detected image run on the PyTorch backend (--backend torch); the "
                             f"{backend.name} backend takes exemplars drawn on a reference image "
                             "(IMAGE:x1,y1,x2,y2=NAME).")
        if not hasattr(backend, "exemplar_tokens") or getattr(backend, "prompt_tokens", None) == 0:
            where = getattr(backend, "encdec_path", backend.name)
            raise InputError(f"'{where}' takes text classes only: export the encoder-decoder again (`dart export "
                             "encdec`, which takes exemplar tokens by default) to run exemplar classes on it.")

    def _exemplar_tokens(self, vocab) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Prompt tokens ``([P, G, D], mask [P, G])`` of the exemplars drawn on reference images, computed on each
        image's own features once and kept in the text cache (rows of other prompts are all padding); None when
        there are none."""
        found: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for index, prompt in enumerate(vocab.exemplars):
            if prompt is None or prompt.in_image:
                continue
            rgb = to_rgb(prompt.image)
            height, width = rgb.shape[:2]
            prompt.check_inside(height, width, f"its reference image '{prompt.describe().rpartition(':')[0]}'")
            key = exemplar_key(image_digest(rgb), prompt, self.backend.imgsz)
            cached = self.text_cache.exemplar(key)
            if cached is None:
                boxes, labels = normalized_boxes(prompt, height, width)
                features = self.backend.backbone(preprocess([rgb], self.backend.imgsz, self.backend.device))
                cached = self.backend.exemplar_tokens(features, torch.from_numpy(boxes), torch.from_numpy(labels))
                self.text_cache.add_exemplar(key, *cached)
            found[index] = cached
        self.text_cache.save()
        if not found:
            return None
        width = max(t.shape[0] for t, _ in found.values())
        dim = next(iter(found.values()))[0].shape[-1]
        tokens = torch.zeros(len(vocab.prompts), width, dim)
        mask = torch.zeros(len(vocab.prompts), width, dtype=torch.bool)
        for index, (t, m) in found.items():
            tokens[index, :len(t)], mask[index, :len(m)] = t, m
        return tokens, mask

    def _geometry(self, start: int, stop: int, sizes: Sequence[tuple[int, int]] | None, batch: int
                  ) -> dict[str, torch.Tensor]:
        """The exemplar inputs of prompts ``start:stop`` for :meth:`~dart.stages.EncDecStage.forward`: in-image
        boxes normalised on each image (``boxes [B, C, K, 4]``, ``box_labels``), reference tokens."""
        out: dict[str, torch.Tensor] = {}
        chunk = {i - start: p for i, p in self._in_image.items() if start <= i < stop}
        if chunk:
            if sizes is None:
                raise InputError("exemplar boxes on the detected image need the image sizes: call run_heads(features, "
                                 "batch, sizes).")
            count = max(len(p.boxes) + len(p.negative) for p in chunk.values())
            boxes = torch.zeros(batch, stop - start, count, 4)
            labels = torch.full((batch, stop - start, count), PAD_LABEL, dtype=torch.long)
            for b, (height, width) in enumerate(sizes):
                for c, prompt in chunk.items():
                    where = "the image" if batch == 1 else f"image {b + 1} of the batch"
                    prompt.check_inside(height, width, where)
                    norm, lab = normalized_boxes(prompt, height, width)
                    boxes[b, c, :len(norm)] = torch.from_numpy(norm)
                    labels[b, c, :len(lab)] = torch.from_numpy(lab)
            out["boxes"], out["box_labels"] = boxes, labels
        if self._tokens is not None and self._tokens[1][start:stop].any():
            out["tokens"], out["tokens_mask"] = self._tokens[0][start:stop], self._tokens[1][start:stop]
        return out

    # ------------------------------------------------------------------------------------------------ detect
    def detect(self, image: ImageInput) -> Detections:
        """Detect the current classes in one image (path, BGR array or PIL image)."""
        return self.detect_batch([image])[0]

    def __call__(self, images: ImageInput | list[ImageInput]) -> Detections | list[Detections]:
        """``det(image)`` -> :class:`Detections`; ``det([image, ...])`` -> one per image (one backbone batch)."""
        if isinstance(images, (list, tuple)):
            return self.detect_batch(list(images))
        return self.detect(images)

    def detect_batch(self, images: Sequence[ImageInput]) -> list[Detections]:
        """Detect in several images at once: one backbone batch, one encoder-decoder batch per class chunk."""
        if self._text is None:
            raise InputError("no classes set: call set_classes([...]) first.")
        if not images:
            return []
        pixels, sizes = self.prepare(images)
        features = self.run_backbone(pixels)
        heads = self.run_heads(features, len(sizes), sizes)
        return self.finish(heads, sizes)

    # The four steps of detect_batch, public so that a video pipeline can run the backbone of one frame while the
    # encoder-decoder of the previous one runs (on another thread / CUDA stream).
    def prepare(self, images: Sequence[ImageInput]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Images -> ``(pixel_values [B, 3, S, S]`` float32 on the backend's device, original ``(height, width)``
        sizes)."""
        rgb = [to_rgb(im) for im in images]
        sizes = [(im.shape[0], im.shape[1]) for im in rgb]
        with self.timer("preprocess"):
            pixels = preprocess(rgb, self.backend.imgsz, self.backend.device)  # float32: backends take it as is
        return pixels, sizes

    def run_backbone(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``pixel_values`` -> FPN features (once per image, whatever the number of classes); without masks, the
        levels only the mask decoder reads are skipped where the backend can (None in their place)."""
        with self.timer("backbone"):
            return self.backend.backbone(pixels, masks=self.masks)

    def run_heads(self, features: tuple[torch.Tensor, ...], batch: int,
                  sizes: Sequence[tuple[int, int]] | None = None):
        """FPN features of ``batch`` images -> raw per-class outputs (encoder-decoder over the class chunks).
        ``sizes`` (the images' original ``(height, width)``) is needed by exemplar boxes on the detected image."""
        if self._text is None:
            raise InputError("no classes set: call set_classes([...]) first.")
        with self.timer("encdec"):
            return self._run_encdec(features, batch, sizes)

    def finish(self, heads, sizes: Sequence[tuple[int, int]]) -> list[Detections]:
        """Raw outputs of :meth:`run_heads` -> one :class:`Detections` per image (thresholds, NMS, pixels)."""
        logits, boxes, presence, mask_bank = heads
        with self.timer("post"):
            return [self._finish(i, logits[i], boxes[i], presence[i], mask_bank[i], sizes[i]) for i in range(len(sizes))]

    def _run_encdec(self, features: tuple[torch.Tensor, ...], batch: int,
                    sizes: Sequence[tuple[int, int]] | None = None):
        text, text_mask = self._text  # type: ignore[misc]
        logits, boxes, presence = [], [], []
        mask_bank: list[dict[tuple[int, int], torch.Tensor]] = [{} for _ in range(batch)]
        step = self.max_classes_per_batch
        for start in range(0, len(self._prompts), step):
            chunk_text, chunk_mask = text[start:start + step], text_mask[start:start + step]
            geometry = self._geometry(start, start + len(chunk_text), sizes, batch)
            out = self.backend.encdec(features, chunk_text, chunk_mask, return_state=self.masks, **geometry)
            logits.append(out["logits"])
            boxes.append(out["boxes"])
            presence.append(out["presence"])
            if self.masks:
                self._collect_masks(features, out, chunk_text, chunk_mask, start, mask_bank)
        return torch.cat(logits, 1), torch.cat(boxes, 1), torch.cat(presence, 1), mask_bank

    def _collect_masks(self, features, out, text, text_mask, offset, bank) -> None:
        """Masks only for (image, class) pairs that can yield a detection (presence early exit)."""
        conf = None if self._conf is None else self._conf[offset:offset + out["logits"].shape[1]]
        scores = scores_from_logits(out["logits"], out["presence"])
        candidates = scores > score_threshold(self.post, conf, scores.device)
        candidates &= present_classes(out["presence"], self.post, conf)[..., None]
        pairs = torch.nonzero(candidates.any(-1))
        if len(pairs) == 0:
            return
        mask_logits = self.backend.masks(features, out, text, text_mask, pairs)
        for p, (b, c) in enumerate(pairs.tolist()):
            for q in torch.nonzero(candidates[b, c]).flatten().tolist():
                bank[b][(offset + c, q)] = mask_logits[p, q]

    def _finish(self, index, logits, boxes, presence, mask_bank, size) -> Detections:
        height, width = size
        sel = select(logits, boxes, presence, self.post, groups=self._prompt_class, conf=self._conf)
        xyxy = to_pixels(sel.boxes, height, width).cpu().numpy()
        prompt_ids = sel.class_ids.cpu().numpy()
        class_ids = prompt_ids if self._prompt_class is None else self._prompt_class.numpy()[prompt_ids]
        masks = None
        if self.masks:
            pairs = zip(prompt_ids.tolist(), sel.query_ids.tolist())
            low = [mask_bank[(c, q)] for c, q in pairs]
            stacked = torch.stack(low) if low else torch.zeros((0, 1, 1), device=logits.device)
            masks = upsample_masks(stacked, height, width).cpu().numpy()
        names = np.array([self._classes[c] for c in class_ids], dtype=object)
        prompts = np.array([self._labels[p] for p in prompt_ids], dtype=object) if self._labels else None
        return Detections(xyxy, sel.scores.cpu().numpy(), class_ids, names, masks=masks, image_size=size,
                          prompts=prompts)
