"""pimserve from Python: one run, a comparison, a custom system, and the kernel models' check.

    python examples/quickstart.py

Runs in about ten seconds on a laptop; prints what it measures.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pimserve
from pimserve.specs.catalog import load_system


def main() -> None:
    # 1. PAPI serving LLaMA-65B on 64 Dolly creative-writing requests, static batches of 16
    r = pimserve.simulate("papi", "llama-65b", "dolly-creative", n_requests=64, batch=16)
    print(f"PAPI: {r.throughput_tok_s:,.0f} tok/s, TPOT p50 {r.tpot_ms['p50']:.1f} ms, "
          f"{r.energy_per_token_j:.3f} J/token, FC on GPU {r.fc_on_gpu_fraction:.0%}")
    print("  where the time went (s):",
          {k: round(v, 2) for k, v in r.time_breakdown_s.items() if v})

    # 2. the same requests on its baseline, with a TPOT SLO for goodput
    for system in ("papi", "a100-attacc"):
        s = pimserve.simulate(system, "llama-65b", "dolly-creative", n_requests=64, batch=16,
                              tpot_slo_ms=30.0)
        print(f"{system:12s} goodput {s.goodput_tok_s:,.0f} tok/s, "
              f"SLO attainment {s.slo_attainment:.0%}")

    # 3. a custom system: PAPI with 20 FC-PIM stacks instead of 30, as a YAML file
    spec = load_system("papi").model_dump(mode="json")
    spec["name"] = "papi-20-fc-pim"
    for g in spec["groups"]:
        if g["role"] == "fc_pim":
            g["count"] = 20
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "papi-20.yaml"
        path.write_text(yaml.safe_dump(spec))
        c = pimserve.simulate(str(path), "llama-65b", "dolly-creative", n_requests=64,
                              batch=16)
        # its alpha is recalibrated for the new FC-PIM count, and the result says so
        print(f"papi-20-fc-pim: {c.throughput_tok_s:,.0f} tok/s, alpha {c.config['alpha']:g}")
        for w in c.warnings:
            print("  note:", w)


if __name__ == "__main__":
    main()
