"""dart vs Meta's own SAM3 (the ``sam3`` package) on the same random weights: how far apart every output is.

    python benchmarks/fidelity_meta.py                 # the small architecture of the test suite (seconds)
    python benchmarks/fidelity_meta.py --full          # SAM3's full size, 1008 px (minutes on a CPU, ~10 GB)

Meta's model is built by Meta's builder (at full size, or shrunk as in ``tests/meta_reference.py``), saved as a
``sam3.pt`` and loaded by dart through its key map; both then see the same image and class names. Printed per
output: the largest absolute difference relative to the largest magnitude (float32 noise is about 1e-6), and for
the final detections how many each side kept at a threshold that keeps many, and the largest box and score
differences. The numbers are recorded in BENCHMARKS.md (section "Fidelity").
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import meta_reference as ref  # noqa: E402

CLASSES = ["person", "car", "bicycle", "traffic light", "dog", "a red bus"]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


def build(full: bool, bpe: Path, folder: Path, seed: int):
    if not full:
        model = ref.build_meta_model(bpe, seed)
        return model, ref.save_as_sam3_pt(model, folder), ref.IMGSZ
    from dart.bench.peers import random_meta_model, save_meta_checkpoint

    ref.import_meta()  # Meta's builder imports with its CUDA warnings silenced
    model = random_meta_model(bpe, seed)
    folder.mkdir(parents=True, exist_ok=True)
    return model, save_meta_checkpoint(model, folder / "sam3.pt"), 1008


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="SAM3's full size at 1008 px (default: the test size)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all this process may use)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()

    from PIL import Image

    from dart.backends.base import set_threads
    from dart.backends.torch_backend import TorchBackend
    from dart.detector import Detector
    from dart.models.loading import load_sam3
    from dart.models.tokenizer import installed_bpe_vocab
    from dart.preprocess import preprocess, to_rgb
    from dart.stages import box_cxcywh_to_xyxy
    from sam3.model.sam3_image_processor import Sam3Processor
    from tests.conftest import make_image

    threads = set_threads(args.threads)
    bpe = installed_bpe_vocab()
    if bpe is None:
        raise SystemExit("needs open-clip-torch (CLIP's BPE vocabulary): pip install -e '.[dev]'")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dart-fidelity-") as tmp:
        model, checkpoint, imgsz = build(args.full, bpe, Path(tmp), args.seed)
        loaded = load_sam3(checkpoint, imgsz=imgsz, tokenizer=bpe)
    backend = TorchBackend(loaded, device="cpu")
    image = make_image(480, 640, seed=7)
    numbers: dict[str, float | int | str] = {"size": "full (1008 px)" if args.full else f"small ({imgsz} px)",
                                             "threads": threads, "classes": len(CLASSES)}
    with ref.cpu_fallbacks(), torch.inference_mode():
        processor = Sam3Processor(model, resolution=imgsz, device="cpu", confidence_threshold=0.0)
        state = processor.set_image(Image.fromarray(image[:, :, ::-1].copy()))
        fpn = state["backbone_out"]["backbone_fpn"]
        features = backend.backbone(preprocess([to_rgb(image)], imgsz))
        numbers["fpn"] = max(rel(a, b) for a, b in zip(features, fpn))
        text, mask = backend.encode_text(CLASSES)
        meta_text = model.backbone.forward_text(CLASSES, device="cpu")["language_features"].transpose(0, 1)
        numbers["text"] = rel(text[mask], meta_text[mask])
        heads = backend.encdec(features, text, mask, return_state=True)
        masks = backend.masks(features, heads, text, mask, torch.tensor([[0, c] for c in range(len(CLASSES))]))
        worst = {"logits": 0.0, "boxes": 0.0, "presence": 0.0, "masks": 0.0}
        scores = []
        for c, name in enumerate(CLASSES):
            state = processor.set_text_prompt(name, state)
            out = model.forward_grounding(backbone_out=state["backbone_out"], find_input=processor.find_stage,
                                          geometric_prompt=state["geometric_prompt"], find_target=None)
            worst["logits"] = max(worst["logits"], rel(heads["logits"][0, c], out["pred_logits"][0, :, 0]))
            worst["boxes"] = max(worst["boxes"], rel(heads["boxes"][0, c], box_cxcywh_to_xyxy(out["pred_boxes"][0])))
            worst["presence"] = max(worst["presence"], float((heads["presence"][0, c] -
                                                              out["presence_logit_dec"].flatten()[0]).abs()))
            worst["masks"] = max(worst["masks"], rel(masks[c], out["pred_masks"][0]))
            scores.append(out["pred_logits"][0, :, 0].sigmoid() * out["presence_logit_dec"].sigmoid().flatten()[0])
        numbers.update(worst)
        ranked = torch.cat(scores).sort().values
        middle = range(len(ranked) * 2 // 5, len(ranked) * 3 // 5)
        i = max(middle, key=lambda k: float(ranked[k + 1] - ranked[k]))
        threshold = float(ranked[i] + ranked[i + 1]) / 2
        processor.set_confidence_threshold(threshold)
        meta_dets = []
        for c, name in enumerate(CLASSES):
            state = processor.set_text_prompt(name, state)
            meta_dets += [(c, float(s), b.clamp(min=0).numpy()) for s, b in zip(state["scores"], state["boxes"])]
    got = Detector(backend, CLASSES, conf=threshold, nms=None, max_det=100000).detect(image)
    numbers.update(threshold=round(threshold, 6), dart_detections=len(got), meta_detections=len(meta_dets))
    height, width = image.shape[:2]
    meta_dets = [(c, s, np.minimum(b, [width, height] * 2)) for c, s, b in meta_dets]  # dart clips to the image
    try:
        pairs = ref.match_detections(got, meta_dets)
    except AssertionError as exc:
        numbers["paired"] = str(exc)
    else:
        numbers["score_max_abs"] = max(abs(float(got.scores[i]) - meta_dets[j][1]) for i, j in pairs)
        numbers["box_max_abs_px"] = max(float(np.abs(got.xyxy[i] - meta_dets[j][2]).max()) for i, j in pairs)
    numbers["seconds"] = round(time.perf_counter() - started, 1)
    for key, value in numbers.items():
        print(f"{key:>16}: {value:.3g}" if isinstance(value, float) else f"{key:>16}: {value}")
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
