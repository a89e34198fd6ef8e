"""Backbone pruning: remove whole ViT blocks or skip their attention / MLP branch.

- :mod:`dart.pruning.spec`: :class:`PruneSpec` (parse, validate, load/save) and :func:`apply_pruning`;
- :mod:`dart.pruning.search`: the importance search behind ``dart prune search``;
- :mod:`dart.pruning.checkpoint`: pruned checkpoints that re-apply their spec when loaded.
"""

from dart.pruning.spec import PruneSpec, apply_pruning, resolve_prune_spec, temporarily_pruned


def __getattr__(name: str):
    # the checkpoint functions need torch: imported on first use, so that reading a spec stays light
    if name in ("load_pruned", "save_pruned"):
        from dart.pruning import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'dart.pruning' has no attribute '{name}'")


__all__ = ["PruneSpec", "apply_pruning", "load_pruned", "resolve_prune_spec", "save_pruned", "temporarily_pruned"]
