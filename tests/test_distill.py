"""Distillation: the loss goes down, resume continues exactly, teacher cache, errors, torchrun on CPU (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch

from dart.distill import DistillConfig, run_distillation
from dart.distill import trainer as trainer_module
from dart.errors import InputError
from dart.pruning import PruneSpec
from tests.conftest import make_image
from tests.tiny import TINY_IMGSZ

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("distill_images")
    (folder / "sub").mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / ("sub" if i % 2 else ".") / f"im{i}.jpg"), make_image(80 + 8 * i, 120, seed=i))
    (folder / "notes.txt").write_text("not an image")
    return folder


def config(tiny_ckpt, images, output, **kwargs) -> DistillConfig:
    base = dict(phase="prune", data_dir=images, output=output, checkpoint=str(tiny_ckpt), prune=PruneSpec.parse("2"),
                imgsz=TINY_IMGSZ, epochs=2, batch=2, lr=1e-4, workers=0, device="cpu", val_fraction=0.2,
                hflip=True, seed=1)
    base.update(kwargs)
    return DistillConfig(**base)


def test_adapter_phase_lowers_the_loss_with_cached_teacher(tmp_path, tiny_ckpt, images):
    pytest.importorskip("timm")
    from dart.detector import Detector

    cfg = config(tiny_ckpt, images, tmp_path / "run", phase="adapter", backbone="efficientvit_b0", prune=PruneSpec(),
                 pretrained=False, epochs=4, lr=3e-3, warmup=0.0, cache_dir=tmp_path / "cache")
    result = run_distillation(cfg, progress=False)
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 4 and losses[-1] < 0.7 * losses[0], losses
    assert all(len(h["val_cosine"]) == 3 for h in result.history)
    cached = list((tmp_path / "cache").glob("*/*.safetensors"))
    assert len(cached) == 5  # 4 training + 1 validation image, computed once for all epochs
    assert result.artifact == tmp_path / "run" / "student.safetensors"
    det = Detector.from_pretrained(tiny_ckpt, ["person"], imgsz=TINY_IMGSZ, device="cpu",
                                   student_weights=result.artifact)
    assert det.backend.backbone_name == "efficientvit_b0"


def test_teacher_cache_round_trip_and_keys(tmp_path, tiny_loaded, images):
    from dart.distill.cache import TeacherCache
    from dart.distill.data import ImageFolderDataset, list_images
    from dart.stages import BackboneStage

    paths = list_images(images)
    assert len(paths) == 5  # sub-folders included, the .txt ignored
    cache = TeacherCache(tmp_path, {"fingerprint": tiny_loaded.fingerprint, "imgsz": TINY_IMGSZ})
    dataset = ImageFolderDataset(paths, TINY_IMGSZ)
    with torch.inference_mode():
        feats = BackboneStage(tiny_loaded.model)(dataset[0]["pixels"][None])
    cache.save(paths[0], [f[0] for f in feats])
    cached = ImageFolderDataset(paths, TINY_IMGSZ, cache)[0]["teacher"]
    for a, b in zip(cached, feats):
        torch.testing.assert_close(a.float(), b[0], rtol=1e-2, atol=1e-3)
    other = TeacherCache(tmp_path, {"fingerprint": "another", "imgsz": TINY_IMGSZ})
    assert other.folder != cache.folder and not other.has(paths[0])


def test_resume_continues_from_the_saved_step(tmp_path, tiny_ckpt, images, monkeypatch):
    """A run interrupted after epoch 1 and resumed ends with exactly the weights of an uninterrupted run."""
    from dart.models.loading import load_sam3
    from dart.stages import BackboneStage

    straight = run_distillation(config(tiny_ckpt, images, tmp_path / "a"), progress=False)
    steps_per_epoch = straight.history[0]["step"]
    assert steps_per_epoch == 2 and straight.step == 4  # 4 training images, batch 2

    calls = {"n": 0}
    original = trainer_module._Trainer._train_epoch

    def crash_in_second_epoch(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module._Trainer, "_train_epoch", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_distillation(config(tiny_ckpt, images, tmp_path / "b"), progress=False)
    monkeypatch.setattr(trainer_module._Trainer, "_train_epoch", original)
    saved = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert saved["epoch"] == 1 and saved["step"] == steps_per_epoch

    with pytest.raises(InputError, match="already holds a distillation run"):
        run_distillation(config(tiny_ckpt, images, tmp_path / "b"), progress=False)
    with pytest.raises(InputError, match="prune = "):
        run_distillation(config(tiny_ckpt, images, tmp_path / "b", prune=PruneSpec.parse("1"), resume=True),
                         progress=False)
    resumed = run_distillation(config(tiny_ckpt, images, tmp_path / "b", resume=True), progress=False)
    assert resumed.first_step == steps_per_epoch + 1 and resumed.step == straight.step
    assert [h["step"] for h in resumed.history] == [2, 4]
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["student"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["student"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)
    assert (tmp_path / "b" / "last.pt").exists() and json.loads((tmp_path / "b" / "history.json").read_text())

    # the deployable result is a pruned checkpoint holding the distilled weights
    pruned = load_sam3(tmp_path / "b" / "pruned", imgsz=TINY_IMGSZ)
    assert pruned.model.dart_prune_spec == PruneSpec.parse("2")
    with torch.inference_mode():
        x = torch.randn(1, 3, TINY_IMGSZ, TINY_IMGSZ)
        state = {k[len("vit."):]: v for k, v in b.items() if k.startswith("vit.")}
        ours = pruned.model.vision_encoder.backbone.state_dict()
        for key, value in state.items():
            torch.testing.assert_close(ours[key], value, msg=key)
        assert len(BackboneStage(pruned.model)(x)) == 3


def test_unreadable_images_are_skipped(tmp_path):
    from dart.distill.data import ImageFolderDataset, list_images, split_train_val

    cv2.imwrite(str(tmp_path / "a.png"), make_image(seed=1))
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    cv2.imwrite(str(tmp_path / "c.png"), make_image(seed=2))
    dataset = ImageFolderDataset(list_images(tmp_path), TINY_IMGSZ)
    items = [dataset[i]["index"] for i in range(3)]
    assert items == [0, 2, 2] and dataset[1]["pixels"].shape == (3, TINY_IMGSZ, TINY_IMGSZ)
    train, val = split_train_val(list_images(tmp_path), 0.3)
    assert len(train) == 2 and len(val) == 1 and not set(train) & set(val)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="contains no images"):
        list_images(tmp_path / "empty")


@pytest.mark.parametrize("kwargs,message", [
    (dict(prune=PruneSpec()), "needs the blocks to remove"),
    (dict(phase="adapter"), "belong to --phase prune"),
    (dict(phase="distill"), "unknown phase"),
    (dict(imgsz=100), "multiple of 14"),
    (dict(level_weights=(1.0, 2.0)), "three non-negative numbers"),
    (dict(resume=True), "nothing to resume"),
])
def test_config_errors(tmp_path, tiny_ckpt, images, kwargs, message):
    with pytest.raises(InputError, match=message):
        run_distillation(config(tiny_ckpt, images, tmp_path / "run", **kwargs), progress=False)


def test_torchrun_two_processes_on_cpu(tmp_path, tiny_ckpt, images):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "dart",
           "distill", "--phase", "prune", "--skip-blocks", "2", "--data-dir", str(images), "--checkpoint",
           str(tiny_ckpt), "--imgsz", str(TINY_IMGSZ), "--epochs", "1", "--batch", "1", "--workers", "0",
           "--device", "cpu", "-o", str(out), "--val-fraction", "0.2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["history.json", "last.pt", "pruned"]
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1 and history[0]["step"] == 2  # 4 training images over 2 processes, batch 1
    assert len(history[0]["val_cosine"]) == 3
    assert proc.stdout.count("epoch 1/1") >= 1 and "distillation, prune phase" in proc.stdout
