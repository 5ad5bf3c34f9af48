"""Engine at scale: long-context traces, tiny KV blocks, a million-token request.

    python benchmarks/engine_scale.py [--case all|long|block1|million] [--requests N]

Prints, per case, wall seconds, simulated seconds, simulated seconds per wall second and the
process's peak resident memory:

- ``long``: ``pam`` serving the ``long-context`` preset (Mooncake-like conversations, mean
  ~12k tokens, up to 128k) on Llama-3.1-70B, continuous batching (target: >= 100x real time,
  < 1 GB resident);
- ``block1``: ``pam`` on a static batch of 16 Write_doc requests with ``kv_block_tokens=1``
  (target: seconds);
- ``million``: one 10^6-token request on Llama-3.1-8B on ``pam`` (target: it runs).

``python benchmarks/engine_speed.py --system papi`` covers the Azure conversation trace.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from pimserve import simulate
from pimserve.errors import PimserveError
from pimserve.workload.request import Requests


def _report(label: str, fn) -> None:
    t0 = time.perf_counter()
    try:
        r = fn()
    except PimserveError as err:
        print(f"{label}: refused: {err}")
        return
    wall = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{label}: wall {wall:.2f} s, simulated {r.simulated_time_s:.1f} s, "
          f"{r.simulated_time_s / wall:.1f} sim-s/wall-s, {r.iterations} iterations, "
          f"{r.requests_completed}/{r.requests_total} completed, peak RSS {rss_mb:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", default="all", choices=["all", "long", "block1", "million"])
    ap.add_argument("--requests", type=int, default=2000)
    args = ap.parse_args()
    if args.case in ("all", "long"):
        _report(f"pam, long-context x {args.requests}, llama3.1-70b",
                lambda: simulate("pam", "llama3.1-70b", "long-context",
                                 n_requests=args.requests, batching="continuous", batch=256))
    if args.case in ("all", "block1"):
        _report("pam, write-doc x 16, kv_block_tokens=1",
                lambda: simulate("pam", "llama3-70b", "write-doc", n_requests=16, batch=16,
                                 kv_block_tokens=1))
    if args.case in ("all", "million"):
        req = Requests(id=np.arange(1), arrival_s=np.zeros(1),
                       prompt_tokens=np.array([1_000_000]), output_tokens=np.array([16]))
        _report("pam, one 10^6-token request, llama3.1-8b",
                lambda: simulate("pam", "llama3.1-8b", req, long_context="allow"))


if __name__ == "__main__":
    main()
