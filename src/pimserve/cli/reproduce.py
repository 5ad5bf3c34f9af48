"""`pimserve reproduce papi|pam`: a paper's evaluation, its figures and a report."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pimserve.cli.base import FORMAT, check_output_folder, executor_options, main


@main.command()
@click.argument("paper", type=click.Choice(["papi", "pam"]))
@click.option("--quick", is_flag=True, default=False,
              help="a reduced grid that runs in about a minute on 2 cores (used by CI)")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="output folder, also of the store sweep.sqlite  [default: reproduce-PAPER/]")
@executor_options()
@click.option("--jobs", type=int, default=None, help="the same as --workers")
@click.option("--no-sensitivity", is_flag=True, default=False,
              help="skip the +-25% sensitivity runs of the open parameters")
@FORMAT
def reproduce(paper: str, quick: bool, out: str | None, workers: int | None, jobs: int | None,
              ray_address: str | None, resume: bool, no_sensitivity: bool, fmt: str) -> None:
    """Run PAPER's evaluation and write results.csv, results.json, PNG figures and report.md.

    The report puts every headline number next to the paper's, with the ratio and the cause
    of any gap beyond the tolerance, lists the parameters the paper leaves open with the
    values chosen, and shows how the headlines move when each moves by +-25%. Every point
    runs on the sweep runner into OUT/sweep.sqlite (keyed by its resolved configuration and
    the pimserve version), so `--resume` finishes an interrupted run and `pimserve sweep
    export OUT` reads the points.
    """
    from pimserve.errors import ConfigurationError
    from pimserve.experiments.reproduce import REPRODUCTIONS
    from pimserve.experiments.reproduce import reproduce as run_reproduction
    from pimserve.experiments.reproduce.common import PointsFailed
    from pimserve.experiments.sweep import make_executor
    from pimserve.report.console import console, print_json, print_table

    for flag, n in (("--workers", workers), ("--jobs", jobs)):
        if n is not None and n < 1:
            raise ConfigurationError(f"{flag} must be a positive integer (got {n})")
    if workers is not None and jobs is not None and workers != jobs:
        raise ConfigurationError(f"--jobs is another name for --workers; got --workers "
                                 f"{workers} and --jobs {jobs}")
    workers = workers if workers is not None else jobs
    folder = Path(out or f"reproduce-{paper}")
    check_output_folder(str(folder))
    repro = REPRODUCTIONS.get(paper)()
    executor = make_executor(workers, ray_address)
    try:
        res = run_reproduction(repro, folder, quick=quick, executor=executor, resume=resume,
                               progress=fmt == "table" and console.is_terminal,
                               sensitivity=not no_sensitivity)
    except KeyboardInterrupt:
        click.echo(f"interrupted: finished points are in {folder / 'sweep.sqlite'}; run "
                   "again with --resume to finish", err=True)
        sys.exit(130)
    except PointsFailed as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(1)
    finally:
        executor.close()
    sm = res.summary
    assert sm is not None
    if fmt == "json":
        print_json({"out": str(folder), "wall_s": res.wall_s,
                    "runner": {"store": str(res.store), "points": sm.points,
                               "stored_before": sm.stored_before, "ran": sm.ran,
                               "invalid": sm.invalid, "executor": sm.executor},
                    "headlines": [h.to_dict() for h in res.headlines]})
        return
    print_table(
        f"{repro.title}: headline numbers",
        ["headline", "paper", "pimserve", "ratio", "within"],
        [[h.name, h.paper, h.value, h.ratio, h.within] for h in res.headlines],
        caption=f"{len(res.rows)} points in {res.wall_s:.0f} s; ran {sm.ran} of "
                f"{sm.points} distinct points on {sm.executor}, {sm.stored_before} from the "
                f"store; report: {folder / 'report.md'}",
    )
