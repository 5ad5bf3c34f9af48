"""Running a sweep: points -> store, resumable, on any executor.

- :func:`run_point` simulates one resolved point and returns its row (the same function in
  every executor); :func:`run_chunk` runs a list of them and, given the store, writes each
  row as soon as it is done.
- :func:`run_points` is the generic driver: already-resolved :class:`~.resolve.Point` s in,
  rows in the store out; invalid points are recorded with their reason, stored points are
  skipped (resume), the rest run in chunks on the executor.
- :func:`expand` turns a spec into its points (grid or random, derived parameters,
  constraints, resolution, validation) and :func:`run_sweep` runs a whole spec, including
  the Optuna search, which asks for points in fixed batches and tells their results.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pimserve.engine.result import RunResult
from pimserve.errors import ConfigurationError, PimserveError
from pimserve.experiments.sweep.executors import Executor, SerialExecutor
from pimserve.experiments.sweep.resolve import (
    Point,
    canonical_json,
    check,
    materialize,
    resolve,
    version,
)
from pimserve.experiments.sweep.space import admitted, complete, grid, random_points
from pimserve.experiments.sweep.spec import Objective, SweepSpec
from pimserve.experiments.sweep.store import Store

NONDETERMINISTIC_COLUMNS = ("finished_at_s", "run_wall_s", "wall_time_s")
"""Columns that measure the run (wall clock), not the simulated system; every other column
of a point is the same on every executor and every rerun."""


# ------------------------------------------------------------------------------------------
# one point


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, bool | int | float | str)


def result_row(r: RunResult) -> dict[str, Any]:
    """A run's every field as flat columns: scalars as they are, dict fields as
    ``<field>_<key>`` (``tpot_ms_p99``, ``time_breakdown_s_attention``, ``config_alpha``),
    ``warnings`` and ``extra`` also whole as JSON (``warnings``, ``extra_json``)."""
    row: dict[str, Any] = {}
    for k, v in r.to_dict().items():
        if k == "warnings":
            row["warnings"] = json.dumps(v)
        elif isinstance(v, dict):
            if k == "extra":
                from pimserve.jsonutil import to_jsonable

                row["extra_json"] = json.dumps(to_jsonable(v), sort_keys=True)
            for kk, vv in v.items():
                if _scalar(vv):
                    row[f"{k}_{kk}"] = vv
                elif isinstance(vv, dict) and all(_scalar(x) for x in vv.values()):
                    for k3, v3 in vv.items():
                        row[f"{k}_{kk}_{k3}"] = v3
                elif k == "config":
                    row[f"{k}_{kk}"] = json.dumps(vv)
        else:
            row[k] = v
    return row


@functools.lru_cache(maxsize=256)
def _hardware_cost(system_text: str) -> dict[str, Any]:
    """The design's hardware cost (pimserve.hardware.area), memoised by system content; a
    note instead when that module is absent or refuses the design."""
    try:
        from pimserve.hardware.area import design_cost
    except ImportError:
        return {"hw_note": "hardware cost not computed: pimserve.hardware.area is not "
                           "available in this installation"}
    from pimserve.experiments.sweep.resolve import _system_from

    try:
        c = design_cost(_system_from(system_text))
    except PimserveError as err:
        return {"hw_note": f"hardware cost not computed: {err}"}
    out: dict[str, Any] = {"hw_pim_logic_mm2": float(c.pim_logic_mm2),
                           "hw_pim_power_w": None if c.pim_power_w is None
                           else float(c.pim_power_w),
                           "hw_over_budget": ", ".join(c.over_budget)}
    if hasattr(c, "to_dict"):
        from pimserve.jsonutil import to_jsonable

        out["hw_json"] = json.dumps(to_jsonable(c.to_dict()), sort_keys=True)
    return out


def hardware_cost_available() -> bool:
    """Whether pimserve.hardware.area (the hardware cost objective) can be imported."""
    try:
        import pimserve.hardware.area  # noqa: F401
    except ImportError:
        return False
    return True


def point_row(point: Point, sweep: str) -> dict[str, Any]:
    """The metadata and parameter columns of a point's row (no results)."""
    row: dict[str, Any] = {
        "key": point.key, "sweep": sweep, "pimserve_version": version(),
        "params_json": json.dumps(point.params),  # in the spec's order
        "config_json": canonical_json(point.config) if point.config is not None else None,
    }
    for path, v in point.params.items():
        row[f"param.{path}"] = v
    if point.reason is not None:
        row.update(status="invalid", reason=point.reason)
    return row


