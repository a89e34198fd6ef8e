"""COCO evaluation: detect the 80 COCO categories on every image, write the COCO results JSON, score it with
``pycocotools``' ``COCOeval`` (``bbox``; ``segm`` too with masks) and keep a JSON summary.

>>> from dart.eval.coco import evaluate_coco
>>> result = evaluate_coco(detector, "val2017/", "instances_val2017.json", "runs/eval/coco", max_images=500)
>>> result.metrics["bbox"]["AP"]

Predictions are appended per image as they are made (:mod:`dart.eval.store`), so an interrupted run resumes
where it stopped; under ``torchrun`` each rank takes ``images[rank::world]`` and rank 0 merges and scores.
The final ``results.json`` and ``summary.json`` are written atomically.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dart.classes import COCO80
from dart.errors import InputError
from dart.eval import store as st
from dart.io import write_json
from dart.run_record import read_record, record_difference

METRICS = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AR1", "AR10", "AR100", "AR_S", "AR_M", "AR_L")
TABLE_METRICS = METRICS[:6]
IOU_TYPES = ("bbox", "segm")
RESULTS = "results.json"
SUMMARY = "summary.json"
RUN = "run.json"


@dataclass
class ImageRecord:
    id: int
    file_name: str
    path: Path
    width: int
    height: int


@dataclass
class EvalResult:
    """What an evaluation produced: metrics per IoU type (``{"bbox": {"AP": ...}}``) and where files went."""

    metrics: dict[str, dict[str, float]]
    images: int
    detections: int
    output: Path
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def results_path(self) -> Path:
        return self.output / RESULTS

    @property
    def summary_path(self) -> Path:
        return self.output / SUMMARY


# ------------------------------------------------------------------------------------------------ dataset
def _quiet() -> contextlib.AbstractContextManager:
    return contextlib.redirect_stdout(io.StringIO())


def load_annotations(path: str | Path):
    """Read a COCO instances file into a ``pycocotools`` ``COCO`` object; a bad file is one sentence."""
    from pycocotools.coco import COCO

    path = Path(path)
    if not path.is_file():
        raise InputError(f"annotation file '{path}' does not exist.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"annotation file '{path}' is not valid JSON ({exc}).") from exc
    if not isinstance(data, dict):
        raise InputError(f"annotation file '{path}' must hold a JSON object with images, annotations and categories.")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise InputError(f"annotation file '{path}' has no '{key}' list, so it is not a COCO instances file.")
    for key, required in (("images", ("id", "file_name")), ("categories", ("id", "name")),
                          ("annotations", ("id", "image_id", "category_id", "bbox"))):
        for i, item in enumerate(data[key]):
            missing = [k for k in required if not isinstance(item, dict) or k not in item]
            if missing:
                raise InputError(f"annotation file '{path}': {key}[{i}] has no '{missing[0]}'.")
    if not data["images"]:
        raise InputError(f"annotation file '{path}' lists no images.")
    image_ids = {im["id"] for im in data["images"]}
    category_ids = {c["id"] for c in data["categories"]}
    for ann in data["annotations"]:
        if ann["image_id"] not in image_ids:
            raise InputError(f"annotation file '{path}': annotation {ann['id']} refers to image {ann['image_id']}, "
                             "which is not in its images list.")
        if ann["category_id"] not in category_ids:
            raise InputError(f"annotation file '{path}': annotation {ann['id']} has category {ann['category_id']}, "
                             "which is not in its categories list.")
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
    coco = COCO()
    coco.dataset = data
    with _quiet():
        coco.createIndex()
    return coco


def image_records(coco, images_dir: str | Path, max_images: int | None = None) -> list[ImageRecord]:
    """The annotated images in id order (the first ``max_images``), checked to exist under ``images_dir``."""
    folder = Path(images_dir)
    if not folder.is_dir():
        raise InputError(f"images folder '{folder}' does not exist.")
    if max_images is not None and max_images < 1:
        raise InputError(f"--max-images must be at least 1, got {max_images}.")
    records = []
    for image_id in sorted(coco.imgs)[:max_images]:
        info = coco.imgs[image_id]
        records.append(ImageRecord(int(image_id), str(info["file_name"]), folder / str(info["file_name"]),
                                   int(info.get("width", 0)), int(info.get("height", 0))))
    missing = [r for r in records if not r.path.is_file()]
    if missing:
        raise InputError(f"{len(missing)} of {len(records)} images listed in the annotation file are missing from "
                         f"'{folder}' (first: {missing[0].file_name}); check --images.")
    return records


def category_ids(classes: Sequence[str], coco) -> list[int]:
    """COCO category id of each class name, matched by name (case and spaces ignored) against the annotation
    file's categories. A name with no category is one sentence naming it."""
    by_name: dict[str, int] = {}
    for cat in coco.dataset["categories"]:
        by_name.setdefault(_norm(cat["name"]), int(cat["id"]))
    ids, missing = [], []
    for name in classes:
        if _norm(name) in by_name:
            ids.append(by_name[_norm(name)])
        else:
            missing.append(name)
    if missing:
        known = ", ".join(sorted(c["name"] for c in coco.dataset["categories"])[:8])
        raise InputError(
            f"{len(missing)} class name(s) have no category in the annotation file (first: '{missing[0]}'); its "
            f"categories are {known}{' ...' if len(coco.dataset['categories']) > 8 else ''}. Use --categories dataset "
            "to detect the file's own category names."
        )
    return ids


