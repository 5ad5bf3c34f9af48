"""Pareto fronts: the points no other point beats on every objective at once."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pareto_mask(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Which rows of ``values`` (n points x k objectives) are non-dominated.

    ``directions[j]`` is ``"max"`` or ``"min"`` for objective j. Point a dominates b when a is
    at least as good on every objective and strictly better on one; the front is the points
    nothing dominates (equal points are all on it). Rows with a NaN or an infinity are never
    on the front (they are not comparable). Returns a bool array of length n.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != len(directions):
        raise ValueError(f"values must be n x {len(directions)} (got shape {v.shape})")
    bad = [d for d in directions if d not in ("max", "min")]
    if bad:
        raise ValueError(f"directions must be 'max' or 'min' (got {bad[0]!r})")
    sign = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    ok = np.all(np.isfinite(v), axis=1)
    idx = np.flatnonzero(ok)
    y = v[idx] * sign  # now every objective is minimised
    keep = np.ones(len(idx), dtype=bool)
    # visit points best-first on the sum, so dominating points drop many early
    for i in np.argsort(y.sum(axis=1), kind="stable"):
        if not keep[i]:
            continue  # what it dominates, its dominator dominates too (transitivity)
        cand = np.flatnonzero(keep)
        dominated = np.all(y[cand] >= y[i], axis=1) & np.any(y[cand] > y[i], axis=1)
        keep[cand[dominated]] = False
    out = np.zeros(len(v), dtype=bool)
    out[idx[keep]] = True
    return out


def best_index(values: np.ndarray, direction: str) -> int | None:
    """Index of the best finite value (first on ties); None if there is none."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(v))
    if ok.size == 0:
        return None
    sub = v[ok]
    return int(ok[int(np.argmax(sub) if direction == "max" else np.argmin(sub))])
