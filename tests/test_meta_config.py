"""Every architecture number of ``transformers``' ``Sam3Config()`` (what dart builds for a bare ``sam3.pt``) equals the
one Meta's builder uses, read from the installed ``sam3`` package's own source (``sam3/model_builder.py``), so a
release of either library that changes a default fails here, loudly, instead of shifting dart's numbers.

Where ``transformers`` differs from Meta, dart follows Meta at load time (:func:`dart.models.sam3.follow_meta`), and
this file checks those corrections against Meta's code too.
"""

from __future__ import annotations

import ast
import inspect
from collections import defaultdict

import pytest

pytest.importorskip("sam3", reason="Meta's sam3 package (in the dev extra) is the reference")

from tests.meta_reference import import_meta  # noqa: E402


@pytest.fixture(scope="module")
def builder_calls() -> dict[tuple[str, str], list[dict]]:
    """``{(builder function, class called): [literal keyword arguments of each call]}`` from Meta's source."""
    tree = ast.parse(inspect.getsource(import_meta()))
    calls: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for function in (node for node in tree.body if isinstance(node, ast.FunctionDef)):
        for node in ast.walk(function):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                kwargs = {}
                for keyword in node.keywords:
                    try:
                        kwargs[keyword.arg] = ast.literal_eval(keyword.value)
                    except ValueError:
                        continue  # a module or a variable, not a number
                calls[(function.name, node.func.id)].append(kwargs)
    return calls


@pytest.fixture(scope="module")
def hf():
    from transformers import Sam3Config

    return Sam3Config()


def one(calls, function: str, cls: str) -> dict:
    found = calls[(function, cls)]
    assert found, f"Meta's {function} no longer calls {cls}: update this cross-check"
    assert all(f == found[0] for f in found), f"{function} calls {cls} with different arguments: {found}"
    return found[0]


def default(cls: type, name: str):
    return inspect.signature(cls).parameters[name].default


def test_vit(builder_calls, hf):
    vit = one(builder_calls, "_create_vit_backbone", "ViT")
    cfg = hf.vision_config.backbone_config
    assert (vit["img_size"], vit["pretrain_img_size"], vit["patch_size"]) == (
        cfg.image_size, cfg.pretrain_image_size, cfg.patch_size)
    assert (vit["embed_dim"], vit["depth"], vit["num_heads"], vit["window_size"]) == (
        cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.window_size)
    assert vit["mlp_ratio"] * vit["embed_dim"] == cfg.intermediate_size
    assert list(vit["global_att_blocks"]) == list(cfg.global_attn_indexes)
    assert vit["use_abs_pos"] and vit["tile_abs_pos"] and vit["use_rope"] and vit["ln_pre"] and not vit["ln_post"]
    assert cfg.hidden_act == "gelu" and vit["qkv_bias"]


def test_vit_layer_norm_eps_is_metas(builder_calls):
    """Meta names its norm layer as a string; vitdet turns it into ``partial(nn.<name>, eps=...)``. dart's
    correction uses that eps (transformers' default is 1e-6)."""
    from sam3.model import vitdet

    from dart.models.sam3 import META_VIT_LAYER_NORM_EPS

    assert one(builder_calls, "_create_vit_backbone", "ViT")["norm_layer"] == "LayerNorm"
    import re

    found = re.findall(r"partial\(getattr\(nn, norm_layer\), eps=([0-9.eE+-]+)\)", inspect.getsource(vitdet.ViT.__init__))
    assert found and float(found[0]) == META_VIT_LAYER_NORM_EPS


def test_neck_and_position_encoding(builder_calls, hf):
    neck = one(builder_calls, "_create_vit_neck", "Sam3DualViTDetNeck")
    assert neck["d_model"] == hf.vision_config.fpn_hidden_size
    assert list(neck["scale_factors"]) == list(hf.vision_config.scale_factors)
    pos = one(builder_calls, "_create_position_encoding", "PositionEmbeddingSine")
    assert pos["num_pos_feats"] == hf.vision_config.fpn_hidden_size and pos["normalize"] and pos["temperature"] == 10000


