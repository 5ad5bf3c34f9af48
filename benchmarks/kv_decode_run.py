"""Replay timing of ``KVHierarchy.decode_run``: the hot path of ``pam`` on short traces.

    python benchmarks/kv_decode_run.py [--requests 3000] [--every 30] [--calls 80]

Serves the first ``--requests`` requests of the Azure conversation trace (``../shared``, else
the synthetic ``azure-conv`` preset) on ``pam`` / LLaMA-65B with continuous batching, copies
the KV hierarchy and the arguments of every ``--every``-th ``decode_run`` call (up to
``--calls``), then replays those calls and prints the best mean time per call and a hash of
their results (steps, attention times and energies, resident blocks, activations, bank-group
codes, reads, blocks). A change to ``decode_run`` that keeps the hash keeps its results; the
time says whether it is faster. The replay restores the generator after each call, so every
repetition sees the same state.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import time

import numpy as np

from _azure import azure_conv
from pimserve import simulate
from pimserve.engine import kv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--every", type=int, default=30)
    ap.add_argument("--calls", type=int, default=80)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    reqs = azure_conv()[0].head(args.requests)
    caps: list[tuple] = []
    orig = kv.KVHierarchy.decode_run
    seen = [0]

    def capture(self, reqs, ctx0, q_tokens, k, last=None):
        seen[0] += 1
        if seen[0] % args.every == 0 and len(caps) < args.calls:
            caps.append((copy.deepcopy(self), reqs.copy(), ctx0.copy(), q_tokens, k,
                         None if last is None else last.copy()))
        return orig(self, reqs, ctx0, q_tokens, k, last)

    kv.KVHierarchy.decode_run = capture
    try:
        simulate("pam", "llama-65b", reqs, batching="continuous", batch=256)
    finally:
        kv.KVHierarchy.decode_run = orig

    def replay() -> list:
        out = []
        for kvh, r, ctx0, q, k, last in caps:
            state = kvh.rng.bit_generator.state
            run = kvh.decode_run(r, ctx0, q, k, last)
            kvh.rng.bit_generator.state = state
            if run is None:
                out.append(None)
                continue
            st = run.state
            out.append((run.k, run.attention_s.tobytes(), run.attention_j.tobytes(),
                        tuple(run.used), st.acts.tobytes(), st.new[2].tobytes(),
                        tuple(st.nsel), st.n.tobytes()))
        return out

    digest = hashlib.sha1(repr(replay()).encode()).hexdigest()[:12]
    best = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        replay()
        best = min(best, (time.perf_counter() - t0) / max(len(caps), 1))
    ks = [c[4] for c in caps]
    rows = [c[1].size for c in caps]
    print(f"{len(caps)} decode_run calls replayed (mean {np.mean(ks):.1f} steps asked, "
          f"{np.mean(rows):.1f} requests): best {best * 1e6:.1f} us per call; "
          f"results hash {digest}")


if __name__ == "__main__":
    main()
