"""Load SAM3 weights from every place a user keeps them.

``checkpoint`` may be
- a Hugging Face hub repo id (default ``facebook/sam3``; gated: accept the license and log in), downloaded once
  with a progress bar into the hub cache;
- a local folder in ``transformers`` format (``config.json`` + ``*.safetensors``);
- a ``.safetensors`` file (``transformers`` or Meta key layout; ``config.json`` beside it, else SAM3's default
  config);
- Meta's original ``sam3.pt`` (converted by the explicit key map in :mod:`dart.models.meta_keymap`).

Every path loads strictly: a missing, unexpected or mis-shaped weight is an error, never a silent random init.
Only the video tracker's keys of a full checkpoint are ignored, by name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dart.errors import CheckpointError, DartError
from dart.models.sam3 import DEFAULT_IMGSZ, fingerprint_model, follow_meta, set_image_size

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedTokenizerBase, Sam3Model

DEFAULT_CHECKPOINT = "facebook/sam3"
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")


@dataclass
class LoadedSam3:
    """A SAM3 model loaded on the CPU in float32, with where it came from."""

    model: Sam3Model
    fingerprint: str
    source: str
    tokenizer_source: str | None
    backbone: Any = None  # the backbone stage a checkpoint brings instead of SAM3's ViT (EfficientSAM3), or None
    # (id of the model, device, dtype) a TorchBackend prepared the modules for, in place (None while untouched): a
    # second backend in another precision or on another device cannot share them, and a deep copy of weights
    # already narrowed to bf16/fp16 cannot be widened back exactly (see TorchBackend)
    prepared_for: tuple[int, str, str] | None = None

    def backbone_stage(self) -> Any:
        """The module that makes the three FPN levels from pixels: the checkpoint's own backbone (EfficientSAM3),
        else SAM3's ViT and FPN."""
        from dart.stages import BackboneStage

        return self.backbone if self.backbone is not None else BackboneStage(self.model)

    def tokenizer(self) -> PreTrainedTokenizerBase:
        from dart.models.tokenizer import load_tokenizer

        return load_tokenizer(self.tokenizer_source, self.source)


def load_sam3(checkpoint: str | Path = DEFAULT_CHECKPOINT, *, imgsz: int = DEFAULT_IMGSZ,
              tokenizer: str | Path | None = None, local_files_only: bool = False) -> LoadedSam3:
    """Load a SAM3 image model from a hub id, folder, ``.safetensors`` or Meta ``.pt`` file.

    The model is returned in eval mode, float32, on the CPU, set up for ``imgsz``; ``fingerprint`` identifies
    its weights (text caches and engines are keyed by it).
    """
    _quiet_transformers()
    spec = str(checkpoint)
    path = Path(spec).expanduser()
    backbone = None
    check_checkpoint_named(spec)
    if path.exists():
        model, tok_source, backbone = _load_local(path)
    else:
        folder = download_checkpoint(spec, local_files_only=local_files_only)
        model, tok_source, backbone = _load_local(folder)
    if tokenizer is not None:
        tok_source = str(tokenizer)
    follow_meta(model.eval())
    fingerprint = fingerprint_model(model, backbone)
    set_image_size(model, imgsz)
    return LoadedSam3(model=model, fingerprint=fingerprint, source=spec, tokenizer_source=tok_source,
                      backbone=backbone)


def check_checkpoint_named(checkpoint: str | Path) -> None:
    """One sentence (exit 3) when ``checkpoint`` names a local file or folder that is not there (a hub repo id,
    ``owner/name``, is left to the download). Reads no weights and imports nothing heavy, so commands check it
    before they start."""
    spec = str(checkpoint)
    if not Path(spec).expanduser().exists() and _looks_like_path(spec):
        raise CheckpointError(
            f"checkpoint '{spec}' does not exist; pass a hub repo id (e.g. {DEFAULT_CHECKPOINT}), a transformers "
            "folder, a .safetensors file or Meta's sam3.pt."
        )