def dataset_classes(coco) -> list[str]:
    """The annotation file's category names, in category-id order."""
    return [str(c["name"]) for c in sorted(coco.dataset["categories"], key=lambda c: c["id"])]


def _norm(name: str) -> str:
    return " ".join(str(name).lower().replace("_", " ").split())


# ------------------------------------------------------------------------------------------------ scoring
def score(coco_gt, results: list[dict[str, Any]], iou_type: str = "bbox",
          image_ids: Sequence[int] | None = None) -> dict[str, float]:
    """``COCOeval`` on ``results`` (COCO results rows) restricted to ``image_ids``: the 12 standard numbers by
    name (AP, AP50, AP75, AP_S, AP_M, AP_L, AR1, AR10, AR100, AR_S, AR_M, AR_L). No results scores 0."""
    import copy

    from pycocotools.cocoeval import COCOeval

    if iou_type not in IOU_TYPES:
        raise InputError(f"unknown IoU type '{iou_type}': use bbox or segm.")
    ids = sorted(set(image_ids)) if image_ids is not None else sorted(coco_gt.getImgIds())
    rows = [r for r in results if r["image_id"] in set(ids)]
    if iou_type == "segm":
        rows = [r for r in rows if "segmentation" in r]
    if not rows:
        return {m: 0.0 for m in METRICS}
    with _quiet():
        coco_dt = coco_gt.loadRes(copy.deepcopy(rows))
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.params.imgIds = ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {m: float(v) for m, v in zip(METRICS, evaluator.stats)}


# ---------------------------------------------------------------------------------------------------- run
def evaluate_coco(
    detector,
    images_dir: str | Path,
    annotations: str | Path,
    output: str | Path,
    *,
    max_images: int | None = None,
    masks: bool = False,
    classes: Sequence[str] | None = None,
    resume: bool = True,
    batch: int = 1,
    rank: int = 0,
    world: int = 1,
    settings: dict[str, Any] | None = None,
    progress: bool = True,
    shard_timeout: float = 24 * 3600.0,
    coco: Any = None,
) -> EvalResult | None:
    """Detect ``classes`` (default: the 80 COCO names) on the annotated images and score them.

    ``detector`` is anything with ``set_classes``, ``classes`` and ``detect_batch(images) -> [Detections]``
    (a :class:`~dart.detector.Detector`). ``settings`` (JSON-ready) describes the run; resuming refuses
    predictions made with other settings (``resume=False`` starts over). ``coco``: the annotations already loaded
    with :func:`load_annotations`. Returns the result on rank 0 and ``None`` on other ranks.
    """
    from dart.preprocess import load_image

    started = time.perf_counter()
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise InputError(f"output '{output}' exists and is not a folder.")
    coco = coco if coco is not None else load_annotations(annotations)
    records = image_records(coco, images_dir, max_images)
    names = list(classes) if classes is not None else list(COCO80)
    cat_ids = category_ids(names, coco)
    run_info = make_run_info(annotations, names, cat_ids, masks, settings)
    output.mkdir(parents=True, exist_ok=True)
    own = st.PredictionStore(output, rank)
    if not resume:
        own.reset()
        if rank == 0:
            for path in (output / RESULTS, output / SUMMARY):
                path.unlink(missing_ok=True)
            for path in output.glob(st.PREDICTIONS.format(rank="*")):
                if _rank_of(path) >= world:
                    path.unlink()
                    (output / st.DONE.format(rank=_rank_of(path))).unlink(missing_ok=True)
    _check_run_info(output / RUN, run_info, resume)
    own.open()

    finished = st.done_ids(output)
    share = st.shard(records, rank, world)
    todo = [r for r in share if r.id not in finished]
    if list(detector.classes) != names:
        detector.set_classes(names)
    _detect_into(detector, todo, own, cat_ids, masks, batch, progress, load_image,
                 description=f"eval rank {rank}/{world}" if world > 1 else "eval")
    own.mark_complete(world, [r.id for r in share])
    if rank != 0:
        return None
    all_ids = [r.id for r in records]
    if world > 1:
        st.wait_for_shards(output, all_ids, world, timeout=shard_timeout)
    predictions = st.load_predictions(output)
    undone = [i for i in all_ids if i not in predictions]
    if undone:
        raise InputError(f"{len(undone)} images have no predictions after all ranks finished (first id {undone[0]}); "
                         "run the same command again to complete them.")
    results = st.merge_results(predictions, all_ids)
    write_json(output / RESULTS, results)
    metrics = {"bbox": score(coco, results, "bbox", all_ids)}
    if masks:
        metrics["segm"] = score(coco, results, "segm", all_ids)
    summary = {
        "annotations": str(annotations), "images_dir": str(images_dir), "images": len(all_ids),
        "detections": len(results), "classes": len(names), "masks": masks, "metrics": metrics,
        "settings": settings or {}, "results": str(output / RESULTS), "seconds": round(time.perf_counter() - started, 3),
        "world_size": world,
    }
    write_json(output / SUMMARY, summary)
    return EvalResult(metrics, len(all_ids), len(results), output, summary)


