"""`pimserve validate attacc`: kernel models against the AttAcc/Ramulator reference."""

from __future__ import annotations

import click

from pimserve.cli.base import FORMAT, main


@main.command()
@click.argument("reference", type=click.Choice(["attacc"]))
@click.option("--data", "data", type=click.Path(), default=None,
              help="folder with the reference CSVs (pim_attention_per_layer_per_stack.csv, "
                   "end_to_end_llama65b.csv)  [default: $PIMSERVE_VALIDATION_DATA/attacc, "
                   "else ./validation/attacc]")
@click.option("--all-points", is_flag=True, default=False,
              help="print every point (default: one row per distinct point label prefix)")
@FORMAT
def validate(reference: str, data: str | None, all_points: bool, fmt: str) -> None:
    """Run every point of a cycle-level REFERENCE that pimserve can express and print
    (point, reference, pimserve, ratio) and the geometric-mean and worst error per section."""
    from pimserve.experiments.validation import default_data_dir, validate_attacc
    from pimserve.report.console import print_json, print_table

    data = data or default_data_dir()
    v = validate_attacc(data)
    if fmt == "json":
        print_json(v.to_dict())
        return
    pts = v.points
    if not all_points:  # the BA power-limited sweep over L has 127 points: show its ends
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        for i, p in enumerate(pts):
            stem = p.point.split(" L ")[0]
            first.setdefault(stem, i)
            last[stem] = i
        ends = set(first.values()) | set(last.values())
        pts = [p for i, p in enumerate(pts) if i in ends]
    print_table(
        f"pimserve against the AttAcc/Ramulator reference ({data})",
        ["section", "point", "reference (s)", "pimserve (s)", "ratio"],
        [[p.section, p.point, p.reference_s, p.pimserve_s, p.ratio] for p in pts],
    )
    print_table(
        "errors per section (geometric mean and worst of |log ratio|, as %)",
        ["section", "points", "gmean error %", "max error %"],
        [[k, int(s["points"]), 100 * s["gmean_error"], 100 * s["max_error"]]
         for k, s in v.sections().items()],
    )
