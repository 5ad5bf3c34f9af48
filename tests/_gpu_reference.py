"""Test-only reference: the ``gpu`` and ``gpu:attacc`` FC tile searches as first written (one
Python loop over the candidate tiles, one numpy pass over the L2 tilings of each tile).

``tests/test_hw_gpu_fast.py`` checks that the vectorised search in
:mod:`pimserve.hardware.gpu` gives exactly what these give. Not registered as cost models.
"""

from __future__ import annotations

import numpy as np

from pimserve.errors import ConfigurationError
from pimserve.hardware.gpu import (
    L1_TILE_K,
    L2_TILE_K_DIVISOR,
    NEAR_OPTIMAL,
    REG_TILE,
    TILE_SIZES,
    FCPlan,
    GPUAttAccModel,
    GPUModel,
    TileCost,
)
from pimserve.ops.kernels import FCKernel


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _tile_traffic(m: int, k: int, n: int, tm: int, tn: int) -> int:
    return _ceil_div(n, tn) * m * k + _ceil_div(m, tm) * n * k + m * n


def reference_offchip(
    model: GPUModel, m: int, k: int, n: int, db: int, tm: int, tn: int
) -> tuple[float, int, int]:
    """Least off-chip bytes over AttAcc's L2 tilings of an L1 tile (bytes, L2 tm, L2 tn)."""
    cap = model.spec.l2_mb * 1024 * 1024 / db  # L2 capacity in elements
    tk2 = k / L2_TILE_K_DIVISOR
    lm = np.unique(np.append(np.arange(tm, m + 1, tm, dtype=np.int64), m))
    bound = (cap - lm * tk2) / (tk2 + lm)  # widest Ln that fits, for each Lm
    ln = np.where(n <= bound, n, np.floor(np.maximum(bound, 0.0) / tn) * tn).astype(np.int64)
    ln = np.where(lm == tm, np.maximum(ln, tn), ln)  # AttAcc always allows the L1 tile itself
    ok = ln >= tn
    ln_safe = np.where(ok, ln, 1)
    traffic = (
        (-(-m // lm)).astype(np.float64) * n * k
        + (-(-n // ln_safe)).astype(np.float64) * m * k
        + float(m) * n
    ) * db
    traffic = np.where(ok, traffic, np.inf)
    i = int(np.argmin(traffic))
    return float(traffic[i]), int(lm[i]), int(ln[i])


def _reference_tile_cost(
    model: GPUModel, m: int, k: int, n: int, db: int, tm: int, tn: int
) -> TileCost:
    s_ = model.spec.n_sms
    mb, nb = _ceil_div(m, tm), _ceil_div(n, tn)
    tb = mb * nb
    waves = _ceil_div(tb, s_)
    compute_s = waves * s_ * 2.0 * tm * tn * k / (model.flops_per_s * model._rate_factor(db))
    offchip, l2_tm, l2_tn = reference_offchip(model, m, k, n, db, tm, tn)
    stream = max(_ceil_div(nb, s_) * s_ * tn, _ceil_div(mb, s_) * s_ * tm) * k * db
    memory_s = max(offchip, float(stream)) / model.bytes_per_s
    l2_bytes = float(_tile_traffic(m, k, n, tm, tn) * db)
    return TileCost(tm, tn, l2_tm, l2_tn, tb, waves, compute_s, memory_s, offchip, l2_bytes)


def reference_gpu_plan(model: GPUModel, k: FCKernel) -> FCPlan:
    """``GPUModel.fc_plan`` as first written."""
    m, kk, n, db = k.m, k.k, k.n, k.dtype_bytes
    if min(m, kk, n) <= 0:
        raise ConfigurationError(f"FC kernel '{k.name}': fc_plan needs m, k, n > 0")
    s = model.spec
    l1_cap = s.l1_kb_per_sm * 1024
    tiles = sorted(
        {
            (min(a, m), min(b, n))
            for a in TILE_SIZES
            for b in TILE_SIZES
            if 2 * (min(a, m) + min(b, n)) * L1_TILE_K * db + min(a, m) * min(b, n) * db
            <= l1_cap
        }
    )
    if not tiles:
        raise ConfigurationError(f"GPU '{s.name}': l1_kb_per_sm={s.l1_kb_per_sm} holds no tile")
    costs = [_reference_tile_cost(model, m, kk, n, db, tm, tn) for tm, tn in tiles]
    fastest = min(costs, key=lambda c: (c.time_s, c.attacc_metric(s.n_sms)))
    near = [c for c in costs if c.time_s <= fastest.time_s * (1.0 + NEAR_OPTIMAL)]
    charged = min(near, key=lambda c: (c.attacc_metric(s.n_sms), c.time_s))
    l1_bytes = float(_tile_traffic(m, kk, n, REG_TILE, REG_TILE) * db)
    return FCPlan(fastest, charged, l1_bytes, 3.0 * m * n * kk)


def reference_attacc_plan(model: GPUAttAccModel, k: FCKernel) -> FCPlan:
    """``GPUAttAccModel.fc_plan`` as first written."""
    m, kk, n, db = k.m, k.k, k.n, k.dtype_bytes
    if min(m, kk, n) <= 0:
        raise ConfigurationError(f"FC kernel '{k.name}': fc_plan needs m, k, n > 0")
    s_ = model.spec.n_sms
    l1_cap = model.spec.l1_kb_per_sm * 1024
    best: tuple[float, int, int] | None = None
    for a in TILE_SIZES:
        for b in TILE_SIZES:
            tm, tn = min(a, m), min(b, n)
            if (tm + tn) * L1_TILE_K * db + tm * tn * db > l1_cap:
                continue
            tb = _ceil_div(m, tm) * _ceil_div(n, tn)
            util = tb / (_ceil_div(tb, s_) * s_)
            metric = _tile_traffic(m, kk, n, tm, tn) * db / util**2
            if best is None or metric < best[0]:
                best = (metric, tm, tn)
    if best is None:
        raise ConfigurationError(f"GPU '{model.spec.name}': holds no tile")
    _, tm, tn = best
    tb = _ceil_div(m, tm) * _ceil_div(n, tn)
    waves = _ceil_div(tb, s_)
    util = tb / (waves * s_)
    offchip, l2_tm, l2_tn = reference_offchip(model, m, kk, n, db, tm, tn)
    compute_s = k.flops / (model.flops_per_s * model._rate_factor(db) * util)
    memory_s = offchip / (model.bytes_per_s * util)
    l2_bytes = float(_tile_traffic(m, kk, n, tm, tn) * db)
    tile = TileCost(tm, tn, l2_tm, l2_tn, tb, waves, compute_s, memory_s, offchip, l2_bytes)
    l1_bytes = float(_tile_traffic(m, kk, n, REG_TILE, REG_TILE) * db)
    return FCPlan(tile, tile, l1_bytes, 3.0 * m * n * kk)


class ReferenceGPUModel(GPUModel):
    """``gpu`` with the original tile search (costs through the unchanged ``fc``); plans are
    memoised so that ``fc_plan`` then ``fc`` of one kernel searches once."""

    def fc_plan(self, k: FCKernel) -> FCPlan:
        memo = self.__dict__.setdefault("_reference_plans", {})
        key = (k.m, k.k, k.n, k.dtype_bytes)
        if key not in memo:
            memo[key] = reference_gpu_plan(self, k)
        return memo[key]


class ReferenceGPUAttAccModel(GPUAttAccModel):
    """``gpu:attacc`` with the original tile search."""

    def fc_plan(self, k: FCKernel) -> FCPlan:
        return reference_attacc_plan(self, k)
