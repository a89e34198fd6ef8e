"""Class lists: from the command line, from a file, or the 80 COCO names; and the vocabulary a detector uses.

A class entry is a name (``"person"``: the name is also the text prompt) or a name with its prompts,
``"vehicle=car|truck|bus"``: each prompt is detected and all of them are reported as the one class (prompt
ensembles and synonyms: ``"person=person|pedestrian"``). Overlapping boxes from prompts of one class are merged
by the per-class NMS.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dart.errors import InputError

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
    """What a detector reports (``names``) and what its text encoder reads (``prompts``, each once, with
    ``prompt_class[i]`` the index of the class prompt ``i`` belongs to)."""

    names: list[str]
    prompts: list[str]
    prompt_class: list[int]

    @property
    def plain(self) -> bool:
        """One prompt per class, the class's own name."""
        return self.prompts == self.names


def parse_vocabulary(classes: Sequence[str] | Mapping[str, Sequence[str]]) -> Vocabulary:
    """Class entries (``"person"``, ``"vehicle=car|truck"``) or a ``{name: [prompts]}`` mapping -> Vocabulary.
    Empty names or prompt lists, a class listed twice and a prompt given to two classes are one sentence each."""
    if isinstance(classes, Mapping):
        pairs = [(str(name), [prompts] if isinstance(prompts, str) else [str(p) for p in prompts])
                 for name, prompts in classes.items()]
    else:
        pairs = []
        for entry in classes:
            name, mark, prompts = str(entry).partition(PROMPTS_MARK)
            if mark and not name.strip():
                raise InputError(f"'{entry}' has prompts but no class name: write it as 'name={prompts}'.")
            pairs.append((name, prompts.split(PROMPT_SEPARATOR) if mark else [name]))
    pairs = [(" ".join(name.split()), prompts) for name, prompts in pairs]
    pairs = [(name, prompts) for name, prompts in pairs if name]  # blank entries (e.g. "a,,b") are dropped
    names = normalize_classes([name for name, _ in pairs])
    owner: dict[str, str] = {}
    prompts_out: list[str] = []
    prompt_class: list[int] = []
    for index, (name, prompts) in enumerate(pairs):
        cleaned = [c for c in (" ".join(str(p).split()) for p in prompts) if c]
        if not cleaned:
            raise InputError(f"class '{name}' has no prompts: write it as '{name}' or '{name}=prompt|prompt'.")
        for prompt in cleaned:
            if prompt in owner:
                where = "twice" if owner[prompt] == name else f"for both '{owner[prompt]}' and '{name}'"
                raise InputError(f"the prompt '{prompt}' is given {where}; each prompt must belong to one class.")
            owner[prompt] = name
            prompts_out.append(prompt)
            prompt_class.append(index)
    return Vocabulary(names, prompts_out, prompt_class)


def read_classes_file(path: str | Path) -> list[str]:
    """One class per line (blank lines and lines starting with # are ignored), or a comma-separated line."""
    from dart.io import read_text

    text = read_text(path, "classes file")
    names: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        names.extend(line.split(","))
    return normalize_classes(names)


def resolve_classes(classes: list[str] | None = None, classes_file: str | Path | None = None,
                    coco: bool = False) -> list[str]:
    """Exactly one source of class entries: ``classes``, ``classes_file`` or ``coco`` (entries may carry prompts:
    ``"vehicle=car|truck"``, see :func:`parse_vocabulary`)."""
    given = sum([bool(classes), classes_file is not None, coco])
    if given == 0:
        raise InputError("no classes given: pass --classes person car ..., --classes-file FILE or --coco.")
    if given > 1:
        raise InputError("give classes one way only: --classes, --classes-file or --coco.")
    if coco:
        return list(COCO80)
    if classes_file is not None:
        entries = read_classes_file(classes_file)
    else:
        entries = normalize_classes([part for item in classes or [] for part in str(item).split(",")])
    parse_vocabulary(entries)  # a malformed entry is refused before any model is loaded
    return entries


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
