"""Sweep throughput: points per second of a 1,000-point PAPI sweep on 1 and 2 local workers
(and on a local Ray cluster of 2 workers with --ray).

The sweep: PAPI, LLaMA-65B, the dolly-creative workload, 64 requests per point; alpha (5) x
batch (5) x TLP (4) x FC-PIM stacks (10, Attn-PIM = 90 - FC-PIM) = 1,000 points. Every
executor runs the same resolved points into a fresh store, starting from the same state
(workers forked from this process, which runs no point itself), and the stored results are
compared: they must be identical bit for bit (wall-clock columns aside).

    python benchmarks/sweep_rate.py                # 1,000 points, pool of 1 and of 2
    python benchmarks/sweep_rate.py --points 200   # a seeded sample of 200 of them
    python benchmarks/sweep_rate.py --ray          # also Ray (pip install 'pimserve[ray]')

Targets: 2 workers >= 1.8x the rate of 1 (on a machine with 2 free cores); Ray within 25%
of the pool's rate at the same worker count (cluster start-up excluded, reported apart).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from typing import Any

from pimserve.experiments.sweep import (
    PoolExecutor,
    Store,
    expand,
    run_points,
    sweep_spec_from_dict,
)
from pimserve.experiments.sweep.runner import NONDETERMINISTIC_COLUMNS

SPEC: dict[str, Any] = {
    "name": "bench-papi-1000",
    "base": {"system": "papi", "model": "llama-65b", "workload": "dolly-creative",
             "n_requests": 64},
    "parameters": {
        "alpha": [16, 32, 48, 64, 96],
        "batch": [4, 8, 16, 32, 64],
        "tlp": [1, 2, 3, 4],
        "groups.fc_pim.count": [12, 16, 20, 24, 30, 36, 42, 48, 54, 60],
        "groups.attn.count": "90 - groups.fc_pim.count",
    },
}


def _children_cpu_s() -> float:
    """CPU seconds (user + system) of this process's finished child processes."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _results(store: Store) -> dict[str, dict[str, Any]]:
    return {r["key"]: {k: v for k, v in r.items() if k not in NONDETERMINISTIC_COLUMNS}
            for r in store.rows()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=1000,
                    help="points to run: all 1,000, or a seeded random sample of N")
    ap.add_argument("--ray", action="store_true", help="also a local Ray cluster of 2 CPUs")
    ap.add_argument("--workers", default="1,2", help="pool sizes to time (comma-separated)")
    args = ap.parse_args(argv)
    if not 1 <= args.points <= 1000:
        ap.error("--points must be from 1 to 1000")
    spec_data = dict(SPEC)
    if args.points < 1000:
        spec_data["strategy"] = {"kind": "random", "samples": args.points, "seed": 0}
    spec = sweep_spec_from_dict(spec_data)
    t0 = time.perf_counter()
    exp = expand(spec)
    print(f"{len(exp.points)} points ({len(exp.invalid)} invalid) resolved and checked in "
          f"{time.perf_counter() - t0:.2f} s; {os.cpu_count()} CPUs")
    rates: dict[str, float] = {}
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="pimserve-sweep-bench-") as tmp:
        for w in (int(x) for x in args.workers.split(",")):
            store = Store(os.path.join(tmp, f"pool{w}"))
            ex = PoolExecutor(w)
            load0, cpu0 = os.getloadavg()[0], _children_cpu_s()
            s = run_points(exp.points, store, ex, sweep=spec.name)
            ex.close()
            cpu = _children_cpu_s() - cpu0
            label = f"pool, {w} worker{'s' if w > 1 else ''}"
            rates[label] = s.points_per_s
            results[label] = _results(store)
            # workers' CPU time over wall x workers: below ~0.95, other processes took cores
            print(f"{label:22s} {s.ran:5d} points in {s.wall_s:7.2f} s: "
                  f"{s.points_per_s:7.2f} points/s; workers' CPU {cpu:6.1f} s = "
                  f"{cpu / (s.wall_s * w):.2f} of {w} core(s); load before {load0:.2f}")
        if args.ray:
            try:
                from pimserve.experiments.sweep import RayExecutor
            except ImportError:  # pragma: no cover
                raise
            t1 = time.perf_counter()
            ex = RayExecutor("auto", 2)
            import ray

            @ray.remote(num_cpus=1)
            def warm() -> int:  # workers import pimserve once, as they would for any sweep
                import pimserve.experiments.sweep.runner  # noqa: F401

                return os.getpid()

            ray.get([warm.remote() for _ in range(2)])
            start_s = time.perf_counter() - t1
            store = Store(os.path.join(tmp, "ray2"))
            s = run_points(exp.points, store, ex, sweep=spec.name)
            ex.close()
            rates["ray, 2 workers"] = s.points_per_s
            results["ray, 2 workers"] = _results(store)
            print(f"{'ray, 2 workers':22s} {s.ran:5d} points in {s.wall_s:7.2f} s: "
                  f"{s.points_per_s:7.2f} points/s (cluster start and worker imports "
                  f"{start_s:.1f} s, not counted)")
    labels = list(rates)
    if "pool, 1 worker" in rates and "pool, 2 workers" in rates:
        ratio = rates["pool, 2 workers"] / rates["pool, 1 worker"]
        print(f"2 workers / 1 worker: {ratio:.2f}x (target >= 1.8x)")
    if "ray, 2 workers" in rates and "pool, 2 workers" in rates:
        r = rates["ray, 2 workers"] / rates["pool, 2 workers"]
        print(f"ray / pool at 2 workers: {r:.2f} (target >= 0.75)")
    first = results[labels[0]]
    same = True
    for k in labels[1:]:
        diff = sorted({c for key, row in first.items() for c in row
                       if results[k].get(key, {}).get(c) != row[c]})
        if diff:
            same = False
            print(f"{k} differs from {labels[0]} in: {', '.join(diff[:8])}")
    print(f"results identical on every executor: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
