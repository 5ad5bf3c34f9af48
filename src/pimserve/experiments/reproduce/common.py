"""The machinery shared by the paper reproductions: grids of points run on the sweep runner,
headline numbers next to the papers', a sensitivity table over the parameters the papers
leave open, and the output folder (``results.csv``, ``results.json``, PNG figures,
``report.md`` and the store ``sweep.sqlite``).

A reproduction (see :mod:`.papi`, :mod:`.pam`) is a :class:`Reproduction`: it lists its
:class:`Point` grid, turns the finished rows into :class:`Headline` numbers, names its open
:class:`Parameter` s and draws its figures. :func:`reproduce` runs all of it.

Every point becomes a sweep point (:meth:`Point.sweep_point`: its resolved configuration,
keyed by the configuration's hash and the pimserve version) and runs through
:func:`pimserve.experiments.sweep.runner.run_points`, on any executor (in this process, a
local pool, Ray), into a store in the output folder; a rerun with ``resume`` runs only the
points the store lacks. Rows are read back by key.

Rows are flat dicts: the point's labels (``experiment``, ``system``, ``model``, ...) plus the
metrics of :func:`row_metrics` (or of an SLO search). The paper's numbers live only in the
headlines, as references to compare against; nothing here feeds them into a simulation.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pimserve.engine.result import RunResult
from pimserve.errors import ConfigurationError, PimserveError
from pimserve.experiments.sweep.executors import Executor, make_executor
from pimserve.experiments.sweep.resolve import Point as SweepPoint
from pimserve.experiments.sweep.resolve import config_for, digest, point_key, version
from pimserve.experiments.sweep.runner import RunSummary, release_store
from pimserve.experiments.sweep.runner import run_points as run_on_store
from pimserve.experiments.sweep.store import Store
from pimserve.jsonutil import to_jsonable
from pimserve.specs.model import ModelSpec
from pimserve.specs.system import SystemSpec

# ------------------------------------------------------------------------------------------
# points and rows


@dataclass
class Point:
    """One simulation of a grid.

    Attributes:
        labels: what the point is, for tables and figures (``experiment``, ``system``,
            ``model``, ``workload``, ``batch``, ``tlp``, ...); copied into its row, and the
            parameters of its sweep point.
        system: a system name or a (possibly modified) :class:`SystemSpec`.
        model: a model name or a (possibly modified) :class:`ModelSpec`.
        workload: a workload preset name.
        n_requests: requests drawn from the preset.
        options: :class:`~pimserve.engine.config.RunConfig` fields (batch, tlp, ...).
        slo: when set, the point is a :func:`~pimserve.experiments.slo.slo_search` with these
            arguments (``tpot_slo_ms``, ``n_requests``, ...), not a single run.
    """

    labels: dict[str, Any]
    system: str | SystemSpec
    model: str | ModelSpec
    workload: str
    n_requests: int = 64
    options: dict[str, Any] = field(default_factory=dict)
    slo: dict[str, Any] | None = None

    def with_labels(self, **labels: Any) -> Point:
        """A copy with extra labels."""
        return replace(self, labels={**self.labels, **labels})

    def sweep_point(self) -> SweepPoint:
        """This point as the sweep runner runs it: its labels as the parameters, its
        resolved configuration (:func:`~pimserve.experiments.sweep.resolve.config_for`;
        an SLO search adds ``kind: slo`` and the search's arguments, its ``n_requests``
        being the workload's) and the key of that configuration. A point that cannot be
        resolved (a bad option, an unknown name) keeps its one-line reason and runs
        nowhere; its row then has an ``error``."""
        slo = dict(self.slo) if self.slo is not None else None
        n = slo.pop("n_requests", self.n_requests) if slo is not None else self.n_requests
        try:
            config = config_for(self.system, self.model, self.workload, n, self.options)
        except PimserveError as err:
            return SweepPoint(digest({"unresolved": self._described(), "pimserve": version()},
                                     32), dict(self.labels), None, str(err))
        if slo is not None:
            config = {**config, "kind": "slo", "slo": slo}
        return SweepPoint(point_key(config), dict(self.labels), config)

    def _described(self) -> dict[str, Any]:
        def data(x: Any) -> Any:
            return x.model_dump(mode="json") if hasattr(x, "model_dump") else x

        return json.loads(json.dumps(to_jsonable(
            {"system": data(self.system), "model": data(self.model), "workload": self.workload,
             "n_requests": self.n_requests, "options": self.options, "slo": self.slo}),
            default=str))


def row_metrics(r: RunResult) -> dict[str, Any]:
    """The flat metrics of one run that reproductions tabulate (times s, energy J)."""
    row: dict[str, Any] = {
        "throughput_tok_s": r.throughput_tok_s,
        "decode_throughput_tok_s": r.decode_throughput_tok_s,
        "energy_per_token_j": r.energy_per_token_j,
        "simulated_time_s": r.simulated_time_s,
        "output_tokens": r.output_tokens,
        "iterations": r.iterations,
        "requests_completed": r.requests_completed,
        "requests_rejected": r.requests_rejected,
        "rejected_reasons": ";".join(f"{k}={v}" for k, v in sorted(r.rejected_reasons.items())),
        "preemptions": r.preemptions,
        "tpot_p50_ms": r.tpot_ms.get("p50"),
        "tpot_p99_ms": r.tpot_ms.get("p99"),
        "ttft_p50_ms": r.ttft_ms.get("p50"),
        "fc_on_gpu_fraction": r.fc_on_gpu_fraction,
        "mean_rlp": r.mean_rlp,
        "mean_tlp": r.mean_tlp,
        "migrated_bytes": r.migrated_bytes,
        "sparse_read_fraction": r.sparse_read_fraction,
    }
    for k, v in r.time_breakdown_s.items():
        row[f"time_{k}_s"] = v
    for k, v in (r.energy_breakdown_j or r.extra.get("energy_breakdown_j", {})).items():
        row[f"energy_{k}_j"] = v
    for k, v in r.kv_bytes_by_tier.items():
        row[f"kv_bytes_{k}"] = v
    for k, v in r.attention_time_by_tier_s.items():
        row[f"attention_time_{k}_s"] = v
    return row


def _float(v: Any) -> float:
    # the store keeps NaN as NULL: a RunResult float field read back as None was NaN
    return math.nan if v is None else float(v)


def _part(stored: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """A flattened dict field of a stored row (``<field>_<key>`` columns) back as a dict;
    columns of other points' keys read NULL and are left out."""
    n = len(prefix)
    return {k[n:]: v for k, v in stored.items() if k.startswith(prefix) and v is not None}


def stored_metrics(stored: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`row_metrics` of a run, from its row in the store (the sweep runner's columns,
    :func:`~pimserve.experiments.sweep.runner.result_row`)."""
    def opt(name: str) -> float | None:
        v = stored.get(name)
        return None if v is None else float(v)

    reasons = {k: int(v) for k, v in _part(stored, "rejected_reasons_").items()}
    row: dict[str, Any] = {
        "throughput_tok_s": _float(stored.get("throughput_tok_s")),
        "decode_throughput_tok_s": _float(stored.get("decode_throughput_tok_s")),
        "energy_per_token_j": _float(stored.get("energy_per_token_j")),
        "simulated_time_s": _float(stored.get("simulated_time_s")),
        "output_tokens": int(stored["output_tokens"]),
        "iterations": int(stored["iterations"]),
        "requests_completed": int(stored["requests_completed"]),
        "requests_rejected": int(stored["requests_rejected"]),
        "rejected_reasons": ";".join(f"{k}={v}" for k, v in sorted(reasons.items())),
        "preemptions": int(stored["preemptions"]),
        "tpot_p50_ms": opt("tpot_ms_p50"),
        "tpot_p99_ms": opt("tpot_ms_p99"),
        "ttft_p50_ms": opt("ttft_ms_p50"),
        "fc_on_gpu_fraction": _float(stored.get("fc_on_gpu_fraction")),
        "mean_rlp": _float(stored.get("mean_rlp")),
        "mean_tlp": _float(stored.get("mean_tlp")),
        "migrated_bytes": _float(stored.get("migrated_bytes")),
        "sparse_read_fraction": _float(stored.get("sparse_read_fraction")),
    }
    for k, v in _part(stored, "time_breakdown_s_").items():
        row[f"time_{k}_s"] = float(v)
    energy = _part(stored, "energy_breakdown_j_") or json.loads(
        stored.get("extra_json") or "{}").get("energy_breakdown_j", {})
    for k, v in energy.items():
        row[f"energy_{k}_j"] = _float(v)
    for k, v in _part(stored, "kv_bytes_by_tier_").items():
        row[f"kv_bytes_{k}"] = float(v)
    for k, v in _part(stored, "attention_time_by_tier_s_").items():
        row[f"attention_time_{k}_s"] = float(v)
    return row


def stored_slo_metrics(stored: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics of an SLO search from its row in the store
    (:func:`~pimserve.experiments.sweep.runner.slo_row`): the peak throughput under the SLO
    (0 when no rate met), the steady-state ``offered_tok_s`` at the best rate, and the best
    probe's drain fraction and mean RLP."""
    met = bool(stored.get("slo_met"))

    def opt(name: str) -> float | None:
        v = stored.get(name)
        return None if v is None else float(v)

    return {
        "throughput_tok_s": _float(stored.get("throughput_tok_s")) if met else 0.0,
        # steady-state output tokens/s at the best rate (rate x mean output length)
        "offered_tok_s": _float(stored.get("offered_tok_s")) if met else 0.0,
        "slo_met": met,
        "best_rate_per_s": opt("best_rate_per_s"),
        "tpot_ms": opt("tpot_ms"),
        "probes": int(stored["slo_probes"]),
        "drain_fraction": opt("drain_fraction"),
        "mean_rlp": opt("mean_rlp"),
    }


def row_from_store(point: Point, stored: Mapping[str, Any] | None) -> dict[str, Any]:
    """A point's row (labels + metrics + ``wall_s``) from its stored row: a point the engine
    refused (``status`` invalid) has an ``error`` and no metrics, so that a grid reports it
    instead of dropping it."""
    row: dict[str, Any] = dict(point.labels)
    if stored is None:
        row["error"] = "not run (no row in the store)"
    elif stored.get("status") != "ok":
        row["error"] = str(stored.get("reason"))
    elif point.slo is not None:
        row.update(stored_slo_metrics(stored))
    else:
        row.update(stored_metrics(stored))
    row["wall_s"] = float((stored or {}).get("run_wall_s") or 0.0)
    return row


def run_point(point: Point) -> dict[str, Any]:
    """Simulate one point in this process; returns its row (labels + metrics + ``wall_s``),
    exactly as a grid run would give it."""
    return run_points([point], jobs=1)[0]


class PointsFailed(RuntimeError):
    """Some points raised an unexpected exception (a pimserve bug, not a bad point): their
    tracebacks are in the store's ``errors`` table and a resumed run retries them."""

    def __init__(self, store: Path, errors: Sequence[str]):
        self.store, self.errors = store, list(errors)
        super().__init__(f"{len(errors)} points failed unexpectedly (a pimserve bug; "
                         f"tracebacks in {store}, table errors; --resume retries them); "
                         f"first: {errors[0]}")


def run_grid(points: Sequence[Point], store: Store, executor: Executor | None = None, *,
             resume: bool = False, progress: bool = False, description: str = "simulating",
             sweep: str = "", log: Mapping[str, Any] | None = None
             ) -> tuple[list[dict[str, Any]], RunSummary]:
    """Run ``points`` on the sweep runner into ``store`` on ``executor`` (default: in this
    process); returns their rows, in the order of ``points``, read back from the store by
    key, and what the runner did. Points with the same configuration run once. Without
    ``resume``, a store that already holds any of the points is refused (ConfigurationError
    naming ``--resume``, nothing written); with it, only the points it lacks run. ``log``
    (a description of the run) is recorded in the store's ``sweeps`` table as ``sweep``
    with strategy ``grid``. Raises :class:`PointsFailed` when a point failed unexpectedly
    (the others stay stored)."""
    sps = [p.sweep_point() for p in points]
    keys = {p.key for p in sps}
    if not resume:
        have = store.keys(keys)
        if have and len(have) == len(keys):
            raise ConfigurationError(
                f"{store.path} already holds all {len(keys)} of these points; pass --resume "
                "to read them back without running any, or choose another --out")
        if have:
            raise ConfigurationError(
                f"{store.path} already holds {len(have)} of these {len(keys)} points; pass "
                f"--resume to run only the {len(keys) - len(have)} missing, or choose "
                "another --out")
    if log is not None:
        store.log_sweep(sweep, "grid", len(keys), log)
    bar = _progress(progress)
    with bar as prog:
        task = prog.add_task(description, total=None) if prog else None

        def tick(done: int, total: int) -> None:
            if prog is not None:
                prog.update(task, completed=done, total=total)
                prog.refresh()

        summary = run_on_store(sps, store, executor, sweep=sweep, resume=resume,
                               progress=tick if prog else None)
    if summary.errors:
        raise PointsFailed(store.path, summary.errors)
    stored = {r["key"]: r for r in store.rows([p.key for p in sps])}
    return [row_from_store(p, stored.get(sp.key)) for p, sp in zip(points, sps, strict=True)], \
        summary


def run_points(points: Sequence[Point], *, jobs: int | None = None, progress: bool = False,
               description: str = "simulating") -> list[dict[str, Any]]:
    """Run ``points`` on the sweep runner with ``jobs`` workers (default all cores; 1: in
    this process) into a temporary store; rows come back in the order of ``points``.
    ``progress`` shows a progress bar. (:func:`reproduce` keeps its store.)"""
    if jobs is not None and (isinstance(jobs, bool) or jobs < 1):
        raise ConfigurationError(f"jobs must be a positive integer (got {jobs})")
    executor = make_executor(jobs)
    try:
        with tempfile.TemporaryDirectory(prefix="pimserve-points-") as tmp:
            store = Store(tmp)
            try:
                rows, _ = run_grid(points, store, executor, resume=True, progress=progress,
                                   description=description)
            finally:
                store.close()
                release_store(store.path)
    finally:
        executor.close()
    return rows


def _progress(enabled: bool) -> Any:
    if not enabled:
        return nullcontext()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from pimserve.report.console import console

    # no refresh thread (auto_refresh False): the pool forks its workers while the bar is
    # up, and a fork must not copy a thread that may hold the console's locks
    return Progress("[progress.description]{task.description}", BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                    transient=False, auto_refresh=False)


# ------------------------------------------------------------------------------------------
# perturbed hardware for the sensitivity table

_SCRATCH: Path | None = None
_FRACTIONS = {"compute_efficiency", "memory_efficiency"}


def _scratch() -> Path:
    """The folder of modified presets: the sweep runner's scratch folder (one per process
    tree, removed at exit whatever happens, and by :func:`reproduce` when it ends)."""
    global _SCRATCH
    from pimserve.experiments.sweep.resolve import scratch_folder

    _SCRATCH = scratch_folder()
    return _SCRATCH


def _drop_scratch() -> None:
    """Remove the scratch folder of modified presets, if there is one (and forget the specs
    loaded from it)."""
    global _SCRATCH
    from pimserve.experiments.sweep.resolve import drop_scratch

    drop_scratch()
    _SCRATCH = None


def _scaled(data: dict[str, Any], changes: Mapping[str, float]) -> dict[str, Any]:
    """``data`` with each (dotted) field multiplied by its factor; fractions clamp at 1."""
    out = json.loads(json.dumps(data))
    for key, factor in changes.items():
        *path, leaf = key.split(".")
        d = out
        for k in path:
            d = d[k]
        if leaf not in d:
            raise ConfigurationError(f"cannot scale unknown field '{key}'")
        v = d[leaf] * factor
        d[leaf] = min(v, 1.0) if leaf in _FRACTIONS else v
    return out


def scaled_system(system: str | SystemSpec, *,
                  devices: Mapping[str, Mapping[str, float]] | None = None,
                  links: Mapping[str, Mapping[str, float]] | None = None) -> SystemSpec:
    """``system`` with some device or link parameters multiplied by factors.

    ``devices`` maps a device preset name to ``{field: factor}`` (dotted for nested fields,
    e.g. ``"dram.t_ck_ns"``); ``links`` likewise for link presets. The modified presets are
    written as YAML files (named by content) to the sweep runner's scratch folder
    (:func:`~pimserve.experiments.sweep.resolve.spec_file`) and the system's groups point at
    them, so that the change goes through the same loading and validation as a user's own
    file; a point's resolved configuration then holds their content, not the path.
    Efficiencies (fractions of peak) are clamped at 1.
    """
    from pimserve.experiments.sweep.resolve import spec_file
    from pimserve.specs.catalog import load_device, load_link, load_system

    spec = load_system(system)
    groups = []
    for g in spec.groups:
        upd: dict[str, Any] = {}
        if devices and g.device in devices:
            upd["device"] = spec_file(_scaled(load_device(g.device).model_dump(mode="json"),
                                              devices[g.device]))
        if links and g.link in links:
            upd["link"] = spec_file(_scaled(load_link(g.link).model_dump(mode="json"),
                                            links[g.link]))
        groups.append(g.model_copy(update=upd) if upd else g)
    return spec.model_copy(update={"groups": groups})


# ------------------------------------------------------------------------------------------
# selecting from rows


def select(rows: Iterable[dict[str, Any]], **labels: Any) -> list[dict[str, Any]]:
    """Rows whose labels equal ``labels`` (a tuple/list/set value matches any of its items)."""
    out = []
    for r in rows:
        ok = True
        for k, v in labels.items():
            if isinstance(v, tuple | list | set | frozenset):
                if r.get(k) not in v:
                    ok = False
                    break
            elif r.get(k) != v:
                ok = False
                break
        if ok:
            out.append(r)
    return out


def ratios(rows: Sequence[dict[str, Any]], num: str, den: str, metric: str = "throughput_tok_s",
           by: Sequence[str] = (), invert: bool = False) -> list[float]:
    """Per matching configuration, ``metric`` of system ``num`` over system ``den``.

    Rows are paired on every label except ``system`` (or only on ``by`` when given); a pair
    where either side failed or is zero is skipped. ``invert`` gives den/num (for costs such
    as energy per token, where a ratio > 1 means ``num`` is better).
    """
    def key(r: dict[str, Any]) -> tuple:
        names = by or sorted(k for k in r if k in _LABEL_KEYS and k != "system")
        return tuple((k, r.get(k)) for k in names)

    dens = {key(r): r for r in rows if r.get("system") == den}
    out = []
    for r in rows:
        if r.get("system") != num:
            continue
        d = dens.get(key(r))
        if d is None:
            continue
        a, b = r.get(metric), d.get(metric)
        if not a or not b or "error" in r or "error" in d:
            continue
        out.append(float(b) / float(a) if invert else float(a) / float(b))
    return out


#: Labels that identify a configuration (anything else in a row is a metric).
_LABEL_KEYS = {"experiment", "system", "model", "workload", "batch", "tlp", "slo_ms",
               "ablation", "param", "factor", "variant"}


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean (the papers average speedups arithmetically); NaN when empty."""
    return float(np.mean(values)) if len(values) else math.nan


# ------------------------------------------------------------------------------------------
# headlines, parameters, the reproduction protocol


@dataclass
class Headline:
    """One headline number: the paper's value, pimserve's, and why they differ.

    Attributes:
        name: what it is ("speedup over A100+AttAcc, creative-writing, mean").
        paper: the paper's value (a reference, never fed into the simulation).
        value: pimserve's value (NaN when the experiment did not run).
        source: where the paper says it (section / figure).
        tolerance: the relative gap the reproduction aims for (0.15 = 15%).
        cause: the cause of a gap beyond the tolerance, one or two sentences; shown in the
            report only when the gap exceeds the tolerance.
        unit: printed after the numbers ("x", "%").
        bound: how the paper states it: ``"="`` a value, ``">="`` a lower bound ("more
            than 65%"), ``"<="`` an upper bound. A bound is met when pimserve's value is on its
            side, within the tolerance.
        note: how the value was computed when that needs saying (pairs left out, reduced
            grid); shown in the report whatever the gap.
    """

    name: str
    paper: float
    value: float
    source: str
    tolerance: float = 0.15
    cause: str = ""
    unit: str = "x"
    bound: str = "="
    note: str = ""

    @property
    def ratio(self) -> float:
        """pimserve / paper."""
        return self.value / self.paper if self.paper else math.nan

    @property
    def within(self) -> bool:
        """Whether pimserve's value is within the tolerance of the paper's (on the stated
        side of it for a bound)."""
        if not math.isfinite(self.ratio):
            return False
        if self.bound == ">=":
            return bool(self.ratio >= 1 - self.tolerance)
        if self.bound == "<=":
            return bool(self.ratio <= 1 + self.tolerance)
        return bool(abs(self.ratio - 1) <= self.tolerance)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "paper": self.paper, "value": self.value,
                "ratio": self.ratio, "within_tolerance": self.within,
                "tolerance": self.tolerance, "source": self.source, "unit": self.unit,
                "cause": self.cause, "bound": self.bound, "note": self.note}


@dataclass
class Parameter:
    """A parameter the paper leaves open and the reproduction fixes.

    Attributes:
        name: e.g. "PAPI alpha".
        value: its value, as text with units.
        why: why the value is physically reasonable (and where it comes from).
        apply: ``apply(point, factor) -> point`` with the parameter scaled by ``factor``
            (only the points it affects need change).
    """

    name: str
    value: str
    why: str
    apply: Callable[[Point, float], Point]


@dataclass
class Variant:
    """Another reading of something the paper states ambiguously, run beside the default.

    Attributes:
        name: e.g. "Table 1 compute per DRAM die".
        value: the reading, as text ("12.8 TFLOPS per stack").
        why: what the text says and why the default reading is kept.
        apply: ``apply(point) -> point`` under this reading (unchanged points are returned
            as they are and not run again).
    """

    name: str
    value: str
    why: str
    apply: Callable[[Point], Point]


def with_device(system: str | SystemSpec, old: str, new: str) -> SystemSpec | str:
    """``system`` with every group of device ``old`` using device ``new`` instead (the system
    itself, unchanged, when it has none)."""
    from pimserve.specs.catalog import load_system

    spec = load_system(system)
    if not any(g.device == old for g in spec.groups):
        return system
    groups = [g.model_copy(update={"device": new}) if g.device == old else g for g in spec.groups]
    return spec.model_copy(update={"groups": groups})


class Reproduction:
    """A paper's evaluation: subclass and fill in the four methods."""

    #: short name (``papi``, ``pam``) and the paper's title, for the report.
    name: str = ""
    title: str = ""
    #: what the reproduction leaves out or changes, as report bullets.
    notes: ClassVar[list[str]] = []

    def points(self, quick: bool) -> list[Point]:
        """Every point of the evaluation (``quick``: the reduced grid)."""
        raise NotImplementedError

    def headlines(self, rows: Sequence[dict[str, Any]]) -> list[Headline]:
        """The headline numbers from finished rows (NaN where a needed row is missing)."""
        raise NotImplementedError

    def parameters(self) -> list[Parameter]:
        """The open parameters, for the sensitivity table."""
        return []

    def sensitivity_points(self, quick: bool) -> list[Point]:
        """The points over which the headlines are recomputed with each parameter at
        +-25% (a subset of :meth:`points`, to keep the table affordable)."""
        return self.points(quick)

    def variants(self) -> list[Variant]:
        """Other readings of ambiguous statements, run on the sensitivity subset and shown
        beside the default wherever a headline depends on them."""
        return []

    def figures(self, rows: Sequence[dict[str, Any]], out: Path) -> list[Path]:
        """Draw the PNG figures into ``out``; returns their paths."""
        return []


# ------------------------------------------------------------------------------------------
# running a reproduction and writing its folder

SENSITIVITY_FACTORS = (0.75, 1.25)


@dataclass
class ReproductionResult:
    """Everything a reproduction produced (also written to its output folder)."""

    name: str
    quick: bool
    rows: list[dict[str, Any]]
    headlines: list[Headline]
    sensitivity: list[dict[str, Any]]
    figures: list[Path]
    out: Path
    wall_s: float
    variants: list[dict[str, Any]] = field(default_factory=list)
    #: per headline outside its tolerance, the parameter factor that closes it (gap_closers)
    closers: list[dict[str, Any]] = field(default_factory=list)
    #: what the sweep runner did: points, how many were already stored, ran, were invalid
    summary: RunSummary | None = None
    #: the store the rows were read from (``out/sweep.sqlite``)
    store: Path | None = None


def reproduce(repro: Reproduction, out: Path, *, quick: bool = False, jobs: int | None = None,
              progress: bool = False, sensitivity: bool = True,
              executor: Executor | None = None, resume: bool = False) -> ReproductionResult:
    """Run ``repro``'s grid (and its sensitivity runs) and write the output folder ``out``.

    Every point runs on the sweep runner into the store ``out/sweep.sqlite`` (keyed by its
    resolved configuration and the pimserve version), on ``executor`` (default: a local pool
    of ``jobs`` workers, all cores when None; ``jobs`` 1 runs in this process). Without
    ``resume`` a store that already holds some of the points is refused
    (ConfigurationError naming ``--resume``); with it only the missing points run and the
    rest are read from the store, so the results are the same as an uninterrupted run's."""
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    points = repro.points(quick)
    sens_base = repro.sensitivity_points(quick) if sensitivity else []
    params = repro.parameters() if sensitivity else []
    # A parameter that leaves a point unchanged (``apply`` returns the same object, e.g. PAM's
    # x on a baseline system) reuses the point's base row instead of simulating it again.
    sens_points: list[Point] = []
    reuse: list[int | None] = []  # per sensitivity point: index into sens_base, or None
    for p in params:
        for f in SENSITIVITY_FACTORS:
            for i, pt in enumerate(sens_base):
                if p.apply(pt, f) is pt:
                    reuse.append(i)
                else:
                    reuse.append(None)
                    sens_points.append(repro_apply(p, pt, f))
    variants = repro.variants() if sensitivity else []
    var_points: list[Point] = []
    var_reuse: list[int | None] = []
    for v in variants:
        for i, pt in enumerate(sens_base):
            q = v.apply(pt)
            if q is pt:
                var_reuse.append(i)
            else:
                var_reuse.append(None)
                var_points.append(q.with_labels(variant=v.name))
    grid = [*points, *sens_base, *sens_points, *var_points]
    own = executor is None
    if own:
        if jobs is not None and (isinstance(jobs, bool) or jobs < 1):
            raise ConfigurationError(f"jobs must be a positive integer (got {jobs})")
        executor = make_executor(jobs)
    store = Store(out)
    name = f"reproduce-{repro.name}"
    try:
        all_rows, summary = run_grid(grid, store, executor, resume=resume, progress=progress,
                                     description=f"reproduce {repro.name}", sweep=name,
                                     log={"reproduction": repro.name, "quick": quick,
                                          "sensitivity": sensitivity})
    finally:
        if own:
            executor.close()
        store.close()
        release_store(store.path)
    rows = all_rows[:len(points)]
    base_rows = all_rows[len(points):len(points) + len(sens_base)]
    n_fixed = len(points) + len(sens_base) + len(sens_points)
    run_rows = iter(all_rows[len(points) + len(sens_base):n_fixed])
    var_rows_it = iter(all_rows[n_fixed:])
    sens_rows = []
    for k, i in enumerate(reuse):
        if i is None:
            sens_rows.append(next(run_rows))
        else:
            j = k // max(1, len(sens_base))  # which (parameter, factor) chunk
            p, f = params[j // len(SENSITIVITY_FACTORS)], SENSITIVITY_FACTORS[
                j % len(SENSITIVITY_FACTORS)]
            sens_rows.append({**base_rows[i], "param": p.name, "factor": f})
    headlines = repro.headlines(rows)
    sens = _sensitivity_table(repro, params, base_rows, sens_rows, len(sens_base))
    var_table: list[dict[str, Any]] = []
    n = len(sens_base)
    base_h = {h.name: h.value for h in repro.headlines(base_rows)} if variants else {}
    for k, v in enumerate(variants):
        chunk = [base_rows[i] if i is not None else next(var_rows_it)
                 for i in var_reuse[k * n:(k + 1) * n]]
        for h in repro.headlines(chunk):
            b = base_h.get(h.name, math.nan)
            if math.isfinite(b) and math.isfinite(h.value) and b != 0:
                var_table.append({"variant": v.name, "reading": v.value, "headline": h.name,
                                  "base": b, "value": h.value,
                                  "change_pct": 100 * (h.value / b - 1)})
    figures = repro.figures(rows, out)
    wall = time.perf_counter() - t0
    result = ReproductionResult(repro.name, quick, rows, headlines, sens, figures, out, wall,
                                var_table, gap_closers(headlines, sens, params), summary,
                                store.path)
    _write(repro, result, params)
    _drop_scratch()
    return result


def repro_apply(param: Parameter, point: Point, factor: float) -> Point:
    """``param.apply`` with the sensitivity labels added."""
    return param.apply(point, factor).with_labels(param=param.name, factor=factor)


def _sensitivity_table(repro: Reproduction, params: list[Parameter],
                       base_rows: list[dict[str, Any]], sens_rows: list[dict[str, Any]],
                       n: int) -> list[dict[str, Any]]:
    base = {h.name: h.value for h in repro.headlines(base_rows)}
    table = []
    for i, p in enumerate(params):
        for j, f in enumerate(SENSITIVITY_FACTORS):
            chunk = sens_rows[(2 * i + j) * n:(2 * i + j + 1) * n]
            for h in repro.headlines(chunk):
                b = base.get(h.name, math.nan)
                if not math.isfinite(b) or not math.isfinite(h.value) or b == 0:
                    continue
                table.append({"param": p.name, "factor": f, "headline": h.name,
                              "base": b, "value": h.value,
                              "change_pct": 100 * (h.value / b - 1)})
    return table


def gap_closers(headlines: Sequence[Headline], sensitivity: Sequence[dict[str, Any]],
                params: Sequence[Parameter]) -> list[dict[str, Any]]:
    """For each headline outside its tolerance: the open parameter, and the factor on it,
    that would bring the headline to the paper's value, solved from the sensitivity runs.

    The headline is taken as ``base x factor^b`` (a power law through the base and its values
    at 0.75x and 1.25x, least squares in log-log); the factor solves ``base x f^b = paper``.
    Among the parameters that move the headline, the one needing the factor closest to 1 is
    kept. Headlines no parameter moves are left out."""
    values = {p.name: p.value for p in params}
    out = []
    for h in headlines:
        if (h.within or not (math.isfinite(h.value) and math.isfinite(h.paper))
                or h.paper <= 0 or h.value <= 0):
            continue
        best: dict[str, Any] | None = None
        for pname in values:
            pts = [(s["factor"], s["value"]) for s in sensitivity
                   if s["headline"] == h.name and s["param"] == pname and s["value"] > 0]
            base = [s["base"] for s in sensitivity
                    if s["headline"] == h.name and s["param"] == pname]
            if not pts or not base or base[0] <= 0:
                continue
            xs = np.log([1.0] + [f for f, _ in pts])
            ys = np.log([base[0]] + [v for _, v in pts])
            b = float(np.polyfit(xs, ys, 1)[0]) if len(xs) > 1 else 0.0
            if abs(b) < 1e-6:
                continue
            # solved against the full grid's headline, scaled by the subset's response
            lf = math.log(h.paper / h.value) / b
            if abs(lf) > 50:  # beyond any physical range (and float overflow)
                continue
            f = math.exp(lf)
            if best is None or abs(math.log(f)) < abs(math.log(best["factor"])):
                best = {"headline": h.name, "param": pname, "value": values[pname],
                        "factor": f, "exponent": b, "interpolated": 0.75 <= f <= 1.25}
        if best is not None:
            out.append(best)
    return out


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    return cols


def _write(repro: Reproduction, res: ReproductionResult, params: list[Parameter]) -> None:
    out = res.out
    cols = _columns(res.rows)
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, restval="")
        w.writeheader()
        for r in res.rows:
            w.writerow(r)
    meta: dict[str, Any] = {"reproduction": repro.name, "quick": res.quick,
                            "wall_s": res.wall_s, "python": platform.python_version(),
                            "cpus": os.cpu_count()}
    if res.summary is not None:
        s = res.summary
        meta["runner"] = {"store": str(res.store), "points": s.points,
                          "stored_before": s.stored_before, "ran": s.ran,
                          "invalid": s.invalid, "executor": s.executor,
                          "run_wall_s": s.wall_s}
    payload = {"meta": meta, "headlines": [h.to_dict() for h in res.headlines],
               "parameters": [{"name": p.name, "value": p.value, "why": p.why} for p in params],
               "sensitivity": res.sensitivity,
               "gap_closers": res.closers,
               "variants": res.variants,
               "rows": res.rows}
    (out / "results.json").write_text(json.dumps(to_jsonable(payload), indent=1))
    (out / "report.md").write_text(render_report(repro, res, params))


def _num(v: float, unit: str = "") -> str:
    if not math.isfinite(v):
        return "n/a"
    s = f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return f"{s}{unit}"


def render_report(repro: Reproduction, res: ReproductionResult,
                  params: list[Parameter]) -> str:
    """The report as Markdown: headline table, gap causes, parameters, sensitivity, notes."""
    lines = [f"# Reproducing {repro.title}", ""]
    grid = "reduced grid (`--quick`)" if res.quick else "full grid"
    n_err = sum(1 for r in res.rows if "error" in r)
    lines += [f"{len(res.rows)} simulated points ({grid}), {res.wall_s:.0f} s wall on "
              f"{os.cpu_count()} cores; every point is in `results.csv` / `results.json`."
              + (f" {n_err} points failed and are listed there with their error." if n_err
                 else ""), ""]
    lines += ["## Headline numbers", "",
              "| headline | paper | pimserve | pimserve / paper | within | source |",
              "|---|---:|---:|---:|:---:|---|"]
    for h in res.headlines:
        if not math.isfinite(h.value):
            mark = "n/a (not run)"
        else:
            mark = "yes" if h.within else f"**no** (±{h.tolerance:.0%})"
        bound = {">=": "> ", "<=": "< "}.get(h.bound, "")
        lines.append(f"| {h.name} | {bound}{_num(h.paper, h.unit)} | {_num(h.value, h.unit)} | "
                     f"{_num(h.ratio)} | {mark} | {h.source} |")
    noted = [h for h in res.headlines if h.note]
    if noted:
        lines += ["", "### How some headlines were computed", ""]
        lines += [f"- **{h.name}**: {h.note}" for h in noted]
    gaps = [h for h in res.headlines if not h.within and math.isfinite(h.value)]
    if gaps:
        lines += ["", "### Causes of the gaps", ""]
        by_cause: dict[str, list[Headline]] = {}
        for h in gaps:  # a cause shared by several headlines is written once
            by_cause.setdefault(h.cause or "not yet explained.", []).append(h)
        for cause, hs in by_cause.items():
            names = "; ".join(f"**{h.name}** ({_num(h.value, h.unit)} vs "
                              f"{_num(h.paper, h.unit)})" for h in hs)
            lines.append(f"- {names}: {cause}")
    if params:
        lines += ["", "## Parameters the paper leaves open", "",
                  "| parameter | value | why it is reasonable |", "|---|---|---|"]
        for p in params:
            lines.append(f"| {p.name} | {p.value} | {p.why} |")
    if res.sensitivity:
        pnames = list(dict.fromkeys(s["param"] for s in res.sensitivity))
        cell: dict[tuple[str, str], dict[float, float]] = {}
        base: dict[str, float] = {}
        for s in res.sensitivity:
            cell.setdefault((s["headline"], s["param"]), {})[s["factor"]] = s["change_pct"]
            base[s["headline"]] = s["base"]
        lines += ["", "## Sensitivity: headline change (%) at -25% / +25% of each parameter", "",
                  "Computed on the sensitivity subset of the grid (its base value is shown; it "
                  "can differ from the full grid's headline).", "",
                  "| headline | base | " + " | ".join(pnames) + " |",
                  "|---|---:|" + "---:|" * len(pnames)]
        for hname in dict.fromkeys(s["headline"] for s in res.sensitivity):
            cells = []
            for pname in pnames:
                d = cell.get((hname, pname), {})
                lo, hi = d.get(0.75), d.get(1.25)
                cells.append(" / ".join("n/a" if v is None else f"{v:+.1f}" for v in (lo, hi)))
            lines.append(f"| {hname} | {_num(base[hname])} | " + " | ".join(cells) + " |")
    moved = [v for v in res.variants if abs(v["change_pct"]) >= 1.0]
    if res.variants:
        lines += ["", "## Other readings of the paper", "",
                  "Each headline recomputed on the sensitivity subset under another reading of "
                  "an ambiguous statement; shown where it moves a headline by 1% or more"
                  + ("" if moved else " (none does)") + ".", ""]
        if moved:
            lines += ["| reading | headline | default reading | this reading | change |",
                      "|---|---|---:|---:|---:|"]
            for v in moved:
                lines.append(f"| {v['variant']}: {v['reading']} | {v['headline']} | "
                             f"{_num(v['base'])} | {_num(v['value'])} | "
                             f"{v['change_pct']:+.1f}% |")
    closers = res.closers
    if closers:
        lines += ["", "## The one parameter value that would close each gap", "",
                  "For every headline outside its tolerance and every open parameter, the "
                  "factor on the parameter at which the headline would equal the paper's, "
                  "solved from the sensitivity runs (a power law through the base and its "
                  "+-25% values; beyond that range it is an extrapolation). The parameter "
                  "needing the smallest change is shown.", "",
                  "| headline | parameter | value now | factor that closes the gap | "
                  "within +-25% |", "|---|---|---|---:|:---:|"]
        for c in closers:
            lines.append(f"| {c['headline']} | {c['param']} | {c['value']} | "
                         f"{_num(c['factor'])}x | {'yes' if c['interpolated'] else 'no'} |")
    if repro.notes:
        lines += ["", "## What this reproduction fixes or leaves out", ""]
        lines += [f"- {n}" for n in repro.notes]
    if res.figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{p.stem}]({p.name})" for p in res.figures]
    errs = [r for r in res.rows if "error" in r]
    if errs:
        lines += ["", "## Points that did not run", ""]
        for r in errs[:50]:
            lab = ", ".join(f"{k}={r[k]}" for k in r if k in _LABEL_KEYS)
            lines.append(f"- {lab}: {r['error']}")
    return "\n".join(lines) + "\n"
