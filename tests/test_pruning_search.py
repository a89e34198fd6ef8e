"""Importance search: an identity block ranks least important; greedy steps, FLOPs, spec files, plot, CLI."""

from __future__ import annotations

import cv2
import pytest
import torch
from typer.testing import CliRunner

from dart.errors import InputError
from dart.models.sam3 import set_image_size
from dart.pruning import PruneSpec
from dart.pruning.search import SearchResult, block_flops, importance_search, plot_search, units_to_spec, Unit
from dart.stages import BackboneStage
from tests.conftest import make_image
from tests.test_pruning import pixels, strengthen
from tests.tiny import TINY_IMGSZ, tiny_model


def model_with_identity(block: int, branches=("attention.o_proj", "mlp.fc2"), seed: int = 7):
    """A tiny model whose block ``block`` passes its input through unchanged (its branch outputs are zero)."""
    model = strengthen(tiny_model(seed=seed))
    set_image_size(model, TINY_IMGSZ)
    layer = model.vision_encoder.backbone.layers[block]
    with torch.no_grad():
        for name in branches:
            linear = layer.get_submodule(name)
            linear.weight.zero_()
            linear.bias.zero_()
    return model


@pytest.mark.parametrize("k", [0, 2, 3])
def test_identity_block_ranks_least_important(k):
    model = model_with_identity(k)
    result = importance_search(model, pixels(3), num_prune=2, candidates=2)
    first = result.importance[0]
    assert first.unit == str(k) and first.loss == 0.0 and min(first.cosine) > 0.99999
    assert all(u.loss > 1e-6 for u in result.importance[1:])
    assert [u.global_attn for u in result.importance if u.unit in ("1", "3")] == [True, True]
    assert result.steps[0].unit == str(k) and result.spec_at(1) == PruneSpec.parse(str(k))
    # greedy: each step keeps what was removed before and adds one block; the loss can only be positive after
    assert set(result.spec_at(1).skip_blocks) < set(result.spec_at(2).skip_blocks)
    assert result.steps[1].loss > 0 and result.steps[1].speedup > result.steps[0].speedup > 1.0


def test_sub_block_granularity_finds_the_identity_branch():
    model = model_with_identity(1, branches=("attention.o_proj",))
    result = importance_search(model, pixels(2), granularity="sub-block", num_prune=3, candidates=3)
    assert len(result.importance) == 8
    assert result.importance[0].unit == "1:attn" and result.importance[0].loss == 0.0
    assert result.importance[1].loss > 0
    assert result.steps[0].unit == "1:attn"
    assert result.spec_at(1) == PruneSpec.parse(None, "1:attn")


def test_units_to_spec_merges_both_branches_into_a_skip():
    spec = units_to_spec([Unit(2, "attn"), Unit(3, "mlp"), Unit(2, "mlp"), Unit(0)])
    assert spec == PruneSpec.parse("0,2", "3:mlp")


def test_search_arguments_are_checked():
    model = tiny_model()
    with pytest.raises(InputError, match="between 1 and 3"):
        importance_search(model, pixels(1), num_prune=4)
    with pytest.raises(InputError, match="granularity"):
        importance_search(model, pixels(1), granularity="layer")
    from dart.pruning import apply_pruning

    apply_pruning(model, PruneSpec.parse("1"))
    with pytest.raises(InputError, match="unpruned checkpoint"):
        importance_search(model, pixels(1), num_prune=1)


def test_block_flops_match_torch_flop_counter():
    """The analytic costs equal torch's FlopCounterMode for every projection, MLP and FPN convolution (the
    attention matmuls are added analytically: the CPU SDPA kernel is not counted by FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = tiny_model()
    set_image_size(model, TINY_IMGSZ)
    config = model.vision_encoder.backbone.config
    rest, costs = block_flops(config, TINY_IMGSZ, fpn_channels=model.config.vision_config.fpn_hidden_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        BackboneStage(model)(pixels(1))
    counts = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    g, d = TINY_IMGSZ // config.patch_size, config.hidden_size
    for i, (attn, mlp) in enumerate(costs):
        window = 0 if i in config.global_attn_indexes else config.window_size
        context = g * g if window == 0 else window * window
        assert counts[f"BackboneStage.vit.layers.{i}.mlp"] == mlp
        assert counts[f"BackboneStage.vit.layers.{i}.attention"] == attn - 4 * g * g * context * d
    counted_rest = sum(v for k, v in counts.items() if k.count(".") == 2 and k.startswith("BackboneStage.fpn."))
    counted_rest += counts["BackboneStage.vit.embeddings"]
    assert counted_rest == rest


def test_spec_file_plot_and_reload(tmp_path):
    result = importance_search(model_with_identity(2), pixels(2), num_prune=3, candidates=1)
    for name in ("spec.yaml", "spec.json"):
        path = result.save(tmp_path / name, num_prune=2)
        assert PruneSpec.load(path, num_blocks=4) == result.spec_at(2)
        again = SearchResult.load(path)
        assert again.steps == result.steps and again.importance == result.importance
    with pytest.raises(InputError, match=r"\.yaml, \.yml or \.json"):
        result.save(tmp_path / "spec.txt")
    with pytest.raises(InputError, match="between 1 and 3"):
        result.spec_at(4)
    png = plot_search(result, tmp_path / "curve.png")
    image = cv2.imread(str(png))
    assert image.shape == (520, 900, 3) and image.std() > 10


def test_prune_search_cli(tmp_path, tiny_ckpt):
    from dart.cli import build_app
    from dart.pruning.spec import PruneSpec

    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(3):
        cv2.imwrite(str(calib / f"{i}.jpg"), make_image(seed=i))
    out = tmp_path / "search"
    runner = CliRunner()
    res = runner.invoke(build_app(), ["prune", "search", "--calib-dir", str(calib), "--checkpoint", str(tiny_ckpt),
                                      "--num-images", "2", "--num-prune", "2", "--imgsz", str(TINY_IMGSZ),
                                      "--device", "cpu", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert {p.name for p in out.iterdir()} == {"prune_spec.yaml", "prune_search.json", "prune_curve.png"}
    assert "phase 1" in res.output and "phase 2" in res.output and "global" in res.output
    result = SearchResult.load(out / "prune_spec.yaml")
    assert result.num_images == 2 and len(result.steps) == 2
    assert PruneSpec.load(out / "prune_spec.yaml") == result.spec_at(2)
    res = runner.invoke(build_app(), ["prune", "show", str(out / "prune_spec.yaml"), "--num-prune", "1", "--save",
                                      str(tmp_path / "one.yaml")])
    assert res.exit_code == 0, res.output
    assert PruneSpec.load(tmp_path / "one.yaml") == result.spec_at(1)
    res = runner.invoke(build_app(), ["prune", "search", "--calib-dir", str(calib), "--checkpoint", str(tiny_ckpt),
                                      "--num-prune", "4", "--imgsz", str(TINY_IMGSZ), "--device", "cpu", "-o",
                                      str(out)])
    assert res.exit_code == 2 and "between 1 and 3" in res.output


def test_the_search_on_a_cpu_keeps_freed_memory_like_the_torch_backend(monkeypatch):
    from dart.pruning import search

    calls = []
    monkeypatch.setattr(search, "keep_freed_memory", lambda: calls.append(1) or True)
    search.FeatureScorer(tiny_model(), pixels(1), device="cpu")
    assert calls == [1]
