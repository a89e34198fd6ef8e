"""Entry-point discovery for dart's plugin groups (built-ins register the same way as third parties)."""

from dart.plugins.registry import GROUPS, PluginFailure, available, load, load_all

__all__ = ["GROUPS", "PluginFailure", "available", "load", "load_all"]
