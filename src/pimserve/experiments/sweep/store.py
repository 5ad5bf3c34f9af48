"""The results store of a sweep: one SQLite file, append-only, one row per point.

``DIR/sweep.sqlite`` (SQLite 3, WAL journal) holds:

- ``points``: one row per point, keyed by ``key`` (see :func:`.resolve.point_key`); written
  with ``INSERT OR IGNORE`` in one transaction per point, so a point is stored exactly once
  however many processes (workers, concurrent sweeps) finish it, and a process killed at
  any moment leaves every committed point intact and nothing half-written. Columns: the
  metadata (:data:`META_COLUMNS`), ``param.<path>`` for every parameter, and every result
  field of :class:`~pimserve.engine.result.RunResult` (dict fields flattened as
  ``<field>_<key>``, e.g. ``tpot_ms_p99``, ``time_breakdown_s_attention``), plus the hardware
  cost (``hw_*``). Columns are added as new fields appear (``ALTER TABLE`` inside the
  writing transaction).
- ``sweeps``: one row per start of a sweep (name, spec, strategy, points, version, time).
- ``errors``: points that failed with an unexpected exception (a pimserve bug, not a bad
  configuration): key, reason, traceback. They are not in ``points``, so ``--resume``
  retries them.

Read it with ``sqlite3``, ``pandas.read_sql("select * from points", con)``, Polars or DuckDB
(``sqlite_scan``), or export it to CSV or Parquet (:meth:`Store.export`).
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pimserve.errors import ConfigurationError, ResultError

STORE_FILE = "sweep.sqlite"
META_COLUMNS: tuple[tuple[str, str], ...] = (
    ("key", "TEXT PRIMARY KEY"),
    ("sweep", "TEXT"),          # the spec's name
    ("status", "TEXT"),         # ok | invalid
    ("reason", "TEXT"),         # invalid: why, in one line
    ("pimserve_version", "TEXT"),
    ("params_json", "TEXT"),    # the parameter values, JSON
    ("config_json", "TEXT"),    # the resolved configuration, canonical JSON
    ("finished_at_s", "REAL"),  # Unix time the row was written, s
    ("run_wall_s", "REAL"),     # wall time of the simulation, s
    ("hw_pim_logic_mm2", "REAL"),  # added PIM logic area (hardware.area), mm²; NULL: n/a
    ("hw_pim_power_w", "REAL"),    # PIM power (hardware.area), W; NULL: n/a
)
"""Columns every row has, with their SQLite types."""

BUSY_TIMEOUT_S = 120.0  # how long a writer waits for another's transaction
_SAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def column_name(name: str) -> str:
    """A column name safe to quote: letters, digits, ``_ . -`` (others become ``_``)."""
    return _SAFE.sub("_", str(name))[:200]


def _sql_value(v: Any) -> Any:
    """A Python value as SQLite stores it: bool -> 0/1, NaN/inf -> NULL, containers -> JSON."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v if -(2**63) <= v < 2**63 else float(v)
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if hasattr(v, "item"):  # numpy scalar
        return _sql_value(v.item())
    from pimserve.jsonutil import to_jsonable

    return json.dumps(to_jsonable(v), sort_keys=True)


def _sql_type(v: Any) -> str:
    if isinstance(v, int):
        return "INTEGER"
    if isinstance(v, float):
        return "REAL"
    return "TEXT"


def store_path(folder: str | Path) -> Path:
    """The SQLite file of a sweep folder (or the file itself when given)."""
    p = Path(folder)
    return p if p.suffix in (".sqlite", ".db") else p / STORE_FILE


