"""The statistics over counted histograms, against numpy written here from their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sagegate.monitoring.statistics import PSI_FLOOR, mean_shift_sigma, psi, total_variation


def reference_psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.clip(expected / expected.sum(), PSI_FLOOR, None)
    a = np.clip(actual / actual.sum(), PSI_FLOOR, None)
    return float(np.sum((a - e) * np.log(a / e)))


@pytest.mark.parametrize("seed", range(5))
def test_psi_of_random_histograms(seed: int) -> None:
    rng = np.random.default_rng(seed)
    expected, actual = rng.integers(0, 500, 10).astype(float), rng.integers(0, 500, 10).astype(float)
    expected[seed % 10] = 0  # an empty bin: floored, not infinite
    assert psi(expected.tolist(), actual.tolist()) == pytest.approx(reference_psi(expected, actual), rel=1e-12)


def test_psi_of_a_distribution_with_itself_is_zero_and_grows_with_the_shift() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=50_000)
    edges = np.quantile(x, np.linspace(0.1, 0.9, 9))
    base = np.bincount(np.digitize(x, edges), minlength=10)
    assert psi(base.tolist(), base.tolist()) == 0
    shifts = [psi(base.tolist(), np.bincount(np.digitize(x + s, edges), minlength=10).tolist()) for s in (0.1, 0.5, 1)]
    assert shifts == sorted(shifts) and shifts[0] < 0.1 and shifts[-1] > 0.2


def test_total_variation_and_mean_shift() -> None:
    p, q = np.array([0.5, 0.3, 0.2]), np.array([20, 50, 30])
    assert total_variation(p.tolist(), q.tolist()) == pytest.approx(0.5 * np.abs(q / q.sum() - p).sum())
    assert total_variation([1, 0], [0, 1]) == 1
    assert mean_shift_sigma(10.0, 2.0, 17.0) == 3.5
    assert mean_shift_sigma(1.0, 0.0, 1.0) == 0 and math.isinf(mean_shift_sigma(1.0, 0.0, 2.0))
    with pytest.raises(ValueError):
        psi([1, 2], [1, 2, 3])