POINT_KINDS = ("simulate", "slo")
"""What a point's configuration asks for (its ``kind`` field): ``simulate`` (the default,
and the only kind a sweep spec makes; such configurations carry no ``kind``, so their keys
are unchanged) runs the configuration once; ``slo`` runs
:func:`pimserve.experiments.slo.slo_search` on it (see :func:`run_slo`)."""


def run_slo(config: dict[str, Any]) -> Any:
    """The SLO search of a ``kind: slo`` configuration: :func:`~pimserve.experiments.slo.
    slo_search` of its system, model and workload preset, with ``config["slo"]`` as the
    search's arguments (``tpot_slo_ms``, ``percentile``, ``tol``, ``max_probes``, ...),
    ``workload.n_requests`` requests per probe, the run's ``seed`` as the search's seed and
    the run options that differ from their defaults as the probes' options."""
    from pimserve.experiments.slo import slo_search

    r = materialize(config)
    wl = config["workload"]
    if "preset" not in wl or wl.get("rate_per_s") is not None:
        raise ConfigurationError("a kind 'slo' point needs a workload preset without "
                                 "rate_per_s (the search sets the arrival rate)")
    defaults = _run_defaults()
    opts = {k: v for k, v in config["run"].items() if k != "seed" and v != defaults.get(k)}
    clash = sorted(set(opts) & {"tpot_slo_ms", "ttft_slo_ms"})
    if clash:
        raise ConfigurationError(f"run option {clash[0]} of a kind 'slo' point: give the SLO "
                                 "in the point's slo arguments")
    args = dict(config.get("slo", {}))
    owned = sorted(set(args) & {"n_requests", "seed", "progress"})
    if owned:
        raise ConfigurationError(f"slo argument {owned[0]} of a kind 'slo' point: it comes "
                                 "from the configuration (workload.n_requests, run.seed)")
    return slo_search(r.system, r.model, wl["preset"], n_requests=wl["n_requests"],
                      seed=r.cfg.seed, **args, **opts)


@functools.lru_cache(maxsize=1)
def _run_defaults() -> dict[str, Any]:
    from pimserve.engine.config import RunConfig

    return RunConfig().model_dump(mode="json")


def slo_row(res: Any) -> dict[str, Any]:
    """An SLO search's columns: ``slo_met`` (0/1), ``best_rate_per_s`` (requests/s; NULL
    when no rate met), ``throughput_tok_s`` (the best probe's run throughput) and
    ``offered_tok_s`` (its rate x mean output tokens), ``tpot_ms`` (its TPOT statistic),
    the final bracket, ``capacity_req_s``, ``tpot_alone_ms``, ``slo_probes`` (simulated
    probes), the best probe's ``drain_fraction`` and ``mean_rlp``, ``slo_how``, ``warnings``
    and the whole result as ``slo_json``."""
    best = next((p for p in res.probes if res.met and p.rate_per_s == res.best_rate_per_s),
                None)
    return {"slo_met": bool(res.met), "best_rate_per_s": res.best_rate_per_s,
            "throughput_tok_s": res.throughput_tok_s, "offered_tok_s": res.offered_tok_s,
            "tpot_ms": res.tpot_ms, "tpot_slo_ms": res.tpot_slo_ms,
            "slo_percentile": res.percentile, "bracket_lo_per_s": res.bracket_lo_per_s,
            "bracket_hi_per_s": res.bracket_hi_per_s, "capacity_req_s": res.capacity_req_s,
            "tpot_alone_ms": res.tpot_alone_ms, "slo_probes": len(res.probes),
            "drain_fraction": best.drain_fraction if best is not None else None,
            "mean_rlp": best.mean_rlp if best is not None else None,
            "slo_how": res.how, "warnings": json.dumps(res.warnings),
            "slo_json": json.dumps(res.to_dict(), sort_keys=True)}


