"""The DART research code's student checkpoints load as they are.

Each file is built here from DART's module layout (``sam3/distillation/student_backbone.py`` in mkturkcan/DART: a
timm ``features_only`` network under ``backbone.`` and ``adapters.{0,1,2}`` with ``proj``/``refine``), with real timm
architectures and random weights, saved the way DART's trainer saves it, and loaded through dart; its features
must equal the same network run directly, DART's way (SAM3's pixels straight into timm, 1x1 conv, bilinear resize,
3x3 conv).
"""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dart.errors import CheckpointError
from tests.conftest import make_image
from tests.tiny import TINY_IMGSZ

timm = pytest.importorskip("timm", reason="student backbones need timm (the train extra, in dev)")


class DartLevel(nn.Module):  # DART's FPNAdapterLevel: names and shapes
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, kernel_size=1, bias=True)
        self.refine = nn.Conv2d(cout, cout, kernel_size=3, padding=1, bias=True)


class DartStudent(nn.Module):  # DART's StudentBackbone: names and shapes
    def __init__(self, timm_name: str, width: int):
        super().__init__()
        self.backbone = timm.create_model(timm_name, pretrained=False, features_only=True, out_indices=[0, 1, 2])
        self.adapters = nn.ModuleList([DartLevel(c, width) for c in self.backbone.feature_info.channels()])

    def forward(self, pixels: torch.Tensor, sizes) -> list[torch.Tensor]:
        out = []
        for feat, level, size in zip(self.backbone(pixels), self.adapters, sizes):
            x = level.proj(feat)
            if tuple(x.shape[-2:]) != tuple(size):
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            out.append(level.refine(x))
        return out


@pytest.fixture(scope="module")
def dart_file(tmp_path_factory, tiny_loaded):
    """A DART epoch checkpoint of a RepViT-M2.3 student for the tiny SAM3 (adapters at its FPN width)."""
    torch.manual_seed(0)
    width = int(tiny_loaded.model.config.vision_config.fpn_hidden_size)
    student = DartStudent("repvit_m2_3", width).eval()
    for module in student.modules():  # BatchNorm statistics that matter
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("dart_ckpt") / "adapter_epoch3.pt"
    optimizer = torch.optim.AdamW([p for p in student.adapters.parameters()], lr=1e-3)
    torch.save({"epoch": 3, "loss": 0.123,
                "adapter_state_dict": {k: v for k, v in student.named_parameters() if k.startswith("adapters.")},
                "student_state_dict": student.state_dict(), "optimizer_state_dict": optimizer.state_dict(),
                "mask_blocks": ""}, path)
    return path, student


def test_a_dart_student_equals_dart_s_own_forward(tiny_loaded, dart_file):
    from dart.backends.torch_backend import TorchBackend
    from dart.preprocess import preprocess, to_rgb
    from dart.students import build_backbone, student_name_of

    path, student = dart_file
    assert student_name_of(path) == "repvit_m2_3"  # found from the keys and shapes: the file does not say
    backbone = build_backbone("repvit_m2_3", tiny_loaded.model, weights=path)
    assert backbone.input_norm == "sam3"
    pixels = preprocess([to_rgb(make_image(90, 160))], TINY_IMGSZ)
    grid = TINY_IMGSZ // 14
    with torch.inference_mode():
        expected = student(pixels, [(4 * grid, 4 * grid), (2 * grid, 2 * grid), (grid, grid)])
        got = backbone(pixels)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4)
    # and through the whole detector, as `dart detect --student-weights adapter_epoch3.pt` builds it
    from dart.detector import Detector

    det = Detector.from_loaded(tiny_loaded, ["person"], device="cpu", student_weights=path)
    assert isinstance(det.backend, TorchBackend) and det.backend.backbone_name == "repvit_m2_3"
    features = det.backend.backbone(pixels)
    torch.testing.assert_close(features[-1], expected[-1], atol=1e-5, rtol=1e-4)