def vit_blocks(checkpoint: str | Path) -> int | None:
    """The number of ViT blocks of a checkpoint, read from its config alone (no weights loaded, no download): a
    folder's ``config.json``, the one beside a file (SAM3's default config for a bare ``sam3.pt``), or a hub repo's
    config in the local cache. ``None`` when it cannot be known without loading (or downloading) the model."""
    import json

    spec = str(checkpoint)
    path = Path(spec).expanduser()
    config_file: Path | None = None
    if path.is_dir():
        config_file = path / "config.json"
    elif path.is_file():
        config_file = path.parent / "config.json"
        if not config_file.is_file():
            from transformers import Sam3Config

            return int(Sam3Config().vision_config.backbone_config.num_hidden_layers)
    elif not _looks_like_path(spec):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(spec, "config.json")
        except Exception:  # noqa: BLE001 - an unusual cache layout only means "unknown"
            cached = None
        config_file = Path(cached) if isinstance(cached, str) else None
    if config_file is None or not config_file.is_file():
        return None
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
        return int(data["vision_config"]["backbone_config"]["num_hidden_layers"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a broken config is reported, with its name, when the model loads


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def _looks_like_path(spec: str) -> bool:
    return (
        spec.startswith((".", "/", "~"))
        or spec.endswith("/")
        or "\\" in spec
        or spec.count("/") > 1
        or Path(spec).suffix.lower() in {".pt", ".pth", ".safetensors", ".bin", ".ckpt"}
        or "/" not in spec
    )


def key_differences(mine: dict[str, Any], state: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """``(missing, unexpected, mis-shaped)`` keys of ``state`` against a model's own state dict ``mine``, sorted:
    what a strict load would refuse, for a sentence that names the first."""
    missing = sorted(k for k in mine if k not in state)
    unexpected = sorted(k for k in state if k not in mine)
    shaped = sorted(k for k in state if k in mine and tuple(state[k].shape) != tuple(mine[k].shape))
    return missing, unexpected, shaped


def download_checkpoint(repo_id: str, *, local_files_only: bool = False) -> Path:
    """Fetch the ``transformers`` files of a hub repo (with progress bars) and return the local folder."""
    from huggingface_hub import snapshot_download
    from huggingface_hub import errors as hub_errors

    login = "run `hf auth login` (or set HF_TOKEN)"
    try:
        folder = snapshot_download(repo_id, allow_patterns=HUB_PATTERNS, local_files_only=local_files_only)
    except hub_errors.HFValidationError as exc:
        raise CheckpointError(
            f"checkpoint '{repo_id}' is neither an existing file or folder nor a valid hub repo id (like "
            f"{DEFAULT_CHECKPOINT}); check the spelling."
        ) from exc
    except hub_errors.GatedRepoError as exc:
        raise CheckpointError(
            f"{repo_id} is gated: accept its license at https://huggingface.co/{repo_id} and {login}, "
            "or pass --checkpoint with a local copy."
        ) from exc
    except hub_errors.RepositoryNotFoundError as exc:
        raise CheckpointError(
            f"the hub has no repo '{repo_id}' that you can access: check the spelling, {login} if it is private, "
            "or pass --checkpoint with a local folder or file."
        ) from exc
    except (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled) as exc:
        raise CheckpointError(
            f"cannot download {repo_id}: the Hugging Face hub is unreachable (or HF_HUB_OFFLINE is set) and it is "
            "not in the local cache; connect once to download it, or pass --checkpoint with a local folder or file."
        ) from exc
    except hub_errors.HfHubHTTPError as exc:
        raise CheckpointError(f"downloading {repo_id} from the hub failed ({exc}); try again later.") from exc
    except OSError as exc:
        raise CheckpointError(f"downloading {repo_id} failed: {exc}.") from exc
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise CheckpointError(f"{repo_id} has no config.json, so it is not a transformers SAM3 checkpoint.")
    return folder


def _load_local(path: Path) -> tuple[Sam3Model, str | None, Any]:
    """``(model, tokenizer folder, backbone)``; ``backbone`` is None but for checkpoints that replace the ViT."""
    from dart.compat.efficientsam3 import is_efficientsam3, load_efficientsam3
    from dart.pruning.checkpoint import find_prune_file, load_pruned

    if find_prune_file(path) is not None:  # a pruned checkpoint: re-applies its recorded prune spec
        return load_pruned(path), _tokenizer_dir(path if path.is_dir() else path.parent), None
    if path.is_dir():
        return _load_folder(path), _tokenizer_dir(path), None
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        state_dict = _read_safetensors(path)
    elif suffix in {".pt", ".pth", ".ckpt", ".bin"}:
        state_dict = _read_torch(path)
    else:
        raise CheckpointError(
            f"{path} is neither a folder, a .safetensors file nor a .pt file, so dart cannot tell how to load it."
        )
    if is_efficientsam3(state_dict):  # SAM3 around a student trunk: the trunk is the backbone
        model, backbone = load_efficientsam3(state_dict, str(path), _config_beside(path))
        return model, _tokenizer_dir(path.parent), backbone
    state_dict = _to_transformers_layout(state_dict, path)
    config = _config_beside(path)
    return _model_from_state_dict(config, state_dict, path), _tokenizer_dir(path.parent), None


def _load_folder(folder: Path) -> Sam3Model:
    from transformers import Sam3Model

    if not (folder / "config.json").exists():
        raise CheckpointError(f"{folder} has no config.json, so it is not a transformers SAM3 folder.")
    with unreadable_weights(folder, "SAM3 checkpoint folder"):
        model, info = Sam3Model.from_pretrained(folder, output_loading_info=True, dtype="float32")
    _check_loading_info(info, folder)
    return model


def _model_from_state_dict(config: Any, state_dict: dict[str, torch.Tensor], source: Path) -> Sam3Model:
    from transformers import Sam3Model

    with unreadable_weights(source, "checkpoint"):
        model, info = Sam3Model.from_pretrained(
            None, config=config, state_dict=state_dict, output_loading_info=True, dtype="float32"
        )
    _check_loading_info(info, source)
    return model


def _check_loading_info(info: dict[str, Any], source: Path) -> None:
    problems = []
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = sorted(str(k) for k in info.get(kind) or ())
        if keys:
            shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
            problems.append(f"{len(keys)} {kind.replace('_', ' ')} ({shown})")
    if info.get("error_msgs"):
        problems.append(_first_line(info["error_msgs"][0]))
    if problems:
        raise CheckpointError(
            f"{source} does not match the SAM3 architecture: " + "; ".join(problems) + ". Is it a SAM3 checkpoint?"
        )


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    with unreadable_weights(path, ".safetensors file"):
        return load_file(str(path))


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    import torch

    from dart.models.meta_keymap import extract_meta_state_dict

    with unreadable_weights(path, "PyTorch checkpoint"):
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    try:
        return extract_meta_state_dict(obj)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc


def _to_transformers_layout(state_dict: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """Convert Meta's key layout when that is what the file holds; transformers-layout files pass through."""
    from dart.models.meta_keymap import convert_meta_state_dict, is_meta_layout

    if not is_meta_layout(state_dict):
        return state_dict
    try:
        return convert_meta_state_dict(state_dict, consume=True)  # dart read this dict itself: nobody else holds it
    except ValueError as exc:
        raise CheckpointError(f"{source}: {exc}") from exc


def _config_beside(path: Path) -> Any:
    from transformers import Sam3Config

    config_file = path.parent / "config.json"
    if config_file.exists():
        with unreadable_weights(config_file, "SAM3 config", fix="it must be the config.json of a SAM3 checkpoint"):
            return Sam3Config.from_json_file(str(config_file))
    return Sam3Config()


def _tokenizer_dir(folder: Path) -> str | None:
    return str(folder) if any((folder / name).exists() for name in TOKENIZER_FILES) else None


@contextmanager
def unreadable_weights(path: str | Path, what: str = "checkpoint",
                       fix: str = "it is damaged or not what dart expects: re-download or re-create it") -> Iterator[None]:
    """Any failure while reading weights (truncated files, text files named ``.pt``, foreign formats ...) becomes
    one :class:`CheckpointError` sentence (exit code 3) naming the file; dart's own errors pass through."""
    try:
        yield
    except DartError:
        raise
    except Exception as exc:  # noqa: BLE001 - every reader raises its own kinds; all mean "cannot use this file"
        raise CheckpointError(f"{what} '{path}' cannot be loaded ({type(exc).__name__}: {_first_line(exc)}); "
                              f"{fix}.") from exc


def _first_line(exc: object) -> str:
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".") if text else type(exc).__name__
