"""dart precision: per-block sensitivity, the smallest FP32 block set, specs that dart build consumes."""

from __future__ import annotations

import json

import pytest
import torch

from dart.errors import InputError
from dart.export.mixed_precision import PrecisionSpec
from dart.export.onnx_export import sample_pixels
from dart.models.loading import load_sam3
from dart.precision import OnnxRuntimeRunner, TorchRunner, bisect, output_cosine
from tests.export_helpers import tiny_engines
from tests.tiny import TINY_IMGSZ


@pytest.fixture()
def fragile(tiny_ckpt):
    """The tiny model with block 2's MLP made to produce huge, cancelling activations: bf16 hurts it most."""
    loaded = load_sam3(tiny_ckpt, imgsz=TINY_IMGSZ)
    mlp = loaded.model.vision_encoder.backbone.layers[2].mlp
    with torch.no_grad():
        mlp.fc1.weight.mul_(100.0)
        mlp.fc2.weight.mul_(100.0)
    return loaded


def test_bisect_finds_the_fragile_block(fragile, tmp_path):
    runner = TorchRunner(fragile, sample_pixels(TINY_IMGSZ), device="cpu")
    assert runner.name == "torch bf16 (cpu)"
    reference = runner.reference()
    all_reduced = output_cosine(reference, runner.run(set()))
    floor = output_cosine(reference, runner.run(set(runner.blocks)))  # patch embedding + FPN stay reduced
    assert floor > all_reduced
    target = floor - (floor - all_reduced) / 4  # reachable, but not with every block reduced
    result = bisect(runner, target)
    assert result.ranking[0] == 2 and result.per_block[2] == min(result.per_block.values())
    assert result.reached and 2 in result.fp32_blocks
    # the result is what it claims, and one block fewer (the search's prefix) would miss the target
    assert output_cosine(reference, runner.run(set(result.fp32_blocks))) == pytest.approx(result.final)
    assert result.final >= target
    fewer = set(result.ranking[: len(result.fp32_blocks) - 1])
    assert output_cosine(reference, runner.run(fewer)) < target
    path = tmp_path / "precision.json"
    result.save(path)
    spec = PrecisionSpec.load(path)
    assert spec.fp32_blocks == tuple(sorted(result.fp32_blocks))
    assert json.loads(path.read_text())["measured"]["runner"] == "torch bf16 (cpu)"


def test_bisect_on_a_pruned_model_uses_full_indices(tiny_ckpt):
    from dart.pruning import PruneSpec, apply_pruning

    loaded = load_sam3(tiny_ckpt, imgsz=TINY_IMGSZ)
    apply_pruning(loaded.model, PruneSpec.parse("1"))
    runner = TorchRunner(loaded, sample_pixels(TINY_IMGSZ), device="cpu")
    assert runner.blocks == [0, 2, 3]
    result = bisect(runner, 1.0)  # unreachable: every block ends up in FP32
    assert not result.reached and sorted(result.fp32_blocks) == [0, 2, 3]


def test_onnxruntime_runner_maps_blocks_to_nodes(tmp_path_factory, tiny_ckpt):
    import onnx

    from dart.export.mixed_precision import to_mixed_fp16

    folder = tiny_engines(tmp_path_factory, tiny_ckpt)
    runner = OnnxRuntimeRunner(folder / "backbone.onnx", sample_pixels(TINY_IMGSZ), ["CPUExecutionProvider"])
    assert runner.blocks == [0, 1, 2, 3] and runner.name == "onnxruntime fp16 graph (cpu)"
    reference = runner.reference()
    mixed = output_cosine(reference, runner.run({1}))
    assert 0.99 < mixed < 1.0  # the FP16 graph runs and differs from FP32
    model = onnx.load(str(folder / "backbone.onnx"))
    nodes = PrecisionSpec.parse("1").node_names([n.name for n in model.graph.node], runner.meta)
    assert nodes and all(n.startswith("/layers.1/") for n in nodes)
    converted = to_mixed_fp16(model, nodes)
    inits = {i.name: i.data_type for i in converted.graph.initializer}
    weight_type = {}
    for node in converted.graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits:
            weight_type[node.name] = inits[node.input[1]]
    block1 = [t for n, t in weight_type.items() if n.startswith("/layers.1/")]
    others = [t for n, t in weight_type.items() if n.startswith("/layers.") and not n.startswith("/layers.1/")]
    assert block1 and set(block1) == {onnx.TensorProto.FLOAT}
    assert others and set(others) == {onnx.TensorProto.FLOAT16}
    assert [i.type.tensor_type.elem_type for i in converted.graph.input] == [onnx.TensorProto.FLOAT]


