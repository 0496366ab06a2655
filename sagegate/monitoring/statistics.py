"""The checks' statistics over histograms the engine has counted (a handful of numbers each): no
rows pass through here, so the same functions serve DuckDB's answers and Athena's."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["PSI_FLOOR", "auc_error", "mean_shift_sigma", "proportion_error", "proportions", "psi", "total_variation"]

PSI_FLOOR = 1e-4  # an empty bin counts as this share, so that PSI stays finite


def proportions(counts: Sequence[float]) -> list[float]:
    total = float(sum(counts))
    return [c / total for c in counts] if total > 0 else [0.0 for _ in counts]


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index: sum over bins of (a - e) * ln(a / e), both as shares, each share
    floored at PSI_FLOOR. Under 0.1 is usually read as stable, over 0.2 as shifted."""
    if len(expected) != len(actual):
        raise ValueError(f"psi over {len(expected)} and {len(actual)} bins")
    e = [max(x, PSI_FLOOR) for x in proportions(expected)]
    a = [max(x, PSI_FLOOR) for x in proportions(actual)]
    return sum((ai - ei) * math.log(ai / ei) for ai, ei in zip(a, e, strict=True))


def total_variation(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Half the L1 distance of two distributions: the share of mass that moved (0 to 1)."""
    if len(expected) != len(actual):
        raise ValueError(f"total variation over {len(expected)} and {len(actual)} bins")
    return 0.5 * sum(abs(a - e) for a, e in zip(proportions(actual), proportions(expected), strict=True))


def proportion_error(p: float, n: float) -> float:
    """The standard error of a share `p` measured on `n` rows."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else math.inf


def auc_error(auc: float, positives: float, negatives: float) -> float:
    """Hanley & McNeil (1982): the standard error of an AUC from its positives and negatives."""
    if not positives or not negatives:
        return math.inf
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)) / (
        positives * negatives
    )
    return math.sqrt(max(variance, 0.0))


def mean_shift_sigma(baseline_mean: float, baseline_std: float, mean: float) -> float:
    """How far the mean moved, in the baseline's standard deviations (inf if it moved off a constant)."""
    shift = abs(mean - baseline_mean)
    if baseline_std > 0:
        return shift / baseline_std
    return 0.0 if shift == 0 else math.inf
