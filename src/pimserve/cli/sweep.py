"""`pimserve sweep SPEC.yaml`, `pimserve sweep report DIR`, `pimserve sweep export DIR`."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click

from pimserve.cli.base import FORMAT, check_output_folder, executor_options, main


class _RunByDefault(click.Group):
    """``pimserve sweep SPEC.yaml ...`` means ``pimserve sweep run SPEC.yaml ...``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@main.group(cls=_RunByDefault)
def sweep() -> None:
    """Design-space sweeps: `pimserve sweep SPEC.yaml` runs one (see docs/sweeps.md).

    The spec names a base system, model, workload and run options and the parameters to
    vary (any preset field or run option by path); points go to an append-only SQLite store
    keyed by the resolved configuration, so `--resume` runs only the missing ones. Then
    `pimserve sweep report DIR` shows the best points and the Pareto front and draws PNGs,
    and `pimserve sweep export DIR --csv/--parquet` writes a table.
    """


def _progress(enabled: bool) -> Any:
    if not enabled:
        return nullcontext()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from pimserve.report.console import console

    # no refresh thread (auto_refresh False): the pool forks its workers while the bar is
    # up, and a fork must not copy a thread that may hold the console's locks
    return Progress("[progress.description]{task.description}", BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), "eta", TimeRemainingColumn(),
                    console=console, transient=False, auto_refresh=False)


@sweep.command("run")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="folder of the store (sweep.sqlite) and report  [default: sweep-NAME/]")
@executor_options(store="the store")
@click.option("--limit", type=int, default=None,
              help="run only the first N points (grid/random) or N trials (optuna)")
@click.option("--n-requests", "n_requests", type=int, default=None,
              help="requests per point, replacing the spec's base.n_requests (to shrink "
                   "a sweep)")
@FORMAT
def run_cmd(spec: str, out: str | None, workers: int | None, ray_address: str | None,
            resume: bool, limit: int | None, n_requests: int | None, fmt: str) -> None:
    """Run the sweep SPEC (YAML) into a store; every point is validated before any runs."""
    import sys

    from pimserve.errors import ConfigurationError
    from pimserve.experiments.sweep import load_sweep_spec, make_executor, run_sweep
    from pimserve.report.console import console, print_json, print_table

    if limit is not None and limit < 1:
        raise ConfigurationError(f"--limit must be a positive integer (got {limit})")
    if n_requests is not None and n_requests < 1:
        raise ConfigurationError(f"--n-requests must be a positive integer (got {n_requests})")
    s = load_sweep_spec(spec)
    if n_requests is not None:
        s = s.with_base(n_requests=n_requests)
    folder = Path(out or f"sweep-{s.name}")
    check_output_folder(str(folder))
    show = fmt == "table" and console.is_terminal
    notes: list[str] = []

    def expanded(exp: Any) -> None:
        if fmt == "table":
            console.print(f"{s.name}: {len(exp.points)} points ({len(exp.invalid)} invalid), "
                          f"{exp.excluded} excluded by constraints, {exp.duplicates} "
                          f"repeated; resolved and checked in {exp.resolve_s:.1f} s")

    executor = make_executor(workers, ray_address)
    with _progress(show) as prog:
        task = prog.add_task(s.name, total=None) if prog else None

        def progress(done: int, total: int) -> None:
            if prog is not None:
                prog.update(task, completed=done, total=total)
                prog.refresh()

        try:
            res = run_sweep(s, folder, executor, resume=resume, limit=limit,
                            progress=progress, on_expanded=expanded)
        except KeyboardInterrupt:
            console.print(f"[yellow]interrupted[/yellow]: finished points are in "
                          f"{folder}; run again with --resume to finish")
            sys.exit(130)
        finally:
            executor.close()
    sm, exp = res.summary, res.expansion
    reasons: dict[str, int] = {}
    for p in exp.invalid:
        reasons[str(p.reason)] = reasons.get(str(p.reason), 0) + 1
    if fmt == "json":
        print_json({"sweep": s.name, "store": str(res.store), "points": sm.points,
                    "stored_before": sm.stored_before, "ran": sm.ran,
                    "invalid": sm.invalid, "excluded": exp.excluded,
                    "duplicates": exp.duplicates, "errors": sm.errors,
                    "wall_s": sm.wall_s, "points_per_s": sm.points_per_s,
                    "executor": sm.executor, "invalid_reasons": reasons})
    else:
        rows: list[list[Any]] = [
            ["points", sm.points], ["already stored (skipped)", sm.stored_before],
            ["simulated now", sm.ran], ["invalid (recorded with reason)", sm.invalid],
            ["excluded by constraints", exp.excluded], ["errors", len(sm.errors)],
            ["wall time (s)", sm.wall_s], ["points per second", sm.points_per_s],
        ]
        print_table(f"sweep {s.name} on {sm.executor}", ["", "value"], rows)
        notes.append(f"store: {res.store}; next: pimserve sweep report {folder}")
        for why, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:5]:
            notes.append(f"invalid x{n}: {why}")
        for n in notes:
            console.print(n, markup=False, highlight=False)
    if sm.errors:
        click.echo(f"error: {len(sm.errors)} points failed unexpectedly (a pimserve bug; "
                   f"tracebacks in {res.store}, table errors); first: {sm.errors[0]}",
                   err=True)
        sys.exit(1)


