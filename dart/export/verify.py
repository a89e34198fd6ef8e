"""Numerical agreement between two runs of a stage: cosine similarity and max-abs error per output."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dart.errors import DartError

# What an export must reach to pass its self-check (float32 graphs are near bit-exact; these leave room for
# kernel differences between onnxruntime and PyTorch).
DEFAULT_MIN_COSINE = 0.999


class VerificationError(DartError):
    """An exported graph that disagrees with PyTorch."""

    exit_code = 1


@dataclass(frozen=True)
class Agreement:
    name: str
    shape: tuple[int, ...]
    cosine: float
    max_abs: float
    ref_max_abs: float  # the reference's largest magnitude, to read max_abs against

    @property
    def relative(self) -> float:
        return self.max_abs / max(self.ref_max_abs, 1e-12)


def _flat(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def cosine(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Cosine similarity of two tensors flattened (1.0 for two all-zero tensors)."""
    x, y = _flat(a), _flat(b)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} vs {y.shape}")
    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
    if nx == 0 and ny == 0:
        return 1.0
    if nx == 0 or ny == 0:
        return 0.0
    return float(np.dot(x, y) / (nx * ny))


def compare(name: str, reference: torch.Tensor | np.ndarray, candidate: torch.Tensor | np.ndarray) -> Agreement:
    ref, cand = _flat(reference), _flat(candidate)
    if ref.shape != cand.shape:
        raise VerificationError(f"output '{name}' has {cand.size} values but the reference has {ref.size}.")
    if not np.isfinite(cand).all():
        return Agreement(name, tuple(np.shape(reference)), float("nan"), float("inf"), float(np.abs(ref).max(initial=0)))
    return Agreement(
        name=name,
        shape=tuple(int(s) for s in np.shape(reference)),
        cosine=cosine(ref, cand),
        max_abs=float(np.abs(ref - cand).max(initial=0.0)),
        ref_max_abs=float(np.abs(ref).max(initial=0.0)),
    )


def compare_outputs(reference: Mapping[str, torch.Tensor | np.ndarray],
                    candidate: Mapping[str, torch.Tensor | np.ndarray],
                    names: Sequence[str] | None = None) -> list[Agreement]:
    names = list(names or reference)
    missing = [n for n in names if n not in candidate]
    if missing:
        raise VerificationError(f"the run being checked has no output '{missing[0]}'.")
    return [compare(n, reference[n], candidate[n]) for n in names]


def worst_cosine(rows: Sequence[Agreement]) -> float:
    values = [r.cosine for r in rows]
    return float("nan") if any(np.isnan(v) for v in values) else min(values, default=1.0)


def agreement_table(rows: Sequence[Agreement], title: str, min_cosine: float | None = None):
    """A rich table: output, shape, cosine, max-abs error, largest reference value, pass/fail."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("output")
    table.add_column("shape")
    table.add_column("cosine", justify="right")
    table.add_column("max abs err", justify="right")
    table.add_column("max |ref|", justify="right")
    if min_cosine is not None:
        table.add_column("ok")
    for r in rows:
        row = [r.name, "x".join(map(str, r.shape)), f"{r.cosine:.6f}", f"{r.max_abs:.3g}", f"{r.ref_max_abs:.3g}"]
        if min_cosine is not None:
            row.append("[green]yes[/]" if r.cosine >= min_cosine else "[red]no[/]")
        table.add_row(*row)
    return table


def check(rows: Sequence[Agreement], min_cosine: float, what: str) -> None:
    """Raise one sentence if any output is below ``min_cosine`` (or not finite)."""
    for r in rows:
        if not r.cosine >= min_cosine:  # also catches NaN
            raise VerificationError(
                f"{what}: output '{r.name}' has cosine {r.cosine:.6f} with PyTorch (needs {min_cosine}), max abs "
                f"error {r.max_abs:.3g}; the exported graph does not reproduce the model."
            )