def test_precision_spec_parsing_and_node_selection(tmp_path):
    from dart.export.metadata import StageMetadata
    from dart.pruning import PruneSpec

    spec = PrecisionSpec.parse("12, 5,/fpn*, 5")
    assert spec.fp32_blocks == (5, 12) and spec.fp32_layers == ("/fpn*",)
    meta = StageMetadata(stage="backbone", imgsz=1008, fingerprint="f", dart_version="0",
                         prune=PruneSpec.parse("3").to_dict(), num_blocks=32)
    nodes = ["/layers.4/attention/MatMul", "/layers.11/mlp/fc1/MatMul", "/fpn.0/Conv", "/fpn.0/scale_layers.4/Conv",
             "/layers.5/mlp/fc1/MatMul"]
    # block 5 is layers.4 and block 12 is layers.11 once block 3 is removed
    assert spec.node_names(nodes, meta) == ["/layers.4/attention/MatMul", "/layers.11/mlp/fc1/MatMul", "/fpn.0/Conv",
                                            "/fpn.0/scale_layers.4/Conv"]
    with pytest.raises(InputError, match="block 3 in FP32, but that block is not in this backbone"):
        PrecisionSpec.parse("3").node_names(nodes, meta)
    with pytest.raises(InputError, match="matches no layer"):
        PrecisionSpec.parse("/nothing*").node_names(nodes, meta)
    (tmp_path / "bad.json").write_text('{"fp32_blocks": ["x"]}')
    with pytest.raises(InputError, match="fp32_blocks must be a list"):
        PrecisionSpec.load(tmp_path / "bad.json")
    with pytest.raises(InputError, match="does not exist"):
        PrecisionSpec.load(tmp_path / "missing.json")


