"""Fault injection: the real ``dart`` command line, as a subprocess, against mistakes users make.

Every case is one row of :data:`CASES`: a command line, the exit code it must end with, a pattern its one-sentence
message must contain. Each runs in a fresh copy of a small workspace (a tiny checkpoint, images, videos, exported
stages, a COCO-format dataset ...) and must leave no ``Traceback``, every file that was there byte-identical, and
no temporary or partial file behind. Adding a case is one line; a case that needs more than that names a
``prep`` function (run before) or a ``check`` function (run after).

Placeholders: ``{m}`` is a working tiny model, ``{bad}`` a checkpoint whose weights are truncated: a case that must
be refused *before* the model loads uses ``{bad}``, so loading it first would end with exit 3 instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest

from tests.conftest import make_image
from tests.tiny import TINY_IMGSZ

ROOT = Path(__file__).resolve().parents[1]
MODEL = f"--imgsz {TINY_IMGSZ} --device cpu"
TEMP_PATTERNS = (".dart-tmp", ".partial", ".tmp")


@dataclass
class Case:
    id: str
    command: str
    code: int
    message: str = ""  # a regex the whitespace-normalised output must contain
    prep: str | None = None  # name of a function(workspace) run before the command
    check: str | None = None  # name of a function(workspace, output) run after it
    env: dict[str, str] | None = None
    may_change: tuple[str, ...] = ()  # files under these paths may be rewritten by the case (its own outputs)
    interrupt_when: str | None = None  # a glob: send Ctrl-C once it matches three files


CASES = [
    # ------------------------------------------------------------------ a mistake never costs data
    Case("detect-into-its-image-folder", "detect photos -c person -o photos -m ck {m}", 2,
         "would receive 'im0.jpg' over the image .* dart never writes over its inputs"),
    Case("detect-dot-into-dot", "detect . -c person -o . -m ../ck {m}", 2, "dart never writes over its inputs",
         prep="cd_photos"),
    Case("detect-earlier-results-kept", "detect photos -c person -o out -m ck {m}", 2,
         r"already holds results this run would replace \(im0.json\).*--overwrite", prep="earlier_result"),
    Case("video-over-its-source", "video clip.avi -c person -o clip.avi -m ck {m}", 2,
         "is the video source 'clip.avi' this run reads"),
    Case("video-output-exists", "video clip.avi -c person -o old.mp4 -m ck {m}", 2,
         "'old.mp4' already exists; pass --overwrite", prep="old_video"),
    Case("video-jsonl-is-the-video", "video clip.avi -c person -o a.mp4 --save-jsonl a.mp4 -m ck {m}", 2,
         "three different files"),
    Case("prune-apply-over-its-checkpoint", "prune apply -m ck -o ck --skip-blocks 1", 2,
         "is or holds the checkpoint 'ck' this run reads"),
    Case("prune-apply-over-a-folder-holding-it", "prune apply -m ck -o . --skip-blocks 1", 2,
         "is or holds the checkpoint"),
    Case("export-over-earlier-export", "export encdec -m bad --imgsz 112 -o engines/encdec.onnx", 2,
         r"'engines/encdec.onnx' already exists; pass --overwrite"),
    Case("text-cache-over-the-weights", "text-cache build -c person -m ck -o ck/model.safetensors", 2,
         "is not a dart text cache .*dart leaves it as it is"),
    Case("text-cache-over-an-image", "detect photos -c person -o out -m ck {m} --text-cache photos/im1.jpg", 2,
         "is the image .*im1.jpg' this run reads"),
    Case("track-over-its-detections", "track --detections dets.jsonl -o dets.jsonl", 2,
         "is the detections file 'dets.jsonl' this run reads"),
    Case("eval-over-its-annotations", "eval coco --images coco/images --annotations coco/instances.json "
         "-o coco -m bad {m} --categories dataset --max-images 1", 2, "dart never writes over its inputs",
         prep="annotations_named_like_results"),
    Case("build-over-its-onnx", "build --onnx engines/backbone.onnx -o engines/backbone.onnx", 2,
         "is the ONNX file"),
    # ------------------------------------------------------------------ outputs that cannot be written
    Case("detect-output-under-a-file", "detect photos -c person -o blocker/out -m bad {m}", 2,
         "'blocker/out' cannot be created: .*blocker' is a file"),
    Case("video-output-under-a-file", "video clip.avi -c person -o blocker/v.mp4 -m bad {m}", 2, "is a file"),
    Case("export-output-under-a-file", "export backbone -m bad --imgsz 112 -o blocker/b.onnx", 2, "is a file"),
    Case("eval-output-under-a-file", "eval coco --images coco/images --annotations coco/instances.json "
         "-o blocker/e -m bad {m} --categories dataset", 2, "is a file"),
    Case("text-cache-output-under-a-file", "text-cache build -c person -m bad -o blocker/t.safetensors", 2,
         "is a file"),
    Case("track-output-under-a-file", "track --detections dets.jsonl -o blocker/t.txt", 2, "is a file"),
    Case("bench-output-under-a-file", "bench class-scaling -m bad {m} -o blocker/b --classes-counts 1", 2,
         "is a file"),
    Case("bench-backbones-output-under-a-file", "bench backbones --imgsz 112 --device cpu -o blocker/b", 2,
         "is a file"),
    Case("prune-search-output-under-a-file", "prune search --calib-dir photos -m bad --imgsz 112 --device cpu "
         "-o blocker/p --num-prune 1", 2, "is a file"),
    Case("precision-output-under-a-file", "precision bisect -m bad {m} -o blocker/p.json", 2, "is a file"),
    Case("eval-mot-output-under-a-file", "eval mot --gt mot.txt --pred mot.txt -o blocker/m", 2, "is a file"),
    Case("distill-output-under-a-file", "distill --data-dir photos -m bad --imgsz 112 --device cpu -o blocker/d",
         2, "is a file"),
    Case("detect-read-only-folder", "detect photos -c person -o readonly/out -m bad {m}", 2,
         "no permission to write in .*readonly"),
    Case("video-read-only-folder", "video clip.avi -c person -o readonly/v.mp4 -m bad {m}", 2,
         "no permission to write"),
    Case("export-read-only-folder", "export backbone -m bad --imgsz 112 -o readonly/b.onnx", 2,
         "no permission to write"),
    # ------------------------------------------------------------------ bad weights are one sentence (exit 3)
    Case("detect-missing-checkpoint", "detect photos -c person -o out -m weights/sam3.pt {m}", 3,
         r"checkpoint 'weights/sam3.pt' does not exist; pass a hub repo id"),
    Case("video-missing-checkpoint", "video clip.avi -c person -o v.mp4 -m ./nothere {m}", 3,
         "checkpoint './nothere' does not exist"),
    Case("export-missing-checkpoint", "export encdec -m nothere.safetensors --imgsz 112 -o e.onnx", 3,
         "checkpoint 'nothere.safetensors' does not exist"),
    Case("text-cache-missing-checkpoint", "text-cache build -c person -m ./nothere -o t.safetensors", 3,
         "checkpoint './nothere' does not exist"),
    Case("precision-bisect-missing-checkpoint", "precision bisect -m ./nothere -o p.json", 3,
         "checkpoint './nothere' does not exist"),
    Case("eval-missing-checkpoint", "eval coco --images coco/images --annotations coco/instances.json -o e "
         "-m ./nothere {m} --categories dataset", 3, "command line: checkpoint './nothere' does not exist"),
    Case("detect-truncated-weights", "detect photos -c person -o out -m bad {m}", 3,
         r"checkpoint folder 'bad' cannot be loaded \(SafetensorError"),
    Case("export-truncated-weights", "export backbone -m bad --imgsz 112 -o b.onnx", 3, "cannot be loaded"),
    Case("video-truncated-weights", "video clip.avi -c person -m bad {m} -o v.mp4", 3, "cannot be loaded"),
    Case("text-file-named-sam3-pt", "detect photos -c person -o out -m sam3.pt {m}", 3,
         r"PyTorch checkpoint 'sam3.pt' cannot be loaded \("),
    Case("folder-without-config", "detect photos -c person -o out -m emptyck {m}", 3, "has no config.json"),
    Case("broken-config", "detect photos -c person -o out -m badconfig {m}", 3, "cannot be loaded"),
    Case("broken-tokenizer", "detect photos -c person -o out -m badtok {m}", 3, "no usable tokenizer"),
    Case("missing-tokenizer-file", "detect photos -c person -o out -m ck {m} --tokenizer nothere.txt.gz", 3,
         "tokenizer 'nothere.txt.gz' does not exist"),
    Case("broken-student-weights", "detect photos -c person -o out -m ck {m} --backbone repvit_m0_9 "
         "--student-weights photos/im0.jpg", 3, "student weights 'photos/im0.jpg' cannot be loaded"),
    Case("broken-onnx", "detect photos -c person -o out --engines badengines", 3,
         "not a readable ONNX file"),
    Case("broken-text-cache", "detect photos -c person -o out -m ck {m} --text-cache junk.safetensors", 2,
         "damaged or is not a dart text cache"),
    # ------------------------------------------------------------------ flags that did something else
    Case("eval-with-engines", "eval coco --images coco/images --annotations coco/instances.json -o e "
         "--engines engines --categories dataset --max-images 2", 0, "COCO evaluation"),
    Case("torch-backend-with-engines", "detect photos -c person -o out --backend torch --engines engines", 2,
         "--backend torch runs the PyTorch model, but --engines names exported stages"),
    Case("engines-run-in-their-prompt-mode", "detect photos -c person -o out --engines engines --prompt-mode dart", 2,
         "exported with --prompt-mode meta, not dart"),
    Case("openvino-is-cpu-only", "detect photos -c person -o out --backend openvino --engines badengines --device cuda",
         2, "the openvino backend runs on the CPU"),
    Case("bad-prompt-mode", "detect photos -c person -o out -m bad {m} --prompt-mode sam", 2,
         "unknown prompt mode 'sam'"),
    Case("bench-two-backends-say-which-ran", "bench class-scaling --backend torch,onnxruntime --engines engines "
         "-m ck --device cpu --imgsz 112 --classes-counts 1 --runs 1 --warmup 0 -o b", 0, "", check="bench_backends"),
    Case("track-detections-that-are-an-image", "track --detections photos/im0.jpg -o t.txt", 2,
         "cannot read detections file .photos/im0.jpg."),
    Case("unknown-tracker", "track --detections dets.jsonl -o t.txt --tracker sort", 2,
         "no tracker named 'sort'; registered trackers: botsort, bytetrack"),
    Case("recipe-validate-bad-value", "recipe validate bad-recipe.yaml", 2,
         r"bad-recipe.yaml:3: step 'find': Invalid value for '--conf'"),
    Case("recipe-track-step-up-to-date", "recipe run traffic.yaml " + " ".join(
        f"--set {kv}" for kv in ("checkpoint=ck", "imgsz=112", "device=cpu", "backend=torch", "engines=null",
                                 "text_cache=null", "vars.video=clip.avi", "workdir=rw")) + " --only track", 0,
         "up to date, skipped", prep="recipe_ran_once"),
    Case("recipe-rerun-past-other-settings", "recipe run eval-recipe.yaml --set steps.eval.options.conf=0.2 "
         "--force", 0, "recipe finished", prep="eval_recipe_ran_once", may_change=("ev/",)),
    # ------------------------------------------------------------------ refused before the model loads
    Case("bad-precision", "detect photos -c person -o out -m bad {m} --precision fp64", 2,
         "unknown precision 'fp64'"),
    Case("bad-device", "detect photos -c person -o out -m bad --imgsz 112 --device tpu", 2,
         "unknown device 'tpu'"),
    Case("detect-given-a-video", "detect clip.avi -c person -o out -m bad {m}", 2,
         r"'clip.avi' is a video, and this command reads images: for a video run `dart video clip.avi"),
    Case("bench-video-of-a-missing-video", "bench video nothere.mp4 -c person -m ck {m} -o b", 2,
         "video 'nothere.mp4' does not exist"),
    Case("mps-without-an-apple-gpu", "detect photos -c person -o out -m ck --imgsz 112 --device mps", 4,
         r"no usable Apple GPU \(MPS\)"),
    Case("bad-compile-mode", "detect photos -c person -o out -m bad {m} --compile fast", 2,
         "unknown compile mode 'fast'"),
    Case("fp16-on-cpu", "video clip.avi -c person -m bad --imgsz 112 --device cpu --precision fp16", 2,
         "fp16 needs a CUDA device"),
    Case("skip-a-block-that-does-not-exist", "detect photos -c person -o out -m bad {m} --skip-blocks 99", 2,
         r"block 99 does not exist: the backbone has blocks 0..3"),
    Case("export-skip-a-block-that-does-not-exist", "export backbone -m bad --imgsz 112 --skip-blocks 7 -o b.onnx", 2,
         "block 7 does not exist"),
    Case("prune-more-blocks-than-there-are", "prune search --calib-dir photos -m bad --imgsz 112 --device cpu "
         "--num-prune 99 -o p", 2, r"--num-prune must be between 1 and 3"),
    Case("eval-bad-annotations", "eval coco --images coco/images --annotations photos/im0.jpg -o e -m bad {m}", 2,
         "is not valid JSON"),
    Case("eval-missing-images", "eval coco --images photos --annotations coco/instances.json -o e -m bad {m}", 2,
         "images listed in the annotation file are missing"),
    Case("eval-category-not-in-file", "eval coco --images coco/images --annotations coco/instances.json -o e "
         "-m bad {m}", 2, "have no category in the annotation file"),
    Case("threads-zero", "detect photos -c person -o out -m bad {m} --threads 0", 2,
         "Invalid value for '--threads'"),
    Case("threads-env-not-a-number", "detect photos -c person -o out -m bad {m}", 2, "DART_THREADS",
         env={"DART_THREADS": "many"}),
    Case("allocator-env-unknown", "detect photos -c person -o out -m bad {m}", 2,
         "DART_CPU_ALLOCATOR='jemalloc' is not a setting", env={"DART_CPU_ALLOCATOR": "jemalloc"}),
    # ------------------------------------------------------------------ partial results are said
    Case("truncated-video", "video trunc.avi -c person -m ck {m} -o v.mp4", 0,
         r"warning: 'trunc.avi' ended after \d+ of the 60 frames", check="quiet_video"),
    Case("ctrl-c-keeps-the-coco-file", "detect many -c person -o out -m ck {m} --save-coco --no-save-image", 130,
         "interrupted after", prep="many_images", interrupt_when="out/f*.json", check="coco_matches_done"),
    Case("every-unreadable-image-listed", "detect broken photos -c person -o out -m ck {m}", 2,
         r"5 of 8 images could not be read .* and 2 more\); the full list is in out/unreadable.txt",
         prep="broken_images", check="unreadable_list"),
    Case("nothing-saved-says-nothing-saved", "detect broken -c person -o out -m ck {m}", 2,
         "5 of 5 images could not be read", prep="broken_images", check="nothing_claimed_saved"),
    Case("video-without-outputs-says-so", "video clip.avi -c person -m ck {m}", 0, "nothing will be saved"),
    # ------------------------------------------------------------------ leaks and noise
    Case("stream-password-masked", "video rtsp://admin:hunter2@127.0.0.1:9/cam -c person -m bad {m} -o v.mp4", 2,
         r"rtsp://admin:\*\*\*@127.0.0.1:9/cam", check="no_password"),
    Case("botsort-warning-once", "track --detections dets.jsonl -o t.txt --tracker botsort", 0,
         "warning: botsort got no frame images", check="one_warning_line"),
    Case("threads-one", "detect photos -c person -o out -m ck {m} --threads 1", 0, "results saved to out"),
    # ------------------------------------------------------------------ exemplar prompts
    Case("exemplar-reference-is-an-input", "detect other -e photos/im0.jpg:20,15,80,45=w -o photos -m ck {m}", 2,
         "would receive 'im0.jpg' over the exemplar image", prep="other_photos"),
    Case("exemplar-wrong-order", "detect photos -e photos/im0.jpg:80,15,20,45=w -o out -m bad {m}", 2,
         "exemplar box 80,15,20,45 is in the wrong order"),
    Case("exemplar-missing-reference", "detect photos -e nothere.jpg:20,15,80,45=w -o out -m bad {m}", 2,
         "nothere.jpg' does not exist"),
    Case("exemplar-not-an-exemplar", "detect photos -e widget -o out -m bad {m}", 2, "'widget' is not an exemplar"),
    Case("exemplar-leaves-its-reference", "detect photos -e photos/im0.jpg:20,15,800,45=w -o out -m ck {m}", 2,
         r"exemplar box 20,15,800,45 leaves its reference image 'photos/im0.jpg' \(160x90 pixels\)"),
    Case("exemplar-leaves-the-image", "detect photos -e 20,15,800,45=w -o out -m ck {m}", 2,
         r"exemplar box 20,15,800,45 leaves the image \(160x90 pixels\)"),
    Case("exemplar-in-image-on-engines", "detect photos -e 20,15,80,45=w -o out --engines engines", 2,
         "exemplar boxes on the detected image run on the PyTorch backend"),
    Case("exemplar-video-first-frame", "video clip.avi -e 20,15,80,45=w -c person -m ck {m} --max-frames 3 "
         "--save-jsonl d.jsonl --conf 0", 0, "3 frames"),
    # ------------------------------------------------------------------ resuming continues the same run only
    Case("resume-another-run", "detect photos -c person -o out -m bad {m} --resume --conf 0.5", 2,
         r"holds results of another run \(conf: 0.3 before, 0.5 now\); --resume only continues the same run",
         prep="detected_once"),
    Case("resume-results-without-record", "detect photos -c person -o out -m bad {m} --resume", 2,
         "holds results but no dart-run.json", prep="earlier_result"),
    Case("resume-and-overwrite", "detect photos -c person -o out -m bad {m} --resume --overwrite", 2,
         "give one of the two"),
    Case("resume-coco-without-json", "detect photos -c person -o out -m bad {m} --resume --save-coco --no-save-json",
         2, "reads the kept images' results from their JSON files"),
    Case("ray-address-without-ray", "detect photos -c person -o out -m bad {m} --ray-address auto", 2,
         "is for --ray: add --ray"),
    Case("ray-with-benchmark", "detect photos -c person -o out -m bad {m} --ray --benchmark", 2,
         "--benchmark times a detector on this machine: drop --ray"),
    Case("serve-replicas-without-ray", "serve -c person -m bad {m} --replicas 2", 2, "--replicas is for --ray"),
    Case("image-list-lists-itself", "detect list.txt -c person -o out -m bad {m}", 2, "lists itself",
         prep="self_listing"),
    Case("image-list-missing-image", "detect list.txt -c person -o out -m bad {m}", 2,
         "image '.*nothere.jpg' does not exist", prep="list_with_missing_image"),
    # ------------------------------------------------------------------ serve: refused before it listens
    Case("serve-damaged-checkpoint", "serve -c person -m bad {m} --port 0", 3, "cannot be loaded"),
    Case("serve-exemplar-missing-image", "serve -e nothere.jpg:1,1,9,9=w -m bad {m}", 2, "nothere.jpg' does not exist"),
    Case("text-cache-in-image-exemplar", "text-cache build -e 20,15,80,45=w -o tc.safetensors -m bad {m}", 2,
         "their tokens cannot be cached"),
    # ------------------------------------------------------------------ DART text caches
    Case("dart-text-cache-written-into", "text-cache build -c person -o dart.pt -m bad {m}", 2,
         "dart reads such files but never writes into them", prep="dart_text_cache"),
    # a .pt given as both checkpoint and -o is the checkpoint this run reads, not a research text cache
    Case("text-cache-over-a-pt-checkpoint", "text-cache build -c person -m dart.pt -o dart.pt", 2,
         "is the checkpoint 'dart.pt' this run reads", prep="dart_text_cache"),
    Case("dart-text-cache-another-model", "detect photos -c person -o out -m ck {m} --text-cache dart.pt", 2,
         "was made by another model than this one", prep="dart_text_cache"),
    # ------------------------------------------------------------------ convert
    Case("convert-not-a-weight-file", "convert photos/im0.jpg -o w", 3, "'photos/im0.jpg' is not a PyTorch file"),
    Case("convert-student-weights-not-a-student", "detect photos -c person -o out -m ck {m} --student-weights "
         "ck/model.safetensors", 3, "is not a dart student checkpoint"),
    # ------------------------------------------------------------------ bench peers: refused before anything loads
    Case("peers-missing-checkpoint", "bench peers missing.pt -o bench", 2, "checkpoint 'missing.pt' does not exist"),
    Case("peers-unknown-system", "bench peers photos --systems dart-fp32,meta -o bench", 2, "unknown system 'meta'"),
    Case("peers-fp16-without-cuda", "bench peers photos --systems dart-fp16 --device cpu -o bench", 2,
         "dart-fp16 computes in fp16, which needs a CUDA device"),
    Case("peers-research-not-a-clone", "bench peers photos --research-repo photos -o bench", 2,
         "not a clone of the DART research code"),
    Case("peers-no-rounds", "bench peers photos --rounds 0 -o bench", 2, "Invalid value for '--rounds'"),
]


# ------------------------------------------------------------------------------------------ the workspace
@pytest.fixture(scope="module")
def template(tmp_path_factory, tiny_ckpt):
    """Everything the cases read, built once; each case works on its own copy."""
    from tests.coco_data import write_dataset
    from tests.export_helpers import tiny_engines

    base = Path(tempfile.mkdtemp(prefix="dart-faults-"))
    ws = base / "template"
    ws.mkdir()
    shutil.copytree(tiny_ckpt, ws / "ck")
    (ws / "bad").mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_ckpt / name, ws / "bad" / name)
    weights = (tiny_ckpt / "model.safetensors").read_bytes()
    (ws / "bad" / "model.safetensors").write_bytes(weights[: len(weights) // 3])
    shutil.copytree(tiny_ckpt, ws / "badconfig")
    (ws / "badconfig" / "config.json").write_text('{"vision_config": {"backbone_config": ')
    shutil.copytree(tiny_ckpt, ws / "badtok")
    (ws / "badtok" / "tokenizer.json").write_text("{ not json")
    (ws / "emptyck").mkdir()
    (ws / "sam3.pt").write_text("these are not the weights you are looking for\n")
    (ws / "junk.safetensors").write_bytes(b"\x00" * 64)
    (ws / "blocker").write_text("a file where a folder would have to be\n")
    (ws / "photos").mkdir()
    for i in range(3):
        cv2.imwrite(str(ws / "photos" / f"im{i}.jpg"), make_image(seed=i))
    write_video(ws / "clip.avi", 20)
    write_video(ws / "trunc.avi", 60)
    data = (ws / "trunc.avi").read_bytes()
    (ws / "trunc.avi").write_bytes(data[: len(data) // 2])
    engines = tiny_engines(tmp_path_factory, tiny_ckpt)
    shutil.copytree(engines, ws / "engines")
    write_engine_text_cache(ws)
    (ws / "badengines").mkdir()
    (ws / "badengines" / "backbone.onnx").write_bytes(b"not onnx")
    (ws / "badengines" / "encdec.onnx").write_bytes(b"not onnx")
    write_dataset(ws / "coco", categories=["person", "car", "dog"])
    (ws / "dets.jsonl").write_text("".join(json.dumps({"frame": f, "time": f / 10, "width": 160, "height": 90,
                                                       "detections": [{"box_xyxy": [10 + f, 10, 40 + f, 50],
                                                                       "score": 0.9, "class_id": 0,
                                                                       "class_name": "person"}]}) + "\n"
                                           for f in range(8)))
    (ws / "mot.txt").write_text("1,1,10,10,20,20,1,1,1\n")
    shutil.copy(ROOT / "recipes" / "traffic-tracking.yaml", ws / "traffic.yaml")
    (ws / "bad-recipe.yaml").write_text("name: bad\nsteps:\n  - name: find\n    run: detect\n    args: [photos]\n"
                                        "    options: {classes: [person], conf: high}\n")
    (ws / "eval-recipe.yaml").write_text(
        "name: ev\ncheckpoint: ck\nimgsz: 112\ndevice: cpu\nworkdir: ev\nsteps:\n  - name: eval\n    run: eval coco\n"
        "    options: {images: coco/images, annotations: coco/instances.json, categories: dataset, max_images: 2,"
        " output: ev/eval, conf: 0.05}\n    outputs: [ev/eval/summary.json]\n")
    (ws / "readonly").mkdir()
    yield ws
    shutil.rmtree(base, ignore_errors=True)


def write_video(path: Path, frames: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 90))
    for i in range(frames):
        writer.write(make_image(seed=i))
    writer.release()


def write_engine_text_cache(ws: Path) -> None:
    """The engines' own text cache (so engine-only runs need no PyTorch text encoder)."""
    from dart.export.metadata import read_metadata
    from dart.models.loading import load_sam3
    from dart.backends.torch_backend import TorchBackend
    from dart.text_cache import TextCache

    loaded = load_sam3(ws / "ck", imgsz=TINY_IMGSZ)
    assert read_metadata(ws / "engines" / "backbone.onnx").fingerprint == loaded.fingerprint
    cache = TextCache(loaded.fingerprint, ws / "engines" / "text.safetensors")
    cache.get(["person", "car", "dog"], TorchBackend(loaded, device="cpu").encode_text)