class Store:
    """A sweep's results store; one connection per process (safe across ``fork``)."""

    def __init__(self, folder: str | Path, create: bool = True):
        self.path = store_path(folder)
        if not create and not self.path.is_file():
            raise ResultError(f"{self.path.parent}: no sweep store ({STORE_FILE}) there; run "
                              "`pimserve sweep SPEC.yaml --out DIR` first")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con: sqlite3.Connection | None = None
        self._pid = -1
        self._cols: set[str] = set()
        self._create = create
        self._connect()

    # -- connection ---------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._con is not None and self._pid == os.getpid():
            return self._con
        # a connection must not cross fork: a child opens its own
        try:
            con = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
            con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if self._create:
                self._init(con)
            else:
                con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as err:
            raise ResultError(f"{self.path}: not a readable sweep store ({err})") from None
        self._con, self._pid, self._cols = con, os.getpid(), set()
        return con

    def _init(self, con: sqlite3.Connection) -> None:
        for attempt in range(50):
            try:
                mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise ConfigurationError(f"{self.path}: SQLite cannot use a WAL journal "
                                             f"there (got {mode}); use a local folder")
                con.execute("PRAGMA synchronous = NORMAL")
                con.execute("BEGIN IMMEDIATE")
                cols = ", ".join(f'"{n}" {t}' for n, t in META_COLUMNS)
                con.execute(f"CREATE TABLE IF NOT EXISTS points ({cols})")
                con.execute("CREATE TABLE IF NOT EXISTS sweeps (id INTEGER PRIMARY KEY "
                            "AUTOINCREMENT, name TEXT, started_at_s REAL, pimserve_version "
                            "TEXT, strategy TEXT, points INTEGER, spec_json TEXT)")
                con.execute("CREATE TABLE IF NOT EXISTS errors (id INTEGER PRIMARY KEY "
                            "AUTOINCREMENT, key TEXT, sweep TEXT, at_s REAL, reason TEXT, "
                            "traceback TEXT)")
                con.execute("COMMIT")
                return
            except sqlite3.OperationalError as err:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                if "locked" not in str(err) and "busy" not in str(err):
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise ConfigurationError(f"{self.path}: the store stayed locked by another process")

    def close(self) -> None:
        if self._con is not None and self._pid == os.getpid():
            self._con.close()
        self._con = None

    # -- writing ------------------------------------------------------------------------
    def _columns(self, con: sqlite3.Connection) -> set[str]:
        return {r[1] for r in con.execute("PRAGMA table_info(points)")}

    def put(self, row: Mapping[str, Any]) -> bool:
        """Store one point in one transaction; True if it was new (False: the key was
        already there, and the row is left as it was)."""
        con = self._connect()
        data = {column_name(k): _sql_value(v) for k, v in row.items()}
        data = {k: v for k, v in data.items() if v is not None}
        if "key" not in data:
            raise ValueError("a row needs a key")
        con.execute("BEGIN IMMEDIATE")
        try:
            missing = [c for c in data if c not in self._cols]
            if missing:
                self._cols = self._columns(con)
                for c in missing:
                    if c not in self._cols:
                        con.execute(f'ALTER TABLE points ADD COLUMN "{c}" '
                                    f"{_sql_type(data[c])}")
                        self._cols.add(c)
            names = ", ".join(f'"{c}"' for c in data)
            marks = ", ".join("?" for _ in data)
            cur = con.execute(f"INSERT OR IGNORE INTO points ({names}) VALUES ({marks})",
                              list(data.values()))
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        return cur.rowcount == 1

    def log_sweep(self, name: str, strategy: str, points: int, spec: Mapping[str, Any]) -> None:
        """Record the start of a sweep."""
        from pimserve.experiments.sweep.resolve import version

        con = self._connect()
        con.execute("INSERT INTO sweeps (name, started_at_s, pimserve_version, strategy, "
                    "points, spec_json) VALUES (?, ?, ?, ?, ?, ?)",
                    (name, time.time(), version(), strategy, points,
                     json.dumps(spec, sort_keys=True, default=str)))

    def log_error(self, key: str, sweep: str, reason: str, traceback: str) -> None:
        """Record a point that raised an unexpected exception."""
        con = self._connect()
        con.execute("INSERT INTO errors (key, sweep, at_s, reason, traceback) VALUES "
                    "(?, ?, ?, ?, ?)", (key, sweep, time.time(), reason, traceback))

    # -- reading ------------------------------------------------------------------------
    def keys(self, among: Iterable[str] | None = None) -> set[str]:
        """Keys of the stored points (only those in ``among`` when given)."""
        con = self._connect()
        if among is None:
            return {r[0] for r in con.execute("SELECT key FROM points")}
        wanted = list(among)
        out: set[str] = set()
        for i in range(0, len(wanted), 500):
            part = wanted[i:i + 500]
            q = ", ".join("?" for _ in part)
            out.update(r[0] for r in con.execute(f"SELECT key FROM points WHERE key IN ({q})",
                                                 part))
        return out

    def count(self) -> int:
        return int(self._connect().execute("SELECT count(*) FROM points").fetchone()[0])

    def rows(self, keys: Sequence[str] | None = None,
             sweep: str | None = None) -> list[dict[str, Any]]:
        """Stored rows as dicts (missing columns are None), in the order written; only
        ``keys`` (in their order) or only sweep ``sweep`` when given."""
        con = self._connect()
        cur = con.execute("SELECT * FROM points ORDER BY rowid")
        cols = [d[0] for d in cur.description]
        rows = [dict(zip(cols, r, strict=True)) for r in cur]
        if sweep is not None:
            rows = [r for r in rows if r.get("sweep") == sweep]
        if keys is not None:
            by = {r["key"]: r for r in rows}
            rows = [by[k] for k in keys if k in by]
        return rows

    def columns(self) -> list[str]:
        """Column names of ``points`` in table order."""
        return [r[1] for r in self._connect().execute("PRAGMA table_info(points)")]

    def errors(self) -> list[dict[str, Any]]:
        cur = self._connect().execute("SELECT * FROM errors ORDER BY id")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur]

    def sweeps(self) -> list[dict[str, Any]]:
        cur = self._connect().execute("SELECT * FROM sweeps ORDER BY id")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur]

    # -- export -------------------------------------------------------------------------
    def export_csv(self, path: str | Path, sweep: str | None = None) -> Path:
        """All points as CSV (one header row; empty cells for missing values)."""
        import csv

        rows, cols = self.rows(sweep=sweep), self.columns()
        out = Path(path)
        with out.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols)
            for r in rows:
                w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
        return out

    def export_parquet(self, path: str | Path, sweep: str | None = None) -> Path:
        """All points as Parquet (needs pyarrow: ``pip install 'pimserve[store]'``); each
        column typed int64, float64 or string by its values."""
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigurationError("Parquet export needs pyarrow: pip install "
                                     "'pimserve[store]' (or pip install pyarrow); --csv "
                                     "needs nothing") from None
        rows, cols = self.rows(sweep=sweep), self.columns()
        arrays = {}
        for c in cols:
            vals = [r.get(c) for r in rows]
            present = [v for v in vals if v is not None]
            if present and all(isinstance(v, int) for v in present):
                arrays[c] = pa.array(vals, type=pa.int64())
            elif present and all(isinstance(v, int | float) for v in present):
                arrays[c] = pa.array([None if v is None else float(v) for v in vals],
                                     type=pa.float64())
            else:
                arrays[c] = pa.array([None if v is None else str(v) for v in vals],
                                     type=pa.string())
        out = Path(path)
        pq.write_table(pa.table(arrays), out)
        return out