def _edited(tmp_path, dart_file, edit) -> str:
    ckpt = torch.load(dart_file[0], weights_only=True)
    edit(ckpt["student_state_dict"])
    path = tmp_path / "edited.pt"
    torch.save(ckpt, path)
    return str(path)


def test_a_renamed_or_missing_key_is_refused_naming_it(tmp_path, tiny_loaded, dart_file):
    from dart.students import build_backbone

    def rename(state):
        state["adapters.1.refined.weight"] = state.pop("adapters.1.refine.weight")

    def drop(state):
        del state[next(k for k in state if k.startswith("backbone.stages"))]

    with pytest.raises(CheckpointError, match="has the key 'adapters.1.refined.weight'"):
        build_backbone("repvit_m2_3", tiny_loaded.model, weights=_edited(tmp_path, dart_file, rename))
    with pytest.raises(CheckpointError, match=r"is not a repvit_m2_3 student: 'backbone\.stages.*' is missing"):
        build_backbone("repvit_m2_3", tiny_loaded.model, weights=_edited(tmp_path, dart_file, drop))
    with pytest.raises(CheckpointError, match="is not a tiny_vit_21m student"):
        build_backbone("tiny_vit_21m", tiny_loaded.model, weights=dart_file[0])


class Payload:
    def __reduce__(self):
        return (print, ("this would run",))


def test_a_file_with_code_in_it_is_never_unpickled(tmp_path, tiny_loaded):
    from dart.students import build_backbone

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"student_state_dict": {}, "x": Payload()}, f)
    with pytest.raises(CheckpointError, match="holds more than tensors .* never runs code"):
        build_backbone("repvit_m2_3", tiny_loaded.model, weights=path)
    other = tmp_path / "other.pt"
    torch.save({"model": {}}, other)
    with pytest.raises(CheckpointError, match="has no 'student_state_dict'"):
        build_backbone("repvit_m2_3", tiny_loaded.model, weights=other)


def test_dart_convert_writes_dart_s_layout_that_loads_without_pickle(tmp_path, tiny_loaded, tiny_ckpt, dart_file):
    from typer.testing import CliRunner

    from dart.cli import build_app
    from dart.preprocess import preprocess, to_rgb
    from dart.students import build_backbone, read_student_checkpoint

    path, student = dart_file
    runner = CliRunner()
    res = runner.invoke(build_app(), ["convert", str(path), "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "adapter_epoch3.safetensors"
    meta, state = read_student_checkpoint(out)
    assert meta["backbone"] == "repvit_m2_3" and meta["input_norm"] == "sam3" and meta["epoch"] == 3
    assert all(k.startswith(("body.", "adapters.")) for k in state)
    pixels = preprocess([to_rgb(make_image(90, 160, seed=2))], TINY_IMGSZ)
    with torch.inference_mode():
        direct = build_backbone("repvit_m2_3", tiny_loaded.model, weights=path)(pixels)
        converted = build_backbone("repvit_m2_3", tiny_loaded.model, weights=out)(pixels)
    for a, b in zip(direct, converted):
        assert torch.equal(a, b)
    again = runner.invoke(build_app(), ["convert", str(path), "-o", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output
    junk = tmp_path / "junk.pt"
    torch.save({"model": {}}, junk)
    refused = runner.invoke(build_app(), ["convert", str(junk), "-o", str(tmp_path / "x")])
    assert refused.exit_code == 3 and "none of the formats dart converts" in " ".join(refused.output.split())
    # `dart detect --student-weights FILE.pt` finds the backbone itself
    import cv2

    cv2.imwrite(str(tmp_path / "im.jpg"), make_image(90, 160))
    detected = runner.invoke(build_app(), ["detect", str(tmp_path / "im.jpg"), "-c", "person", "--student-weights",
                                           str(path), "--checkpoint", str(tiny_ckpt), "--imgsz", str(TINY_IMGSZ),
                                           "--device", "cpu", "-o", str(tmp_path / "det")])
    assert detected.exit_code == 0, detected.output
