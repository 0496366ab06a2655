"""Exact TreeSHAP (path-dependent, as shap.TreeExplainer computes it by default), vectorised over every
root-to-leaf path of the ensemble with numpy: no per-node Python and no shap or numba at serving time.

Each path is a leaf value and the features split on the way to it; a feature split on twice is one
element (its zero fraction the product of the cover ratios, its one fraction whether the record
satisfies every split). For path elements with zero fractions z and one fractions o, the leaf value v
gives feature i

    phi_i += v (o_i - z_i) sum_S |S|! (d - |S| - 1)! / d! prod_{j in S} o_j prod_{j not in S, j != i} z_j

over the subsets S of the path's other elements (d elements in all): the coefficients of
prod_{j != i} (z_j + o_j t), weighted by the Shapley weights. The products are built from prefix and
suffix polynomials, so every position of every path is one small bilinear form. The base value is
the cover-weighted mean of the leaves plus the ensemble's offset; contributions sum to the model's raw
output (margin) minus it.

A path's contributions depend on the record only through which of its elements it satisfies: with
paths of up to `TABLE_DEPTH` elements every such pattern is computed once, at load (a table
[paths, patterns, elements]), and explaining a record is one lookup per path.

The trees come from the source model at packaging (`sagegate.explain.artifact`), in shap's own
layout: children, split feature, threshold (`x <= threshold` goes left), node values and covers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import factorial
from typing import Any

import numpy as np

__all__ = ["TreePaths", "tree_paths"]

TABLE_DEPTH = 8  # paths of at most this many elements get the pattern table ...
TABLE_CELLS = 16_000_000  # ... if it holds at most this many numbers (128 MB)


@dataclass(frozen=True)
class TreePaths:
    """Every root-to-leaf path of an ensemble, padded to the longest: element arrays [paths, depth]."""

    features: np.ndarray  # int64; padding names column `width` (dropped)
    lower: np.ndarray  # the record is on the path when lower < x <= upper for every element
    upper: np.ndarray
    zero: np.ndarray  # cover fraction of the element's splits
    valid: np.ndarray  # bool: a real element, not padding
    values: np.ndarray  # [paths, outputs]: the leaf's value
    weights: np.ndarray  # [paths, depth + 1, depth + 1]: Shapley weight of a + b others present
    base: np.ndarray  # [outputs]
    width: int
    dtype: Any
    _table: np.ndarray | None = field(default=None, repr=False)

    def prepare(self) -> TreePaths:
        """The pattern table, where it fits (else each record takes the polynomial way)."""
        paths, depth = self.valid.shape
        if self._table is None and depth <= TABLE_DEPTH and paths * 2**depth * depth <= TABLE_CELLS:
            table = np.zeros((paths, 2**depth, depth))
            bits = (np.arange(2**depth)[:, None] >> np.arange(depth)[None, :]) & 1  # [patterns, elements]
            for pattern in range(2**depth):
                one = np.broadcast_to(bits[pattern].astype(np.float64), (paths, depth)) * self.valid
                table[:, pattern, :] = self._shares(one)
            object.__setattr__(self, "_table", table)
        return self

    def shap_values(self, x: np.ndarray) -> np.ndarray:
        """Contributions [records, width, outputs] for records `x` [records, width]."""
        x = np.asarray(x, dtype=self.dtype)
        return np.stack([self._one(row) for row in x]) if len(x) else np.zeros((0, self.width, len(self.base)))

    def _one(self, row: np.ndarray) -> np.ndarray:
        padded = np.append(row, self.dtype.type(0))
        at = padded[self.features]
        satisfied = (at > self.lower) & (at <= self.upper) & self.valid
        if self._table is not None:
            pattern = satisfied @ (1 << np.arange(satisfied.shape[1]))
            shares = self._table[np.arange(len(pattern)), pattern]  # [paths, elements]
        else:
            shares = self._shares(satisfied.astype(np.float64))
        phi = np.zeros((self.width + 1, self.values.shape[1]))
        for k in range(self.values.shape[1]):
            weighted = shares * self.values[:, k : k + 1]
            phi[:, k] = np.bincount(self.features.ravel(), weights=weighted.ravel(), minlength=self.width + 1)
        result: np.ndarray = phi[: self.width]
        return result

    def _shares(self, one: np.ndarray) -> np.ndarray:
        """Per path element, (o_i - z_i) times its Shapley weight: what a leaf value of 1 gives it."""
        zero = self.zero
        paths, depth = one.shape
        prefix = np.zeros((depth + 1, paths, depth + 1))
        prefix[0, :, 0] = 1.0
        for k in range(depth):
            prefix[k + 1] = prefix[k] * zero[:, k, None]
            prefix[k + 1, :, 1:] += prefix[k, :, :-1] * one[:, k, None]
        suffix = np.zeros((depth + 1, paths, depth + 1))
        suffix[depth, :, 0] = 1.0
        for k in range(depth - 1, -1, -1):
            suffix[k] = suffix[k + 1] * zero[:, k, None]
            suffix[k, :, 1:] += suffix[k + 1, :, :-1] * one[:, k, None]
        shares = np.zeros((paths, depth))
        for i in range(depth):
            # the polynomial of the others: elements before i (prefix[i]) and after it (suffix[i + 1])
            weight = np.einsum("pa,pab,pb->p", prefix[i], self.weights, suffix[i + 1])
            shares[:, i] = (one[:, i] - zero[:, i]) * weight * self.valid[:, i]
        return shares


def _shapley_weights(depth: int, lengths: np.ndarray) -> np.ndarray:
    """[paths, depth + 1, depth + 1]: for a path of d elements, the weight of a + b others present."""
    table = np.zeros((depth + 1, depth + 1))  # [d, s]
    for d in range(1, depth + 1):
        for s in range(d):
            table[d, s] = factorial(s) * factorial(d - s - 1) / factorial(d)
    index = np.add.outer(np.arange(depth + 1), np.arange(depth + 1))
    by_length = np.zeros((depth + 1, depth + 1, depth + 1))
    for d in range(depth + 1):
        padded = np.append(table[d], np.zeros(depth + 1))
        by_length[d] = padded[index]
    chosen: np.ndarray = by_length[lengths]
    return chosen


def tree_paths(trees: list[dict[str, np.ndarray]], *, base_offset: np.ndarray, width: int, dtype: Any) -> TreePaths:
    """The paths of `trees` (shap's layout: children_left/right, features, thresholds, values,
    node_sample_weight; a leaf has children_left -1)."""
    elements: list[dict[int, list[float]]] = []
    leaf_values: list[np.ndarray] = []
    outputs = np.asarray(trees[0]["values"]).reshape(len(trees[0]["children_left"]), -1).shape[1] if trees else 1
    base = np.broadcast_to(np.atleast_1d(np.asarray(base_offset, dtype=np.float64)), (outputs,)).copy()
    for tree in trees:
        left, right = tree["children_left"], tree["children_right"]
        feature, threshold = tree["features"], tree["thresholds"]
        values = np.asarray(tree["values"], dtype=np.float64).reshape(len(left), -1)
        cover = np.asarray(tree["node_sample_weight"], dtype=np.float64)
        stack: list[tuple[int, dict[int, list[float]]]] = [(0, {})]
        while stack:
            node, path = stack.pop()
            if left[node] < 0:
                elements.append(path)
                leaf_values.append(values[node])
                base += values[node] * (cover[node] / cover[0])
                continue
            f, t = int(feature[node]), float(threshold[node])
            for child, goes_left in ((int(left[node]), True), (int(right[node]), False)):
                lo, hi, z = path.get(f, [-np.inf, np.inf, 1.0])
                lo, hi = (lo, min(hi, t)) if goes_left else (max(lo, t), hi)
                ratio = cover[child] / cover[node] if cover[node] > 0 else 0.0
                stack.append((child, {**path, f: [lo, hi, z * ratio]}))
    depth = max((len(p) for p in elements), default=0)
    n = len(elements)
    features = np.full((n, depth), width, dtype=np.int64)
    lower = np.full((n, depth), -np.inf)
    upper = np.full((n, depth), np.inf)
    zero = np.ones((n, depth))
    valid = np.zeros((n, depth), dtype=bool)
    for p, path in enumerate(elements):
        for k, (f, (lo, hi, z)) in enumerate(sorted(path.items())):
            features[p, k], lower[p, k], upper[p, k], zero[p, k], valid[p, k] = f, lo, hi, z, True
    lengths = valid.sum(axis=1)
    dtype = np.dtype(dtype)
    return TreePaths(
        features=features,
        lower=lower.astype(dtype),
        upper=upper.astype(dtype),
        zero=zero,
        valid=valid,
        values=np.array(leaf_values, dtype=np.float64).reshape(n, outputs),
        weights=_shapley_weights(depth, lengths),
        base=base,
        width=width,
        dtype=dtype,
    )
