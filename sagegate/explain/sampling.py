"""Shapley values of any model by evaluating it on coalitions of the record's features over a
background sample (interventional: a feature out of the coalition takes the background's values).

With few features (`EXACT_UP_TO`) every coalition is evaluated and the values are exact for that
game; with more, antithetic pairs of random permutations (each permutation and its reverse) are
walked, each feature's contribution the mean of its marginal contributions. Both are efficient by
construction (they sum to f(x) minus the background's mean output, exactly) and give a feature the
model ignores exactly 0 (each of its marginal contributions is f(S + i) - f(S) = 0). Every
coalition of every background row is one batched call of the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import combinations
from math import factorial

import numpy as np

__all__ = ["EXACT_UP_TO", "coalitions_shapley"]

EXACT_UP_TO = 10  # 2**10 coalitions at most
Model = Callable[[Mapping[str, np.ndarray]], np.ndarray]  # inputs -> outputs [rows, outputs]


def _mixed(
    masks: np.ndarray,
    record: Mapping[str, np.ndarray],
    background: Mapping[str, np.ndarray],
    players: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Per input, [coalitions x background rows, columns]: the record's value where its column's
    feature is in the coalition, the background row's elsewhere."""
    rows = next(iter(background.values())).shape[0]
    mixed = {}
    for name, columns in players.items():
        chosen = masks[:, columns][:, None, :]  # [coalitions, 1, columns]
        values = np.where(chosen, record[name][None, :1, :], background[name][None, :, :])
        mixed[name] = values.reshape(len(masks) * rows, -1)
    return mixed


def coalitions_shapley(
    model: Model,
    record: Mapping[str, np.ndarray],
    background: Mapping[str, np.ndarray],
    players: Mapping[str, np.ndarray],
    n_players: int,
    *,
    permutations: int = 8,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(contributions [players, outputs], base [outputs]). `players[name]` is, per column of input
    `name`, the player (feature) it belongs to; `record[name]` [1, columns], `background[name]`
    [rows, columns]."""
    if n_players <= EXACT_UP_TO:
        masks = np.array([[(c >> i) & 1 for i in range(n_players)] for c in range(2**n_players)], dtype=bool)
    else:
        rng = np.random.default_rng(seed)
        orders = [rng.permutation(n_players) for _ in range(permutations)]
        orders += [order[::-1] for order in orders]
        prefixes = np.zeros((len(orders), n_players + 1, n_players), dtype=bool)
        for p, order in enumerate(orders):
            for k, player in enumerate(order):
                prefixes[p, k + 1 :, player] = True
        masks = prefixes.reshape(-1, n_players)
    unique, where = np.unique(masks, axis=0, return_inverse=True)
    rows = next(iter(background.values())).shape[0]
    out = np.asarray(model(_mixed(unique, record, background, players)), dtype=np.float64)
    value = out.reshape(len(unique), rows, -1).mean(axis=1)[where.reshape(-1)]  # v(coalition) [masks, outputs]
    if n_players <= EXACT_UP_TO:
        phi = _exact(value, masks, n_players)
    else:
        walks = value.reshape(len(orders), n_players + 1, -1)
        steps = walks[:, 1:] - walks[:, :-1]  # [orders, k, outputs]: the k-th player's marginal contribution
        phi = np.zeros((n_players, walks.shape[2]))
        for p, order in enumerate(orders):
            phi[order] += steps[p]
        phi /= len(orders)
    empty = value[~masks.any(axis=1)][0]
    return phi, empty


def _exact(value: np.ndarray, masks: np.ndarray, n: int) -> np.ndarray:
    index = {tuple(m): k for k, m in enumerate(masks.tolist())}
    weight = [factorial(s) * factorial(n - s - 1) / factorial(n) for s in range(n)]
    phi = np.zeros((n, value.shape[1]))
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            for subset in combinations(others, size):
                without = [False] * n
                for j in subset:
                    without[j] = True
                with_i = list(without)
                with_i[i] = True
                phi[i] += weight[size] * (value[index[tuple(with_i)]] - value[index[tuple(without)]])
    return phi