class unwritable:
    """A folder nobody may create files in, root included: mode 0555 for a normal user; for root (who ignores
    modes) the immutable attribute, or else a read-only mount."""

    def __init__(self, folder: Path):
        self.folder, self.undo = folder, None

    def __enter__(self) -> Path:
        if os.geteuid() != 0:
            os.chmod(self.folder, 0o555)
            self.undo = ["chmod", "755", str(self.folder)]
        elif subprocess.run(["chattr", "+i", str(self.folder)], capture_output=True).returncode == 0:
            self.undo = ["chattr", "-i", str(self.folder)]
        elif subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(self.folder)],
                            capture_output=True).returncode == 0:
            self.undo = ["umount", str(self.folder)]
        else:  # pragma: no cover - a container that allows neither
            pytest.skip("cannot make a folder unwritable for root here (no chattr, no mount)")
        assert not os.access(self.folder, os.W_OK), "the folder is still writable"
        return self.folder

    def __exit__(self, *exc) -> None:
        if self.undo:
            subprocess.run(self.undo, check=True)


def snapshot(folder: Path) -> dict[str, str]:
    out = {}
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# ------------------------------------------------------------------------------------------------ preps
def prep_cd_photos(ws: Path) -> Path:
    return ws / "photos"


def prep_dart_text_cache(ws: Path) -> None:
    """A text cache as the DART research code saves one, of features no tiny model computes."""
    import torch

    torch.save({"class_names": ["person"], "text": torch.randn(32, 1, 32), "mask": torch.arange(32)[None] >= 4},
               ws / "dart.pt")


