"""Checkpoint formats round-trip (folder, .safetensors, Meta sam3.pt) and every failure is one sentence."""

from __future__ import annotations

import shutil

import pytest
import torch

from dart.errors import CheckpointError
from dart.models.loading import load_sam3
from tests.tiny import TINY_IMGSZ, tiny_model


def outputs(model):
    torch.manual_seed(0)
    pixels = torch.randn(1, 3, TINY_IMGSZ, TINY_IMGSZ)
    ids = torch.tensor([[1, 5, 2] + [0] * 29])
    with torch.inference_mode():
        out = model(pixel_values=pixels, input_ids=ids, attention_mask=(ids > 0).long())
    return out.pred_logits, out.pred_boxes


def assert_same_model(a, b):
    for x, y in zip(outputs(a), outputs(b)):
        torch.testing.assert_close(x, y)


def test_folder(tiny_ckpt):
    loaded = load_sam3(tiny_ckpt, imgsz=TINY_IMGSZ)
    assert_same_model(loaded.model, tiny_model())
    assert len(loaded.fingerprint) == 16 and loaded.tokenizer_source == str(tiny_ckpt)


def test_safetensors_file_with_config_beside(tmp_path, tiny_ckpt):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, folder)
    loaded = load_sam3(folder / "model.safetensors", imgsz=TINY_IMGSZ)
    assert_same_model(loaded.model, tiny_model())
    assert loaded.fingerprint == load_sam3(tiny_ckpt, imgsz=TINY_IMGSZ).fingerprint


def test_meta_sam3_pt_converted_strictly(tmp_path, tiny_ckpt):
    from dart.models.meta_keymap import to_meta_state_dict

    folder = tmp_path / "meta"
    shutil.copytree(tiny_ckpt, folder)
    (folder / "model.safetensors").unlink()
    reference = tiny_model()
    torch.save({"model": to_meta_state_dict(reference.state_dict())}, folder / "sam3.pt")
    loaded = load_sam3(folder / "sam3.pt", imgsz=TINY_IMGSZ)
    assert_same_model(loaded.model, reference)
    assert loaded.fingerprint == load_sam3(tiny_ckpt, imgsz=TINY_IMGSZ).fingerprint


def test_fingerprint_changes_with_weights_not_with_imgsz(tmp_path, tiny_ckpt):
    from tests.tiny import save_tiny_checkpoint

    other = save_tiny_checkpoint(tmp_path / "other", seed=1)
    a = load_sam3(tiny_ckpt, imgsz=TINY_IMGSZ).fingerprint
    assert a == load_sam3(tiny_ckpt, imgsz=TINY_IMGSZ * 2).fingerprint
    assert a != load_sam3(other, imgsz=TINY_IMGSZ).fingerprint


def test_imgsz_changes_global_rope_positions(tiny_ckpt):
    small = load_sam3(tiny_ckpt, imgsz=TINY_IMGSZ).model
    large = load_sam3(tiny_ckpt, imgsz=2 * TINY_IMGSZ).model
    layer = 1  # a global-attention block in the tiny config
    grid = 2 * TINY_IMGSZ // 14
    assert large.vision_encoder.backbone.layers[layer].position_ids.shape[0] == grid * grid
    assert small.vision_encoder.backbone.layers[layer].position_ids.shape[0] == (TINY_IMGSZ // 14) ** 2
    with torch.inference_mode():
        out = large.vision_encoder(torch.randn(1, 3, 2 * TINY_IMGSZ, 2 * TINY_IMGSZ)).fpn_hidden_states
    assert out[2].shape[-1] == grid


@pytest.mark.parametrize("name,payload,match", [
    ("missing.pt", None, "does not exist"),
    ("corrupt.safetensors", b"\x00garbage", r"safetensors file '.*corrupt.safetensors' cannot be loaded"),
    ("corrupt.pt", b"\x00garbage", r"PyTorch checkpoint '.*corrupt.pt' cannot be loaded"),
    ("text.pt", b"hello, I am a text file\n", r"PyTorch checkpoint '.*text.pt' cannot be loaded"),
    ("weights.onnx", b"", "neither a folder"),
])
def test_bad_files_are_sentences(tmp_path, name, payload, match):
    path = tmp_path / name
    if payload is not None:
        path.write_bytes(payload)
    with pytest.raises(CheckpointError, match=match):
        load_sam3(path)


@pytest.mark.parametrize("spec,match", [("nope/", "does not exist"), ("no such/repo", "nor a valid hub repo id")])
def test_missing_folder_or_malformed_repo_id_is_a_sentence(tmp_path, monkeypatch, spec, match):
    monkeypatch.chdir(tmp_path)  # relative names, as typed on the command line
    with pytest.raises(CheckpointError, match=match):
        load_sam3(spec)


def test_wrong_architecture_is_refused(tmp_path, tiny_ckpt):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "broken"
    shutil.copytree(tiny_ckpt, folder)
    weights = load_file(folder / "model.safetensors")
    weights.pop(next(k for k in weights if "detr_decoder" in k))
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="missing keys"):
        load_sam3(folder)


def test_meta_checkpoint_with_unknown_key_is_refused(tmp_path, tiny_ckpt):
    from dart.models.meta_keymap import to_meta_state_dict

    folder = tmp_path / "meta"
    shutil.copytree(tiny_ckpt, folder)
    weights = to_meta_state_dict(tiny_model().state_dict())
    weights["detector.something_new.weight"] = torch.zeros(2)
    torch.save(weights, folder / "sam3.pt")
    with pytest.raises(CheckpointError, match="something_new"):
        load_sam3(folder / "sam3.pt")


def test_offline_hub_is_a_sentence(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError, match="unreachable|not in the local cache"):
        load_sam3("facebook/sam3", local_files_only=True)


def test_gated_hub_is_a_sentence(monkeypatch):
    from types import SimpleNamespace

    import huggingface_hub
    from huggingface_hub import errors

    def gated(*args, **kwargs):
        response = SimpleNamespace(headers={}, request=None, status_code=401)  # what the hub client reads
        raise errors.GatedRepoError("401 gated", response=response)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", gated)
    with pytest.raises(CheckpointError, match="gated: accept its license"):
        load_sam3("facebook/sam3")


def test_vit_blocks_are_read_from_the_config_alone(tmp_path, tiny_ckpt, monkeypatch):
    """Prune specs are checked against the checkpoint before it loads: folders, files, Meta's bare sam3.pt (SAM3's
    default config) and hub repos already in the local cache; unknown (not cached) is None, never a download."""
    import shutil

    from huggingface_hub import constants

    from dart.models.loading import vit_blocks

    assert vit_blocks(tiny_ckpt) == 4 and vit_blocks(tiny_ckpt / "model.safetensors") == 4
    (tmp_path / "sam3.pt").write_bytes(b"")
    assert vit_blocks(tmp_path / "sam3.pt") == 32
    snapshot = tmp_path / "hub" / "models--someone--sam3-tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    shutil.copy(tiny_ckpt / "config.json", snapshot / "config.json")
    (tmp_path / "hub" / "models--someone--sam3-tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--sam3-tiny" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert vit_blocks("someone/sam3-tiny") == 4
    assert vit_blocks("someone/not-downloaded") is None
