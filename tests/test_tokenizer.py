"""CLIP's tokenizer without the network: built from the BPE vocabulary, it gives the token ids of Meta's own
``SimpleTokenizer`` (the reference, from Meta's ``sam3`` package); every tokenizer sees Meta's text cleaning."""

from __future__ import annotations

import re
import warnings

import pytest
import torch

from dart.classes import COCO80
from dart.errors import CheckpointError
from dart.models import tokenizer as tk

AWKWARD = ["Café  au LAIT!", "naïve résumé", "日本の車", "a  b   c", "hot-dog's", "x" * 200,
           " ".join(["word"] * 40), "emoji 🚗 car", "&amp; html &lt;b&gt;", "tab\tnew\nline", "  leading and trailing  ",
           "UPPER lower", "don't", "3.14 numbers 2024", "Ｆｕｌｌｗｉｄｔｈ", "e\u0301 combining", "â€™ mojibake", "-", ""]
LENGTH = 32


@pytest.fixture(scope="module")
def bpe_path():
    path = tk.installed_bpe_vocab()
    assert path is not None, "open-clip-torch (in the dev extra) ships CLIP's BPE vocabulary"
    return path


@pytest.fixture(scope="module")
def meta_tokenizer(bpe_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sam3.model.tokenizer_ve import SimpleTokenizer

    return SimpleTokenizer(bpe_path=str(bpe_path), context_length=LENGTH)


def test_bpe_tokenizer_gives_metas_ids(bpe_path, meta_tokenizer):
    texts = [*COCO80, *AWKWARD]
    reference = meta_tokenizer(texts, context_length=LENGTH)  # [N, 32], 0-padded, truncated to sot + 30 + eot
    ids, mask = tk.tokenize(tk.bpe_tokenizer(bpe_path), texts, LENGTH)
    assert ids.shape == reference.shape == (len(texts), LENGTH)
    for i, text in enumerate(texts):
        expected = reference[i][reference[i] != 0]
        assert mask[i].sum() == len(expected), text
        assert torch.equal(ids[i][mask[i].bool()], expected), text  # only the pad id differs, and pads are masked


def test_a_bpe_file_is_a_tokenizer_source(bpe_path, tmp_path):
    tokenizer = tk.load_tokenizer(bpe_path)
    assert len(tokenizer) == 49408
    plain = tmp_path / "bpe_vocab.txt"  # the same file, not gzipped
    import gzip

    plain.write_bytes(gzip.decompress(bpe_path.read_bytes()))
    a, _ = tk.tokenize(tokenizer, COCO80, LENGTH)
    b, _ = tk.tokenize(tk.load_tokenizer(plain), COCO80, LENGTH)
    assert torch.equal(a, b)
    broken = tmp_path / "bpe_broken.txt.gz"
    broken.write_bytes(gzip.compress(b"#version\nno merges here\n"))
    with pytest.raises(CheckpointError, match="is not CLIP's BPE vocabulary"):
        tk.load_tokenizer(broken)


@pytest.mark.parametrize("name", ["bpe_simple_vocab_16e6.txt.gz", "BPE", "./tok", "tok/", "a/b/c", "vocab.json"])
def test_a_missing_tokenizer_path_is_one_sentence_not_a_hub_request(monkeypatch, tmp_path, name):
    """A --tokenizer that names no file is refused before the hub is asked (offline it retries for minutes)."""
    import huggingface_hub
    import transformers

    def no_hub(*args, **kwargs):
        raise AssertionError("the hub was asked")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_hub)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_hub)
    with pytest.raises(CheckpointError, match=f"tokenizer '{re.escape(name)}' does not exist"):
        tk.load_tokenizer(name)
    assert not tk.looks_like_tokenizer_path("facebook/sam3")  # a hub id still goes to the hub


def test_offline_falls_back_to_open_clip_and_says_so(monkeypatch, bpe_path):
    def unreachable(*args, **kwargs):
        raise CheckpointError("the facebook/sam3 tokenizer could not be fetched (offline).")

    monkeypatch.setattr(tk, "download_tokenizer", unreachable)
    with pytest.warns(UserWarning, match="using CLIP's BPE vocabulary from open-clip-torch"):
        tokenizer = tk.load_tokenizer(None, "sam3.pt")
    assert len(tokenizer) == 49408
    monkeypatch.setattr(tk, "installed_bpe_vocab", lambda: None)
    with pytest.raises(CheckpointError, match=r"pip install open-clip-torch.*--tokenizer bpe_simple_vocab_16e6"):
        tk.load_tokenizer(None, "sam3.pt")


def test_every_tokenizer_sees_metas_cleaning(tiny_backend):
    assert tk.meta_clean("  &amp;lt; fish &amp; chips  ") == "< fish & chips"
    assert tk.meta_clean("Ｆｕｌｌ") == "Full"
    ids_a, _ = tiny_backend.tokenize(["red &amp; bus"])
    ids_b, _ = tiny_backend.tokenize(["red & bus"])
    assert torch.equal(ids_a, ids_b)