def prep_other_photos(ws: Path) -> None:
    (ws / "other").mkdir()
    shutil.copy(ws / "photos" / "im1.jpg", ws / "other" / "im0.jpg")


def prep_earlier_result(ws: Path) -> None:
    (ws / "out").mkdir()
    (ws / "out" / "im0.json").write_text('{"earlier": true}\n')


def prep_detected_once(ws: Path) -> None:
    proc = run_dart(ws, f"detect photos -c person -o out -m ck {MODEL}", {})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def prep_self_listing(ws: Path) -> None:
    (ws / "list.txt").write_text("photos/im0.jpg\nlist.txt\n")


def prep_list_with_missing_image(ws: Path) -> None:
    (ws / "list.txt").write_text("# images to label\nphotos/im0.jpg\n\nnothere.jpg\n")


def prep_old_video(ws: Path) -> None:
    (ws / "old.mp4").write_bytes(b"an earlier annotated video")


def prep_annotations_named_like_results(ws: Path) -> None:
    shutil.copy(ws / "coco" / "instances.json", ws / "coco" / "results.json")
    (ws / "coco" / "instances.json").unlink()
    (ws / "coco" / "instances.json").symlink_to("results.json")


def prep_many_images(ws: Path) -> None:
    (ws / "many").mkdir()
    image = make_image(60, 80)
    for i in range(1500):
        cv2.imwrite(str(ws / "many" / f"f{i:04d}.png"), image)