def run_point(point: Point, sweep: str = "") -> dict[str, Any]:
    """Run one resolved point; its row: metadata, ``param.*``, every result field and the
    hardware cost. A configuration the engine refuses gives ``status`` ``invalid`` and its
    one-line ``reason``; other exceptions propagate (a bug, not a bad point). The
    configuration's ``kind`` (:data:`POINT_KINDS`) says what runs: one simulation (result
    fields as in :func:`result_row`) or an SLO search (:func:`slo_row`)."""
    from pimserve.engine.simulator import Simulator

    row = point_row(point, sweep)
    t0 = time.perf_counter()
    if point.config is not None and point.reason is None:
        kind = point.config.get("kind", "simulate")
        try:
            if kind == "slo":
                res_row = slo_row(run_slo(point.config))
            elif kind == "simulate":
                r = materialize(point.config)
                res_row = result_row(Simulator(r.system, r.model, r.requests, r.cfg,
                                               r.label).run())
            else:
                raise ConfigurationError(f"point kind {kind!r} is unknown (accepted: "
                                         f"{', '.join(POINT_KINDS)})")
        except PimserveError as err:
            row.update(status="invalid", reason=str(err))
        else:
            row.update(res_row)
            row["status"] = "ok"
            row.update(_hardware_cost(canonical_json(
                {"system": point.config["system"], "devices": point.config["devices"],
                 "links": point.config["links"]})))
    row["run_wall_s"] = time.perf_counter() - t0
    row["finished_at_s"] = time.time()
    return row


_STORES: dict[tuple[int, str], Store] = {}


def _store(path: str) -> Store:
    import os

    k = (os.getpid(), path)
    if k not in _STORES:
        _STORES[k] = Store(path)
    return _STORES[k]


def release_store(path: str | Path) -> None:
    """Close this process's cached connection to the store file ``path`` (:func:`run_chunk`
    keeps one per process and store), for a caller about to delete a store it ran into."""
    import os

    db = _STORES.pop((os.getpid(), str(path)), None)
    if db is not None:
        db.close()


def run_chunk(points: list[Point], sweep: str, store: str | None) -> list[dict[str, Any]]:
    """Run ``points`` one after another; with ``store`` (a sweep folder or file), write each
    row the moment it is done (one transaction each). Returns the rows; a point that raised
    an unexpected exception gives ``{"key", "_error", "_traceback"}`` (logged in the
    store's ``errors`` table) and the chunk goes on."""
    out = []
    db = _store(store) if store is not None else None
    for p in points:
        try:
            row = run_point(p, sweep)
        except Exception as err:  # a bug: keep going, report it
            row = {"key": p.key, "_error": f"{type(err).__name__}: {err}",
                   "_traceback": traceback.format_exc()}
        if db is not None:
            write_row(db, row, sweep)
        out.append(row)
    return out


def write_row(store: Store, row: dict[str, Any], sweep: str) -> bool:
    """Write a row from :func:`run_chunk` (an error goes to the errors table)."""
    if "_error" in row:
        store.log_error(row["key"], sweep, row["_error"], row["_traceback"])
        return False
    return store.put(row)


# ------------------------------------------------------------------------------------------
# many points