def test_cli_bisect_and_compare(tiny_ckpt, tmp_path, tmp_path_factory):
    from typer.testing import CliRunner

    from dart.cli import build_app

    folder = tiny_engines(tmp_path_factory, tiny_ckpt)
    app, runner = build_app(), CliRunner()
    out = tmp_path / "precision.json"
    result = runner.invoke(app, ["precision", "bisect", "-m", str(tiny_ckpt), "--imgsz", str(TINY_IMGSZ),
                                 "--target-cosine", "0.99", "--device", "cpu", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "torch bf16 (cpu)" in result.output and PrecisionSpec.load(out) == PrecisionSpec()
    result = runner.invoke(app, ["precision", "compare", "torch:fp32", f"onnxruntime:{folder}", "-m", str(tiny_ckpt),
                                 "--device", "cpu", "-c", "person", "dog", "--conf", "0.05"])
    assert result.exit_code == 0, result.output
    assert "fpn_1x" in result.output and "presence" in result.output and "1.000000" in result.output
    line = " ".join(result.output.split())
    assert "detections at conf 0.05:" in line and "agreement 100.0 %" in line and "detections at conf 0.05: 0 and" not in line
    result = runner.invoke(app, ["precision", "compare", "torch:fp8", "torch:fp32", "-m", str(tiny_ckpt)])
    assert result.exit_code == 2 and "fp32, fp16 or bf16" in result.output
    result = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["precision", "compare", "--help"])
    assert "default: person car" in " ".join(result.output.split())  # the default the command uses is in --help


def test_auto_precision_is_measured_and_said(monkeypatch):
    """auto: bf16 on a CPU whose bf16 matrix products are measured faster, fp32 where they are not; bf16 on a GPU
    that supports it, fp16 on one that does not. The reason is part of the answer (commands print it)."""
    import torch

    from dart.backends import base

    cpu = torch.device("cpu")
    assert base.cpu_bf16_speedup() > 0  # the real measurement runs (about 20 ms)
    assert base.choose_precision("fp32", cpu) == ("fp32", None)
    monkeypatch.setattr(base, "cpu_bf16_speedup", lambda: 3.2)
    precision, why = base.choose_precision("auto", cpu)
    assert precision == "bf16" and "3.2x faster" in why and base.resolve_precision("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(base, "cpu_bf16_speedup", lambda: 0.6)
    assert base.choose_precision("auto", cpu)[0] == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert base.choose_precision("auto", torch.device("cuda")) == ("fp16", "auto: this GPU has no bf16")
    with pytest.raises(InputError, match="unknown precision 'fp8'"):
        base.choose_precision("fp8", cpu)


def test_cli_default_is_auto_and_says_what_it_chose(monkeypatch, tiny_ckpt, image_file, tmp_path):
    from typer.testing import CliRunner

    from dart.backends import base
    from dart.cli import build_app

    monkeypatch.delenv("DART_PRECISION", raising=False)
    monkeypatch.setattr(base, "cpu_bf16_speedup", lambda: 3.0)
    res = CliRunner().invoke(build_app(), ["detect", str(image_file), "-c", "person", "-m", str(tiny_ckpt),
                                           "--imgsz", "112", "--device", "cpu", "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert "precision: bf16 (auto: bf16 matrix products run 3.0x faster than fp32 on this CPU)" in said


def test_bf16_keeps_close_to_fp32(tiny_loaded):
    """bf16 weights with fp32 LayerNorm/softmax (autocast) stay close to fp32 on the same weights."""
    import copy

    import torch

    from dart.backends.torch_backend import TorchBackend
    from dart.preprocess import preprocess, to_rgb
    from tests.conftest import make_image

    pixels = preprocess([to_rgb(make_image())], 112)
    fp32 = TorchBackend(tiny_loaded, device="cpu")
    bf16 = TorchBackend(copy.deepcopy(tiny_loaded), device="cpu", precision="bf16")
    assert bf16.precision == "bf16" and bf16.precision_reason is None
    text, mask = fp32.encode_text(["person", "car"])
    a, b = fp32.backbone(pixels), bf16.backbone(pixels)
    assert all(x.dtype == torch.bfloat16 for x in b)
    for x, y in zip(a, b):
        assert torch.nn.functional.cosine_similarity(x.flatten(), y.float().flatten(), dim=0) > 0.999
    ha, hb = fp32.encdec(a, text, mask), bf16.encdec(b, text, mask)
    assert torch.nn.functional.cosine_similarity(ha["logits"].flatten(), hb["logits"].float().flatten(), dim=0) > 0.999


def _outputs(boxes, logits, presence=(4.0, 4.0)):
    """One image's encoder-decoder outputs (two classes, three queries) as run_outputs gives them."""
    return {"logits": torch.tensor([logits]), "boxes": torch.tensor([boxes]), "presence": torch.tensor([presence])}


def test_detection_agreement_pairs_detections_class_by_class():
    from dart.precision import detection_agreement

    boxes = [[[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.9, 0.9], [0.0, 0.0, 0.05, 0.05]],
             [[0.2, 0.6, 0.4, 0.8], [0.6, 0.1, 0.8, 0.3], [0.0, 0.9, 0.05, 0.95]]]
    logits = [[3.0, 2.0, -9.0], [1.0, 2.5, -9.0]]  # two detections per class at conf 0.3, the third query below it
    same = detection_agreement(_outputs(boxes, logits), _outputs(boxes, logits))
    assert (same.reference, same.other, same.matched) == (4, 4, 4)
    assert same.agreement == 1.0 and same.mean_iou == pytest.approx(1.0) and same.max_score_diff == 0.0

    moved = [[list(b) for b in row] for row in boxes]
    moved[0][0] = [0.7, 0.7, 0.75, 0.75]  # class 0's first box moves away: no pair at IoU 0.5
    nudged = [[3.0, 2.0, -9.0], [1.2, 2.5, -9.0]]  # class 1's first score changes a little
    other = detection_agreement(_outputs(boxes, logits), _outputs(moved, nudged))
    assert (other.reference, other.other, other.matched) == (4, 4, 3)
    assert other.agreement == pytest.approx(0.75)
    expected = torch.sigmoid(torch.tensor(1.2)) - torch.sigmoid(torch.tensor(1.0))
    assert other.max_score_diff == pytest.approx(float(expected * torch.sigmoid(torch.tensor(4.0))), rel=1e-5)

    absent = detection_agreement(_outputs(boxes, logits), _outputs(boxes, logits, presence=(4.0, -9.0)))
    assert (absent.other, absent.matched) == (2, 2) and absent.agreement == pytest.approx(0.5)  # class 1 gone
    none = detection_agreement(_outputs(boxes, logits, (-9.0, -9.0)), _outputs(boxes, logits, (-9.0, -9.0)))
    assert none.reference == none.other == 0 and none.agreement == 1.0
    assert "agreement 50.0 %" in absent.sentence()
