"""Backbone pruning: remove whole ViT blocks or skip their attention / MLP branch."""

from dart.pruning.spec import PruneSpec, apply_pruning

__all__ = ["PruneSpec", "apply_pruning"]
