"""Student backbones: built offline, SAM3's three FPN shapes at several sizes, checked checkpoints, plug-in."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("timm", reason="students need timm (the train extra)")

from dart.errors import CheckpointError, InputError  # noqa: E402
from dart.models.sam3 import set_image_size  # noqa: E402
from dart.stages import BackboneStage, EncDecStage  # noqa: E402
from dart.students import STUDENTS, build_backbone  # noqa: E402
from tests.tiny import TINY_IMGSZ, tiny_config, tiny_model  # noqa: E402

REQUIRED = ("repvit_m2_3", "tiny_vit_21m", "efficientvit_l1", "efficientvit_l2")


def sam3_shapes(model, imgsz: int) -> list[tuple[int, ...]]:
    """The FPN shapes SAM3's own backbone produces at ``imgsz`` (what the encoder-decoder expects)."""
    set_image_size(model, imgsz)
    with torch.inference_mode():
        return [tuple(f.shape) for f in BackboneStage(model)(torch.zeros(1, 3, imgsz, imgsz))]


@pytest.fixture(scope="module")
def sam3():
    return tiny_model()


@pytest.mark.parametrize("name", REQUIRED)
def test_required_students_build_offline_with_sam3_shapes(name, sam3):
    student = build_backbone(name, sam3)  # pretrained=False: nothing is downloaded
    assert student.name == name and student.timm_name == STUDENTS[name].timm_name
    with torch.inference_mode():
        out = student(torch.randn(1, 3, TINY_IMGSZ, TINY_IMGSZ))
    assert [tuple(f.shape) for f in out] == sam3_shapes(sam3, TINY_IMGSZ)
    assert all(torch.isfinite(f).all() for f in out)


def test_student_shapes_follow_the_image_size_and_feed_the_encoder_decoder(sam3):
    student = build_backbone("efficientvit_b0", sam3)
    text, mask = torch.randn(3, 32, 32), torch.ones(3, 32, dtype=torch.bool)
    queries = sam3.config.detr_decoder_config.num_queries
    for imgsz in (112, 224):
        with torch.inference_mode():
            out = student(torch.randn(2, 3, imgsz, imgsz))
            assert [tuple(f.shape) for f in out] == [(2, *s[1:]) for s in sam3_shapes(sam3, imgsz)]
            result = EncDecStage(sam3, imgsz).eval()(*out, text, mask)
        assert result["logits"].shape == (2, 3, queries) and result["boxes"].shape == (2, 3, queries, 4)


def test_student_checkpoint_round_trip_and_refusals(tmp_path, sam3):
    student = build_backbone("efficientvit_b0", sam3)
    path = student.save(tmp_path / "student.safetensors", extra={"imgsz": TINY_IMGSZ})
    again = build_backbone("efficientvit_b0", sam3, weights=path)
    x = torch.randn(1, 3, TINY_IMGSZ, TINY_IMGSZ)
    with torch.inference_mode():
        for a, b in zip(student(x), again(x)):
            assert torch.equal(a, b)
    with pytest.raises(CheckpointError, match="trained for backbone efficientvit_b0, but this is repvit_m0_9"):
        build_backbone("repvit_m0_9", sam3, weights=path)
    wider = tiny_config()
    wider.vision_config.fpn_hidden_size = 64
    with pytest.raises(CheckpointError, match="trained for FPN channels 32, but this is 64"):
        build_backbone("efficientvit_b0", wider, weights=path)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="not a dart student checkpoint"):
        build_backbone("efficientvit_b0", sam3, weights=tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="do not exist"):
        build_backbone("efficientvit_b0", sam3, weights=tmp_path / "missing.safetensors")


def test_registered_backbones(sam3):
    from dart.plugins.registry import available, load

    names = {name for name, _, _ in available("dart.backbones")}
    assert {"sam3", *REQUIRED} <= names
    factory = load("dart.backbones", "sam3")
    x = torch.randn(1, 3, TINY_IMGSZ, TINY_IMGSZ)
    set_image_size(sam3, TINY_IMGSZ)
    with torch.inference_mode():
        for a, b in zip(factory(sam3)(x), BackboneStage(sam3)(x)):
            assert torch.equal(a, b)
    with pytest.raises(InputError, match="takes its weights from --checkpoint"):
        factory(sam3, weights="x.safetensors")


def test_detector_runs_a_student(tmp_path, tiny_ckpt, image_file):
    from typer.testing import CliRunner

    from dart.cli import build_app
    from dart.detector import Detector
    from dart.pruning import PruneSpec

    student = build_backbone("efficientvit_b0", tiny_model())
    weights = student.save(tmp_path / "student.safetensors")
    det = Detector.from_pretrained(tiny_ckpt, ["person", "car"], imgsz=TINY_IMGSZ, device="cpu",
                                   student_weights=weights)  # the backbone name comes from the weights
    assert det.backend.backbone_name == "efficientvit_b0"
    x = torch.randn(1, 3, TINY_IMGSZ, TINY_IMGSZ)
    with torch.inference_mode():
        for a, b in zip(det.backend.backbone(x), student.eval()(x)):
            torch.testing.assert_close(a, b)
    assert len(det.detect(image_file).scores) >= 0
    with pytest.raises(InputError, match="needs --student-weights"):
        Detector.from_pretrained(tiny_ckpt, ["person"], imgsz=TINY_IMGSZ, device="cpu", backbone="repvit_m2_3")
    with pytest.raises(InputError, match="a student backbone replaces"):
        Detector.from_pretrained(tiny_ckpt, ["person"], imgsz=TINY_IMGSZ, device="cpu", student_weights=weights,
                                 prune=PruneSpec.parse("1"))
    runner = CliRunner()
    args = ["detect", str(image_file), "-c", "person", "--checkpoint", str(tiny_ckpt), "--imgsz", str(TINY_IMGSZ),
            "--device", "cpu", "-o", str(tmp_path / "out")]
    res = runner.invoke(build_app(), [*args, "--backbone", "efficientvit_b0", "--student-weights", str(weights)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(build_app(), [*args, "--backbone", "repvit_m0_9", "--student-weights", str(weights),
                                      "--overwrite"])
    assert res.exit_code == 3 and "trained for backbone efficientvit_b0" in " ".join(res.output.split())


def test_benchmark_backbones_rows():
    from dart.pruning import PruneSpec
    from dart.students.bench import backbones_table, benchmark_backbones

    rows = benchmark_backbones(TINY_IMGSZ, "cpu", runs=1, warmup=0, names=["sam3", "efficientvit_b0", "nope"],
                               sam3_config=tiny_config(), prune=PruneSpec.parse("0,2"))
    assert [r["backbone"] for r in rows] == ["sam3", "sam3 (pruned: skip 0,2)", "efficientvit_b0", "nope"]
    for row in rows[:3]:
        assert row["error"] is None and row["median_ms"] > 0 and row["fps"] > 0 and row["params_m"] > 0
    assert rows[1]["params_m"] < rows[0]["params_m"]
    assert rows[3]["error"] and "no backbone named 'nope'" in rows[3]["error"]
    assert backbones_table(rows).row_count == 4