def prep_broken_images(ws: Path) -> None:
    (ws / "broken").mkdir()
    for i in range(5):
        (ws / "broken" / f"b{i}.jpg").write_bytes(b"not a jpeg")


def prep_recipe_ran_once(ws: Path) -> None:
    proc = run_dart(ws, CASES_BY_ID["recipe-track-step-up-to-date"].command, {})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "running" in proc.stdout


def prep_eval_recipe_ran_once(ws: Path) -> None:
    proc = run_dart(ws, "recipe run eval-recipe.yaml", {})
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------------------------- checks
def check_bench_backends(ws: Path, output: str) -> None:
    report = json.loads((ws / "b" / "class_scaling.json").read_text())
    ran = [(s["name"], s["backend"], s["device"], s["precision"]) for s in report["setups"]]
    assert ran == [("torch", "torch", "cpu", "fp32"), ("onnxruntime", "onnxruntime", "cpu", "fp32")], ran


def check_quiet_video(ws: Path, output: str) -> None:
    assert "[mjpeg" not in output and "WARN" not in output, output  # FFmpeg / OpenCV chatter stays off
    assert (ws / "v.mp4").stat().st_size > 0


def check_coco_matches_done(ws: Path, output: str) -> None:
    done = sorted(p.stem for p in (ws / "out").glob("*.json") if p.name not in ("instances.json", "dart-run.json"))
    coco = json.loads((ws / "out" / "instances.json").read_text())
    assert 3 <= len(done) < 1500 and sorted(Path(im["file_name"]).stem for im in coco["images"]) == done
    assert re.search(rf"interrupted after {len(done)} of 1500 images", output), output


