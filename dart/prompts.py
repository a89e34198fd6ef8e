"""Exemplar prompts: "find everything that looks like this box".

SAM3 takes a concept as text, as example boxes (positive and negative) or as both. A :class:`Prompt` with boxes is
an *exemplar* prompt. Its boxes are on the image being detected (``image=None``, SAM3's own use: draw a box, get
every similar object in that image) or on a reference image (``image="ref.jpg"``: the prompt tokens are computed
once on the reference and used on every other image and video frame, an extension of how SAM3 was trained).

A box-only prompt reads the text ``"visual"``, as Meta's ``Sam3Processor.add_geometric_prompt`` does when no text
is given.

The one written form, for ``--exemplar``, ``--classes``, class files and recipes::

    [IMAGE:]BOX[+BOX...][-BOX...]=NAME[|TEXT]

    ref.jpg:120,40,180,90=widget                  one box on ref.jpg, class "widget"
    ref.jpg:120,40,180,90+300,40,360,95=widget    two positive boxes
    ref.jpg:120,40,180,90-10,10,60,50=widget      a positive and a negative box
    120,40,180,90=widget                          a box on each image being detected
    ref.jpg:120,40,180,90=dog|a small dog         boxes and the text "a small dog"

Boxes are ``x1,y1,x2,y2`` in the pixels of their image. Entries with the same NAME are one class with several
prompts (as ``"vehicle=car|truck"``), so exemplars from several reference images add up.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dart.errors import InputError

VISUAL_TEXT = "visual"  # the text a box-only prompt reads (Meta's Sam3Processor.add_geometric_prompt)
PAD_LABEL = -10  # transformers' Sam3Model: a box label of -10 is padding
PROMPT_MODES = ("meta", "dart")  # text tokens + the geometry CLS token (Meta's SAM3), or text tokens alone (DART)
DEFAULT_EXEMPLAR_BOXES = 16  # boxes one exemplar prompt may hold in an exported encoder-decoder (+1 CLS token)
Box = tuple[float, float, float, float]

_NUMBER = r"\d+(?:\.\d*)?"
_BOX = rf"{_NUMBER},{_NUMBER},{_NUMBER},{_NUMBER}"
_SPEC = re.compile(rf"^(?:(?P<image>.*):)?(?P<boxes>-?{_BOX}(?:[+-]{_BOX})*)=(?P<target>[^=]+)$")
_ONE_BOX = re.compile(rf"(?P<sign>[+-]?)(?P<box>{_BOX})")


def check_prompt_mode(mode: str) -> str:
    """``mode`` if it is a prompt mode dart knows, else one sentence."""
    if mode not in PROMPT_MODES:
        raise InputError(f"unknown prompt mode '{mode}': use meta (SAM3's own prompt: text tokens and the geometry "
                         "token) or dart (text tokens only, as the DART research code).")
    return mode


@dataclass(frozen=True)
class Prompt:
    """A text prompt, an exemplar prompt (``boxes``/``negative`` in ``x1, y1, x2, y2`` pixels) or both.

    ``image`` is where the boxes are drawn: ``None`` for the image being detected, else a reference image (a path,
    a BGR array or a PIL image). ``Prompt(boxes=[(120, 40, 180, 90)])`` is the one-line common case.
    """

    text: str | None = None
    boxes: Sequence[Sequence[float]] = ()
    negative: Sequence[Sequence[float]] = ()
    image: Any = None
    _label: str | None = field(default=None, compare=False, repr=False)  # the written form it was parsed from

    def __post_init__(self) -> None:
        text = None if self.text is None else " ".join(str(self.text).split()) or None
        object.__setattr__(self, "text", text)
        boxes = tuple(_box(b, "box") for b in self.boxes)
        negative = tuple(_box(b, "negative box") for b in self.negative)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "negative", negative)
        if text is None and not boxes and not negative:
            raise InputError("a prompt needs a text, boxes or both.")
        if self.image is not None and not (boxes or negative):
            raise InputError("a prompt with a reference image needs boxes on it.")
        if (boxes or negative) and not boxes and text is None:
            raise InputError("an exemplar prompt with only negative boxes has nothing to look for: give a positive "
                             "box or a text as well.")

    @property
    def is_exemplar(self) -> bool:
        return bool(self.boxes or self.negative)

    @property
    def in_image(self) -> bool:
        """The boxes are on the image being detected (no reference image)."""
        return self.is_exemplar and self.image is None

    @property
    def encoder_text(self) -> str:
        """What the text encoder reads for this prompt."""
        return self.text if self.text is not None else VISUAL_TEXT

    def labelled_boxes(self) -> tuple[list[Box], list[int]]:
        """All boxes, positives first, with SAM3's labels (1 positive, 0 negative)."""
        return [*self.boxes, *self.negative], [1] * len(self.boxes) + [0] * len(self.negative)

    def describe(self) -> str:
        """The prompt in its written form (what JSON outputs record as the prompt that found a box)."""
        if self._label is not None:
            return self._label
        if not self.is_exemplar:
            return str(self.text)
        parts = [_box_text(b) for b in self.boxes]
        parts += ["-" + _box_text(b) for b in self.negative]
        spec = "+".join(parts).replace("+-", "-")
        if self.image is not None:
            spec = f"{_image_label(self.image)}:{spec}"
        return spec if self.text is None else f"{spec}|{self.text}"

    def check_inside(self, height: int, width: int, where: str) -> None:
        """Refuse a box that leaves an image of ``height x width`` pixels (one sentence naming it)."""
        for box in (*self.boxes, *self.negative):
            x1, y1, x2, y2 = box
            if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
                raise InputError(f"exemplar box {_box_text(box)} leaves {where} ({width}x{height} pixels); boxes are "
                                 "x1,y1,x2,y2 in that image's pixels.")


