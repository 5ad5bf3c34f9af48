"""Plots of run and compare results (PNG, matplotlib's Agg backend).

Input is the JSON that ``pimserve run --out FILE`` / ``--format json`` writes (one
:class:`~pimserve.engine.result.RunResult` as a dict) or that ``pimserve compare --out FILE`` /
``--format json`` writes (``{"baseline": ..., "runs": [{"system", "speedup",
"energy_efficiency", "result"}, ...]}``). Plots read results only, never the engine.

Charts (file names in :data:`CHARTS`); each is drawn when the results hold what it needs, and
skipped with the reason otherwise:

- ``throughput.png``: output tokens per second per system (bars; speedup over the baseline for
  a compare); with the per-iteration log (``--record-steps``) also over simulated time.
- ``latency_cdf.png``: CDFs of TTFT and TPOT (ms) per system, from the result's
  ``extra.latency_quantiles``.
- ``time_breakdown.png``: where the simulated time went (FC on GPU / on FC-PIM, attention,
  communication, other), stacked bars, seconds and shares.
- ``energy_breakdown.png``: the same parts of the energy, per output token (J).
- ``fc_placement.png``: per iteration, decode tokens in flight (RLP x TLP) against PAPI's alpha,
  coloured by the share of FC time on the GPUs; needs ``--record-steps``.
- ``kv_tiers.png``: KV resident on each tier (mean and peak, GB) and attention time per tier,
  for systems with KV tiers (PAM and its baselines); with ``--record-steps`` also KV per tier
  over time.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pimserve.errors import ResultError
from pimserve.fileio import MAX_RESULT_BYTES, read_bounded_text

CHARTS = ("throughput", "latency_cdf", "time_breakdown", "energy_breakdown", "fc_placement",
          "kv_tiers")
"""Chart names; each is written as ``<name>.png``."""

RUN_KEYS = ("system", "model", "workload", "throughput_tok_s", "output_tokens",
            "simulated_time_s", "time_breakdown_s", "energy_j")
"""Keys every run result must have to be plotted."""

PARTS = {
    "fc_gpu": ("FC on GPU", "#1f77b4"),
    "fc_pim": ("FC on FC-PIM", "#ff7f0e"),
    "attention": ("attention", "#2ca02c"),
    "communication": ("communication", "#d62728"),
    "norms": ("layer norms and activation", "#8c564b"),
    "other": ("other (draft model)", "#9467bd"),
}
"""Breakdown parts: label and colour."""

TIER_COLORS = ("#2ca02c", "#ff7f0e", "#8c564b", "#7f7f7f", "#17becf")
LINE_STYLES = ("-", "--", "-.", ":")  # runs drawn as lines: colour and style (identical runs)
MAX_PANELS = 6  # per-run panels (placement, KV over time) drawn for at most this many runs
MAX_POINTS = 20_000  # per-iteration points drawn per run (evenly thinned beyond)


@dataclass
class Results:
    """Runs to plot: (label, result dict) in order, the baseline label, where they came from."""

    runs: list[tuple[str, dict[str, Any]]]
    baseline: str | None = None
    source: str = ""
    kind: str = "run"  # run | compare


@dataclass
class PlotReport:
    """What :func:`plot_results` wrote (chart -> PNG path) and skipped (chart -> why)."""

    files: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------
# reading and checking results
# ------------------------------------------------------------------------------------------
def _check_run(r: Any, where: str) -> dict[str, Any]:
    if not isinstance(r, dict):
        raise ResultError(f"{where}: expected a run result (an object), got {type(r).__name__}")
    missing = [k for k in RUN_KEYS if k not in r]
    if missing:
        raise ResultError(
            f"{where}: not a run result: missing {', '.join(repr(k) for k in missing)} "
            f"(a run result has {', '.join(RUN_KEYS)}, ...)"
        )
    for k in ("time_breakdown_s", "energy_breakdown_j", "kv_bytes_by_tier",
              "attention_time_by_tier_s", "extra"):
        if k in r and r[k] is not None and not isinstance(r[k], dict):
            raise ResultError(f"{where}: '{k}' must be an object, got {type(r[k]).__name__}")
    for k in ("throughput_tok_s", "output_tokens", "simulated_time_s", "energy_j"):
        v = r[k]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise ResultError(f"{where}: '{k}' must be a number, got {v!r}")
    return r


def read_results(data: Any, source: str = "results") -> Results:
    """Check ``data`` (a parsed run or compare result) and return the runs to plot.

    Raises ResultError naming ``source`` and the problem (not a result, a missing field)."""
    if isinstance(data, dict) and "traceEvents" in data:
        raise ResultError(
            f"{source}: this is a timeline (trace-event JSON from --timeline), not a result; "
            "plot reads the JSON of `pimserve run --out FILE` or `pimserve compare --out FILE`"
        )
    if isinstance(data, dict) and "runs" in data:
        runs = data["runs"]
        if not isinstance(runs, list) or not runs:
            raise ResultError(f"{source}: 'runs' must be a non-empty list of runs")
        out: list[tuple[str, dict[str, Any]]] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(runs):
            where = f"{source}: runs[{i}]"
            if not isinstance(item, dict) or "result" not in item:
                raise ResultError(f"{where}: expected an object with 'system' and 'result'")
            r = _check_run(item["result"], f"{where}.result")
            label = str(item.get("system") or r["system"])
            if label.endswith((".yaml", ".yml")) or "/" in label:
                label = Path(label).stem  # a system file: its name is enough
            seen[label] = seen.get(label, 0) + 1
            if seen[label] > 1:
                label = f"{label} #{seen[label]}"
            out.append((label, r))
        base = data.get("baseline")
        return Results(out, str(base) if base is not None else None, source, "compare")
    if isinstance(data, dict) and "system" in data:
        r = _check_run(data, source)
        return Results([(str(r["system"]), r)], None, source, "run")
    if isinstance(data, dict):
        keys = ", ".join(list(data)[:8]) or "none"
        raise ResultError(
            f"{source}: neither a run result (keys {', '.join(RUN_KEYS[:4])}, ...) nor a compare "
            f"result (keys baseline, runs); found keys: {keys}"
        )
    raise ResultError(
        f"{source}: expected a run or compare result (a JSON object), got a JSON "
        f"{type(data).__name__}"
    )


def load_results(path: str | Path) -> Results:
    """Read a run or compare result from a JSON file (see :func:`read_results`)."""
    p = Path(path)
    try:
        text = read_bounded_text(p, MAX_RESULT_BYTES, "result file")
    except OSError as err:
        raise ResultError(f"{p}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise ResultError(f"{p}: not a pimserve result (not UTF-8 text, byte {err.start})"
                          ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ResultError(f"{p}: not JSON (line {err.lineno}, column {err.colno}: "
                          f"{err.msg})") from None
    return read_results(data, str(p))


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def _num(v: Any) -> float:
    """A JSON number (None for NaN) as a float."""
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=120)
    return path


def _context(res: Results) -> str:
    """'model on workload' of the runs (shared by a compare)."""
    r = res.runs[0][1]
    return f"{r.get('model', '?')} on {r.get('workload', '?')}"


def _bar_labels(ax: Any, labels: list[str]) -> None:
    ax.set_xticks(range(len(labels)))
    rot = 0 if sum(len(s) for s in labels) < 60 else 25
    ax.set_xticklabels(labels, rotation=rot, ha="right" if rot else "center")


def _line(i: int) -> dict[str, Any]:
    """Colour and line style of the i-th run (lines of identical runs stay apart)."""
    return {"color": f"C{i % 10}", "ls": LINE_STYLES[i % len(LINE_STYLES)]}


def _steps(r: dict[str, Any]) -> dict[str, list] | None:
    s = (r.get("extra") or {}).get("steps")
    if isinstance(s, dict) and s.get("start_s") and s.get("time_s"):
        return s
    return None


def _thin(n: int) -> np.ndarray:
    """Indices of at most MAX_POINTS of n points, evenly spread."""
    return np.arange(n) if n <= MAX_POINTS else np.linspace(0, n - 1, MAX_POINTS).astype(int)


def _tier_runs(res: Results) -> list[tuple[str, dict[str, Any]]]:
    """Runs of systems with a KV hierarchy (they report peaks per tier)."""
    return [(n, r) for n, r in res.runs if (r.get("extra") or {}).get("kv_peak_bytes_by_tier")]


# ------------------------------------------------------------------------------------------
# charts
# ------------------------------------------------------------------------------------------
def plot_throughput(res: Results, path: Path) -> Path:
    """Bars of output tokens/s per run; with step logs, tokens/s over simulated time."""
    labels = [n for n, _ in res.runs]
    tput = [_num(r["throughput_tok_s"]) for _, r in res.runs]
    timed = [(n, _steps(r)) for n, r in res.runs]
    timed = [(n, s) for n, s in timed if s is not None and s.get("tokens")]
    fig = _figure(11 if timed else max(5.0, 1.3 * len(labels) + 2.5), 4.5)
    ratios = [1.0 + 0.6 * len(labels), 4.0] if timed else [1.0]
    axes = fig.subplots(1, len(ratios), squeeze=False, width_ratios=ratios)[0]
    ax = axes[0]
    colors = [f"C{i % 10}" for i in range(len(labels))]
    bars = ax.bar(range(len(labels)), tput, color=colors, width=0.6)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    base = dict(res.runs).get(res.baseline or "")
    base_t = _num(base["throughput_tok_s"]) if base else math.nan
    for b, t in zip(bars, tput, strict=True):
        if not math.isfinite(t):
            continue
        txt = f"{t:,.0f}"
        if res.kind == "compare" and math.isfinite(base_t) and base_t > 0:
            txt += f"\n{t / base_t:.2f}x"
        ax.annotate(txt, (b.get_x() + b.get_width() / 2, t), ha="center", va="bottom",
                    fontsize=8, xytext=(0, 2), textcoords="offset points")
    _bar_labels(ax, labels)
    ax.set_ylabel("throughput (output tokens/s)")
    ax.set_ylim(0, max([t for t in tput if math.isfinite(t)] + [1]) * 1.2)
    ax.set_title("throughput" + (f" (speedup over {res.baseline})"
                                 if res.kind == "compare" and res.baseline else ""))
    if timed:
        ax2 = axes[1]
        for n, s in timed:
            end = np.asarray(s["start_s"], float) + np.asarray(s["time_s"], float)
            tok = np.asarray(s["tokens"], float)
            bins = min(100, max(5, end.size // 5))
            edges = np.linspace(0.0, float(end.max()), bins + 1)
            h, _ = np.histogram(end, edges, weights=tok)
            width = edges[1] - edges[0]
            ax2.plot((edges[:-1] + edges[1:]) / 2, h / width if width > 0 else h,
                     label=n, lw=1.3, **_line(labels.index(n)))
        if len(labels) == 1 and math.isfinite(tput[0]):
            ax2.axhline(tput[0], color="k", ls="--", lw=1, label="whole run")
        ax2.set_xlabel("simulated time (s)")
        ax2.set_ylabel("output tokens/s")
        ax2.set_title("throughput over time")
        ax2.set_ylim(bottom=0)
        ax2.legend(fontsize=8)
    fig.suptitle(f"{_context(res)}: throughput", fontsize=11)
    return _save(fig, path)


def plot_latency_cdf(res: Results, path: Path) -> Path | str:
    """CDFs of TTFT and TPOT (ms) per run from ``extra.latency_quantiles``."""
    have = [(n, (r.get("extra") or {}).get("latency_quantiles")) for n, r in res.runs]
    have = [(n, q) for n, q in have if isinstance(q, dict) and q.get("levels")]
    if not have:
        return ("the results have no latency quantiles (extra.latency_quantiles); rerun with "
                "this version of pimserve")
    fig = _figure(11, 4.5)
    axes = fig.subplots(1, 2)
    names = [n for n, _ in res.runs]
    for ax, key, title in ((axes[0], "ttft_ms", "time to first token"),
                           (axes[1], "tpot_ms", "time per output token")):
        lo, hi = math.inf, 0.0
        drawn = False
        for n, q in have:
            v = q.get(key)
            if not v:
                continue
            x = np.asarray([_num(a) for a in v])
            y = np.asarray(q["levels"], float) / 100.0
            ok = np.isfinite(x)
            ax.plot(x[ok], y[ok], label=n, lw=1.5, **_line(names.index(n)))
            drawn = True
            pos = x[ok & (x > 0)]
            if pos.size:
                lo, hi = min(lo, float(pos.min())), max(hi, float(pos.max()))
        if drawn and hi > 0 and lo < math.inf and hi / lo > 100:
            ax.set_xscale("log")
        ax.set_xlabel(f"{key.split('_')[0].upper()} (ms)")
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0, 1.01)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8, loc="lower right")
        else:
            ax.text(0.5, 0.5, "no completed requests", ha="center", transform=ax.transAxes)
    fig.suptitle(f"{_context(res)}: latency CDFs (completed requests)", fontsize=11)
    return _save(fig, path)


def _stacked(ax: Any, labels: list[str], parts: list[dict[str, float]], unit: str) -> None:
    """Stacked bars of ``parts`` (one dict per bar) with shares inside and totals on top."""
    bottoms = np.zeros(len(labels))
    totals = np.array([sum(v for v in p.values() if math.isfinite(v)) for p in parts])
    top = max(float(totals.max(initial=0.0)), 1e-30) * 1.15
    for key, (name, color) in PARTS.items():
        vals = np.array([p.get(key, 0.0) for p in parts], float)
        vals = np.where(np.isfinite(vals), vals, 0.0)
        if not vals.any():
            continue
        ax.bar(range(len(labels)), vals, bottom=bottoms, color=color, label=name)
        for i, (v, b, t) in enumerate(zip(vals, bottoms, totals, strict=True)):
            if t > 0 and v / top >= 0.04:  # tall enough for a label
                ax.text(i, b + v / 2, f"{v / t:.0%}", ha="center", va="center", fontsize=7,
                        color="white")
        bottoms += vals
    for i, t in enumerate(totals):
        ax.annotate(f"{t:.3g} {unit}", (i, t), ha="center", va="bottom", fontsize=8,
                    xytext=(0, 2), textcoords="offset points")
    ax.set_ylim(0, top)
    _bar_labels(ax, labels)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _breakdown(res: Results, path: Path, parts: list[dict[str, float]], unit: str,
               ylabel: str, title: str, suptitle: str) -> Path:
    """Stacked bars of ``parts`` (one dict of part -> value per run) in ``unit``."""
    labels = [n for n, _ in res.runs]
    fig = _figure(max(6.5, 1.3 * len(labels) + 3.5), 4.8)
    ax = fig.subplots()
    _stacked(ax, labels, parts, unit)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.suptitle(f"{_context(res)}: {suptitle}", fontsize=11)
    return _save(fig, path)


def plot_time_breakdown(res: Results, path: Path) -> Path:
    """Stacked bars: simulated seconds by part (FC GPU / FC-PIM, attention, comm., other)."""
    parts = [{k: _num(v) for k, v in (r["time_breakdown_s"] or {}).items()} for _, r in res.runs]
    return _breakdown(res, path, parts, "s", "simulated time (s), summed over iterations",
                      "time breakdown (labels: share of the run's time)", "where the time goes")


def plot_energy_breakdown(res: Results, path: Path) -> Path:
    """Stacked bars: energy per output token (J) by part; the total alone for results
    without ``energy_breakdown_j``."""
    parts = []
    for _, r in res.runs:
        tok = _num(r["output_tokens"])
        per = 1.0 / tok if tok > 0 else math.nan
        eb = r.get("energy_breakdown_j") or {"other": r["energy_j"]}
        parts.append({k: _num(v) * per for k, v in eb.items()})
    return _breakdown(res, path, parts, "J", "energy per output token (J)",
                      "energy breakdown (labels: share of the run's energy)",
                      "energy per output token")


def plot_fc_placement(res: Results, path: Path) -> Path | str:
    """Per iteration: decode tokens in flight (RLP x TLP) over simulated time, coloured by the
    share of the iteration's FC time on the GPUs, with PAPI's alpha where it applies."""
    runs = [(n, r, _steps(r)) for n, r in res.runs]
    runs = [(n, r, s) for n, r, s in runs if s is not None][:MAX_PANELS]
    if not runs:
        return "needs the per-iteration log: rerun with --record-steps"
    fig = _figure(11, 2.4 * len(runs) + 1.0)
    axes = fig.subplots(len(runs), 1, squeeze=False, sharex=False)[:, 0]
    sc = None
    for ax, (n, r, s) in zip(axes, runs, strict=True):
        idx = _thin(len(s["start_s"]))
        t = np.asarray(s["start_s"], float)[idx]
        par = (np.asarray(s["rlp"], float) * np.asarray(s["tlp"], float))[idx]
        g = np.asarray(s["fc_gpu_s"], float)[idx]
        p = np.asarray(s["fc_pim_s"], float)[idx]
        tot = g + p
        share = np.divide(g, tot, out=np.full_like(g, np.nan), where=tot > 0)
        pre = np.asarray(s["prefill_tokens"], float)[idx] > 0
        sc = ax.scatter(t[~pre], par[~pre], c=share[~pre], cmap="coolwarm", vmin=0, vmax=1,
                        s=6, rasterized=True)
        if pre.any():
            ax.scatter(t[pre], par[pre], marker="^", s=14, facecolors="none",
                       edgecolors="k", linewidths=0.6, label="iteration with prefill")
        alpha = _num((r.get("config") or {}).get("alpha"))
        if math.isfinite(alpha):
            ax.axhline(alpha, color="k", ls="--", lw=1, label=f"alpha = {alpha:g}")
        ax.set_ylabel("RLP x TLP")
        top = max(float(np.nanmax(par)) if par.size else 1.0, alpha if math.isfinite(alpha)
                  else 0.0, 1.0)
        ax.set_ylim(-0.04 * top, 1.1 * top)  # prefill iterations (RLP 0) stay visible
        gpu_frac = _num(r.get("fc_on_gpu_fraction"))
        ax.set_title(f"{n}: FC placement {(r.get('config') or {}).get('fc_placement', '?')}"
                     + (f", {gpu_frac:.0%} of decode FC FLOPs on GPU"
                        if math.isfinite(gpu_frac) else ""), fontsize=9)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("simulated time (s)")
    if sc is not None:
        fig.colorbar(sc, ax=list(axes), shrink=min(1.0, 2.5 / len(axes)), aspect=15,
                     label="share of FC time on GPU (0 = all on FC-PIM)")
    fig.suptitle(f"{_context(res)}: FC placement per iteration", fontsize=11)
    return _save(fig, path)


def plot_kv_tiers(res: Results, path: Path) -> Path | str:
    """KV on each tier (mean bars, peak markers, GB), attention time per tier (s), and with
    step logs, KV per tier over simulated time."""
    runs = _tier_runs(res)
    if not runs:
        return "no run has KV tiers (systems with kv_tier groups, e.g. pam, l-pim)"
    tiers: list[str] = []
    for _, r in runs:
        for t in r.get("kv_bytes_by_tier") or {}:
            if t not in tiers:
                tiers.append(t)
    over_time = [(n, r, s) for n, r in runs
                 if (s := _steps(r)) is not None and any(k.startswith("kv_bytes_") for k in s)]
    over_time = over_time[:MAX_PANELS]
    rows = 1 + len(over_time)
    fig = _figure(12, 3.8 + 2.3 * len(over_time))
    grid = fig.add_gridspec(rows, 2)
    ax_kv, ax_at = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    labels = [n for n, _ in runs]
    width = 0.8 / max(len(tiers), 1)
    x = np.arange(len(labels))
    for j, t in enumerate(tiers):
        color = TIER_COLORS[j % len(TIER_COLORS)]
        mean = [_num((r.get("kv_bytes_by_tier") or {}).get(t)) / 1e9 for _, r in runs]
        peak = [_num(((r.get("extra") or {}).get("kv_peak_bytes_by_tier") or {}).get(t)) / 1e9
                for _, r in runs]
        att = [_num((r.get("attention_time_by_tier_s") or {}).get(t)) for _, r in runs]
        off = x - 0.4 + width * (j + 0.5)
        ax_kv.bar(off, mean, width, color=color, label=f"{t} (mean)")
        ax_kv.scatter(off, peak, marker="_", s=200, color="k", zorder=3,
                      label="peak" if j == 0 else None)
        ax_at.bar(off, att, width, color=color, label=t)
    for ax in (ax_kv, ax_at):
        _bar_labels(ax, labels)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    ax_kv.set_ylabel("KV resident (GB)")
    ax_kv.set_title("KV cache by tier (bars: mean over iterations)")
    ax_at.set_ylabel("decode attention time (s)")
    ax_at.set_title("attention time by tier (tiers run in parallel)")
    for i, (n, _, s) in enumerate(over_time):
        ax = fig.add_subplot(grid[1 + i, :])
        idx = _thin(len(s["start_s"]))
        t = np.asarray(s["start_s"], float)[idx]
        keys = [k for k in s if k.startswith("kv_bytes_")]
        ys = [np.asarray(s[k], float)[idx] / 1e9 for k in keys]
        names = [k.removeprefix("kv_bytes_") for k in keys]
        cols = [TIER_COLORS[tiers.index(nm) % len(TIER_COLORS)] if nm in tiers else None
                for nm in names]
        ax.stackplot(t, *ys, labels=names, colors=cols, alpha=0.85)
        ax.set_ylabel("KV (GB)")
        ax.set_title(f"{n}: KV per tier over time", fontsize=9)
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
        if i == len(over_time) - 1:
            ax.set_xlabel("simulated time (s)")
    fig.suptitle(f"{_context(res)}: KV hierarchy", fontsize=11)
    return _save(fig, path)


_DRAW = {
    "throughput": plot_throughput,
    "latency_cdf": plot_latency_cdf,
    "time_breakdown": plot_time_breakdown,
    "energy_breakdown": plot_energy_breakdown,
    "fc_placement": plot_fc_placement,
    "kv_tiers": plot_kv_tiers,
}


def plot_results(results: Results | str | Path, out_dir: str | Path) -> PlotReport:
    """Draw every chart of :data:`CHARTS` the results allow into ``out_dir`` (created) as
    ``<chart>.png``; return the files written and the charts skipped with the reason."""
    res = results if isinstance(results, Results) else load_results(results)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ResultError(f"{out}: cannot create the plot folder ({err.strerror})") from None
    report = PlotReport()
    for name in CHARTS:
        got = _DRAW[name](res, out / f"{name}.png")
        if isinstance(got, Path):
            report.files[name] = got
        else:
            report.skipped[name] = got
    return report
