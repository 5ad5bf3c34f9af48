"""pimserve's kernel models against the AttAcc/Ramulator reference: the table and the errors.

    python benchmarks/validate_attacc.py [--data DIR]

DIR holds the reference CSVs (default: $PIMSERVE_VALIDATION_DATA/attacc, else
./validation/attacc). Prints every section's geometric-mean and worst error and the wall time.
"""

from __future__ import annotations

import argparse
import time

from pimserve.experiments.validation import default_data_dir, validate_attacc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=default_data_dir())
    args = ap.parse_args()
    t0 = time.perf_counter()
    v = validate_attacc(args.data)
    wall = time.perf_counter() - t0
    print(f"{'section':26s} {'points':>6s} {'gmean err %':>12s} {'max err %':>10s}")
    for name, s in v.sections().items():
        print(f"{name:26s} {int(s['points']):6d} {100 * s['gmean_error']:12.2f} "
              f"{100 * s['max_error']:10.2f}")
    print(f"{len(v.points)} points in {wall:.2f} s")


if __name__ == "__main__":
    main()
