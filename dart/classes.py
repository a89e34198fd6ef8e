"""Class lists: from the command line, from a file, or the 80 COCO names; and the vocabulary a detector uses.

A class entry is a name (``"person"``: the name is also the text prompt) or a name with its prompts,
``"vehicle=car|truck|bus"``: each prompt is detected and all of them are reported as the one class (prompt
ensembles and synonyms: ``"person=person|pedestrian"``). Overlapping boxes from prompts of one class are merged
by the per-class NMS. An entry may also be an exemplar, ``"ref.jpg:120,40,180,90=widget"`` (boxes on an image
instead of, or besides, a text: :mod:`dart.prompts`); exemplar entries of one name are prompts of one class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dart.errors import InputError
from dart.prompts import Prompt, is_exemplar_entry, parse_exemplar

COCO80 = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
]  # fmt: skip


def normalize_classes(names: list[str]) -> list[str]:
    """Strip, drop empties, refuse duplicates and an empty list (one sentence each)."""
    cleaned = [" ".join(str(n).split()) for n in names]
    cleaned = [n for n in cleaned if n]
    if not cleaned:
        raise InputError("the class list is empty: pass --classes person car ... or --classes-file FILE.")
    seen: set[str] = set()
    dupes = [n for n in cleaned if n in seen or seen.add(n)]
    if dupes:
        raise InputError(f"class '{dupes[0]}' is listed twice; each class must appear once.")
    return cleaned


PROMPTS_MARK = "="
PROMPT_SEPARATOR = "|"


@dataclass(frozen=True)
class Vocabulary:
    """What a detector reports (``names``) and what its text encoder reads (``prompts``, with ``prompt_class[i]``
    the index of the class prompt ``i`` belongs to). With exemplar prompts, ``exemplars[i]`` is prompt ``i``'s
    :class:`~dart.prompts.Prompt` (None for a text prompt); without any, ``exemplars`` is empty."""

    names: list[str]
    prompts: list[str]
    prompt_class: list[int]
    exemplars: list[Prompt | None] = field(default_factory=list)

    @property
    def plain(self) -> bool:
        """One text prompt per class, the class's own name."""
        return self.prompts == self.names and not self.exemplars

    @property
    def labels(self) -> list[str]:
        """Each prompt as written (the text, or the exemplar's written form): what found a detection."""
        if not self.exemplars:
            return list(self.prompts)
        return [text if ex is None else ex.describe() for text, ex in zip(self.prompts, self.exemplars)]

    @property
    def class_labels(self) -> dict[str, list[str]] | None:
        """``{class: [its prompts as written]}`` where some class has prompts or exemplars (what result files
        record beside the classes), else None."""
        if self.plain:
            return None
        out: dict[str, list[str]] = {name: [] for name in self.names}
        for label, index in zip(self.labels, self.prompt_class):
            out[self.names[index]].append(label)
        return out

    @property
    def in_image(self) -> dict[int, Prompt]:
        """Prompt index -> exemplar whose boxes are on the image being detected (no reference image)."""
        return {i: ex for i, ex in enumerate(self.exemplars) if ex is not None and ex.in_image}


PromptLike = str | Prompt


def parse_vocabulary(classes: Sequence[str] | Mapping[str, PromptLike | Sequence[PromptLike]]) -> Vocabulary:
    """Class entries (``"person"``, ``"vehicle=car|truck"``, ``"ref.jpg:120,40,180,90=widget"``) or a
    ``{name: prompt(s)}`` mapping, a prompt being a text or a :class:`~dart.prompts.Prompt` -> Vocabulary.
    Empty names or prompt lists, a class listed twice and a prompt given to two classes are one sentence each."""
    pairs: list[tuple[str, list[PromptLike]]] = []
    if isinstance(classes, Mapping):
        for name, prompts in classes.items():
            items = [prompts] if isinstance(prompts, (str, Prompt)) else list(prompts)
            pairs.append((str(name), [p if isinstance(p, Prompt) else str(p) for p in items]))
    else:
        joined: dict[str, list[PromptLike]] = {}  # exemplar entries of one name are one class
        for entry in classes:
            if isinstance(entry, str) and is_exemplar_entry(entry):
                name, prompt = parse_exemplar(entry)
                if name in joined:
                    joined[name].append(prompt)
                    continue
                joined[name] = [prompt]
                pairs.append((name, joined[name]))
                continue
            name, mark, prompts = str(entry).partition(PROMPTS_MARK)
            if mark and not name.strip():
                raise InputError(f"'{entry}' has prompts but no class name: write it as 'name={prompts}'.")
            items: list[PromptLike] = list(prompts.split(PROMPT_SEPARATOR)) if mark else [name]
            key = " ".join(name.split())
            if key in joined and any(isinstance(p, Prompt) for p in joined[key]):
                joined[key].extend(items)  # text prompts for a class that has exemplars
                continue
            joined.setdefault(key, items)
            pairs.append((name, items))
    pairs = [(" ".join(name.split()), prompts) for name, prompts in pairs]
    pairs = [(name, prompts) for name, prompts in pairs if name]  # blank entries (e.g. "a,,b") are dropped
    names = normalize_classes([name for name, _ in pairs])
    owner: dict[str, str] = {}
    prompts_out: list[str] = []
    prompt_class: list[int] = []
    exemplars: list[Prompt | None] = []
    for index, (name, prompts) in enumerate(pairs):
        cleaned: list[PromptLike] = [p if isinstance(p, Prompt) else " ".join(str(p).split()) for p in prompts]
        cleaned = [p for p in cleaned if p]
        if not cleaned:
            raise InputError(f"class '{name}' has no prompts: write it as '{name}' or '{name}=prompt|prompt'.")
        for prompt in cleaned:
            if isinstance(prompt, Prompt) and not prompt.is_exemplar:
                prompt = str(prompt.text)
            key = prompt if isinstance(prompt, str) else prompt.describe()
            if key in owner:
                where = "twice" if owner[key] == name else f"for both '{owner[key]}' and '{name}'"
                raise InputError(f"the prompt '{key}' is given {where}; each prompt must belong to one class.")
            owner[key] = name
            prompts_out.append(prompt if isinstance(prompt, str) else prompt.encoder_text)
            exemplars.append(None if isinstance(prompt, str) else prompt)
            prompt_class.append(index)
    return Vocabulary(names, prompts_out, prompt_class, exemplars if any(e is not None for e in exemplars) else [])


