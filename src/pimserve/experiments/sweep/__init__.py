"""Design-space sweeps: a YAML spec -> resolved points -> a resumable store -> Pareto fronts.

See docs/sweeps.md. Modules: :mod:`.spec` (the YAML and parameter paths), :mod:`.space`
(domains and strategies), :mod:`.expr` (derived parameters and constraints),
:mod:`.resolve` (resolved configurations and their keys), :mod:`.store` (SQLite store),
:mod:`.executors` (serial, local pool, Ray), :mod:`.runner` (running points and specs),
:mod:`.pareto` and :mod:`.report`.
"""

from __future__ import annotations

from pimserve.experiments.sweep.executors import (
    Executor,
    PoolExecutor,
    RayExecutor,
    SerialExecutor,
    make_executor,
)
from pimserve.experiments.sweep.pareto import pareto_mask
from pimserve.experiments.sweep.resolve import Point, point_key, resolve
from pimserve.experiments.sweep.runner import (
    RunSummary,
    SweepResult,
    expand,
    run_point,
    run_points,
    run_sweep,
)
from pimserve.experiments.sweep.spec import (
    OBJECTIVES,
    SweepSpec,
    load_sweep_spec,
    sweep_spec_from_dict,
)
from pimserve.experiments.sweep.store import Store

__all__ = [
    "OBJECTIVES",
    "Executor",
    "Point",
    "PoolExecutor",
    "RayExecutor",
    "RunSummary",
    "SerialExecutor",
    "Store",
    "SweepResult",
    "SweepSpec",
    "expand",
    "load_sweep_spec",
    "make_executor",
    "pareto_mask",
    "point_key",
    "resolve",
    "run_point",
    "run_points",
    "run_sweep",
    "sweep_spec_from_dict",
]
