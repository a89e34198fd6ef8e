"""The key map from Meta's ``sam3.pt`` to ``transformers.Sam3Model`` (CPU only, no downloads, no weights).

``tests/data/sam3_meta_param_names.txt`` lists every tensor of the real ``sam3.pt`` (name and shape, the
``detector.*`` and ``tracker.*`` keys that Meta's ``build_sam3_video_model`` loads strictly), dumped from the
``sam3`` package's own model builder; the full-size tests run the key map over those names on the meta device.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from transformers import Sam3Config, Sam3Model, Sam3ViTConfig

from dart.models.meta_keymap import (
    MetaCheckpointError,
    convert_meta_state_dict,
    extract_meta_state_dict,
    is_ignored,
    is_meta_layout,
    to_meta_state_dict,
)

META_NAMES_FILE = Path(__file__).parent / "data" / "sam3_meta_param_names.txt"


def read_meta_names() -> dict[str, torch.Tensor]:
    """The real sam3.pt layout as empty meta-device tensors."""
    state_dict = {}
    for line in META_NAMES_FILE.read_text().splitlines():
        name, shape = line.split("\t")
        state_dict[name] = torch.empty([int(d) for d in shape.split(",")] if shape else [], device="meta")
    return state_dict


def shapes(state_dict: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state_dict.items()}


def tiny_config() -> Sam3Config:
    """SAM3's architecture at toy widths: a 56x56 image is a single 4x4 window of 14-pixel patches."""
    return Sam3Config(
        vision_config=dict(
            backbone_config=Sam3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=2, window_size=4, global_attn_indexes=[1],
                                          image_size=56, pretrain_image_size=56, patch_size=14),
            fpn_hidden_size=32,
            backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]],
        ),
        text_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         projection_dim=32, vocab_size=1000, max_position_embeddings=32, bos_token_id=998,
                         eos_token_id=999),
        geometry_encoder_config=dict(hidden_size=32, num_layers=1, num_attention_heads=2, intermediate_size=64),
        detr_encoder_config=dict(hidden_size=32, num_layers=1, num_attention_heads=2, intermediate_size=64),
        detr_decoder_config=dict(hidden_size=32, num_layers=2, num_attention_heads=2, intermediate_size=64,
                                 num_queries=10),
        mask_decoder_config=dict(hidden_size=32, num_attention_heads=2),
    )


def tiny_inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, 1000, (1, 32), generator=generator)
    return {
        "pixel_values": torch.randn(1, 3, 56, 56, generator=generator),
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "input_boxes": torch.tensor([[[0.4, 0.5, 0.3, 0.2]]]),
        "input_boxes_labels": torch.tensor([[1]]),
    }


@pytest.fixture(scope="module")
def meta_names() -> dict[str, torch.Tensor]:
    return read_meta_names()


@pytest.fixture(scope="module")
def full_hf_state_dict() -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return Sam3Model(Sam3Config()).state_dict()


@pytest.fixture(scope="module")
def tiny_model() -> Sam3Model:
    torch.manual_seed(0)
    return Sam3Model(tiny_config()).eval()


def test_names_file_is_the_full_sam3_pt_layout(meta_names):
    prefixes = {key.split(".", 1)[0] for key in meta_names}
    assert prefixes == {"detector", "tracker"}
    assert meta_names["detector.backbone.vision_backbone.trunk.blocks.0.attn.qkv.weight"].shape == (3072, 1024)
    assert is_meta_layout(meta_names)


def test_real_layout_converts_to_exactly_the_sam3model_state_dict(meta_names, full_hf_state_dict):
    converted = convert_meta_state_dict(meta_names)

    assert sorted(set(full_hf_state_dict) - set(converted)) == []
    assert sorted(set(converted) - set(full_hf_state_dict)) == []
    assert shapes(converted) == shapes(full_hf_state_dict)
    # Sam3Model's buffers (RoPE frequencies and positions, text position ids) are all non-persistent.
    assert not [name for name, _ in Sam3Model(tiny_config()).named_buffers() if name in full_hf_state_dict]


def test_full_size_inverse_gives_back_every_used_meta_key(meta_names, full_hf_state_dict):
    used = {key: value for key, value in meta_names.items() if not is_ignored(key)}

    assert shapes(to_meta_state_dict(full_hf_state_dict)) == shapes(used)


