"""Trace loaders: real request logs -> :class:`~pimserve.workload.request.Requests`.

Each format is a function registered in :data:`TRACE_LOADERS`; :func:`load_trace` dispatches by
name. Formats:

- ``azure``: Azure LLM inference trace CSV ``TIMESTAMP,ContextTokens,GeneratedTokens`` with
  timestamps like ``2023-11-16 18:15:46.6805900`` (parsed exactly, to the nanosecond).
- ``mooncake``: Mooncake JSONL, one object per line with ``timestamp`` (ms), ``input_length``,
  ``output_length`` and ``hash_ids`` (KV-block hashes, kept as ``prefix_block_ids``).
- ``dolly``: ``category,lin,lout`` token lengths; no timestamps (every arrival is 0).
- ``arxiv``: ``num_prefill_tokens,num_decode_tokens,...`` lengths; no timestamps.
- ``generic``: any CSV or JSONL with a column mapping (arrival, prompt, output).

Conventions shared by all loaders: arrival times are seconds since the earliest request (the
first request arrives at 0); request ids are the 0-based index of the data row in the file;
rows must be in time order unless ``sort=True`` is passed. Every bad row raises a one-line
:class:`~pimserve.errors.TraceError` naming the file, the 1-based line number (the header is
line 1) and the offending value; a missing file, a header without the required columns and a
file without requests do too. Blank lines are skipped.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pimserve.errors import ConfigurationError, TraceError
from pimserve.fileio import MAX_TRACE_BYTES, read_bounded
from pimserve.registry import Registry
from pimserve.workload.request import Requests

__all__ = ["TRACE_LOADERS", "load_trace"]

TraceLoader = Callable[..., Requests]

#: Trace formats by name; each loader is ``loader(path, **options) -> Requests``.
TRACE_LOADERS: Registry[TraceLoader] = Registry("trace format")

PathLike = str | os.PathLike[str]


def load_trace(path: PathLike, format: str, **options: Any) -> Requests:
    """Load the trace at ``path`` in the registered ``format`` (see :data:`TRACE_LOADERS`).

    ``options`` go to the format's loader (for example ``category=`` for ``dolly``,
    ``columns=``/``time_unit=`` for ``generic``, ``sort=`` for timestamped formats); an option
    the loader does not take raises :class:`ConfigurationError` listing the accepted ones.
    """
    loader = TRACE_LOADERS.get(format)
    accepted = [
        p.name
        for p in inspect.signature(loader).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigurationError(
            f"trace format '{format}' has no option {', '.join(repr(u) for u in unknown)} "
            f"(accepted: {', '.join(accepted) or 'none'})"
        )
    return loader(path, **options)


# -- reading -------------------------------------------------------------------------------


def _read_text(path: PathLike) -> tuple[str, str]:
    """Return (display name, UTF-8 text) of ``path``; one-line TraceError if unreadable."""
    name = os.fspath(path)
    p = Path(name)
    try:
        data = read_bounded(p, MAX_TRACE_BYTES, "request trace", text=True)
    except FileNotFoundError:
        raise TraceError(f"trace file {name} not found") from None
    except IsADirectoryError:
        raise TraceError(f"trace {name} is a directory, not a file") from None
    except OSError as exc:
        raise TraceError(f"trace {name} cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TraceError(f"{name} line {line}: not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise TraceError(f"trace {name} has no requests (the file is empty)")
    return name, text


def _csv_table(
    path: PathLike, required: Sequence[str]
) -> tuple[str, dict[str, int], list[int], list[list[str]]]:
    """Read a CSV with a header that must contain ``required``.

    Returns (display name, column -> index, line number of each data row, data rows); rows are
    checked to have as many fields as the header.
    """
    name, text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    lines: list[int] = []
    rows: list[list[str]] = []
    header: list[str] | None = None
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if header is None:
                header = [h.strip() for h in row]
                missing = [c for c in required if c not in header]
                if missing:
                    raise TraceError(
                        f"{name} line {reader.line_num}: header lacks column(s) "
                        f"{', '.join(missing)} (expected {','.join(required)}; "
                        f"found {','.join(header)})"
                    )
                continue
            if len(row) != len(header):
                raise TraceError(
                    f"{name} line {reader.line_num}: expected {len(header)} fields "
                    f"({','.join(header)}), got {len(row)} ({','.join(row)!r})"
                )
            lines.append(reader.line_num)
            rows.append(row)
    except csv.Error as exc:
        raise TraceError(f"{name} line {reader.line_num}: malformed CSV ({exc})") from None
    assert header is not None  # the text is not blank, so there is a first row
    if not rows:
        raise TraceError(f"trace {name} has no requests (only a header)")
    return name, {h: i for i, h in enumerate(header)}, lines, rows


def _jsonl_records(path: PathLike) -> tuple[str, list[int], list[dict[str, Any]]]:
    """Read JSON Lines: (display name, line numbers, one dict per non-blank line)."""
    name, text = _read_text(path)
    lines: list[int] = []
    recs: list[dict[str, Any]] = []
    for ln, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise TraceError(f"{name} line {ln}: not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise TraceError(f"{name} line {ln}: expected a JSON object (got {type(rec).__name__})")
        lines.append(ln)
        recs.append(rec)
    if not recs:
        raise TraceError(f"trace {name} has no requests")
    return name, lines, recs


# -- field parsers -------------------------------------------------------------------------


def _pos_int(name: str, line: int, field: str, value: Any) -> int:
    """``value`` as an integer >= 1, else a TraceError naming file, line, field and value."""
    if isinstance(value, str):
        try:
            v = int(value)
        except ValueError:
            v = 0
    elif isinstance(value, bool):
        v = 0
    elif isinstance(value, int):
        v = value
    elif isinstance(value, float) and value.is_integer():
        v = int(value)
    else:
        v = 0
    if v < 1:
        raise TraceError(f"{name} line {line}: {field} must be a positive integer (got {value!r})")
    return v


def _number(name: str, line: int, field: str, value: Any, unit: str) -> float:
    """``value`` as a finite float, else a TraceError naming file, line, field and value."""
    if isinstance(value, bool):
        v = math.nan
    elif isinstance(value, int | float):
        v = float(value)
    elif isinstance(value, str):
        try:
            v = float(value)
        except ValueError:
            v = math.nan
    else:
        v = math.nan
    if not math.isfinite(v):
        raise TraceError(
            f"{name} line {line}: {field} must be a finite number of {unit} (got {value!r})"
        )
    return v


def _missing_key(name: str, line: int, key: str, rec: Mapping[str, Any]) -> TraceError:
    found = ", ".join(rec) or "nothing"
    return TraceError(f"{name} line {line}: missing field '{key}' (found: {found})")


# -- assembling ----------------------------------------------------------------------------


def _finish(
    name: str,
    lines: Sequence[int],
    time_field: str | None,
    times: np.ndarray | None,
    prompt: list[int],
    output: list[int],
    *,
    ids: np.ndarray | None = None,
    prefix: list[tuple[int, ...]] | None = None,
    sort: bool = False,
    source: str,
    shown: Callable[[int], str] | None = None,
) -> Requests:
    """Build the table: check time order (or sort), rebase arrivals to the earliest request.

    ``times`` is ``None`` (no timestamps: every arrival 0), float64 seconds, or int64
    nanoseconds (exact timestamps); ``shown(i)`` renders row i's original time for errors.
    """
    n = len(prompt)
    if n == 0:
        raise TraceError(f"trace {name} has no requests")
    id_arr = np.arange(n, dtype=np.int64) if ids is None else ids
    pin = np.asarray(prompt, dtype=np.int64)
    pout = np.asarray(output, dtype=np.int64)
    if times is None:
        arrival = np.zeros(n)
    else:
        back = np.flatnonzero(np.diff(times) < 0)
        if back.size and not sort:
            i = int(back[0]) + 1
            cur = shown(i) if shown else repr(times[i])
            prev = shown(i - 1) if shown else repr(times[i - 1])
            raise TraceError(
                f"{name} line {lines[i]}: {time_field} {cur} is earlier than the previous "
                f"row's {prev}; rows must be in time order: sort the file by that column "
                "(from Python, load_trace(..., sort=True) reorders it)"
            )
        if back.size:
            order = np.argsort(times, kind="stable")
            times = times[order]
            id_arr, pin, pout = id_arr[order], pin[order], pout[order]
            if prefix is not None:
                prefix = [prefix[j] for j in order]
        rel = times - times[0]
        arrival = rel.astype(np.int64) / 1e9 if rel.dtype.kind == "i" else rel.astype(float)
    return Requests(id_arr, arrival, pin, pout, prefix, source)


# -- formats -------------------------------------------------------------------------------

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


def _parse_timestamps(name: str, lines: Sequence[int], stamps: list[str]) -> np.ndarray:
    """Parse ``YYYY-MM-DD HH:MM:SS.fffffff`` strings to int64 nanoseconds, exactly."""
    example = "'2023-11-16 18:15:46.6805900'"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            ts = np.array(stamps, dtype="datetime64[ns]")
            bad = np.flatnonzero(np.isnat(ts))
        except (ValueError, Warning):
            ts, bad = None, None
        if ts is None or (bad is not None and bad.size):
            for i, s in enumerate(stamps):
                try:
                    ok = not np.isnat(np.datetime64(s, "ns"))
                except (ValueError, Warning):
                    ok = False
                if not ok:
                    raise TraceError(
                        f"{name} line {lines[i]}: TIMESTAMP must be a date-time like "
                        f"{example} (got {s!r})"
                    )
            raise TraceError(f"{name}: TIMESTAMP column could not be parsed")  # not reached
    return ts.astype(np.int64)


@TRACE_LOADERS.register(
    "azure", help="Azure LLM inference trace CSV: TIMESTAMP,ContextTokens,GeneratedTokens"
)
def load_azure(path: PathLike, *, sort: bool = False) -> Requests:
    """Azure LLM inference trace (2023/2024): ``TIMESTAMP,ContextTokens,GeneratedTokens``.

    Timestamps (``2023-11-16 18:15:46.6805900``, 7 fractional digits) are parsed exactly to
    integer nanoseconds; arrival = seconds since the earliest row. ContextTokens is the prompt
    length and GeneratedTokens the output length, both in tokens and >= 1.
    """
    name, col, lines, rows = _csv_table(path, AZURE_COLUMNS)
    it, ic, ig = (col[c] for c in AZURE_COLUMNS)
    stamps = [r[it].strip() for r in rows]
    prompt = [_pos_int(name, ln, "ContextTokens", r[ic]) for ln, r in zip(lines, rows, strict=True)]
    output = [
        _pos_int(name, ln, "GeneratedTokens", r[ig]) for ln, r in zip(lines, rows, strict=True)
    ]
    ns = _parse_timestamps(name, lines, stamps)
    return _finish(
        name, lines, "TIMESTAMP", ns, prompt, output, sort=sort,
        source=f"azure trace {name}", shown=lambda i: repr(stamps[i]),
    )  # fmt: skip


MOONCAKE_FIELDS = ("timestamp", "input_length", "output_length", "hash_ids")


@TRACE_LOADERS.register(
    "mooncake", help="Mooncake JSONL: timestamp (ms), input_length, output_length, hash_ids"
)
def load_mooncake(path: PathLike, *, sort: bool = False) -> Requests:
    """Mooncake trace JSONL: ``{"timestamp": ms, "input_length", "output_length", "hash_ids"}``.

    ``timestamp`` is in milliseconds; arrival = seconds since the earliest row. ``hash_ids`` (the
    prompt's KV-block hashes, 512 tokens a block in Mooncake's release) become
    ``prefix_block_ids``.
    """
    name, lines, recs = _jsonl_records(path)
    times = np.empty(len(recs))
    prompt: list[int] = []
    output: list[int] = []
    prefix: list[tuple[int, ...]] = []
    for i, (ln, rec) in enumerate(zip(lines, recs, strict=True)):
        for key in MOONCAKE_FIELDS:
            if key not in rec:
                raise _missing_key(name, ln, key, rec)
        times[i] = _number(name, ln, "timestamp", rec["timestamp"], "milliseconds")
        prompt.append(_pos_int(name, ln, "input_length", rec["input_length"]))
        output.append(_pos_int(name, ln, "output_length", rec["output_length"]))
        h = rec["hash_ids"]
        if not isinstance(h, list) or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in h
        ):
            raise TraceError(
                f"{name} line {ln}: hash_ids must be a list of integers (got {h!r:.60})"
            )
        prefix.append(tuple(h))
    return _finish(
        name, lines, "timestamp", times / 1e3, prompt, output, prefix=prefix, sort=sort,
        source=f"mooncake trace {name}", shown=lambda i: f"{recs[i]['timestamp']!r} ms",
    )  # fmt: skip


DOLLY_COLUMNS = ("category", "lin", "lout")


@TRACE_LOADERS.register("dolly", help="Dolly token lengths CSV: category,lin,lout (no timestamps)")
def load_dolly(path: PathLike, *, category: str | Sequence[str] | None = None) -> Requests:
    """Dolly token lengths: ``category,lin,lout`` (prompt and response lengths in tokens).

    ``category`` keeps only rows of that category (or of any of a list of categories); a
    category absent from the file raises TraceError listing those present. There are no
    timestamps: every arrival is 0 (a static batch) until ``with_arrivals`` applies a process.
    """
    name, col, lines, rows = _csv_table(path, DOLLY_COLUMNS)
    icat, iin, iout = (col[c] for c in DOLLY_COLUMNS)
    wanted: set[str] | None = None
    if category is not None:
        wanted = {category} if isinstance(category, str) else set(category)
        present = {r[icat].strip() for r in rows}
        absent = sorted(wanted - present)
        if absent:
            raise TraceError(
                f"trace {name} has no requests with category {', '.join(absent)} "
                f"(categories in file: {', '.join(sorted(present))})"
            )
    keep_lines: list[int] = []
    ids: list[int] = []
    prompt: list[int] = []
    output: list[int] = []
    for j, (ln, r) in enumerate(zip(lines, rows, strict=True)):
        if wanted is not None and r[icat].strip() not in wanted:
            continue
        prompt.append(_pos_int(name, ln, "lin", r[iin]))
        output.append(_pos_int(name, ln, "lout", r[iout]))
        keep_lines.append(ln)
        ids.append(j)
    what = "" if wanted is None else f" category {','.join(sorted(wanted))}"
    return _finish(
        name, keep_lines, None, None, prompt, output,
        ids=np.asarray(ids, dtype=np.int64), source=f"dolly trace {name}{what}",
    )  # fmt: skip


ARXIV_COLUMNS = ("num_prefill_tokens", "num_decode_tokens")


@TRACE_LOADERS.register(
    "arxiv", help="arXiv summarization lengths CSV: num_prefill_tokens,num_decode_tokens,..."
)
def load_arxiv(path: PathLike) -> Requests:
    """arXiv summarization lengths (vidur): ``num_prefill_tokens,num_decode_tokens,...``.

    Other columns (``num_total_tokens``, ``pd_ratio``) are ignored. No timestamps: every
    arrival is 0.
    """
    name, col, lines, rows = _csv_table(path, ARXIV_COLUMNS)
    ip, io_ = col["num_prefill_tokens"], col["num_decode_tokens"]
    prompt = [
        _pos_int(name, ln, "num_prefill_tokens", r[ip]) for ln, r in zip(lines, rows, strict=True)
    ]
    output = [
        _pos_int(name, ln, "num_decode_tokens", r[io_]) for ln, r in zip(lines, rows, strict=True)
    ]
    return _finish(name, lines, None, None, prompt, output, source=f"arxiv trace {name}")


GENERIC_KEYS = ("arrival", "prompt", "output")
TIME_UNITS = {"s": 1.0, "ms": 1e-3}


@TRACE_LOADERS.register("generic", help="any CSV or JSONL with a column mapping")
def load_generic(
    path: PathLike,
    *,
    columns: Mapping[str, str],
    time_unit: str | None = None,
    file_format: str | None = None,
    sort: bool = False,
) -> Requests:
    """Any CSV (with a header) or JSON Lines file, given which column is which.

    ``columns`` maps ``prompt`` and ``output`` (required) and ``arrival`` (optional) to column
    names in the file, e.g. ``{"arrival": "ts", "prompt": "in", "output": "out"}``. When
    ``arrival`` is mapped, ``time_unit`` must say its unit: ``"s"`` or ``"ms"``; without it every
    arrival is 0. ``file_format`` is ``"csv"`` or ``"jsonl"``; by default it follows the
    extension (``.jsonl``/``.json``/``.ndjson`` -> JSONL, anything else CSV).
    """
    if not isinstance(columns, Mapping):
        raise ConfigurationError(
            "generic trace: columns must be a mapping like "
            "{'arrival': 'ts', 'prompt': 'in', 'output': 'out'}"
        )
    extra = sorted(set(columns) - set(GENERIC_KEYS))
    if extra:
        raise ConfigurationError(
            f"generic trace: columns has unknown key(s) {', '.join(extra)} "
            f"(accepted: {', '.join(GENERIC_KEYS)})"
        )
    for key in ("prompt", "output"):
        if key not in columns:
            raise ConfigurationError(f"generic trace: columns must map '{key}' to a column name")
    has_time = "arrival" in columns
    if has_time and time_unit not in TIME_UNITS:
        raise ConfigurationError(
            f"generic trace: time_unit must be one of {', '.join(map(repr, TIME_UNITS))} "
            f"when columns maps 'arrival' (got {time_unit!r})"
        )
    if not has_time and time_unit is not None:
        raise ConfigurationError("generic trace: time_unit given but columns maps no 'arrival'")
    if file_format is None:
        ext = Path(os.fspath(path)).suffix.lower()
        file_format = "jsonl" if ext in (".jsonl", ".json", ".ndjson") else "csv"
    if file_format not in ("csv", "jsonl"):
        raise ConfigurationError(
            f"generic trace: file_format must be 'csv' or 'jsonl' (got {file_format!r})"
        )
    pc, oc = columns["prompt"], columns["output"]
    tc = columns.get("arrival")
    unit = "seconds" if time_unit == "s" else "milliseconds"
    if file_format == "csv":
        required = [c for c in (tc, pc, oc) if c is not None]
        name, col, lines, rows = _csv_table(path, required)
        recs: Sequence[Mapping[str, Any]] = [{k: r[col[k]] for k in required} for r in rows]
    else:
        name, lines, recs = _jsonl_records(path)
    times = np.empty(len(recs)) if has_time else None
    prompt: list[int] = []
    output: list[int] = []
    for i, (ln, rec) in enumerate(zip(lines, recs, strict=True)):
        for key in (tc, pc, oc):
            if key is not None and key not in rec:
                raise _missing_key(name, ln, key, rec)
        if times is not None and tc is not None:
            times[i] = _number(name, ln, tc, rec[tc], unit)
        prompt.append(_pos_int(name, ln, pc, rec[pc]))
        output.append(_pos_int(name, ln, oc, rec[oc]))
    secs = None if times is None else times * TIME_UNITS[str(time_unit)]
    return _finish(
        name, lines, tc, secs, prompt, output, sort=sort, source=f"generic trace {name}",
        shown=None if times is None else (lambda i: f"{recs[i][tc]!r} {time_unit}"),
    )  # fmt: skip