@dataclass
class RunSummary:
    """What :func:`run_points` did. Counts are of points; times in seconds."""

    points: int = 0
    stored_before: int = 0
    invalid: int = 0
    ran: int = 0
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    executor: str = ""

    @property
    def points_per_s(self) -> float:
        return self.ran / self.wall_s if self.wall_s > 0 else math.nan

    def add(self, other: RunSummary) -> None:
        self.points += other.points
        self.stored_before += other.stored_before
        self.invalid += other.invalid
        self.ran += other.ran
        self.errors += other.errors
        self.wall_s += other.wall_s
        self.executor = other.executor


def chunk_size_for(n: int, workers: int) -> int:
    """Points per task: about 8 tasks per worker (for balance), 1 to 16 points each."""
    return max(1, min(16, math.ceil(n / max(1, workers * 8))))


def run_points(points: Sequence[Point], store: Store, executor: Executor | None = None, *,
               sweep: str = "", resume: bool = True, chunk_size: int | None = None,
               progress: Callable[[int, int], None] | None = None) -> RunSummary:
    """Run already-resolved points into ``store``.

    Invalid points (``reason`` set) are recorded at once; points whose key is stored are
    skipped; with ``resume`` False, finding any is an error (nothing is written). The rest
    run on ``executor`` (default: in this process) in chunks of ``chunk_size`` points
    (default :func:`chunk_size_for`), strided so that each chunk mixes the sweep's points.
    ``progress(done, total)`` is called as chunks finish. Duplicate keys run once.
    """
    t0 = time.perf_counter()
    executor = executor or SerialExecutor()
    unique: dict[str, Point] = {}
    for p in points:
        unique.setdefault(p.key, p)
    have = store.keys(unique)
    if have and not resume:
        raise ConfigurationError(
            f"{store.path} already holds {len(have)} of these {len(unique)} points; pass "
            f"--resume to run only the {len(unique) - len(have)} missing, or choose another "
            "--out")
    s = RunSummary(points=len(unique), stored_before=len(have), executor=executor.describe())
    todo = []
    for p in unique.values():
        if p.key in have:
            continue
        if p.reason is not None:
            store.put(point_row(p, sweep) | {"finished_at_s": time.time()})
            s.invalid += 1
        else:
            todo.append(p)
    total = len(todo)
    if progress:
        progress(0, total)
    if todo:
        size = chunk_size or chunk_size_for(total, executor.workers)
        n_chunks = math.ceil(total / size)
        chunks = [todo[i::n_chunks] for i in range(n_chunks)]
        done = 0
        mine = version()
        for rows in executor.run(chunks, sweep, store.path):
            for row in rows:
                theirs = row.get("pimserve_version", mine)
                if theirs != mine:  # a cluster's worker with other code: its numbers differ
                    raise ConfigurationError(
                        f"a {executor.name} worker runs pimserve {theirs}, this process "
                        f"{mine} (release + code fingerprint): install the same pimserve on "
                        "every node of the cluster (the sweep stops here; --resume goes on)")
                if not executor.writes_in_workers:
                    write_row(store, row, sweep)
                if "_error" in row:
                    s.errors.append(f"{row['key']}: {row['_error']}")
                elif row.get("status") == "invalid":
                    s.invalid += 1
                else:
                    s.ran += 1
            done += len(rows)
            if progress:
                progress(done, total)
    s.wall_s = time.perf_counter() - t0
    return s


# ------------------------------------------------------------------------------------------
# a whole spec


@dataclass
class Expansion:
    """A spec's points: resolved and checked (valid or with their reason), how many
    assignments the constraints excluded, and how many repeated an earlier point."""

    points: list[Point]
    excluded: int = 0
    duplicates: int = 0
    resolve_s: float = 0.0

    @property
    def invalid(self) -> list[Point]:
        return [p for p in self.points if not p.valid]