def split_entries(text: str) -> list[str]:
    """A comma-separated line of class entries; an exemplar entry (whose boxes hold commas) stays whole."""
    text = text.strip()
    if is_exemplar_entry(text):
        return [text]
    return text.split(",")


def read_classes_file(path: str | Path) -> list[str]:
    """One class per line (blank lines and lines starting with # are ignored), or a comma-separated line."""
    from dart.io import read_text

    text = read_text(path, "classes file")
    names: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        names.extend(_beside(entry, Path(path).parent) for entry in split_entries(line))
    return normalize_classes(names)


def _beside(entry: str, folder: Path) -> str:
    """An exemplar entry of a class file whose relative image path is found beside that file (and not from the
    working folder) gets that path."""
    if not is_exemplar_entry(entry):
        return entry
    image, mark, _ = entry.strip().rpartition("=")[0].rpartition(":")
    if not mark or not image or Path(image).expanduser().is_absolute() or Path(image).exists():
        return entry
    if (folder / image).exists():
        return f"{folder / image}:{entry.strip()[len(image) + 1:]}"
    return entry


def resolve_classes(classes: list[str] | None = None, classes_file: str | Path | None = None,
                    coco: bool = False, exemplars: Sequence[str] | None = None) -> list[str]:
    """One source of class entries (``classes``, ``classes_file`` or ``coco``; entries may carry prompts,
    ``"vehicle=car|truck"``, see :func:`parse_vocabulary`), plus any ``exemplars`` (``--exemplar``
    ``[IMAGE:]BOXES=NAME``, :mod:`dart.prompts`), which may also be the only classes."""
    given = sum([bool(classes), classes_file is not None, coco])
    if given == 0 and not exemplars:
        raise InputError("no classes given: pass --classes person car ..., --classes-file FILE, --coco or "
                         "--exemplar IMAGE:x1,y1,x2,y2=NAME.")
    if given > 1:
        raise InputError("give classes one way only: --classes, --classes-file or --coco (--exemplar adds to any).")
    entries: list[str] = []
    if coco:
        entries = list(COCO80)
    elif classes_file is not None:
        entries = read_classes_file(classes_file)
    elif classes:
        entries = normalize_classes([part for item in classes for part in split_entries(str(item))])
    for item in exemplars or []:
        if not is_exemplar_entry(str(item)):
            parse_exemplar(str(item))  # the sentence that says what the form is
        entries.append(str(item).strip())
    parse_vocabulary(entries)  # a malformed entry is refused before any model is loaded
    return entries


def exemplar_images(entries: Sequence[str]) -> list[Path]:
    """The reference images the exemplar entries read (so that no output may replace one); one that is missing
    is refused now, before any model loads. No entries (a server started without a class list): none."""
    if not entries:
        return []
    paths = [Path(ex.image) for ex in parse_vocabulary(list(entries)).exemplars
             if ex is not None and isinstance(ex.image, (str, Path))]
    for path in paths:
        if not path.is_file():
            raise InputError(f"exemplar image '{path}' does not exist{' (it is a folder)' if path.is_dir() else ''}.")
    return paths


def parse_class_conf(text: str | None, entries: Sequence[str] | None = None) -> dict[str, float]:
    """``"person=0.5,car=0.35"`` -> ``{"person": 0.5, "car": 0.35}``; a malformed item, or (with the class
    ``entries``) a name that is not a class, is one sentence."""
    out: dict[str, float] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, mark, value = item.rpartition("=")
        name = " ".join(name.split())
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not mark or not name or not 0.0 <= number <= 1.0:
            raise InputError(f"--class-conf item '{item.strip()}' must be NAME=THRESHOLD with a threshold in [0, 1], "
                             "e.g. person=0.5.")
        out[name] = number
    if entries is not None:
        names = parse_vocabulary(list(entries)).names
        unknown = [name for name in out if name not in names]
        if unknown:
            raise InputError(f"--class-conf names '{unknown[0]}', which is not one of the classes ({', '.join(names)}).")
    return out