def _box(value: Sequence[float], what: str) -> Box:
    try:
        box = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"an exemplar {what} must be four numbers x1,y1,x2,y2, got {value!r}.") from None
    if len(box) != 4 or not all(np.isfinite(box)):
        raise InputError(f"an exemplar {what} must be four finite numbers x1,y1,x2,y2, got {value!r}.")
    x1, y1, x2, y2 = box
    if x2 < x1 or y2 < y1:
        raise InputError(f"exemplar {what} {_box_text(box)} is in the wrong order: write x1,y1,x2,y2 with x1 <= x2 "
                         "and y1 <= y2 (top-left corner first).")
    if x2 == x1 or y2 == y1:
        raise InputError(f"exemplar {what} {_box_text(box)} has zero area: give a box with width and height.")
    return box  # type: ignore[return-value]


def _box_text(box: Sequence[float]) -> str:
    return ",".join(f"{v:g}" for v in box)


def _image_label(image: Any) -> str:
    if isinstance(image, (str, Path)):
        return str(image)
    return f"<{type(image).__name__}>"


def is_exemplar_entry(entry: str) -> bool:
    """Whether a class entry is in the exemplar form ``[IMAGE:]BOXES=NAME[|TEXT]`` (so it is not split on
    commas)."""
    return _SPEC.match(str(entry).strip()) is not None


def parse_exemplar(entry: str, base: str | Path | None = None) -> tuple[str, Prompt]:
    """``"ref.jpg:120,40,180,90-10,10,60,50=widget|a widget"`` -> ``("widget", Prompt(...))``. A relative image
    path is read relative to ``base`` (a class file's folder) when it is not found as given."""
    text = str(entry).strip()
    match = _SPEC.match(text)
    if match is None:
        raise InputError(f"'{entry}' is not an exemplar: write [IMAGE:]x1,y1,x2,y2[+x1,y1,x2,y2][-x1,y1,x2,y2]=NAME, "
                         "e.g. ref.jpg:120,40,180,90=widget.")
    name, _, prompt_text = match["target"].partition("|")
    name = " ".join(name.split())
    if not name:
        raise InputError(f"exemplar '{entry}' has no class name after '='.")
    positive, negative = [], []
    for part in _ONE_BOX.finditer(match["boxes"]):
        numbers = [float(v) for v in part["box"].split(",")]
        (negative if part["sign"] == "-" else positive).append(numbers)
    image: Any = match["image"]
    if image is not None:
        if not image:
            raise InputError(f"exemplar '{entry}' has an empty image path before ':'.")
        path = Path(image).expanduser()
        if not path.exists() and base is not None and not path.is_absolute() and (Path(base) / path).exists():
            path = Path(base) / path
        image = path
    label = text.rpartition("=")[0] + ("|" + prompt_text.strip() if prompt_text.strip() else "")
    try:
        prompt = Prompt(text=prompt_text or None, boxes=positive, negative=negative, image=image, _label=label)
    except InputError as exc:
        raise InputError(f"exemplar '{entry}': {exc}") from None
    return name, prompt


def image_digest(rgb: np.ndarray) -> str:
    """A short content hash of an RGB image (keys cached exemplar tokens: same pixels, same tokens)."""
    digest = hashlib.sha256()
    digest.update(str(rgb.shape).encode())
    digest.update(np.ascontiguousarray(rgb).tobytes())
    return digest.hexdigest()[:16]


def exemplar_key(digest: str, prompt: Prompt, imgsz: int) -> str:
    """The cache key of an exemplar drawn on a reference image: its content hash, the model's input size (the
    tokens pool the image's features at that size) and the boxes."""
    boxes = "+".join(_box_text(b) for b in prompt.boxes)
    negative = "".join("-" + _box_text(b) for b in prompt.negative)
    return f"{digest}@{imgsz}:{boxes}{negative}"


def normalized_boxes(prompt: Prompt, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The prompt's boxes as SAM3 takes them, ``(cx, cy, w, h)`` normalised to ``[0, 1]`` of an image of
    ``height x width`` (the model squashes the whole image, so this is exact for any aspect ratio), and labels."""
    boxes, labels = prompt.labelled_boxes()
    xyxy = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) / np.array([width, height, width, height], np.float32)
    cxcywh = np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    return cxcywh, np.asarray(labels, dtype=np.int64)
