"""`pimserve reproduce papi|pam`: a paper's evaluation, its figures and a report."""

from __future__ import annotations

from pathlib import Path

import click

from pimserve.cli.base import FORMAT, check_output_folder, main


@main.command()
@click.argument("paper", type=click.Choice(["papi", "pam"]))
@click.option("--quick", is_flag=True, default=False,
              help="a reduced grid that runs in about 3 minutes on 2 cores (used by CI)")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="output folder  [default: reproduce-PAPER/]")
@click.option("--jobs", type=int, default=None,
              help="worker processes  [default: all cores]")
@click.option("--no-sensitivity", is_flag=True, default=False,
              help="skip the +-25% sensitivity runs of the open parameters")
@FORMAT
def reproduce(paper: str, quick: bool, out: str | None, jobs: int | None,
              no_sensitivity: bool, fmt: str) -> None:
    """Run PAPER's evaluation and write results.csv, results.json, PNG figures and report.md.

    The report puts every headline number next to the paper's, with the ratio and the cause
    of any gap beyond the tolerance, lists the parameters the paper leaves open with the
    values chosen, and shows how the headlines move when each moves by +-25%.
    """
    from pimserve.errors import ConfigurationError
    from pimserve.experiments.reproduce import REPRODUCTIONS
    from pimserve.experiments.reproduce import reproduce as run_reproduction
    from pimserve.report.console import console, print_json, print_table

    if jobs is not None and jobs < 1:
        raise ConfigurationError(f"--jobs must be a positive integer (got {jobs})")
    folder = Path(out or f"reproduce-{paper}")
    check_output_folder(str(folder))
    repro = REPRODUCTIONS.get(paper)()
    res = run_reproduction(repro, folder, quick=quick, jobs=jobs,
                           progress=fmt == "table" and console.is_terminal,
                           sensitivity=not no_sensitivity)
    if fmt == "json":
        print_json({"out": str(folder), "wall_s": res.wall_s,
                    "headlines": [h.to_dict() for h in res.headlines]})
        return
    print_table(
        f"{repro.title}: headline numbers",
        ["headline", "paper", "pimserve", "ratio", "within"],
        [[h.name, h.paper, h.value, h.ratio, h.within] for h in res.headlines],
        caption=f"{len(res.rows)} points in {res.wall_s:.0f} s; report: {folder / 'report.md'}",
    )
