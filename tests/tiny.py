"""Tiny random SAM3 models for tests (test scaffolding only: never a product default).

The architecture is SAM3's own (``transformers.Sam3Config``) with small widths and few layers, so a full
multi-class forward runs on the CPU in a fraction of a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_IMGSZ = 112
WORDS = ["person", "car", "bicycle", "dog", "cat", "bus", "truck", "traffic", "light", "red", "a", "the", "stop",
         "sign", "bird", "horse", "boat", "chair", "cup", "tree"]


def tiny_config(imgsz: int = TINY_IMGSZ, num_queries: int = 12, vit_layers: int = 4):
    from transformers import Sam3Config

    return Sam3Config(
        vision_config=dict(
            backbone_config=dict(model_type="sam3_vit_model", hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=vit_layers, num_attention_heads=2, window_size=4,
                                 global_attn_indexes=[1, vit_layers - 1], image_size=imgsz, pretrain_image_size=56,
                                 patch_size=14),
            fpn_hidden_size=32,
        ),
        text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=64, projection_dim=32, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=32, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0),
        geometry_encoder_config=dict(hidden_size=32, num_layers=1, num_attention_heads=2, intermediate_size=64),
        detr_encoder_config=dict(hidden_size=32, num_layers=2, num_attention_heads=2, intermediate_size=64),
        detr_decoder_config=dict(hidden_size=32, num_layers=2, num_attention_heads=2, intermediate_size=64,
                                 num_queries=num_queries),
        mask_decoder_config=dict(hidden_size=32, num_attention_heads=2),
    )


def tiny_model(seed: int = 0, **kwargs):
    from transformers import Sam3Model

    torch.manual_seed(seed)
    model = Sam3Model(tiny_config(**kwargs)).eval()
    # Random init leaves every score near 0.25; spread the query logits so thresholds and NMS have work to do.
    with torch.no_grad():
        model.dot_product_scoring.query_proj.weight.mul_(40.0)
        model.detr_decoder.presence_head.layer3.bias.fill_(2.0)
    return model


def tiny_tokenizer():
    """A word-level tokenizer in ``tokenizer.json`` form (CLIP's BPE files cannot be downloaded in tests)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "<|startoftext|>": 1, "<|endoftext|>": 2, "[UNK]": 3}
    for word in WORDS:
        vocab[word] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 1), ("<|endoftext|>", 2)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   bos_token="<|startoftext|>", eos_token="<|endoftext|>")


def save_tiny_checkpoint(folder: Path, seed: int = 0, **kwargs) -> Path:
    """A transformers-format folder (config, safetensors, tokenizer) like a hub snapshot of facebook/sam3."""
    folder.mkdir(parents=True, exist_ok=True)
    tiny_model(seed, **kwargs).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    json.loads((folder / "config.json").read_text())  # sanity: valid JSON
    return folder
