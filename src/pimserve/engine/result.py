"""RunResult: the plain-data outcome of one simulation (see docs/metrics.md for each metric)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


def summary(values: np.ndarray, scale: float = 1.0) -> dict[str, float | None]:
    """mean, p50 and p99 of ``values`` times ``scale`` (None when there are no values)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": None, "p50": None, "p99": None}
    return {
        "mean": float(v.mean() * scale),
        "p50": float(np.percentile(v, 50) * scale),
        "p99": float(np.percentile(v, 99) * scale),
    }


QUANTILE_LEVELS: tuple[float, ...] = (*range(0, 100), 99.5, 99.9, 100.0)
"""Percent levels of ``extra["latency_quantiles"]``: every percent, then the far tail."""


def latency_quantiles(**values: np.ndarray) -> dict[str, list[float] | None]:
    """Quantiles of each named array at :data:`QUANTILE_LEVELS` (its empirical distribution,
    in the array's own unit; None when empty): a fixed-size stand-in for the per-request
    arrays, enough to draw their CDFs. ``levels`` holds the percent levels."""
    out: dict[str, list[float] | None] = {"levels": [float(q) for q in QUANTILE_LEVELS]}
    for name, v in values.items():
        a = np.asarray(v, dtype=np.float64)
        a = a[np.isfinite(a)]
        out[name] = np.percentile(a, QUANTILE_LEVELS).tolist() if a.size else None
    return out


@dataclass
class RunResult:
    """Metrics of one run. Times in seconds unless the name says ms; energy in joules."""

    system: str
    model: str
    workload: str
    requests_total: int
    requests_completed: int
    requests_rejected: int
    requests_running: int
    requests_waiting: int
    rejected_reasons: dict[str, int]
    truncated_prompts: int
    preemptions: int
    output_tokens: int
    iterations: int
    simulated_time_s: float
    throughput_tok_s: float
    ttft_ms: dict[str, float | None]
    tpot_ms: dict[str, float | None]
    latency_s: dict[str, float | None]
    energy_j: float
    energy_per_token_j: float
    time_breakdown_s: dict[str, float]
    fc_on_gpu_fraction: float
    mean_rlp: float
    mean_tlp: float
    wall_time_s: float
    energy_breakdown_j: dict[str, float] = field(default_factory=dict)
    decode_time_s: float = 0.0
    decode_throughput_tok_s: float = 0.0
    slo_attainment: float | None = None
    goodput_req_s: float | None = None
    goodput_tok_s: float | None = None
    kv_bytes_by_tier: dict[str, float] = field(default_factory=dict)
    attention_time_by_tier_s: dict[str, float] = field(default_factory=dict)
    migrated_bytes: float = 0.0
    sparse_read_fraction: float = 1.0
    config: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        from pimserve.jsonutil import to_jsonable

        return json.dumps(to_jsonable(self.to_dict()), indent=2)
