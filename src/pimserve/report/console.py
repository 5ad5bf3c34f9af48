"""Printing results: rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from pimserve.jsonutil import to_jsonable

console = Console(width=None if sys.stdout.isatty() else 160)


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout (no colour, safe to pipe)."""
    print(json.dumps(to_jsonable(obj), indent=2))


def print_table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = ""
) -> None:
    """Print a rich table; numeric cells are right-aligned."""
    table = Table(title=title, caption=caption or None, header_style="bold")
    for i, c in enumerate(columns):
        # the first column names things (systems, kernels): never cut it to "a100..."
        table.add_column(c, justify="left" if i == 0 else "right", no_wrap=i == 0,
                         min_width=max((len(fmt(r[0])) for r in rows), default=0)
                         if i == 0 else None)
    for r in rows:
        table.add_row(*[fmt(v) for v in r])
    console.print(table)


def fmt(v: Any) -> str:
    """Human formatting: 3 significant digits for floats, thousands separators for ints."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int | np.integer):
        return f"{int(v):,}"
    if isinstance(v, float | np.floating):
        f = float(v)
        if not math.isfinite(f):
            return "-"
        if f == 0:
            return "0"
        if abs(f) >= 1e5:
            return f"{f:,.0f}"  # 42,720, not 4.272e+04
        if abs(f) >= 1e3:
            return f"{f:,.1f}"
        if abs(f) < 1e-3:
            return f"{f:.3g}"
        return f"{f:.4g}"
    return str(v)
