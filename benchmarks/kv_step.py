"""KV hierarchy alone: microseconds per decode step, replaying the calls of a recorded run.

Runs a simulation once, recording every call the engine makes to its ``KVHierarchy``
(``reserve``, ``step``, ``release``, with their arguments), then replays those calls on fresh
hierarchies and prints the best wall time per step: the KV part of the engine without the rest
of the loop's noise. The run is step by step (no runs of steps priced at once; those are timed
by ``kv_decode_run.py``). ``--general`` switches the one-tier fast path off, to see what it
saves.

    python benchmarks/kv_step.py [--case conv|long] [--repeat 3] [--general]

``conv``: pam serving LLaMA-65B on the first 4,000 requests of the Azure conversation trace
(the synthetic ``azure-conv`` preset when ``../shared`` is absent), continuous batching, batch
256: one tier in use, about 20 requests per step. ``long``: pam serving LLaMA3-70B on 1,024
arxiv-sum requests kept in one batch, 300 iterations: KV on HBM-PIM and DDR-PIM, Algorithm 2
running.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from _azure import azure_conv
from pimserve.api import load_model, load_system, load_workload
from pimserve.engine.config import RunConfig
from pimserve.engine.kv import KVHierarchy
from pimserve.engine.simulator import Simulator


def _copy(a: Any) -> Any:
    return np.array(a) if isinstance(a, np.ndarray) else a


def record(sim: Simulator) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """Run ``sim``, returning its KV hierarchy calls with copies of their arguments."""
    kvh = sim.kvh
    assert kvh is not None, "the system has no KV tiers"
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    for name in ("reserve", "step", "release"):
        method = getattr(kvh, name)

        def wrapped(*args: Any, _m: Any = method, _n: str = name, **kw: Any) -> Any:
            calls.append((_n, tuple(_copy(a) for a in args),
                          {k: _copy(v) for k, v in kw.items()}))
            return _m(*args, **kw)

        setattr(kvh, name, wrapped)
    sim.run()
    return calls


def replay(sim: Simulator, calls: list, general: bool) -> float:
    """Wall seconds to replay ``calls`` on a fresh hierarchy seeded like ``sim``'s."""
    cfg = sim.cfg
    kvh = KVHierarchy(sim.built, sim.model, cfg, np.random.default_rng(cfg.seed),
                      max_slots=cfg.batch, n_requests=len(sim.requests))
    kvh._fast_one_tier = not general
    t0 = time.perf_counter()
    for name, args, kw in calls:
        getattr(kvh, name)(*args, **kw)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", choices=["conv", "long"], default="conv")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--general", action="store_true", help="without the one-tier fast path")
    args = ap.parse_args()
    if args.case == "conv":
        reqs = azure_conv()[0].head(4000)
        cfg = RunConfig(batching="continuous", batch=256)
        sim = Simulator(load_system("pam"), load_model("llama-65b"), reqs, cfg)
    else:
        reqs, _ = load_workload("arxiv-sum", n_requests=1024, seed=0)
        cfg = RunConfig(batching="static", batch=1024, max_iterations=300)
        sim = Simulator(load_system("pam"), load_model("llama3-70b"), reqs, cfg)
    # step by step: a run of steps (KVHierarchy.decode_run, timed by kv_decode_run.py)
    # changes the hierarchy through calls this replay does not record
    sim.fast_runs = False
    calls = record(sim)
    steps = sum(1 for name, *_ in calls if name == "step")
    best = min(replay(sim, calls, args.general) for _ in range(args.repeat))
    print(f"{args.case}: {len(calls)} KV calls, {steps} steps; best of {args.repeat}: "
          f"{best:.3f} s = {best / steps * 1e6:.1f} us per step"
          + (" (general path)" if args.general else ""))


if __name__ == "__main__":
    main()