def point_for(spec: SweepSpec, free: dict[str, Any]) -> Point | None:
    """The resolved, checked point of free values (None: excluded by a constraint). A
    derived value that cannot be computed makes the point invalid, with the reason."""
    try:
        values = complete(spec.parameters, free)
    except PimserveError as err:
        return resolve_invalid(spec, free, str(err))
    try:
        if not admitted(spec.constraints, values):
            return None
    except PimserveError as err:
        return resolve_invalid(spec, values, str(err))
    return check(resolve(spec, values))


def resolve_invalid(spec: SweepSpec, values: dict[str, Any], reason: str) -> Point:
    from pimserve.experiments.sweep.resolve import digest

    key = digest({"unresolved": {"base": spec.base.model_dump(mode="json"),
                                 "params": values}, "pimserve": version()}, 32)
    return Point(key, dict(values), None, reason)


def expand(spec: SweepSpec, limit: int | None = None) -> Expansion:
    """Every point of a grid or random spec (the first ``limit`` admitted ones), resolved
    and validated before anything runs."""
    t0 = time.perf_counter()
    st = spec.strategy
    if st.kind == "grid":
        free_iter = grid(spec.parameters)
    elif st.kind == "random":
        assert st.samples is not None
        free_iter = random_points(spec.parameters, st.samples, st.seed)
    else:
        raise ConfigurationError("expand() covers grid and random strategies; optuna "
                                 "chooses its points from results (run_sweep)")
    out = Expansion([])
    seen: set[str] = set()
    for free in free_iter:
        if limit is not None and len(out.points) >= limit:
            break
        p = point_for(spec, free)
        if p is None:
            out.excluded += 1
        elif p.key in seen:
            out.duplicates += 1
        else:
            seen.add(p.key)
            out.points.append(p)
    out.resolve_s = time.perf_counter() - t0
    return out


@dataclass
class SweepResult:
    """What :func:`run_sweep` did."""

    spec: SweepSpec
    store: Path
    summary: RunSummary
    expansion: Expansion
    keys: list[str]


def run_sweep(spec: SweepSpec, out: str | Path, executor: Executor | None = None, *,
              resume: bool = False, limit: int | None = None,
              progress: Callable[[int, int], None] | None = None,
              on_expanded: Callable[[Expansion], None] | None = None) -> SweepResult:
    """Run a spec into the store in folder ``out``: expand and validate every point, then
    run the missing ones (``resume``) on ``executor``. Optuna specs ask for points in
    batches of ``strategy.batch`` and tell each batch's results before the next."""
    if limit is not None and (isinstance(limit, bool) or limit < 1):
        raise ConfigurationError(f"--limit must be a positive integer (got {limit!r})")
    executor = executor or SerialExecutor()
    if spec.strategy.kind == "optuna":
        return _optuna_sweep(spec, out, executor, resume=resume, limit=limit,
                             progress=progress, on_expanded=on_expanded)
    exp = expand(spec, limit)
    if on_expanded:
        on_expanded(exp)
    store = Store(out)
    have = store.keys(p.key for p in exp.points)
    if have and not resume:
        raise ConfigurationError(
            f"{store.path} already holds {len(have)} of this sweep's {len(exp.points)} "
            f"points; pass --resume to run only the {len(exp.points) - len(have)} missing, "
            "or choose another --out")
    store.log_sweep(spec.name, spec.strategy.kind, len(exp.points), spec.raw)
    summary = run_points(exp.points, store, executor, sweep=spec.name, resume=True,
                         progress=progress)
    return SweepResult(spec, store.path, summary, exp, [p.key for p in exp.points])


