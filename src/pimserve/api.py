"""The Python API: ``simulate(system, model, workload, **options) -> RunResult``.

>>> from pimserve import simulate
>>> r = simulate("papi", "llama-65b", "dolly-creative", n_requests=64, batch=16, tlp=2)
>>> r.throughput_tok_s  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pimserve.engine.config import RunConfig
from pimserve.engine.result import RunResult
from pimserve.engine.simulator import Simulator
from pimserve.errors import ConfigurationError
from pimserve.specs.base import validate
from pimserve.specs.catalog import load_model, load_system
from pimserve.specs.model import ModelSpec
from pimserve.specs.system import SystemSpec
from pimserve.workload import Requests, load_trace
from pimserve.workload.presets import WORKLOADS


def load_workload(
    workload: str | Requests | None = None,
    *,
    trace: str | Path | None = None,
    trace_format: str = "azure",
    n_requests: int | None = None,
    rate_per_s: float | None = None,
    seed: int = 0,
    **trace_options: Any,
) -> tuple[Requests, str]:
    """Requests from a preset name, a trace file, or an existing table; returns (requests, label).

    ``n_requests`` draws that many from a synthetic preset (default 256) or keeps the first
    ``n_requests`` of a trace; ``rate_per_s`` gives a preset Poisson arrivals.
    """
    if n_requests is not None and n_requests < 1:
        raise ConfigurationError(f"n_requests must be a positive integer (got {n_requests})")
    if rate_per_s is not None and rate_per_s <= 0:
        raise ConfigurationError(f"rate_per_s must be positive (got {rate_per_s})")
    if isinstance(workload, Requests):
        reqs, label = workload, workload.source or "requests"
    elif trace is not None:
        reqs = load_trace(trace, trace_format, **trace_options)
        label = f"{Path(trace).name} ({trace_format})"
    else:
        name = workload or "dolly-creative"
        gen = WORKLOADS.get(name)
        reqs = gen(n_requests or 256, seed, rate_per_s)
        label = name
        return reqs, label
    if n_requests is not None and n_requests < len(reqs):
        reqs = reqs.head(n_requests)
    return reqs, label


def simulate(
    system: str | SystemSpec,
    model: str | ModelSpec,
    workload: str | Requests | None = None,
    *,
    trace: str | Path | None = None,
    trace_format: str = "azure",
    n_requests: int | None = None,
    rate_per_s: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    trace_options: dict[str, Any] | None = None,
    **options: Any,
) -> RunResult:
    """Simulate serving ``workload`` (a preset name or Requests) or ``trace`` on ``system``.

    ``options`` are RunConfig fields (batching, batch, tlp, acceptance, seed, ...);
    ``trace_options`` go to the trace loader (``columns``/``time_unit`` for ``generic``,
    ``sort``).
    """
    cfg = validate(RunConfig, options, "run options")
    sys_spec, model_spec = load_system(system), load_model(model)
    reqs, label = load_workload(
        workload, trace=trace, trace_format=trace_format, n_requests=n_requests,
        rate_per_s=rate_per_s, seed=cfg.seed, **(trace_options or {}),
    )
    return Simulator(sys_spec, model_spec, reqs, cfg, label).run(progress)


__all__ = ["RunConfig", "RunResult", "load_model", "load_system", "load_workload", "simulate"]
