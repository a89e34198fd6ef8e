"""Find and load what is registered in the ``dart.*`` entry-point groups.

Every group is read from installed package metadata (``[project.entry-points."dart.backends"]`` and so on), so
a third-party package adds a backend, backbone, tracker or subcommand simply by declaring an entry point.
A plugin that fails to import is reported by name and never takes the rest of dart down with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from dart.errors import DependencyError, InputError

GROUPS: dict[str, str] = {
    "dart.commands": "subcommand",
    "dart.backends": "backend",
    "dart.backbones": "backbone",
    "dart.trackers": "tracker",
}


@dataclass(frozen=True)
class PluginFailure:
    """A registered plugin whose import raised."""

    group: str
    name: str
    value: str
    package: str
    error: str

    def sentence(self) -> str:
        return (
            f"the {GROUPS.get(self.group, 'plugin')} plugin '{self.name}' ({self.value}, from {self.package}) "
            f"failed to load and was skipped: {self.error}"
        )


def _check_group(group: str) -> None:
    if group not in GROUPS:
        raise ValueError(f"unknown plugin group {group!r}; known groups: {', '.join(GROUPS)}")


def _package(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown package"
    return f"{dist.metadata['Name']} {dist.version}"


def _entry_points(group: str) -> list[EntryPoint]:
    _check_group(group)
    seen: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        seen.setdefault(ep.name, ep)  # the first installation on sys.path wins, as for console scripts
    return sorted(seen.values(), key=lambda ep: ep.name)


def available(group: str) -> list[tuple[str, str, str]]:
    """``(name, object path, providing package)`` for every plugin registered in ``group``, without importing."""
    return [(ep.name, ep.value, _package(ep)) for ep in _entry_points(group)]


def load(group: str, name: str) -> Any:
    """Import one plugin by name; an unknown name is an :class:`InputError` (exit 2) and a plugin that fails to
    import a :class:`DependencyError` (exit 4), each one sentence."""
    eps = {ep.name: ep for ep in _entry_points(group)}
    if name not in eps:
        names = ", ".join(eps) or "none"
        raise InputError(f"there is no {GROUPS[group]} named '{name}'; registered {GROUPS[group]}s: {names}.")
    ep = eps[name]
    try:
        return ep.load()
    except Exception as exc:  # noqa: BLE001 - a plugin may raise anything at import time
        failure = PluginFailure(group, ep.name, ep.value, _package(ep), f"{type(exc).__name__}: {exc}")
        raise DependencyError(failure.sentence()) from exc


def load_all(group: str) -> tuple[dict[str, Any], list[PluginFailure]]:
    """Import every plugin of ``group``; broken ones are returned as failures instead of raising."""
    loaded: dict[str, Any] = {}
    failures: list[PluginFailure] = []
    for ep in _entry_points(group):
        try:
            loaded[ep.name] = ep.load()
        except Exception as exc:  # noqa: BLE001
            failures.append(PluginFailure(group, ep.name, ep.value, _package(ep), f"{type(exc).__name__}: {exc}"))
    return loaded, failures
