"""Figures in the papers' style for the reproductions: grouped bars, sweeps, stacked bars.

Each function takes plain numbers (already normalised by the caller), draws one PNG with
matplotlib's Agg backend and returns its path. Paper values, when given, are drawn as
reference markers next to pimserve's bars, never mixed into them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf")


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def grouped_bars(path: Path, panels: Mapping[str, Mapping[str, Sequence[float]]],
                 categories: Sequence[str], *, ylabel: str, title: str,
                 log: bool = False, reference_line: float | None = 1.0,
                 paper: Mapping[str, float] | None = None) -> Path:
    """One panel per key of ``panels``; in each, bars per category for every series.

    ``panels[panel][series]`` holds one value per category. ``paper`` maps a series to the
    paper's mean, drawn as a dashed line of the series' colour.
    """
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(max(5.0, 4.2 * n), 3.6), sharey=True, squeeze=False)
    for ax, (pname, series) in zip(axes[0], panels.items(), strict=True):
        k = max(1, len(series))
        width = 0.8 / k
        x = np.arange(len(categories))
        for i, (sname, vals) in enumerate(series.items()):
            ax.bar(x + (i - (k - 1) / 2) * width, vals, width, label=sname,
                   color=COLORS[i % len(COLORS)])
            if paper and sname in paper:
                ax.axhline(paper[sname], color=COLORS[i % len(COLORS)], ls="--", lw=1)
        if reference_line is not None:
            ax.axhline(reference_line, color="black", lw=0.8)
        ax.set_xticks(x, categories, rotation=45, ha="right", fontsize=8)
        ax.set_title(pname, fontsize=10)
        if log:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def sweep(path: Path, x: Sequence[float], series: Mapping[str, Sequence[float]], *,
          xlabel: str, ylabel: str, title: str, logx: bool = False,
          log: bool = False) -> Path:
    """Lines of ``series`` over ``x`` (e.g. normalised throughput over batch size)."""
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for i, (name, ys) in enumerate(series.items()):
        ax.plot(x, ys, marker="o", label=name, color=COLORS[i % len(COLORS)])
    if logx:
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(x), [str(v) for v in x])
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def stacked_bars(path: Path, bars: Mapping[str, Mapping[str, float]], *, ylabel: str,
                 title: str, percent: bool = False) -> Path:
    """One stacked bar per key of ``bars``; ``bars[bar][part]`` is that part's height."""
    parts: list[str] = []
    for b in bars.values():
        parts += [p for p in b if p not in parts]
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(bars) + 2.5), 3.8))
    x = np.arange(len(bars))
    bottom = np.zeros(len(bars))
    for i, p in enumerate(parts):
        vals = np.array([b.get(p, 0.0) for b in bars.values()], dtype=float)
        if percent:
            tot = np.array([sum(b.values()) or 1.0 for b in bars.values()])
            vals = 100 * vals / tot
        ax.bar(x, vals, 0.6, bottom=bottom, label=p, color=COLORS[i % len(COLORS)])
        bottom += vals
    ax.set_xticks(x, list(bars), rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