def _rank_of(path: Path) -> int:
    digits = "".join(ch for ch in path.stem.rsplit("rank", 1)[-1] if ch.isdigit())
    return int(digits) if digits else 0


def make_run_info(annotations: str | Path, classes: Sequence[str], cat_ids: Sequence[int], masks: bool,
                  settings: dict[str, Any] | None) -> dict[str, Any]:
    """What identifies an evaluation run (``run.json``): a resumed run must have the same."""
    return {"annotations": str(Path(annotations).resolve()), "classes": list(classes), "category_ids": list(cat_ids),
            "masks": masks, "settings": settings or {}}


def check_resumable(output: str | Path, info: dict[str, Any], *, ignore: Sequence[str] = ()) -> None:
    """Refuse, before any work, an output folder holding predictions of a run with other settings. ``ignore``:
    setting names not known yet (the model fingerprint before the model loads), compared later."""
    path = Path(output) / RUN
    if not path.exists() or not st.done_ids(path.parent):
        return
    changed = record_difference(read_record(path), info, [f"settings.{key}" for key in ignore])
    if changed is not None:
        raise InputError(
            f"'{path.parent}' holds predictions made with other settings ({changed}); pass --overwrite to start over "
            "or choose another --output."
        )


def _check_run_info(path: Path, info: dict[str, Any], resume: bool) -> None:
    """Record the run's settings; refuse to resume predictions made with different ones."""
    canonical = json.loads(json.dumps(info))
    if resume:
        check_resumable(path.parent, info)
    if read_record(path) != canonical:
        write_json(path, canonical)


def _detect_into(detector, todo: list[ImageRecord], own: st.PredictionStore, cat_ids: list[int], masks: bool,
                 batch: int, progress: bool, load_image, description: str) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn()]
    with Progress(*columns, disable=not progress or not todo) as bar:
        task = bar.add_task(description, total=len(todo))
        for start in range(0, len(todo), max(1, batch)):
            chunk = todo[start:start + max(1, batch)]
            images = [load_image(r.path) for r in chunk]
            for record, dets in zip(chunk, detector.detect_batch(images)):
                if not masks:
                    dets.masks = None
                own.append(record.id, dets.to_coco(record.id, cat_ids), file_name=record.file_name)
                bar.advance(task)


def metrics_from_summary(path: str | Path) -> dict[str, dict[str, float]]:
    """The metrics of a saved ``summary.json``."""
    return json.loads(Path(path).read_text(encoding="utf-8"))["metrics"]


def as_percent(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(100.0 * v, 2) if v >= 0 else float("nan") for k, v in metrics.items()}


__all__ = ["ImageRecord", "EvalResult", "METRICS", "load_annotations", "image_records", "category_ids",
           "dataset_classes", "score", "evaluate_coco"]