# ------------------------------------------------------------------------------------------
# optuna


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigurationError("strategy optuna needs Optuna, an optional extra: pip install "
                                 "'pimserve[optuna]' (or use strategy grid or random)"
                                 ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def optuna_distribution(domain: Any) -> Any:
    """The Optuna distribution of a free parameter's domain: integer ranges and ``int``
    as IntDistribution, ``uniform``/``loguniform`` as FloatDistribution, lists and other
    finite domains as CategoricalDistribution."""
    optuna = _optuna()
    d = optuna.distributions
    if domain.kind == "int":
        return d.IntDistribution(int(domain.low), int(domain.high), step=domain.step,
                                 log=domain.log)
    if domain.kind in ("uniform", "loguniform"):
        return d.FloatDistribution(domain.low, domain.high, log=domain.kind == "loguniform")
    vals = list(domain.enumerate())
    if (len(vals) > 1 and all(isinstance(v, int) and not isinstance(v, bool) for v in vals)
            and len({b - a for a, b in itertools.pairwise(vals)}) == 1
            and vals[1] > vals[0]):
        return d.IntDistribution(vals[0], vals[-1], step=vals[1] - vals[0])
    return d.CategoricalDistribution(vals)


def objective_values(row: dict[str, Any] | None, objectives: Sequence[Objective]
                     ) -> list[float] | None:
    """A stored row's objective values (None: the point failed or lacks one)."""
    if row is None or row.get("status") != "ok":
        return None
    vals = []
    for o in objectives:
        v = row.get(o.column)
        if v is None or isinstance(v, str) or not math.isfinite(float(v)):
            return None
        vals.append(float(v))
    return vals


def _optuna_sweep(spec: SweepSpec, out: str | Path, executor: Executor, *, resume: bool,
                  limit: int | None, progress: Callable[[int, int], None] | None,
                  on_expanded: Callable[[Expansion], None] | None) -> SweepResult:
    optuna = _optuna()
    st = spec.strategy
    if any(o.name == "hw_cost" for o in spec.objectives) and not hardware_cost_available():
        raise ConfigurationError("objective hw_cost needs pimserve.hardware.area, which this "
                                 "installation lacks; drop hw_cost from objectives")
    dists = {p.path: optuna_distribution(p.domain) for p in spec.free}
    if not dists:
        raise ConfigurationError("strategy optuna needs at least one free parameter (a list, "
                                 "a range or a distribution)")
    sampler = (optuna.samplers.NSGAIISampler(seed=st.seed) if st.sampler == "nsga2"
               else optuna.samplers.TPESampler(seed=st.seed, multivariate=True))
    study = optuna.create_study(
        directions=["maximize" if o.direction == "max" else "minimize"
                    for o in spec.objectives], sampler=sampler)
    assert st.trials is not None
    n = min(st.trials, limit) if limit is not None else st.trials
    store = Store(out)
    total = RunSummary(executor=executor.describe())
    exp = Expansion([])
    keys: list[str] = []
    asked = 0
    first = True
    t0 = time.perf_counter()
    while asked < n:
        batch = [study.ask(dists) for _ in range(min(st.batch, n - asked))]
        asked += len(batch)
        told: list[tuple[Any, Point]] = []
        for trial in batch:
            p = point_for(spec, {k: trial.params[k] for k in dists})
            if p is None:
                exp.excluded += 1
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            told.append((trial, p))
            exp.points.append(p)
        if first:
            have = store.keys(p.key for _, p in told)
            if have and not resume:
                raise ConfigurationError(
                    f"{store.path} already holds {len(have)} points of this search; pass "
                    "--resume to replay it (stored points are not rerun) or choose another "
                    "--out")
            store.log_sweep(spec.name, f"optuna-{st.sampler}", n, spec.raw)
            first = False
        s = run_points([p for _, p in told], store, executor, sweep=spec.name, resume=True,
                       progress=None)
        total.add(s)
        rows = {r["key"]: r for r in store.rows([p.key for _, p in told])}
        for trial, p in told:
            keys.append(p.key)
            vals = objective_values(rows.get(p.key), spec.objectives)
            if vals is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, vals)
        if progress:
            progress(asked, n)
    total.wall_s = time.perf_counter() - t0
    if on_expanded:
        on_expanded(exp)
    return SweepResult(spec, store.path, total, exp, keys)
