"""Prune specs: which ViT blocks of SAM3's backbone are removed or partly skipped.

- ``skip_blocks``: whole blocks removed from the model (``--skip-blocks 5,10,12``); export and engines get
  physically smaller and faster.
- ``mask_blocks``: the attention or MLP branch of a block is skipped (``--mask-blocks 25:attn,28:mlp``); the
  block's residual stream passes through unchanged for that branch.

Indices refer to the blocks of the full backbone (0..31 for SAM3), so a spec means the same thing whatever
else was pruned. Specs round-trip through YAML/JSON files, which every command and recipe accepts.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dart.errors import InputError

if TYPE_CHECKING:
    from torch import nn

BRANCHES = ("attn", "mlp")


@dataclass(frozen=True)
class PruneSpec:
    skip_blocks: tuple[int, ...] = ()
    mask_blocks: tuple[tuple[int, str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.skip_blocks or self.mask_blocks)

    @classmethod
    def parse(cls, skip_blocks: str | Sequence[int] | None = None, mask_blocks: str | Sequence[Any] | None = None,
              num_blocks: int | None = None) -> PruneSpec:
        """Parse ``"5,10,12"`` / ``[5, 10]`` and ``"25:attn,28:mlp"`` / ``[[25, "attn"]]``; validate when
        ``num_blocks`` is known."""
        skips = _parse_skip(skip_blocks)
        masks = _parse_mask(mask_blocks)
        spec = cls(tuple(sorted(skips)), tuple(sorted(masks)))
        if num_blocks is not None:
            spec.validate(num_blocks)
        return spec

    def validate(self, num_blocks: int) -> None:
        for index in [*self.skip_blocks, *(b for b, _ in self.mask_blocks)]:
            if not 0 <= index < num_blocks:
                raise InputError(f"block {index} does not exist: the backbone has blocks 0..{num_blocks - 1}.")
        overlap = sorted(set(self.skip_blocks) & {b for b, _ in self.mask_blocks})
        if overlap:
            raise InputError(f"block {overlap[0]} is both skipped and masked; list it in one of the two only.")
        if len(self.skip_blocks) >= num_blocks:
            raise InputError(f"cannot skip all {num_blocks} blocks of the backbone.")

    # ------------------------------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        return {"skip_blocks": list(self.skip_blocks), "mask_blocks": [f"{b}:{br}" for b, br in self.mask_blocks]}

    @classmethod
    def from_dict(cls, data: dict[str, Any], num_blocks: int | None = None) -> PruneSpec:
        unknown = set(data) - {"skip_blocks", "mask_blocks"}
        if unknown:
            raise InputError(f"unknown key '{sorted(unknown)[0]}' in prune spec; allowed: skip_blocks, mask_blocks.")
        return cls.parse(data.get("skip_blocks"), data.get("mask_blocks"), num_blocks)

    @classmethod
    def load(cls, path: str | Path, num_blocks: int | None = None) -> PruneSpec:
        """Read a spec from ``.yaml``/``.yml``/``.json`` (a ``prune`` section of a larger file is accepted)."""
        from dart.io import read_yaml

        data = read_yaml(path, "prune spec") or {}
        if not isinstance(data, dict):
            raise InputError(f"prune spec '{path}' must be a mapping with skip_blocks and/or mask_blocks.")
        if isinstance(data.get("prune"), dict):
            data = data["prune"]
        return cls.from_dict(data, num_blocks)

    def save(self, path: str | Path) -> None:
        from dart.io import write_text

        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def __str__(self) -> str:
        parts = []
        if self.skip_blocks:
            parts.append("skip " + ",".join(map(str, self.skip_blocks)))
        if self.mask_blocks:
            parts.append("mask " + ",".join(f"{b}:{br}" for b, br in self.mask_blocks))
        return "; ".join(parts) or "none"


def _parse_skip(value: str | Sequence[int] | None) -> set[int]:
    if value is None or value == "" or value == []:
        return set()
    items = value.split(",") if isinstance(value, str) else list(value)
    out: set[int] = set()
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            index = int(text)
        except ValueError as exc:
            raise InputError(f"--skip-blocks takes block numbers like 5,10,12; '{text}' is not a number.") from exc
        if index in out:
            raise InputError(f"block {index} is listed twice in --skip-blocks.")
        out.add(index)
    return out


def _parse_mask(value: str | Sequence[Any] | None) -> set[tuple[int, str]]:
    if value is None or value == "" or value == []:
        return set()
    items = value.split(",") if isinstance(value, str) else list(value)
    out: set[tuple[int, str]] = set()
    for item in items:
        if isinstance(item, (list, tuple)) and len(item) == 2:
            block, branch = item
        else:
            text = str(item).strip()
            if not text:
                continue
            if text.count(":") != 1:
                raise InputError(f"--mask-blocks takes BLOCK:BRANCH pairs like 25:attn,28:mlp; got '{text}'.")
            block, branch = text.split(":")
        try:
            index = int(str(block).strip())
        except ValueError as exc:
            raise InputError(f"--mask-blocks: '{block}' is not a block number (e.g. 25:attn).") from exc
        branch = str(branch).strip().lower()
        if branch not in BRANCHES:
            raise InputError(f"--mask-blocks: branch '{branch}' must be attn or mlp (e.g. {index}:attn).")
        if (index, branch) in out:
            raise InputError(f"{index}:{branch} is listed twice in --mask-blocks.")
        out.add((index, branch))
    return out


@functools.cache
def _zero_branch_class() -> type:
    """The module that stands in for a skipped attention or MLP branch (defined on first use, so that reading a
    spec does not import torch)."""
    import torch
    from torch import nn

    class ZeroBranch(nn.Module):
        """Contributes nothing to the residual stream."""

        def __init__(self, returns_tuple: bool):
            super().__init__()
            self.returns_tuple = returns_tuple

        def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any):
            zeros = torch.zeros_like(hidden_states)
            return (zeros, None) if self.returns_tuple else zeros

    return ZeroBranch


def apply_pruning(model: nn.Module, spec: PruneSpec) -> None:
    """Prune a ``Sam3Model`` (or anything with ``vision_encoder.backbone.layers``) in place.

    Masked branches are replaced by a zero branch; skipped blocks are removed from the ``ModuleList``. The
    applied spec is recorded on the model as ``model.dart_prune_spec`` (indices of the full backbone).
    Applying an empty spec, or the spec a model already carries (e.g. a pruned checkpoint loaded with its own
    spec), does nothing.
    """
    previous: PruneSpec = getattr(model, "dart_prune_spec", PruneSpec())
    if not spec and previous:
        return
    if previous:
        if previous == spec:
            return
        raise InputError(f"this model is already pruned ({previous}); load the unpruned checkpoint to prune again.")
    _swap_modules(model, spec)
    model.dart_prune_spec = spec


@contextmanager
def temporarily_pruned(model: nn.Module, spec: PruneSpec) -> Iterator[nn.Module]:
    """Prune an unpruned model for the duration of a ``with`` block, then put every module back.

    Used by the importance search to score many candidate specs on one model without copying it; the pruned
    model computes exactly what :func:`apply_pruning` would produce.
    """
    previous: PruneSpec = getattr(model, "dart_prune_spec", PruneSpec())
    if previous:
        raise InputError(f"this model is already pruned ({previous}); search on the unpruned checkpoint.")
    restore = _swap_modules(model, spec)
    try:
        yield model
    finally:
        restore()


def _swap_modules(model: nn.Module, spec: PruneSpec) -> Callable[[], None]:
    """Apply ``spec`` to the ViT's modules; return a function that restores the original modules."""
    backbone = model.vision_encoder.backbone
    original = backbone.layers
    layers = list(original)
    spec.validate(len(layers))
    saved: list[tuple[nn.Module, str, nn.Module]] = []
    for block, branch in spec.mask_blocks:
        layer = layers[block]
        name = "attention" if branch == "attn" else "mlp"
        saved.append((layer, name, getattr(layer, name)))
        setattr(layer, name, _zero_branch_class()(returns_tuple=branch == "attn"))
    skipped = set(spec.skip_blocks)
    from torch import nn

    backbone.layers = nn.ModuleList([layer for i, layer in enumerate(layers) if i not in skipped])

    def restore() -> None:
        backbone.layers = original
        for layer, name, module in saved:
            setattr(layer, name, module)

    return restore


def kept_blocks(spec: PruneSpec, num_blocks: int) -> list[int]:
    """Full-backbone indices of the blocks a pruned model still has, in order."""
    skipped = set(spec.skip_blocks)
    return [i for i in range(num_blocks) if i not in skipped]


def resolve_prune_spec(skip_blocks: str | None = None, mask_blocks: str | None = None,
                       spec_file: str | Path | None = None) -> PruneSpec:
    """The spec given on a command line: flags or a spec file, not both (validated against the model later)."""
    if spec_file is not None:
        if skip_blocks or mask_blocks:
            raise InputError("give --prune-spec or --skip-blocks/--mask-blocks, not both.")
        return PruneSpec.load(spec_file)
    return PruneSpec.parse(skip_blocks, mask_blocks)