def test_tiny_round_trip_is_exact_and_uses_real_meta_names(tiny_model, meta_names):
    hf_state_dict = tiny_model.state_dict()
    meta_state_dict = to_meta_state_dict(hf_state_dict)

    def layer_agnostic(key: str) -> str:
        return re.sub(r"(?<=\.)\d+(?=\.)", "N", key)

    assert {layer_agnostic(key) for key in meta_state_dict} <= {layer_agnostic(key) for key in meta_names}
    assert meta_state_dict["detector.backbone.vision_backbone.trunk.pos_embed"].shape == (1, 1 + 4 * 4, 32)
    assert meta_state_dict["detector.backbone.vision_backbone.trunk.blocks.0.attn.qkv.weight"].shape == (96, 32)

    back = convert_meta_state_dict(extract_meta_state_dict({"model": meta_state_dict}))
    assert back.keys() == hf_state_dict.keys()
    assert all(torch.equal(back[key], hf_state_dict[key]) for key in hf_state_dict)
    assert meta_state_dict  # left as it was by default

    consumed = dict(meta_state_dict)  # dart's loader hands over a dict nobody else holds: emptied as it converts
    again = convert_meta_state_dict(consumed, consume=True)
    assert not consumed and again.keys() == back.keys()
    assert all(torch.equal(again[key], back[key]) for key in back)


def test_tiny_converted_checkpoint_loads_strictly_and_gives_the_same_forward(tiny_model):
    meta_state_dict = to_meta_state_dict(tiny_model.state_dict())
    torch.manual_seed(1)
    fresh = Sam3Model(tiny_config()).eval()
    fresh.load_state_dict(convert_meta_state_dict(meta_state_dict), strict=True)

    with torch.no_grad():
        expected = tiny_model(**tiny_inputs())
        actual = fresh(**tiny_inputs())

    assert expected.pred_logits.shape == (1, 10)
    assert expected.pred_masks.shape == (1, 10, 16, 16)
    for field in ("pred_logits", "pred_boxes", "presence_logits", "pred_masks", "semantic_seg"):
        assert torch.equal(getattr(actual, field), getattr(expected, field)), field


def test_tracker_and_detector_parts_sam3model_lacks_are_ignored_by_name(tiny_model):
    meta_state_dict = to_meta_state_dict(tiny_model.state_dict())
    unused = {
        "tracker.sam_mask_decoder.iou_token.weight": torch.zeros(1, 256),
        "tracker.maskmem_tpos_enc": torch.zeros(7, 1, 1, 64),
        "detector.backbone.vision_backbone.sam2_convs.0.conv_1x1.weight": torch.zeros(32, 32, 1, 1),
        "detector.backbone.vision_backbone.trunk.blocks.0.attn.freqs_cis": torch.zeros(16, 8, dtype=torch.complex64),
        "detector.geometry_encoder.points_direct_project.weight": torch.zeros(32, 2),
    }

    converted = convert_meta_state_dict({**meta_state_dict, **unused})

    assert converted.keys() == tiny_model.state_dict().keys()


def test_meta_image_model_layout_without_detector_prefix_converts_too(tiny_model):
    meta_state_dict = to_meta_state_dict(tiny_model.state_dict())
    bare = {key.removeprefix("detector."): value for key, value in meta_state_dict.items()}

    assert is_meta_layout(bare)
    assert convert_meta_state_dict(bare).keys() == tiny_model.state_dict().keys()


def test_unknown_key_raises_one_sentence_naming_it(tiny_model):
    meta_state_dict = to_meta_state_dict(tiny_model.state_dict())
    meta_state_dict["detector.transformer.decoder.mystery_head.weight"] = torch.zeros(3)

    with pytest.raises(MetaCheckpointError, match=r"detector\.transformer\.decoder\.mystery_head\.weight\.$") as info:
        convert_meta_state_dict(meta_state_dict)
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith("1 Meta checkpoint key(s) are neither mapped nor explicitly ignored")


def test_unknown_transformers_key_raises_in_the_inverse(tiny_model):
    with pytest.raises(MetaCheckpointError, match="extra_head.weight"):
        to_meta_state_dict({**tiny_model.state_dict(), "extra_head.weight": torch.zeros(1)})


def test_extract_meta_state_dict_rejects_what_is_not_a_state_dict():
    tensors = {"detector.a": torch.zeros(1)}

    assert extract_meta_state_dict(tensors) == tensors
    assert extract_meta_state_dict({"model": tensors, "epoch": 3}) == tensors
    with pytest.raises(MetaCheckpointError, match="not tensors: epoch"):
        extract_meta_state_dict({**tensors, "epoch": 3})
    with pytest.raises(MetaCheckpointError, match="no state dict"):
        extract_meta_state_dict([torch.zeros(1)])


def test_transformers_layout_is_not_taken_for_meta(tiny_model):
    assert not is_meta_layout(tiny_model.state_dict())
