"""Figures in the papers' style for the reproductions (``pimserve reproduce``): grouped bars,
sweeps, stacked bars.

Each function takes plain numbers (already normalised by the caller), draws one PNG with
matplotlib's Agg canvas (object API: no pyplot, no global backend switch, so importing
pimserve leaves a notebook's backend alone) and returns its path. Paper values, when given,
are drawn as reference markers next to pimserve's bars, never mixed into them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf")


def _figure(**kw: object) -> Figure:
    """A figure on an Agg canvas (``Figure`` keyword arguments)."""
    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def _finish_panel(ax: Axes, x: np.ndarray, cats: Sequence[str], title: str, log: bool,
                  reference_line: float | None, rotation: int) -> None:
    """A bar panel's common dressing: reference line, category ticks, title, y scale, grid."""
    if reference_line is not None:
        ax.axhline(reference_line, color="black", lw=0.8)
    ax.set_xticks(x, cats, rotation=rotation, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    if log:
        ax.set_yscale("log")
        _plain_log_labels(ax)
    ax.grid(axis="y", alpha=0.3)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    return path


def _plain_log_labels(ax: Axes) -> None:
    """Label a log y axis with plain numbers (0.5, 2, 30) instead of powers of ten; minor
    ticks get labels too when the axis spans less than a factor of 6."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:.3g}")
    ax.yaxis.set_major_formatter(plain)
    lo, hi = ax.get_ylim()
    if lo > 0 and hi / lo < 6:
        ax.yaxis.set_minor_formatter(plain)
        ax.tick_params(axis="y", which="minor", labelsize=7)
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())


def grouped_bars(path: Path, panels: Mapping[str, Mapping[str, Sequence[float]]],
                 categories: Sequence[str] | Mapping[str, Sequence[str]], *, ylabel: str,
                 title: str, log: bool = False, reference_line: float | None = 1.0,
                 paper: Mapping[str, float] | None = None,
                 legend_outside: bool = False) -> Path:
    """One panel per key of ``panels``; in each, bars per category for every series.

    ``panels[panel][series]`` holds one value per category. ``categories`` is shared by the
    panels, or maps each panel to its own. ``paper`` maps a series to the paper's mean, drawn
    as a dashed line of the series' colour. NaN values leave their bar out.
    ``legend_outside`` puts the legend right of the last panel, clear of the bars.
    """
    n = len(panels)
    width = max(5.0, 4.2 * n) + (1.8 if legend_outside else 0.0)
    fig = _figure(figsize=(width, 3.6))
    axes = fig.subplots(1, n, sharey=True, squeeze=False)
    for ax, (pname, series) in zip(axes[0], panels.items(), strict=True):
        cats = categories[pname] if isinstance(categories, Mapping) else categories
        k = max(1, len(series))
        width = 0.8 / k
        x = np.arange(len(cats))
        for i, (sname, vals) in enumerate(series.items()):
            ax.bar(x + (i - (k - 1) / 2) * width, vals, width, label=sname,
                   color=COLORS[i % len(COLORS)])
            if paper and sname in paper:
                ax.axhline(paper[sname], color=COLORS[i % len(COLORS)], ls="--", lw=1)
        _finish_panel(ax, x, cats, pname, log, reference_line, rotation=45)
    axes[0][0].set_ylabel(ylabel)
    if legend_outside:
        axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def sweep(path: Path, x: Sequence[float], series: Mapping[str, Sequence[float]], *,
          xlabel: str, ylabel: str, title: str, logx: bool = False,
          log: bool = False) -> Path:
    """Lines of ``series`` over ``x`` (e.g. normalised throughput over batch size)."""
    fig = _figure(figsize=(5.2, 3.6))
    ax = fig.subplots()
    for i, (name, ys) in enumerate(series.items()):
        ax.plot(x, ys, marker="o", label=name, color=COLORS[i % len(COLORS)])
    if logx:
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(x), [str(v) for v in x])
    if log:
        ax.set_yscale("log")
        _plain_log_labels(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _stack(ax: Axes, bars: Mapping[str, Mapping[str, float]], parts: Sequence[str],
           percent: bool, labelled: bool = True) -> np.ndarray:
    """Draw one stacked bar per key of ``bars`` (``bars[bar][part]``), parts in ``parts``
    order and colour (each bar scaled to 100 with ``percent``); returns the bars' x."""
    x = np.arange(len(bars))
    bottom = np.zeros(len(bars))
    for i, p in enumerate(parts):
        vals = np.array([b.get(p, 0.0) for b in bars.values()], dtype=float)
        if percent:
            tot = np.array([sum(b.values()) or 1.0 for b in bars.values()])
            vals = 100 * vals / tot
        ax.bar(x, vals, 0.6, bottom=bottom, color=COLORS[i % len(COLORS)],
               label=p if labelled else None)
        bottom += vals
    return x


def stacked_bars(path: Path, bars: Mapping[str, Mapping[str, float]], *, ylabel: str,
                 title: str, percent: bool = False) -> Path:
    """One stacked bar per key of ``bars``; ``bars[bar][part]`` is that part's height."""
    parts: list[str] = []
    for b in bars.values():
        parts += [p for p in b if p not in parts]
    fig = _figure(figsize=(max(4.5, 1.1 * len(bars) + 2.5), 3.8))
    ax = fig.subplots()
    x = _stack(ax, bars, parts, percent)
    ax.set_xticks(x, list(bars), rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def bars_with_reference(path: Path, panels: Mapping[str, Mapping[str, float]], *,
                        ylabel: str, title: str,
                        paper: Mapping[str, Mapping[str, float]] | None = None,
                        log: bool = False, reference_line: float | None = 1.0) -> Path:
    """One panel per key of ``panels``, one bar per category (``panels[panel][category]``),
    each labelled with its value; ``paper[panel][category]``, when given, is drawn as a black
    diamond on the bar's position (the paper's value, a reference beside pimserve's bar)."""
    n = len(panels)
    fig = _figure(figsize=(max(5.0, 4.4 * n), 3.9))
    axes = fig.subplots(1, n, squeeze=False)
    for ax, (pname, bars) in zip(axes[0], panels.items(), strict=True):
        cats = list(bars)
        x = np.arange(len(cats))
        vals = np.array([bars[c] for c in cats], dtype=float)
        ax.bar(x, vals, 0.6, color=[COLORS[i % len(COLORS)] for i in range(len(cats))],
               label="pimserve")
        for xi, v in zip(x, vals, strict=True):
            if np.isfinite(v):
                ax.annotate(f"{v:.3g}", (xi, v), ha="center", va="bottom", fontsize=7,
                            xytext=(0, 2), textcoords="offset points")
        ref = (paper or {}).get(pname, {})
        px = [xi for xi, c in zip(x, cats, strict=True) if c in ref]
        if px:
            ax.scatter(px, [ref[c] for c in cats if c in ref], marker="D", color="black",
                       zorder=3, s=22, label="paper")
        _finish_panel(ax, x, cats, pname, log, reference_line, rotation=25)
        ax.legend(fontsize=7, loc="upper left")
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def stacked_grid(path: Path, grid: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
                 *, title: str, percent: bool = True) -> Path:
    """Rows of panels of stacked bars: ``grid[row][panel][bar][part]`` is a part's height.

    Each row is one quantity (its name is the row's y label, e.g. "% of KV bytes"), each panel
    one configuration, each bar one system; parts keep one colour across the figure.
    ``percent`` scales every bar to 100.
    """
    parts: list[str] = []
    for row in grid.values():
        for panel in row.values():
            for bar in panel.values():
                parts += [p for p in bar if p not in parts]
    rows = list(grid)
    cols = list(dict.fromkeys(c for r in grid.values() for c in r))
    fig = _figure(figsize=(max(5.0, 2.6 * len(cols) + 1.2), 2.6 * len(rows) + 0.8))
    axes = fig.subplots(len(rows), len(cols), squeeze=False, sharey="row")
    for i, rname in enumerate(rows):
        for j, cname in enumerate(cols):
            ax = axes[i][j]
            bars = grid[rname].get(cname, {})
            x = _stack(ax, bars, parts, percent, labelled=i == 0 and j == 0)
            ax.set_xticks(x, list(bars), fontsize=8)
            if i == 0:
                ax.set_title(cname, fontsize=9)
            if j == 0:
                ax.set_ylabel(rname, fontsize=9)
            ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="upper right", fontsize=8, ncol=len(parts))
    fig.suptitle(title, fontsize=11, x=0.02, ha="left")
    return _save(fig, path)
