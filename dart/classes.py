"""Class lists: from the command line, from a file, or the 80 COCO names."""

from __future__ import annotations

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
    """Exactly one source of class names: ``classes``, ``classes_file`` or ``coco``."""
    given = sum([bool(classes), classes_file is not None, coco])
    if given == 0:
        raise InputError("no classes given: pass --classes person car ..., --classes-file FILE or --coco.")
    if given > 1:
        raise InputError("give classes one way only: --classes, --classes-file or --coco.")
    if coco:
        return list(COCO80)
    if classes_file is not None:
        return read_classes_file(classes_file)
    expanded = [part for item in classes or [] for part in str(item).split(",")]
    return normalize_classes(expanded)