def test_text_encoder(builder_calls, hf):
    from sam3.model.text_encoder_ve import VETextEncoder

    text = one(builder_calls, "_create_text_encoder", "VETextEncoder")
    cfg = hf.text_config
    assert (text["width"], text["heads"], text["layers"]) == (cfg.hidden_size, cfg.num_attention_heads,
                                                               cfg.num_hidden_layers)
    assert text["d_model"] == hf.detr_encoder_config.hidden_size
    assert default(VETextEncoder, "context_length") == cfg.max_position_embeddings == 32
    assert default(VETextEncoder, "vocab_size") == cfg.vocab_size == 49408
    assert cfg.intermediate_size == 4 * cfg.hidden_size  # Meta's text blocks use an MLP ratio of 4
    assert cfg.hidden_act == "gelu"  # Meta: nn.GELU (exact); CLIPTextConfig's own default is quick_gelu


def test_detr_encoder_decoder_and_scoring(builder_calls, hf):
    enc, dec = hf.detr_encoder_config, hf.detr_decoder_config
    layer = one(builder_calls, "_create_transformer_encoder", "TransformerEncoderLayer")
    assert (layer["d_model"], layer["dim_feedforward"], layer["activation"]) == (
        enc.hidden_size, enc.intermediate_size, enc.hidden_act)
    assert one(builder_calls, "_create_transformer_encoder", "MultiheadAttention")["num_heads"] == enc.num_attention_heads
    assert one(builder_calls, "_create_transformer_encoder", "TransformerEncoderFusion")["num_layers"] == enc.num_layers
    layer = one(builder_calls, "_create_transformer_decoder", "TransformerDecoderLayer")
    assert (layer["d_model"], layer["dim_feedforward"], layer["activation"], layer["n_heads"]) == (
        dec.hidden_size, dec.intermediate_size, dec.hidden_act, dec.num_attention_heads)
    decoder = one(builder_calls, "_create_transformer_decoder", "TransformerDecoder")
    assert (decoder["num_layers"], decoder["num_queries"], decoder["presence_token"]) == (
        dec.num_layers, dec.num_queries, True)
    assert decoder["resolution"] // decoder["stride"] == 72  # the box-RPB grid of a 1008 px image, patch 14
    mlp = one(builder_calls, "_create_dot_product_scoring", "MLP")
    assert (mlp["input_dim"], mlp["hidden_dim"], mlp["num_layers"]) == (dec.hidden_size, dec.intermediate_size, 2)


def test_clamps(hf):
    """Both clamp prediction logits at +-12; Meta computes but never assigns its presence clamp (dart drops it)."""
    from sam3.model.model_misc import DotProductScoring

    from tests.tiny import tiny_model

    assert default(DotProductScoring, "clamp_logits") is True and default(DotProductScoring, "clamp_max_val") == 12.0
    scoring = tiny_model().dot_product_scoring
    assert scoring.clamp_logits and scoring.clamp_max_val == 12.0
    from sam3.model import decoder

    source = inspect.getsource(decoder.TransformerDecoder.forward)
    assert "intermediate_layer_presence_logits.clamp(" in source
    assert "= intermediate_layer_presence_logits.clamp(" not in source.replace("\n", " ").replace("  ", " ")


def test_mask_head_and_geometry_encoder(builder_calls, hf):
    from sam3.model.geometry_encoders import SequenceGeometryEncoder

    mask, geo = hf.mask_decoder_config, hf.geometry_encoder_config
    pixel = one(builder_calls, "_create_segmentation_head", "PixelDecoder")
    assert (pixel["hidden_dim"], pixel["num_upsampling_stages"]) == (mask.hidden_size, mask.num_upsampling_stages)
    assert one(builder_calls, "_create_segmentation_head", "MultiheadAttention")["num_heads"] == mask.num_attention_heads
    layer = one(builder_calls, "_create_geometry_encoder", "TransformerEncoderLayer")
    assert (layer["d_model"], layer["dim_feedforward"], layer["activation"]) == (
        geo.hidden_size, geo.intermediate_size, geo.hidden_act)
    assert one(builder_calls, "_create_geometry_encoder", "MultiheadAttention")["num_heads"] == geo.num_attention_heads
    encoder = one(builder_calls, "_create_geometry_encoder", "SequenceGeometryEncoder")
    assert encoder["num_layers"] == geo.num_layers and encoder["add_cls"]
    assert default(SequenceGeometryEncoder, "roi_size") == geo.roi_size
