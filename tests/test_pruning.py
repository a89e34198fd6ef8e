"""Prune specs and pruned models: parsing, validation, equivalence with smaller models, pruned checkpoints."""

from __future__ import annotations

import json
import os

import pytest
import torch
from typer.testing import CliRunner

from dart.errors import CheckpointError, InputError
from dart.pruning import PruneSpec, apply_pruning
from dart.pruning.spec import kept_blocks, resolve_prune_spec, temporarily_pruned
from dart.stages import BackboneStage
from tests.tiny import TINY_IMGSZ, tiny_model


def pixels(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, TINY_IMGSZ, TINY_IMGSZ, generator=torch.Generator().manual_seed(seed))


@torch.inference_mode()
def fpn(model, x=None):
    return BackboneStage(model).eval()(pixels() if x is None else x)


def assert_same(a, b):
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6)


def strengthen(model, scale: float = 20.0):
    """Random init makes every block nearly an identity; scale the branch outputs so each block matters."""
    with torch.no_grad():
        for layer in model.vision_encoder.backbone.layers:
            layer.attention.o_proj.weight.mul_(scale)
            layer.mlp.fc2.weight.mul_(scale)
    return model


# ------------------------------------------------------------------------------------------------ parsing
def test_parse_formats_and_round_trip(tmp_path):
    spec = PruneSpec.parse("12, 5,10", "25:attn,28:MLP", num_blocks=32)
    assert spec.skip_blocks == (5, 10, 12) and spec.mask_blocks == ((25, "attn"), (28, "mlp"))
    assert PruneSpec.parse([10, 5, 12], [[28, "mlp"], "25:attn"]) == spec
    assert str(spec) == "skip 5,10,12; mask 25:attn,28:mlp" and not PruneSpec() and spec
    for name in ("s.json", "s.yaml"):
        spec.save(tmp_path / name)
        assert PruneSpec.load(tmp_path / name, num_blocks=32) == spec
    (tmp_path / "recipe.yaml").write_text("prune:\n  skip_blocks: [5, 10, 12]\n  mask_blocks: ['25:attn', '28:mlp']\n")
    assert PruneSpec.load(tmp_path / "recipe.yaml") == spec


