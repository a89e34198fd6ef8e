"""CLIP's tokenizer, as Meta's SAM3 uses it.

Where it comes from, in this order:

1. ``--tokenizer``: a tokenizer folder or hub id, or CLIP's BPE vocabulary file itself
   (``bpe_simple_vocab_16e6.txt.gz``, the file Meta's and OpenAI's CLIP tokenizers read);
2. the tokenizer files beside the checkpoint (a hub snapshot or a folder has them);
3. ``facebook/sam3``'s tokenizer on the Hugging Face hub (a few small files, cached);
4. offline, CLIP's BPE vocabulary shipped inside an installed ``open-clip-torch`` (``pip install
   'dart-detect[clip]'``); a warning says it was used.

A tokenizer built from the BPE file gives exactly the token ids of Meta's ``SimpleTokenizer`` (tested), and every
tokenizer sees the text cleaned the way Meta cleans it first (``ftfy.fix_text``, HTML entities unescaped), so
``'&amp;'`` or full-width letters become the tokens SAM3 was trained on.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dart.errors import CheckpointError, DartError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedTokenizerBase

DEFAULT_REPO = "facebook/sam3"
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
BPE_MERGES = 49152 - 256 - 2  # merges CLIP uses from the file (the vocabulary is 49408 with the two specials)


def meta_clean(text: str) -> str:
    """Meta's ``basic_clean``: mojibake and unicode forms fixed by ftfy, HTML entities unescaped (twice), stripped.
    Whitespace runs and case are normalised by the tokenizer itself, as in Meta's code."""
    import ftfy

    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def tokenize(tokenizer: PreTrainedTokenizerBase, names: Sequence[str], length: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids [C, length], attention_mask [C, length])`` of the class prompts, cleaned as Meta cleans them,
    padded and truncated to ``length`` (start token, up to ``length - 2`` tokens, end token)."""
    tokens = tokenizer([meta_clean(n) for n in names], padding="max_length", max_length=length, truncation=True,
                       return_tensors="pt")
    return tokens["input_ids"], tokens["attention_mask"]


def installed_bpe_vocab() -> Path | None:
    """CLIP's BPE vocabulary inside an installed ``open-clip-torch`` (found without importing it), if any."""
    spec = importlib.util.find_spec("open_clip")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(folder) / BPE_FILE
        if candidate.is_file():
            return candidate
    return None


def is_bpe_file(source: str | Path) -> bool:
    path = Path(source)
    return path.is_file() and (path.name.endswith((".txt.gz", ".txt")) or "bpe" in path.name.lower())


def looks_like_tokenizer_path(spec: str) -> bool:
    """Whether a ``--tokenizer`` value that is not on disk names a file or folder rather than a hub repo id
    (``org/name``): it is then reported at once instead of being asked of the hub, which offline retries for
    minutes."""
    from dart.models.loading import _looks_like_path

    return _looks_like_path(spec) or Path(spec).suffix.lower() in {".gz", ".txt", ".json", ".model"}


def bpe_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """A ``transformers`` CLIP tokenizer built from CLIP's BPE vocabulary file (gzipped or plain merges): the
    byte alphabet, the same with ``</w>``, one token per merge, then ``<|startoftext|>`` and ``<|endoftext|>``."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        lines = raw.decode("utf-8").split("\n")[1:BPE_MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        if len(merges) < BPE_MERGES or any(len(m) != 2 for m in merges):
            raise ValueError(f"{len(merges)} merge rules where CLIP's vocabulary has {BPE_MERGES}")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"'{path}' is not CLIP's BPE vocabulary ({exc}); pass a {BPE_FILE} or a tokenizer "
                              "folder with --tokenizer.") from exc
    alphabet = list(bytes_to_unicode().values())
    vocab = [*alphabet, *(a + "</w>" for a in alphabet), *("".join(m) for m in merges),
             "<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={token: i for i, token in enumerate(vocab)}, merges=merges)


def load_tokenizer(source: str | Path | None, checkpoint: str = DEFAULT_REPO) -> PreTrainedTokenizerBase:
    """The CLIP tokenizer for ``checkpoint`` (see the module docstring for where it comes from)."""
    from transformers import AutoTokenizer

    from dart.models.loading import _first_line, _quiet_transformers

    _quiet_transformers()
    if source is not None and is_bpe_file(source):
        return bpe_tokenizer(source)
    if source is None:
        try:
            target = str(download_tokenizer())
        except CheckpointError as exc:
            bpe = installed_bpe_vocab()
            if bpe is None:
                raise CheckpointError(f"{exc} Offline, `pip install open-clip-torch` (CLIP's vocabulary ships inside "
                                      f"it) or pass --tokenizer {BPE_FILE}.") from exc
            warnings.warn(f"no tokenizer beside {checkpoint} and {DEFAULT_REPO}'s cannot be fetched: using CLIP's BPE "
                          f"vocabulary from open-clip-torch ({bpe}), which gives SAM3's token ids.", stacklevel=2)
            return bpe_tokenizer(bpe)
    else:
        target = str(source)
        if not Path(target).expanduser().exists() and looks_like_tokenizer_path(target):
            raise CheckpointError(
                f"tokenizer '{target}' does not exist; pass a tokenizer folder, a hub repo id (e.g. {DEFAULT_REPO}) "
                f"or CLIP's {BPE_FILE}.")
    try:
        return AutoTokenizer.from_pretrained(target)
    except DartError:
        raise
    except Exception as exc:  # noqa: BLE001 - the tokenizers library raises plain Exceptions for damaged files
        raise CheckpointError(
            f"no usable tokenizer for {checkpoint} in {target} ({_first_line(exc)}); put tokenizer.json beside the "
            f"checkpoint or pass --tokenizer with a folder, a hub id or {BPE_FILE}."
        ) from exc


def download_tokenizer(repo_id: str = DEFAULT_REPO) -> Path:
    from huggingface_hub import snapshot_download

    from dart.models.loading import _first_line

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["tokenizer*", "vocab.json", "merges.txt",
                                                               "special_tokens_map.json"]))
    except Exception as exc:  # noqa: BLE001 - every hub failure means the same thing here
        raise CheckpointError(
            f"this checkpoint has no tokenizer beside it and the {repo_id} tokenizer could not be fetched "
            f"({_first_line(exc)}); put tokenizer.json beside the checkpoint or pass --tokenizer."
        ) from exc
