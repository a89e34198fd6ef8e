"""Batch labelling on Ray Data: ``dart detect SOURCES --ray``.

Ray Data streams the list of images to a pool of workers, each holding one :class:`~dart.detector.Detector`
(one per GPU, or CPU workers); each worker writes the files ``dart detect`` writes for its images
(:class:`~dart.images.ResultFiles`: ``<stem>.json``, the annotated image, YOLO labels), each file whole. The
driver writes what describes the whole run: ``dart-run.json``, ``labels/classes.txt``, ``instances.json`` (COCO,
images in input order) and ``unreadable.txt``.

An interrupted run resumes (``--resume``): images whose files are all there are kept, the others are labelled,
and the COCO file covers both. On a cluster, the images and the output folder must be at the same path on every
node (a shared file system).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dart.errors import DartError, InputError
from dart.images import (BatchResult, CocoLabels, ResultFiles, finish_run, model_record, output_stems, resume_plan,
                         start_run)
from dart.serve.ray_cluster import cluster_resources, ray_reason, ray_started, stopped_as_ctrl_c


@dataclass
class LabelJob:
    """What every worker needs to build its detector and write its images' files (sent to each worker)."""

    setup: Any  # dart.setup.Setup
    classes: list[str]  # the class entries as given (prompts and exemplars included)
    names: list[str]  # the class names in id order (what the vocabulary of those entries is called)
    files: ResultFiles
    detector_kwargs: dict[str, Any] = field(default_factory=dict)
    tile: int | None = None
    tile_overlap: float = 0.2
    batch: int = 1
    threads: int | None = None
    coco: bool = False  # send each image's result back for the COCO file
    expected_model: dict[str, Any] | None = None  # resuming: the model the earlier results came from


def build_labeller(job: LabelJob):
    """The detector a job describes (tiled when asked)."""
    detector = job.setup.build_detector(job.classes, **job.detector_kwargs)
    from dart.tiling import tiled

    return tiled(detector, job.tile, overlap=job.tile_overlap, batch=job.batch)


class LabelWorker:
    """One Ray Data worker: builds its detector once, then labels batches of ``{index, path, stem}`` rows."""

    def __init__(self, job: LabelJob):
        from dart.backends.base import set_threads

        self.job, self.problem, self.model = job, None, {}
        try:
            set_threads(job.threads)
            self.detector = build_labeller(job)
            self.model = model_record(self.detector)
            if job.expected_model and self.model != job.expected_model:
                self.problem = (f"this worker's model ({self.model}) is not the one the results already in "
                                f"'{job.files.output}' came from ({job.expected_model})")
        except DartError as exc:
            self.problem = str(exc).rstrip(".")

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        from dart.preprocess import load_image

        rows = {"index": [], "status": [], "reason": [], "result": [], "model": []}

        def add(index: int, status: str, reason: str = "", result: str = "") -> None:
            for key, value in zip(rows, (int(index), status, reason, result, json.dumps(self.model))):
                rows[key].append(value)

        triples = list(zip(batch["index"], batch["path"], batch["stem"]))
        if self.problem is not None:
            for index, _, _ in triples:
                add(index, "refused", self.problem)
            return rows
        loaded = []
        for index, path, stem in triples:
            try:
                loaded.append((index, Path(str(path)), str(stem), load_image(str(path))))
            except InputError as exc:
                add(index, "failed", str(exc))
        if loaded:
            all_dets = self.detector.detect_batch([image for *_, image in loaded])
            for (index, path, stem, image), dets in zip(loaded, all_dets):
                record, _ = self.job.files.write(self.detector, path, stem, image, dets)
                add(index, "done", result=json.dumps(record) if self.job.coco else "")
        return rows


def quiet_ray_data() -> None:
    """dart draws its own progress bar: Ray Data's bars and per-dataset log lines are turned off."""
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False


def label_on_ray(job: LabelJob, images: list[Path], *, address: str | None = None, workers: int | None = None,
                 resume: bool = False, record: dict[str, Any], progress: bool = True) -> BatchResult:
    """Label ``images`` on Ray Data into ``job.files.output``; see the module docs. ``record`` is the run's
    record (:func:`~dart.images.run_record`) without its model, which comes from the workers (and, resuming,
    must equal the earlier one: each worker checks before it writes)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    files, result = job.files, BatchResult()
    stems = output_stems(images)
    if resume:
        previous, todo, kept = resume_plan(files, images, record, need_json=job.coco, ignore=("model",))
    else:
        previous, todo, kept = None, list(range(len(images))), []
    job.expected_model = (previous or {}).get("model") or None
    result.kept = [images[i] for i in kept]
    coco = CocoLabels(job.names, images, files) if job.coco else None
    for index in kept if coco is not None else ():
        coco.add_saved(index)
    started = ray_started(address)
    info = {**record, "model": job.expected_model}
    with stopped_as_ctrl_c():  # after Ray's own handlers: a SIGTERM keeps what was done and stops this Ray
        try:
            import ray.data

            quiet_ray_data()
            count, gpus, cpus, job.threads = cluster_resources(job.setup, workers, job.threads)
            if not todo:
                return result
            items = [{"index": i, "path": str(images[i]), "stem": stems[i]} for i in todo]
            blocks = max(1, min(len(items) // max(1, job.batch), 4096))
            dataset = ray.data.from_items(items, override_num_blocks=blocks)
            labelled = dataset.map_batches(LabelWorker, fn_constructor_args=(job,), batch_size=job.batch,
                                           concurrency=count, num_gpus=gpus or None, num_cpus=cpus,
                                           batch_format="numpy")
            columns = [TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeRemainingColumn()]
            with Progress(*columns, disable=not progress, transient=False) as bar:
                task = bar.add_task(f"detect on Ray ({count} worker{'s' if count > 1 else ''})", total=len(todo))
                started_run = False
                for row in labelled.iter_rows():
                    index, status = int(row["index"]), str(row["status"])
                    if status == "refused":
                        raise InputError(f"a Ray worker could not label: {row['reason']}.")
                    model = json.loads(str(row["model"]))
                    info["model"] = info["model"] or model
                    if status == "done" and not started_run:  # the workers wrote the run's first result files
                        start_run(files, job.names, info, result)
                        started_run = True
                    if model != info["model"]:
                        raise InputError(f"two Ray workers hold different models ({info['model']} and {model}); "
                                         "give every node the same checkpoint.")
                    if status == "failed":
                        result.failed.append((images[index], str(row["reason"])))
                    else:
                        if coco is not None:
                            coco.add(index, json.loads(str(row["result"])))
                        result.done.append((images[index], None))
                    bar.advance(task)
        except KeyboardInterrupt:
            result.interrupted = True
        except DartError:
            raise
        except Exception as exc:  # noqa: BLE001 - a worker's error reaches the driver wrapped by Ray
            raise DartError(f"labelling on Ray failed: {ray_reason(exc)}") from None
        finally:
            try:
                if result.done or result.kept or result.interrupted or result.failed:
                    finish_run(files, coco, result)
            finally:
                if started:
                    import ray

                    ray.shutdown()
        return result
