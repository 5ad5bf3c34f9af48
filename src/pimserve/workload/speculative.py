"""Speculative-decoding acceptance model.

A draft model proposes ``k`` tokens per step; the target model verifies them in one pass and
keeps the longest prefix it agrees with, then adds one token of its own (the "bonus" token: the
correction at the first rejection, or the next token when all ``k`` are accepted). With each
draft token accepted independently with probability ``p`` the tokens produced per step are
``1 + L`` where ``L = min(Geometric, k)`` counts the leading successes among ``k`` Bernoulli(p)
draws, so ``E[1 + L] = sum_{i=0..k} p**i = (1 - p**(k+1)) / (1 - p)`` (``k + 1`` at ``p = 1``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from pimserve.errors import ConfigurationError
from pimserve.workload.synthetic import RngLike, as_generator

__all__ = ["expected_accepted", "sample_accepted"]


def _check_k(k: Any, where: str) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ConfigurationError(
            f"{where}: k (draft tokens per step) must be an integer >= 1 (got {k!r})"
        )
    return int(k)


def _check_p(p: npt.ArrayLike, where: str) -> np.ndarray:
    arr = np.asarray(p, dtype=np.float64) if not isinstance(p, bool) else np.asarray(np.nan)
    if not np.all((arr >= 0.0) & (arr <= 1.0)):  # also rejects NaN
        raise ConfigurationError(
            f"{where}: p (per-token acceptance probability) must be in [0, 1] (got {p!r})"
        )
    return arr


def expected_accepted(p: float, k: int) -> float:
    """Mean tokens produced per verification step, bonus token included.

    ``(1 - p**(k+1)) / (1 - p)`` for acceptance probability ``p`` in [0, 1) and ``k`` >= 1 draft
    tokens; ``k + 1`` at ``p = 1``. Ranges from 1 (``p = 0``) to ``k + 1``.
    """
    pv = float(_check_p(p, "expected_accepted"))
    k = _check_k(k, "expected_accepted")
    if pv == 1.0:
        return float(k + 1)
    # sum of the geometric series; the closed form loses accuracy near p = 1
    return math.fsum(pv**i for i in range(k + 1)) if pv > 0.99 else (1 - pv ** (k + 1)) / (1 - pv)


def sample_accepted(rng: RngLike, p: npt.ArrayLike, k: int, n: int) -> np.ndarray:
    """Tokens produced this step by each of ``n`` requests: int64[n] in [1, k + 1].

    Each value is 1 (bonus token) plus the number of leading successes among ``k``
    Bernoulli(``p``) draft-token acceptances. ``p`` is a scalar or one probability per request
    (float[n]). Vectorised: one uniform per request, inverted to a geometric count capped at
    ``k``.
    """
    k = _check_k(k, "sample_accepted")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ConfigurationError(f"sample_accepted: n must be an integer >= 0 (got {n!r})")
    pv = _check_p(p, "sample_accepted")
    if pv.ndim > 1 or (pv.ndim == 1 and pv.shape != (n,)):
        raise ConfigurationError(
            f"sample_accepted: p must be a scalar or have shape ({n},) (got {pv.shape})"
        )
    g = as_generator(rng, "sample_accepted")
    pv = np.broadcast_to(pv, (int(n),))
    # Inverse transform of the leading-success count L: P(L >= j) = p**j = P(U <= p**j) for
    # U ~ U(0, 1], so L = floor(ln U / ln p); p = 0 gives 0 and p = 1 gives k.
    u = 1.0 - g.random(int(n))
    with np.errstate(divide="ignore", invalid="ignore"):
        lead = np.floor(np.log(u) / np.log(pv))
    lead = np.where(pv >= 1.0, k, np.where(pv <= 0.0, 0.0, lead))
    lead = np.minimum(np.nan_to_num(lead, nan=k, posinf=k), k)
    return (1 + lead).astype(np.int64)
