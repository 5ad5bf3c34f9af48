"""`pimserve sweep report`: best points per objective, the Pareto front, and PNG figures.

Reads the store only. Figures (matplotlib, Agg backend, no display needed), in the report
folder (default ``DIR/report/``):

- ``front_<a>_vs_<b>.png``: every valid point in two objectives, the points on the Pareto
  front over all chosen objectives highlighted, and the front in just these two drawn as a
  step line (one figure per pair of objectives);
- ``effect_<parameter>.png``: each objective against the parameter's values (every point,
  and the mean per value), one panel per objective;
- ``pareto.csv``: the front's points (key, parameters, objectives).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pimserve.experiments.sweep.pareto import best_index, pareto_mask
from pimserve.experiments.sweep.spec import OBJECTIVES, Objective
from pimserve.experiments.sweep.store import Store

MAX_FRONT_FIGURES = 6  # pairs of objectives drawn
MAX_EFFECT_FIGURES = 24  # parameters drawn


@dataclass
class SweepReport:
    """The analysis of a store's valid points.

    ``best`` has one entry per objective (its value, the point's key and parameters);
    ``front`` the non-dominated points over ``objectives``; ``skipped`` says why an objective
    or a figure is missing; ``files`` names what was written.
    """

    points: int
    valid: int
    invalid: int
    objectives: list[Objective]
    parameters: list[str]
    best: list[dict[str, Any]]
    front: list[dict[str, Any]]
    skipped: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    invalid_reasons: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"points": self.points, "valid": self.valid, "invalid": self.invalid,
                "objectives": [o.name for o in self.objectives],
                "parameters": self.parameters, "best": self.best, "front": self.front,
                "skipped": self.skipped, "files": {k: str(v) for k, v in self.files.items()},
                "invalid_reasons": self.invalid_reasons}


def _num(v: Any) -> float:
    if v is None or isinstance(v, str):
        return math.nan
    return float(v)


def parameters_of(rows: list[dict[str, Any]]) -> list[str]:
    """The parameter paths present in rows (``param.<path>`` columns), in column order."""
    out: list[str] = []
    for r in rows:
        for k in r:
            if k.startswith("param.") and r[k] is not None and k[6:] not in out:
                out.append(k[6:])
    return out


def spec_objectives(store: Store, sweep: str | None = None) -> list[Objective] | None:
    """The objectives the store's sweep specs name (of sweep ``sweep`` when given), in
    order, from its ``sweeps`` log; None when it names none or the sweeps disagree."""
    found: list[list[str]] = []
    for s in store.sweeps():
        if sweep is not None and s.get("name") != sweep:
            continue
        try:
            names = json.loads(s.get("spec_json") or "{}").get("objectives")
        except (ValueError, AttributeError):
            continue
        if isinstance(names, list) and names not in found:
            found.append(names)
    if len(found) != 1:
        return None
    out = []
    for n in found[0]:
        o = next((o for o in OBJECTIVES.values() if n in (o.name, o.column)), None)
        if o is not None and o not in out:
            out.append(o)
    return out or None


def analyse(store: Store, objectives: list[Objective] | None = None,
            sweep: str | None = None) -> tuple[SweepReport, list[dict[str, Any]]]:
    """Best points and Pareto front of the store's valid points (of sweep ``sweep`` when
    given) over ``objectives`` (default: the spec's, else all four). An objective no point
    has (hardware cost without pimserve.hardware.area) is left out, with the reason in
    ``skipped``."""
    rows = store.rows(sweep=sweep)
    ok = [r for r in rows if r.get("status") == "ok"]
    reasons: dict[str, int] = {}
    for r in rows:
        if r.get("status") == "invalid":
            reasons[str(r.get("reason"))] = reasons.get(str(r.get("reason")), 0) + 1
    objs = list(objectives or spec_objectives(store, sweep) or OBJECTIVES.values())
    skipped: dict[str, str] = {}
    used = []
    for o in objs:
        if any(not math.isnan(_num(r.get(o.column))) for r in ok):
            used.append(o)
        else:
            note = next((r.get("hw_note") for r in ok if r.get("hw_note")), None)
            skipped[o.name] = (note if o.name == "hw_cost" and note else
                               f"no valid point has {o.column}")
    params = parameters_of(rows)
    best = []
    for o in used:
        i = best_index(np.array([_num(r.get(o.column)) for r in ok]), o.direction)
        if i is not None:
            r = ok[i]
            best.append({"objective": o.name, "direction": o.direction,
                         "value": _num(r.get(o.column)), "key": r["key"],
                         "params": {p: r.get(f"param.{p}") for p in params}})
    front: list[dict[str, Any]] = []
    if used and ok:
        vals = np.array([[_num(r.get(o.column)) for o in used] for r in ok])
        mask = pareto_mask(vals, [o.direction for o in used])
        front = [{"key": r["key"], "params": {p: r.get(f"param.{p}") for p in params},
                  "objectives": {o.name: _num(r.get(o.column)) for o in used}}
                 for r, m in zip(ok, mask, strict=True) if m]
        first = used[0]
        front.sort(key=lambda f: -f["objectives"][first.name] if first.direction == "max"
                   else f["objectives"][first.name])
    rep = SweepReport(len(rows), len(ok), len(rows) - len(ok), used, params, best, front,
                      skipped, {}, reasons)
    return rep, ok


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).replace(".", "_")


def write_report(store: Store, out: str | Path, objectives: list[Objective] | None = None,
                 sweep: str | None = None) -> SweepReport:
    """Analyse the store and write ``pareto.csv`` and the PNG figures into ``out``."""
    rep, ok = analyse(store, objectives, sweep)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pareto.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", *(f"param.{p}" for p in rep.parameters),
                    *(o.column for o in rep.objectives)])
        for p in rep.front:
            w.writerow([p["key"], *(p["params"].get(q) for q in rep.parameters),
                        *(p["objectives"][o.name] for o in rep.objectives)])
    rep.files["pareto"] = path
    if not ok:
        rep.skipped["figures"] = "no valid point to draw"
        return rep
    front_keys = {p["key"] for p in rep.front}
    pairs = list(itertools.combinations(rep.objectives, 2))
    if not pairs:
        rep.skipped["front figures"] = "need two objectives with values"
    for a, b in pairs[:MAX_FRONT_FIGURES]:
        name = f"front_{a.name}_vs_{b.name}"
        rep.files[name] = _front_figure(ok, a, b, front_keys, folder / f"{name}.png")
    if len(pairs) > MAX_FRONT_FIGURES:
        rep.skipped["more front figures"] = (f"{len(pairs) - MAX_FRONT_FIGURES} pairs of "
                                             "objectives not drawn")
    drawn = 0
    for p in rep.parameters:
        vals = {json.dumps(r.get(f"param.{p}")) for r in ok}
        if len(vals) < 2:
            rep.skipped[f"effect of {p}"] = "one value only"
            continue
        if drawn >= MAX_EFFECT_FIGURES:
            rep.skipped[f"effect of {p}"] = f"more than {MAX_EFFECT_FIGURES} parameters"
            continue
        name = f"effect_{_safe(p)}"
        rep.files[name] = _effect_figure(ok, p, rep.objectives, folder / f"{name}.png")
        drawn += 1
    return rep


def _figure(w: float, h: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _front_figure(ok: list[dict[str, Any]], a: Objective, b: Objective,
                  front_keys: set[str], path: Path) -> Path:
    x = np.array([_num(r.get(a.column)) for r in ok])
    y = np.array([_num(r.get(b.column)) for r in ok])
    on = np.array([r["key"] in front_keys for r in ok])
    fig = _figure(6.4, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(x[~on], y[~on], s=14, c="#bbbbbb", label="dominated points")
    ax.scatter(x[on], y[on], s=22, c="#d62728",
               label=f"Pareto front over {'all chosen objectives' if front_keys else '-'}")
    m2 = pareto_mask(np.column_stack([x, y]), [a.direction, b.direction])
    if m2.any():
        order = np.argsort(x[m2])
        ax.step(x[m2][order], y[m2][order], where="post", c="#1f77b4", lw=1.2, marker="x",
                ms=7, label=f"front in {a.name} and {b.name} only")
    ax.set_xlabel(f"{a.label} ({'higher' if a.direction == 'max' else 'lower'} is better)")
    ax.set_ylabel(f"{b.label} ({'higher' if b.direction == 'max' else 'lower'} is better)")
    ax.set_title(f"{len(ok)} points; {int(on.sum())} on the Pareto front")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _effect_figure(ok: list[dict[str, Any]], param: str, objectives: list[Objective],
                   path: Path) -> Path:
    raw = [r.get(f"param.{param}") for r in ok]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw)
    if numeric:
        xs = np.array(raw, dtype=np.float64)
        ticks: list[str] | None = None
    else:
        labels = sorted({str(v) for v in raw})
        xs = np.array([labels.index(str(v)) for v in raw], dtype=np.float64)
        ticks = labels
    n = len(objectives)
    fig = _figure(4.0 * n, 3.6)
    for j, o in enumerate(objectives):
        ax = fig.add_subplot(1, n, j + 1)
        ys = np.array([_num(r.get(o.column)) for r in ok])
        ax.scatter(xs, ys, s=10, c="#1f77b4", alpha=0.5)
        ux = np.unique(xs[np.isfinite(xs)])
        means = [np.nanmean(ys[xs == u]) if np.isfinite(ys[xs == u]).any() else np.nan
                 for u in ux]
        ax.plot(ux, means, c="#d62728", lw=1.5, marker="o", ms=3, label="mean")
        if ticks is not None:
            ax.set_xticks(range(len(ticks)))
            ax.set_xticklabels(ticks, rotation=30, ha="right", fontsize=7)
        ax.set_xlabel(param)
        ax.set_ylabel(o.label)
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"effect of {param} ({len(ok)} points)")
    fig.tight_layout()
    fig.savefig(path)
    return path
