"""PAM against its baselines and ablations on a long-context offline batch, next to the paper.

Serves arxiv-sum on LLaMA3-70B with the batch kept full (continuous batching, all requests at
t = 0) on pam, its three ablations, ls-pim, l-pim and vllm-offload, and prints throughput,
attention time, KV per tier and the ratios PAM reports (section 7).

    python benchmarks/pam_tiers.py [--batch 1024] [--iterations 300]
"""

from __future__ import annotations

import argparse
import time

from pimserve import simulate

RUNS = [
    ("pam", {}), ("pam", {"pamattention": False}), ("pam", {"kv_mapping": "round-robin"}),
    ("pam", {"kv_scheduling": False}), ("ls-pim", {}), ("l-pim", {}), ("vllm-offload", {}),
]
PAPER = {  # PAM section 7: reference values to compare against, never outputs
    "pam / vllm-offload (long context, LLaMA3-70B arxiv)": 39.2,
    "pam / ls-pim (online average)": 4.54,
    "w/o PAMattention (attention, small batch)": 1.93,
    "w/o KV mapping (attention, small batch)": 2.06,
    "w/o KV scheduling (attention, small batch)": 2.74,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--iterations", type=int, default=300)
    args = ap.parse_args()
    res = {}
    print(f"llama3-70b / arxiv-sum, batch {args.batch} kept full, first {args.iterations} "
          "iterations")
    print(f"{'system':13s} {'option':28s} {'tok/s':>8s} {'attn s':>8s} {'KV GB hbm/ddr/ssd':>20s}"
          f" {'wall s':>7s}")
    for system, opts in RUNS:
        t0 = time.perf_counter()
        r = simulate(system, "llama3-70b", "arxiv-sum", n_requests=args.batch, batch=args.batch,
                     batching="continuous", max_iterations=args.iterations, **opts)
        key = system + (":" + ",".join(f"{k}={v}" for k, v in opts.items()) if opts else "")
        res[key] = r
        kv = "/".join(f"{v / 1e9:.0f}" for v in r.kv_bytes_by_tier.values())
        print(f"{system:13s} {opts or ''!s:28s} {r.throughput_tok_s:8.1f} "
              f"{r.time_breakdown_s['attention']:8.2f} {kv:>20s} {time.perf_counter() - t0:7.1f}")
    pam = res["pam"]

    def attn(k: str) -> float:
        return res[k].time_breakdown_s["attention"] / pam.time_breakdown_s["attention"]

    ours = [
        pam.throughput_tok_s / res["vllm-offload"].throughput_tok_s,
        pam.throughput_tok_s / res["ls-pim"].throughput_tok_s,
        attn("pam:pamattention=False"), attn("pam:kv_mapping=round-robin"),
        attn("pam:kv_scheduling=False"),
    ]
    print(f"\n{'ratio':52s} {'pimserve':>9s} {'paper':>7s}")
    for (name, paper), v in zip(PAPER.items(), ours, strict=True):
        print(f"{name:52s} {v:9.2f} {paper:7.2f}")


if __name__ == "__main__":
    main()
