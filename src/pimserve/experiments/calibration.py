"""Calibrations that run the engine: PAM's x : y importance ratio (PAM 6.3.2), found by
serving a calibration workload at every point of a grid. (PAPI's alpha needs only the cost
models and lives beside the engine, in :mod:`pimserve.engine.calibration`.)"""

from __future__ import annotations

from dataclasses import dataclass

from pimserve.api import simulate
from pimserve.errors import ConfigurationError
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
    """Result of PAM's offline x : y search: the chosen pair and every point tried."""

    system: str
    model: str
    workload: str
    batch: int
    iterations: int
    x: float
    y: float
    points: list[dict]

    @property
    def how(self) -> str:
        return (
            f"pimserve calibrate --system {self.system} --model {self.model}: grid x in "
            f"{list(XY_GRID_X)}, y in {list(XY_GRID_Y)} (y < x), each a seeded run of "
            f"{self.workload} with continuous batching, batch {self.batch}, first "
            f"{self.iterations} iterations (the KV fills all three tiers); the pair with the "
            "shortest decode attention time wins, ties to fewer migrated bytes"
        )


def calibrate_xy(
    system: str | SystemSpec,
    model: str | ModelSpec,
    workload: str = "arxiv-sum",
    batch: int = 6144,
    iterations: int = 40,
    grid_x: tuple[float, ...] = XY_GRID_X,
    grid_y: tuple[float, ...] = XY_GRID_Y,
    seed: int = 0,
) -> XYCalibration:
    """PAM's x : y, found offline by profiling as the paper prescribes (PAM 6.3.2).

    PAM says x and y come from offline profiling, depend on the architecture and not on the
    workload, and does not report them. Here every (x, y) of the grid with y < x serves the
    same seeded calibration workload (long contexts at a batch whose KV fills HBM-PIM, DDR-PIM
    and SSD-PIM) and the pair with the least decode attention time is kept.
    """
    spec, mspec = load_system(system), load_model(model)
    if not spec.tiers() or spec.policies.kv.placement != "pam":
        raise ConfigurationError(
            f"calibrating x:y needs a system with kv_tier groups and kv placement 'pam'; "
            f"system {spec.name} has placement '{spec.policies.kv.placement}'"
        )
    points = []
    for x in grid_x:
        for y in grid_y:
            if y >= x:
                continue
            r = simulate(spec, mspec, workload, n_requests=batch, batch=batch,
                         batching="continuous", max_iterations=iterations, kv_x=x, kv_y=y,
                         seed=seed)
            points.append({"x": x, "y": y, "attention_s": r.time_breakdown_s["attention"],
                           "throughput_tok_s": r.throughput_tok_s,
                           "migrated_bytes": r.migrated_bytes})
    if not points:
        raise ConfigurationError("the x:y grid has no pair with y < x")
    best = min(points, key=lambda p: (round(p["attention_s"], 9), p["migrated_bytes"]))
    return XYCalibration(spec.name, mspec.name, workload, batch, iterations, best["x"],
                         best["y"], points)
