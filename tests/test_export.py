"""ONNX export of both stages: the graphs run in onnxruntime and match PyTorch, carry metadata, prune, refuse."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from dart.errors import CheckpointError, InputError
from dart.export.metadata import StageMetadata, check_expected, check_pair, read_onnx_metadata
from dart.export.onnx_export import export_backbone, export_encdec, sample_pixels
from dart.models.loading import load_sam3
from dart.pruning import PruneSpec
from dart.stages import BackboneStage, EncDecStage
from tests.tiny import TINY_IMGSZ


@pytest.fixture(scope="session")
def exported(tmp_path_factory, tiny_ckpt):
    """backbone.onnx (simplified) + encdec.onnx (dynamic classes 1..3, masks) of the tiny model."""
    from tests.export_helpers import tiny_engines

    folder = tiny_engines(tmp_path_factory, tiny_ckpt)
    return folder, load_sam3(tiny_ckpt, imgsz=TINY_IMGSZ)


def _session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _cos(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_backbone_export_matches_pytorch(exported):
    folder, loaded = exported
    pixels = sample_pixels(TINY_IMGSZ, np.full((50, 70, 3), 90, np.uint8))  # another input than the export's
    with torch.inference_mode():
        ref = BackboneStage(loaded.model).eval()(pixels)
    got = _session(folder / "backbone.onnx").run(None, {"pixel_values": pixels.numpy()})
    grid = TINY_IMGSZ // 14
    assert [o.shape for o in got] == [(1, 32, grid * 4, grid * 4), (1, 32, grid * 2, grid * 2), (1, 32, grid, grid)]
    for r, g in zip(ref, got):
        assert _cos(r, g) > 0.99999
        np.testing.assert_allclose(g, r.numpy(), atol=1e-4, rtol=1e-3)


def test_encdec_dynamic_classes_match_pytorch(exported):
    folder, loaded = exported
    session = _session(folder / "encdec.onnx")
    assert [i.name for i in session.get_inputs()] == ["fpn_4x", "fpn_2x", "fpn_1x", "text", "text_mask",
                                                      "prompt_tokens", "prompt_tokens_mask"]
    assert [o.name for o in session.get_outputs()] == ["logits", "boxes", "presence", "masks"]
    stage = EncDecStage(loaded.model, TINY_IMGSZ).eval()
    with torch.inference_mode():
        feats = BackboneStage(loaded.model).eval()(sample_pixels(TINY_IMGSZ))
    gen = torch.Generator().manual_seed(1)
    width = read_onnx_metadata(folder / "encdec.onnx").prompt_tokens
    for count in (1, 2, 3):
        text = torch.randn(count, 32, 32, generator=gen)
        mask = torch.zeros(count, 32, dtype=torch.bool)
        mask[:, : 3 + count] = True
        tokens = torch.zeros(count, width, 32)
        tokens_mask = torch.zeros(count, width, dtype=torch.bool)
        if count > 1:  # the last class is an exemplar class: three prompt tokens from a reference image
            tokens[-1, :3] = torch.randn(3, 32, generator=gen)
            tokens_mask[-1, :3] = True
        with torch.inference_mode():
            ref = stage(*feats, text, mask, return_state=True, tokens=tokens, tokens_mask=tokens_mask)
            ref_masks = stage.masks(feats, ref, text, mask, torch.tensor([[0, c] for c in range(count)]))
        logits, boxes, presence, masks = session.run(None, {
            "fpn_4x": feats[0].numpy(), "fpn_2x": feats[1].numpy(), "fpn_1x": feats[2].numpy(),
            "text": text.numpy(), "text_mask": mask.numpy().astype(np.int32), "prompt_tokens": tokens.numpy(),
            "prompt_tokens_mask": tokens_mask.numpy().astype(np.int32)})
        q = ref["logits"].shape[-1]
        assert logits.shape == (count, q) and boxes.shape == (count, q, 4) and presence.shape == (count, 1)
        np.testing.assert_allclose(logits, ref["logits"][0].numpy(), atol=1e-4)
        np.testing.assert_allclose(boxes, ref["boxes"][0].numpy(), atol=1e-5)
        np.testing.assert_allclose(presence[:, 0], ref["presence"][0].numpy(), atol=1e-4)
        assert _cos(masks, ref_masks) > 0.99999


def test_metadata_round_trip(exported, tiny_loaded):
    folder, _ = exported
    bb, ed = read_onnx_metadata(folder / "backbone.onnx"), read_onnx_metadata(folder / "encdec.onnx")
    assert (bb.stage, bb.imgsz, bb.fingerprint, bb.backbone, bb.num_blocks) == (
        "backbone", TINY_IMGSZ, tiny_loaded.fingerprint, "sam3", 4)
    assert (ed.stage, ed.max_classes, ed.dynamic_classes, ed.masks, ed.attn) == ("encdec", 3, True, True, "eager")
    assert bb.prune_spec == PruneSpec()
    check_pair(bb, ed)


def test_mismatches_are_refused_with_both_values(exported):
    folder, _ = exported
    bb = read_onnx_metadata(folder / "backbone.onnx")
    with pytest.raises(InputError, match=r"imgsz 112, not imgsz 224"):
        check_expected(bb, "backbone.onnx", imgsz=224)
    with pytest.raises(InputError, match=r"pruning 'none', not 'skip 1'"):
        check_expected(bb, "backbone.onnx", prune=PruneSpec.parse("1"))
    with pytest.raises(InputError, match=rf"checkpoint {bb.fingerprint}, but the checkpoint given is 0123"):
        check_expected(bb, "backbone.onnx", fingerprint="0123")
    other = StageMetadata(**{**bb.to_dict(), "stage": "encdec", "imgsz": 224})
    with pytest.raises(InputError, match=r"imgsz 112 but the encoder-decoder at imgsz 224"):
        check_pair(bb, other)


def test_file_without_metadata_is_refused(tmp_path, exported):
    folder, _ = exported
    model = onnx.load(str(folder / "backbone.onnx"))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "plain.onnx"))
    with pytest.raises(CheckpointError, match="carries no dart metadata"):
        read_onnx_metadata(tmp_path / "plain.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a readable ONNX file"):
        read_onnx_metadata(tmp_path / "junk.onnx")


def test_skip_blocks_export_has_fewer_nodes(tmp_path, tiny_ckpt, exported):
    full = export_backbone(load_sam3(tiny_ckpt, imgsz=TINY_IMGSZ), tmp_path / "full.onnx", simplify=False,
                           verify=False)
    simplified = onnx.load(str(exported[0] / "backbone.onnx"))
    assert len(simplified.graph.node) < full.nodes  # onnxslim did its work on the shared export
    spec = PruneSpec.parse("1,2", "3:mlp")
    pruned = export_backbone(load_sam3(tiny_ckpt, imgsz=TINY_IMGSZ), tmp_path / "pruned.onnx", prune=spec,
                             simplify=False)
    assert pruned.nodes < full.nodes
    assert pruned.agreement and all(r.cosine > 0.99999 for r in pruned.agreement)  # pruned PyTorch == pruned ONNX
    meta = read_onnx_metadata(tmp_path / "pruned.onnx")
    assert meta.prune_spec == spec and meta.num_blocks == 4
    names = [n.name for n in onnx.load(str(tmp_path / "pruned.onnx")).graph.node]
    assert any(n.startswith("/layers.1/") for n in names) and not any(n.startswith("/layers.2/") for n in names)


def test_failed_verification_keeps_the_previous_file(tmp_path, tiny_ckpt, monkeypatch):
    from dart.export import onnx_export
    from dart.export.verify import VerificationError

    target = tmp_path / "backbone.onnx"
    target.write_bytes(b"previous good file")

    def bad_compare(reference, candidate, names=None):
        from dart.export.verify import Agreement

        return [Agreement("fpn_1x", (1,), 0.5, 1.0, 1.0)]

    monkeypatch.setattr(onnx_export, "compare_outputs", bad_compare)
    with pytest.raises(VerificationError, match="cosine 0.500000"):
        export_backbone(load_sam3(tiny_ckpt, imgsz=TINY_IMGSZ), target, simplify=False)
    assert target.read_bytes() == b"previous good file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backbone.onnx"]


def test_bad_inputs(tmp_path, tiny_ckpt):
    loaded = load_sam3(tiny_ckpt, imgsz=TINY_IMGSZ)
    with pytest.raises(InputError, match="multiple of 14"):
        export_backbone(loaded, tmp_path / "b.onnx", imgsz=100)
    with pytest.raises(InputError, match="unknown attention form"):
        export_backbone(loaded, tmp_path / "b.onnx", attn="flash")
    with pytest.raises(InputError, match="max_classes must be at least 1"):
        export_encdec(loaded, tmp_path / "e.onnx", max_classes=0)
    assert not list(tmp_path.iterdir())


def test_dart_prompt_mode_is_exported_recorded_and_checked(tmp_path, exported):
    """An encoder-decoder exported with prompt_mode="dart" computes the text-only prompt (it matches the PyTorch
    stage in that mode, not the default one), says so in its metadata, and a run asking for the other mode is
    refused with a sentence."""
    folder, loaded = exported
    path = tmp_path / "encdec_dart.onnx"
    result = export_encdec(loaded, path, max_classes=2, simplify=False, prompt_mode="dart", exemplar_boxes=0)
    assert result.metadata.prompt_mode == "dart" == read_onnx_metadata(path).prompt_mode
    assert read_onnx_metadata(folder / "encdec.onnx").prompt_mode == "meta"
    with torch.inference_mode():
        feats = BackboneStage(loaded.model).eval()(sample_pixels(TINY_IMGSZ))
        text, mask = torch.randn(2, 32, 32, generator=torch.Generator().manual_seed(3)), torch.ones(2, 32, dtype=torch.bool)
        mask[:, 6:] = False
        dart_ref = EncDecStage(loaded.model, TINY_IMGSZ, "dart").eval()(*feats, text, mask)
        meta_ref = EncDecStage(loaded.model, TINY_IMGSZ).eval()(*feats, text, mask)
    got = _session(path).run(None, {"fpn_1x": feats[-1].numpy(), "text": text.numpy(),
                                    "text_mask": mask.to(torch.int32).numpy()})
    np.testing.assert_allclose(got[0], dart_ref["logits"][0].numpy(), atol=1e-4, rtol=1e-3)
    assert not np.allclose(got[0], meta_ref["logits"][0].numpy(), atol=1e-3)
    with pytest.raises(InputError, match="exported with --prompt-mode dart, not meta"):
        check_expected(read_onnx_metadata(path), path, prompt_mode="meta")
    check_expected(read_onnx_metadata(path), path, prompt_mode="dart")
    with pytest.raises(InputError, match="unknown prompt mode 'sam'"):
        EncDecStage(loaded.model, TINY_IMGSZ, "sam")


def test_the_export_memory_estimate_reproduces_the_measured_peaks():
    """BENCHMARKS.md measured 9.8 GB (2 classes traced) and 13.5 GB (4) for the full-size model at 1008 px."""
    from transformers import Sam3Config, Sam3Model

    from dart.export.onnx_export import encdec_export_bytes, traced_classes

    with torch.device("meta"):
        model = Sam3Model(Sam3Config())
    for classes, measured in ((2, 9.83e9), (4, 13.50e9)):
        assert encdec_export_bytes(model, classes) == pytest.approx(measured, rel=0.05)
    assert traced_classes(16, True) == 2 and traced_classes(16, False) == 16 and traced_classes(1, True) == 1


@pytest.mark.parametrize("static", [True, False])
def test_export_warns_before_tracing_when_memory_is_short(tmp_path, tiny_ckpt, monkeypatch, static):
    from typer.testing import CliRunner

    from dart.cli import build_app

    monkeypatch.setattr("dart.export.onnx_export.available_memory_bytes", lambda: 1000)
    args = ["export", "encdec", "-m", str(tiny_ckpt), "--imgsz", str(TINY_IMGSZ), "--max-classes", "3",
            "--no-verify", "--no-simplify", "-o", str(tmp_path / "encdec.onnx")]
    res = CliRunner().invoke(build_app(), [*args, "--static-classes"] if static else args)
    output = " ".join(res.output.split())
    assert res.exit_code == 0, output
    assert "warning: this export needs about" in output and "is available, so the system may stop it" in output
    assert ("traces all 3 classes at once: a dynamic class axis (the default) traces 2" in output) == static
    monkeypatch.setattr("dart.export.onnx_export.available_memory_bytes", lambda: None)  # unknown: no warning
    res = CliRunner().invoke(build_app(), [*args, "--overwrite"])
    assert res.exit_code == 0 and "warning" not in res.output
