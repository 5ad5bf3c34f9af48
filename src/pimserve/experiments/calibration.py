"""Calibrations that run the engine: PAM's x : y importance ratio (PAM 6.3.2), found by
serving a calibration workload at every point of a grid. The grid's points run on the sweep
runner (:func:`pimserve.experiments.sweep.runner.run_points`): in this process, on a local
pool or on Ray, into a store that a later search with ``resume`` reads back instead of
rerunning. (PAPI's alpha needs only the cost models, no simulation, and lives beside the
engine, in :mod:`pimserve.engine.calibration`.)"""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from pimserve.errors import ConfigurationError
from pimserve.experiments.sweep.executors import Executor, make_executor
from pimserve.experiments.sweep.resolve import Point, config_for, point_key
from pimserve.experiments.sweep.runner import RunSummary, release_store, run_points
from pimserve.experiments.sweep.store import Store
from pimserve.specs.catalog import load_model, load_system
from pimserve.specs.model import ModelSpec
from pimserve.specs.system import SystemSpec

# ------------------------------------------------------------------------------------------
# PAM's x : y
# ------------------------------------------------------------------------------------------
XY_GRID_X = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
XY_GRID_Y = (1.0, 2.0, 4.0, 8.0)


@dataclass
class XYCalibration:
    """Result of PAM's offline x : y search: the chosen pair and every point tried.

    ``summary`` says what the runner did (points, how many were already stored, how many
    ran); ``store`` is the store's file, None when it was a temporary one."""

    system: str
    model: str
    workload: str
    batch: int
    iterations: int
    x: float
    y: float
    points: list[dict]
    summary: RunSummary | None = None
    store: Path | None = None

    @property
    def how(self) -> str:
        return (
            f"pimserve calibrate --system {self.system} --model {self.model}: grid x in "
            f"{list(XY_GRID_X)}, y in {list(XY_GRID_Y)} (y < x), each a seeded run of "
            f"{self.workload} with continuous batching, batch {self.batch}, first "
            f"{self.iterations} iterations (the KV fills all three tiers); the pair with the "
            "shortest decode attention time wins, ties to fewer migrated bytes"
        )


def xy_points(system: SystemSpec, model: ModelSpec, workload: str, batch: int,
              iterations: int, grid_x: tuple[float, ...], grid_y: tuple[float, ...],
              seed: int) -> list[Point]:
    """The x : y grid's sweep points (y < x), in the grid's order: each a seeded run of
    ``batch`` requests of ``workload`` with continuous batching for ``iterations``
    iterations at PAM's ``kv_x`` = x and ``kv_y`` = y; parameters ``x`` and ``y``."""
    out = []
    for x in grid_x:
        for y in grid_y:
            if y >= x:
                continue
            cfg = config_for(system, model, workload, batch,
                             {"batch": batch, "batching": "continuous",
                              "max_iterations": iterations, "kv_x": x, "kv_y": y,
                              "seed": seed})
            out.append(Point(point_key(cfg), {"x": x, "y": y}, cfg))
    return out


def calibrate_xy(
    system: str | SystemSpec,
    model: str | ModelSpec,
    workload: str = "arxiv-sum",
    batch: int = 6144,
    iterations: int = 40,
    grid_x: tuple[float, ...] = XY_GRID_X,
    grid_y: tuple[float, ...] = XY_GRID_Y,
    seed: int = 0,
    *,
    store: str | Path | None = None,
    executor: Executor | None = None,
    resume: bool = False,
) -> XYCalibration:
    """PAM's x : y, found offline by profiling as the paper prescribes (PAM 6.3.2).

    PAM says x and y come from offline profiling, depend on the architecture and not on the
    workload, and does not report them. Here every (x, y) of the grid with y < x serves the
    same seeded calibration workload (long contexts at a batch whose KV fills HBM-PIM, DDR-PIM
    and SSD-PIM) and the pair with the least decode attention time is kept.

    The points run on ``executor`` (default: a local pool of all cores) into the store in
    folder ``store`` (default: a temporary one, removed afterwards). Without ``resume`` a
    store that already holds some of the grid's points is refused (naming ``--resume``);
    with it only the missing points run, and the answer is the same.
    """
    spec, mspec = load_system(system), load_model(model)
    if not spec.tiers() or spec.policies.kv.placement != "pam":
        raise ConfigurationError(
            f"calibrating x:y needs a system with kv_tier groups and kv placement 'pam'; "
            f"system {spec.name} has placement '{spec.policies.kv.placement}'"
        )
    points = xy_points(spec, mspec, workload, batch, iterations, grid_x, grid_y, seed)
    if not points:
        raise ConfigurationError("the x:y grid has no pair with y < x")
    with ExitStack() as stack:
        if executor is None:
            executor = make_executor()
            stack.callback(executor.close)
        folder = Path(store) if store is not None else Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="pimserve-xy-")))
        db = Store(folder)
        stack.callback(release_store, db.path)
        stack.callback(db.close)
        name = f"calibrate-xy {spec.name} {mspec.name}"
        have = db.keys(p.key for p in points)
        if have and not resume:
            raise ConfigurationError(
                f"{db.path} already holds {len(have)} of this search's {len(points)} points; "
                + ("pass --resume to read them back without running any"
                   if len(have) == len(points) else
                   f"pass --resume to run only the {len(points) - len(have)} missing")
                + ", or choose another --out")
        db.log_sweep(name, "grid", len(points),
                     {"calibration": "pam-xy", "system": spec.name, "model": mspec.name,
                      "workload": workload, "batch": batch, "iterations": iterations,
                      "grid_x": list(grid_x), "grid_y": list(grid_y), "seed": seed})
        summary = run_points(points, db, executor, sweep=name, resume=True)
        if summary.errors:
            raise RuntimeError(f"{len(summary.errors)} x:y points failed unexpectedly (a "
                               f"pimserve bug; tracebacks in {db.path}, table errors); "
                               f"first: {summary.errors[0]}")
        rows = {r["key"]: r for r in db.rows([p.key for p in points])}
        store_path = db.path if store is not None else None
    tried = []
    for p in points:
        r = rows[p.key]
        if r.get("status") != "ok":
            raise ConfigurationError(f"x:y point x={p.params['x']:g}, y={p.params['y']:g} "
                                     f"cannot run: {r.get('reason')}")
        tried.append({"x": p.params["x"], "y": p.params["y"],
                      "attention_s": float(r["time_breakdown_s_attention"]),
                      "throughput_tok_s": float(r["throughput_tok_s"]),
                      "migrated_bytes": float(r["migrated_bytes"])})
    best = min(tried, key=lambda p: (round(p["attention_s"], 9), p["migrated_bytes"]))
    return XYCalibration(spec.name, mspec.name, workload, batch, iterations, best["x"],
                         best["y"], tried, summary, store_path)