@sweep.command("report")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--objectives", default=None,
              help="comma-separated: throughput, energy_per_token, tpot_p99, hw_cost  "
                   "[default: all four]")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="folder for the PNGs and pareto.csv  [default: FOLDER/report/]")
@click.option("--sweep", "sweep_name", default=None,
              help="only the points of this sweep (the spec's name) when the store holds "
                   "several")
@click.option("--top", type=int, default=20, show_default=True,
              help="rows of the Pareto front to print (all are in pareto.csv)")
@FORMAT
def report_cmd(folder: str, objectives: str | None, out: str | None, sweep_name: str | None,
               top: int, fmt: str) -> None:
    """Best point per objective, the Pareto front and PNG figures of the store in FOLDER."""
    from pimserve.errors import ConfigurationError
    from pimserve.experiments.sweep import Store
    from pimserve.experiments.sweep.report import write_report
    from pimserve.experiments.sweep.spec import objective
    from pimserve.report.console import console, print_json, print_table

    if top < 0:
        raise ConfigurationError(f"--top must be 0 or more (got {top})")
    objs = None
    if objectives is not None:
        names = [n.strip() for n in objectives.split(",") if n.strip()]
        if not names:
            raise ConfigurationError("--objectives: name at least one (throughput, "
                                     "energy_per_token, tpot_p99, hw_cost)")
        objs = [objective(n, "--objectives") for n in names]
    store = Store(folder, create=False)
    dest = Path(out) if out else Path(folder) / "report"
    check_output_folder(str(dest))
    rep = write_report(store, dest, objs, sweep_name)
    if fmt == "json":
        print_json(rep.to_dict())
        return
    if rep.valid == 0:
        console.print(f"no valid point in {store.path} ({rep.invalid} invalid)")
    params = rep.parameters

    def show(p: dict[str, Any]) -> str:
        return ", ".join(f"{k}={v}" for k, v in p.items() if k in params)

    print_table(f"best point per objective ({rep.valid} valid of {rep.points})",
                ["objective", "best", "key", "parameters"],
                [[f"{b['objective']} ({b['direction']})", b["value"], b["key"][:12],
                  show(b["params"])] for b in rep.best])
    shown = rep.front[:top]
    print_table(f"Pareto front over {', '.join(o.name for o in rep.objectives)}: "
                f"{len(rep.front)} points",
                [*params, *(o.name for o in rep.objectives)],
                [[*(p["params"].get(k) for k in params),
                  *(p["objectives"][o.name] for o in rep.objectives)] for p in shown],
                caption=(f"first {len(shown)}; " if len(shown) < len(rep.front) else "")
                + f"all in {rep.files['pareto']}")
    for k, why in rep.skipped.items():
        console.print(f"skipped {k}: {why}", markup=False, highlight=False)
    pngs = [str(v) for k, v in rep.files.items() if str(v).endswith(".png")]
    console.print(f"{len(pngs)} figures in {dest}", markup=False, highlight=False)


@sweep.command("export")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--csv", "as_csv", is_flag=True, default=False, help="write FOLDER/points.csv")
@click.option("--parquet", "as_parquet", is_flag=True, default=False,
              help="write FOLDER/points.parquet (needs pip install 'pimserve[store]')")
@click.option("--sweep", "sweep_name", default=None, help="only this sweep's points")
@FORMAT
def export_cmd(folder: str, as_csv: bool, as_parquet: bool, sweep_name: str | None,
               fmt: str) -> None:
    """Write the store's points as CSV and/or Parquet next to it."""
    from pimserve.errors import ConfigurationError
    from pimserve.experiments.sweep import Store
    from pimserve.report.console import print_json, print_table

    if not (as_csv or as_parquet):
        raise ConfigurationError("give --csv and/or --parquet")
    store = Store(folder, create=False)
    files = {}
    if as_parquet:  # first: a missing pyarrow fails before anything is written
        files["parquet"] = store.export_parquet(store.path.parent / "points.parquet",
                                                sweep_name)
    if as_csv:
        files["csv"] = store.export_csv(store.path.parent / "points.csv", sweep_name)
    n = len(store.rows(sweep=sweep_name))
    if fmt == "json":
        print_json({"points": n, "files": {k: str(v) for k, v in files.items()}})
        return
    print_table(f"{n} points exported", ["format", "file"],
                [[k, str(v)] for k, v in files.items()])