def check_unreadable_list(ws: Path, output: str) -> None:
    lines = (ws / "out" / "unreadable.txt").read_text().splitlines()
    assert len(lines) == 5 and all("b" in Path(line.split(":")[0]).name for line in lines)
    assert len(list((ws / "out").glob("im*.json"))) == 3


def check_nothing_claimed_saved(ws: Path, output: str) -> None:
    assert "results saved" not in output and sorted(p.name for p in (ws / "out").iterdir()) == ["unreadable.txt"]


def check_no_password(ws: Path, output: str) -> None:
    assert "hunter2" not in output


def check_one_warning_line(ws: Path, output: str) -> None:
    lines = [line for line in output.splitlines() if "camera motion compensation" in line]
    assert len(lines) == 1 and ".py" not in output and "UserWarning" not in output, output


CASES_BY_ID = {case.id: case for case in CASES}

# A shell starts background jobs (`cmd &`) with SIGINT ignored, children inherit that, and a Python started with SIGINT
# ignored never turns Ctrl-C into KeyboardInterrupt: the Ctrl-C case would then see dart run to the end. A Python
# handler here is reset to the default at exec, so every dart this module starts gets Ctrl-C as a user's terminal
# sends it, however the test run itself was started.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# ------------------------------------------------------------------------------------------------- runs
def run_dart(cwd: Path, command: str, env: dict[str, str], *,
             interrupt_when: str | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "dart", *shlex.split(command.format(m=MODEL))]
    full_env = {**os.environ, "DART_THREADS": "1", "COLUMNS": "200", "HF_HUB_OFFLINE": "1", **env}
    full_env.pop("DART_DEBUG", None)
    if interrupt_when is None:
        return subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300)
    proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(cwd.glob(interrupt_when))) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def run_case(case: Case, template: Path) -> None:
    """Run one case in a fresh copy of the workspace and check everything the contract promises."""
    base = Path(tempfile.mkdtemp(prefix="dart-fault-"))
    try:
        ws = base / "ws"
        shutil.copytree(template, ws, symlinks=True)
        cwd = ws
        if case.prep:
            cwd = globals()[f"prep_{case.prep}"](ws) or ws
        before = snapshot(ws)
        with unwritable(ws / "readonly"):
            proc = run_dart(cwd, case.command, case.env or {}, interrupt_when=case.interrupt_when)
        output = proc.stdout + proc.stderr
        flat = " ".join(output.split())
        assert proc.returncode == case.code, f"exit {proc.returncode}, expected {case.code}:\n{output}"
        assert "Traceback" not in output, output
        if case.message:
            assert re.search(case.message, flat), f"no /{case.message}/ in:\n{output}"
        after = snapshot(ws)
        changed = sorted(name for name, digest in before.items() if after.get(name) != digest
                         and not name.startswith(case.may_change or ("\0",)))
        assert not changed, f"files that were there before changed or vanished: {changed}"
        leftovers = [name for name in after if any(mark in Path(name).name for mark in TEMP_PATTERNS)]
        assert not leftovers, f"temporary or partial files left behind: {leftovers}"
        if case.check:
            globals()[f"check_{case.check}"](ws, output)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def outcomes(template) -> dict[str, BaseException | None]:
    """Every case, run a few at a time (each subprocess uses one thread): what each raised, or None."""
    from concurrent.futures import ThreadPoolExecutor

    from dart.backends.base import available_cpus

    def attempt(case: Case) -> BaseException | None:
        try:
            run_case(case, template)
        except BaseException as exc:  # noqa: BLE001 - reported by the case's own test below
            return exc
        return None

    with ThreadPoolExecutor(max_workers=max(2, available_cpus())) as pool:
        return dict(zip(CASES_BY_ID, pool.map(attempt, CASES)))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault(case: Case, outcomes):
    failure = outcomes[case.id]
    if failure is not None:
        raise failure


@pytest.mark.slow
def test_compile_on_a_cpu_keeps_the_compiler_log_off_the_terminal(template):
    """torch.compile on a CPU used to print ~170 lines of dynamo warnings (graph breaks in transformers' SAM3)."""
    base = Path(tempfile.mkdtemp(prefix="dart-fault-"))
    try:
        shutil.copytree(template, base / "ws", symlinks=True)
        proc = run_dart(base / "ws", "detect photos/im0.jpg -c person -o out -m ck {m} --compile default", {})
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output
        assert "torch/_dynamo" not in output and "W1" not in output and len(output.splitlines()) < 15, output
        proc = run_dart(base / "ws", "--verbose detect photos/im0.jpg -c person -o out2 -m ck {m} --compile default",
                        {})
        # --verbose lets torch's compiler log through: with torch 2.14 and transformers 5 it is no longer ~170 lines
        # of graph breaks, but a warning of torch's own still reaches the terminal
        assert proc.returncode == 0 and "torch/" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_cases_are_unique_and_cover_every_exit_code():
    assert len(CASES_BY_ID) == len(CASES)
    assert {c.code for c in CASES} >= {0, 2, 3, 130}
