"""The summary KV model against the exact one: the tables of docs/models.md ("The summary KV
model", measured against the exact model).

    python benchmarks/kv_summary_gap.py                 # both cases, 3 seeds, about 1 min
    python benchmarks/kv_summary_gap.py --seeds 12 --case three-tiers

Every comparison sets ``kv_exact_max_blocks = S`` so that requests merge as early as the
columns allow, and prints ``summary / exact - 1`` of means over the seeds (the seed drives the
locality model's draws; the requests are the same for every seed):

- ``three-tiers``: PAM shrunk to 1 GPU, 2 HBM-PIM stacks, 1 DIMM, 1 SSD (the system of
  tests/test_kv_summary.py), 12 Llama-3.1-8B requests of 15k-45k tokens, one static batch,
  ``S`` = 256, 512, 1024 (greedy mapping, and round-robin with ``--round-robin``): throughput,
  attention time per tier, KV per tier, migrated bytes;
- ``one-tier``: ``pam``, Llama3-70B, Write_doc (16 requests) and Arxiv_sum (64) at 4-token
  blocks (workload drawn with seed 0), ``S`` = 256, 1024: throughput and attention time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from pimserve import simulate
from pimserve.api import load_workload

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_kv_summary import _long_requests, _mean_results, _three_tiers


def three_tiers(seeds: int, mapping: str) -> None:
    spec, reqs = _three_tiers(), _long_requests(12, 15_000, 45_000)
    print(f"three tiers, {mapping} mapping, {seeds} seeds: summary / exact - 1")
    for S in (256, 512, 1024):
        opts = {"kv_summary_columns": S, "kv_exact_max_blocks": S, "kv_mapping": mapping}
        exact = _mean_results(spec, reqs, "exact", seeds, **opts)
        summ = _mean_results(spec, reqs, "summary", seeds, **opts)
        cells = [f"{k} {summ[k] / exact[k] - 1:+.4f}" for k in exact if exact[k]]
        print(f"  S={S:5d}  " + "  ".join(cells))


def one_tier(seeds: int) -> None:
    print(f"one tier (pam, llama3-70b, 4-token blocks), {seeds} seeds: summary / exact - 1")
    for name, n in (("write-doc", 16), ("arxiv-sum", 64)):
        reqs = load_workload(name, n_requests=n, seed=0)[0]

        def run(kv_model: str, S: int, reqs=reqs, n=n) -> np.ndarray:
            out = []
            for seed in range(seeds):
                r = simulate("pam", "llama3-70b", reqs, batch=n, kv_block_tokens=4,
                             kv_model=kv_model, seed=seed, kv_summary_columns=S,
                             kv_exact_max_blocks=S)
                attention = sum(r.to_dict()["attention_time_by_tier_s"].values())
                out.append((r.throughput_tok_s, attention))
            return np.array(out)

        exact = run("exact", 1024)
        spread = exact[:, 1].std() / exact[:, 1].mean()
        print(f"  {name} x {n}: exact attention seed-to-seed spread {spread:.4f}")
        for S in (256, 1024):
            rel = run("summary", S).mean(axis=0) / exact.mean(axis=0) - 1
            print(f"    S={S:5d}  throughput {rel[0]:+.4f}  attention {rel[1]:+.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", default="all", choices=["all", "three-tiers", "one-tier"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--round-robin", action="store_true",
                    help="three tiers with round-robin bank-group mapping too")
    args = ap.parse_args()
    if args.case in ("all", "three-tiers"):
        three_tiers(args.seeds, "greedy")
        if args.round_robin:
            three_tiers(args.seeds, "round-robin")
    if args.case in ("all", "one-tier"):
        one_tier(args.seeds)


if __name__ == "__main__":
    main()