@pytest.mark.parametrize("skip,mask,message", [
    ("1,x", None, "'x' is not a number"),
    ("3,3", None, "listed twice"),
    (None, "4", "BLOCK:BRANCH pairs"),
    (None, "4:ffn", "must be attn or mlp"),
    (None, "a:attn", "not a block number"),
    (None, "4:attn,4:attn", "listed twice"),
    ("4", None, "block 4 does not exist: the backbone has blocks 0..3"),
    (None, "-1:mlp", "block -1 does not exist"),
    ("1", "1:mlp", "both skipped and masked"),
    ("0,1,2,3", None, "cannot skip all 4 blocks"),
])
def test_validation_errors(skip, mask, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        PruneSpec.parse(skip, mask, num_blocks=4)


def test_spec_files_and_flags_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("skip_blocks: [1]\nblocks: [2]\n")
    with pytest.raises(InputError, match="unknown key 'blocks'"):
        PruneSpec.load(bad)
    bad.write_text("[1, 2]\n")
    with pytest.raises(InputError, match="must be a mapping"):
        PruneSpec.load(bad)
    with pytest.raises(InputError, match="does not exist"):
        PruneSpec.load(tmp_path / "missing.yaml")
    good = tmp_path / "good.json"
    PruneSpec.parse("1").save(good)
    with pytest.raises(InputError, match="not both"):
        resolve_prune_spec("2", None, good)
    assert resolve_prune_spec(None, None, good) == PruneSpec.parse("1")


# ---------------------------------------------------------------------------------------------- equivalence
def test_skipped_block_equals_model_built_without_it():
    """Skipping block 2 of 4 == a 3-block model (same config otherwise) holding blocks 0, 1, 3's weights."""
    full = strengthen(tiny_model(seed=3))
    small = tiny_model(seed=4, vit_layers=3)  # global blocks [1, 2]: blocks 1 and 3 of the full model
    kept = kept_blocks(PruneSpec.parse("2"), 4)
    prefix = "vision_encoder.backbone.layers."
    state = {}
    for key, value in full.state_dict().items():
        if key.startswith(prefix):
            index, rest = key[len(prefix):].split(".", 1)
            if int(index) not in kept:
                continue
            key = f"{prefix}{kept.index(int(index))}.{rest}"
        state[key] = value
    small.load_state_dict(state, strict=True)
    reference = fpn(small)
    assert (fpn(full)[2] - reference[2]).abs().max() > 1e-3, "block 2 must matter for the test to mean anything"
    apply_pruning(full, PruneSpec.parse("2"))
    assert len(full.vision_encoder.backbone.layers) == 3
    assert_same(fpn(full), reference)


@pytest.mark.parametrize("branch,linear", [("attn", "attention.o_proj"), ("mlp", "mlp.fc2")])
def test_masked_branch_equals_zeroed_branch(branch, linear):
    """Masking a branch == the same model whose branch output projection is zero."""
    masked, zeroed = strengthen(tiny_model(seed=5)), strengthen(tiny_model(seed=5))
    module = zeroed.vision_encoder.backbone.layers[1].get_submodule(linear)
    with torch.no_grad():
        module.weight.zero_()
        module.bias.zero_()
    assert (fpn(masked)[2] - fpn(zeroed)[2]).abs().max() > 1e-3
    apply_pruning(masked, PruneSpec.parse(None, f"1:{branch}"))
    assert_same(fpn(masked), fpn(zeroed))


def test_temporarily_pruned_restores_and_apply_twice():
    model = strengthen(tiny_model(seed=6))
    before = fpn(model)
    spec = PruneSpec.parse("0", "2:mlp")
    with temporarily_pruned(model, spec):
        during = fpn(model)
        assert len(model.vision_encoder.backbone.layers) == 3
    assert_same(fpn(model), before)
    apply_pruning(model, spec)
    assert_same(fpn(model), during)
    apply_pruning(model, PruneSpec.parse("0", "2:mlp"))  # the same spec again: nothing happens
    apply_pruning(model, PruneSpec())  # nor does an empty one
    assert len(model.vision_encoder.backbone.layers) == 3 and model.dart_prune_spec == spec
    with pytest.raises(InputError, match="already pruned"):
        apply_pruning(model, PruneSpec.parse("1"))


# ------------------------------------------------------------------------------------------------ checkpoints
def test_pruned_checkpoint_applies_its_spec_on_load(tmp_path, tiny_ckpt):
    from dart.models.loading import load_sam3
    from dart.pruning.checkpoint import PRUNE_FILE, save_pruned

    spec = PruneSpec.parse("2", "0:attn")
    loaded = load_sam3(tiny_ckpt, imgsz=TINY_IMGSZ)
    model = loaded.model
    apply_pruning(model, spec)
    expected = fpn(model)
    out = save_pruned(model, tmp_path / "pruned", tokenizer_source=loaded.tokenizer_source, source=str(tiny_ckpt))
    info = json.loads((out / PRUNE_FILE).read_text())
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # a normal folder's mode, not mkdtemp's private 0700
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # safetensors writes 0600
    assert info["skip_blocks"] == [2] and info["mask_blocks"] == ["0:attn"] and info["num_blocks"] == 4

    reloaded = load_sam3(out, imgsz=TINY_IMGSZ)
    assert reloaded.model.dart_prune_spec == spec and len(reloaded.model.vision_encoder.backbone.layers) == 3
    assert reloaded.tokenizer_source == str(out)
    assert_same(fpn(reloaded.model), expected)
    with torch.no_grad():  # the whole model, not only the ViT, round-trips
        for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.model.state_dict().items()):
            assert torch.equal(a, b), name

    # a prune file that disagrees with the weights is refused with a sentence
    info["skip_blocks"] = [1]
    (out / PRUNE_FILE).write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="does not match its dart_prune.json"):
        load_sam3(out, imgsz=TINY_IMGSZ)


def test_prune_apply_cli_then_detect(tmp_path, tiny_ckpt, image_file):
    from dart.cli import build_app

    runner = CliRunner()
    out = tmp_path / "pruned"
    res = runner.invoke(build_app(), ["prune", "apply", "--checkpoint", str(tiny_ckpt), "--skip-blocks", "1,2",
                                      "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "skip 1,2" in res.output
    res = runner.invoke(build_app(), ["detect", str(image_file), "-c", "person", "--checkpoint", str(out), "--imgsz",
                                      str(TINY_IMGSZ), "--device", "cpu", "-o", str(tmp_path / "det")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "det" / "street.json").is_file()
    res = runner.invoke(build_app(), ["prune", "apply", "--checkpoint", str(tiny_ckpt), "-o", str(out)])
    assert res.exit_code == 2 and "nothing to prune" in res.output
