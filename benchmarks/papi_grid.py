"""PAPI's main grid: LLaMA-65B, dolly-creative, static batching, batch {4,16,64} x TLP {1,2,4}.

    python benchmarks/papi_grid.py

Prints papi's speedup over each baseline, its energy efficiency over A100+AttAcc and its FC
placement at every point, then the means next to the paper's headline numbers (PAPI 7.2).
The paper's numbers appear only as references to compare against.
"""

from __future__ import annotations

import numpy as np

from pimserve import simulate

SYSTEMS = ("papi", "a100-attacc", "a100-hbmpim", "attacc-only")
PAPER = {"a100-attacc": 1.8, "a100-hbmpim": 1.9, "attacc-only": 11.1}  # PAPI 7.2, creative
PAPER_ENERGY_EFF = 3.4  # PAPI 7.3, vs A100+AttAcc, creative-writing


def main() -> None:
    speedup: dict[str, list[float]] = {s: [] for s in SYSTEMS[1:]}
    eff: list[float] = []
    print("batch tlp | papi tok/s | speedup vs a100-attacc a100-hbmpim attacc-only | "
          "energy eff. vs a100-attacc | papi fc_on_gpu")
    for batch in (4, 16, 64):
        for tlp in (1, 2, 4):
            res = {s: simulate(s, "llama-65b", "dolly-creative", n_requests=max(64, batch),
                               batch=batch, tlp=tlp, seed=0) for s in SYSTEMS}
            p = res["papi"]
            for s in SYSTEMS[1:]:
                speedup[s].append(p.throughput_tok_s / res[s].throughput_tok_s)
            eff.append(res["a100-attacc"].energy_per_token_j / p.energy_per_token_j)
            print(f"{batch:>5} {tlp:>3} | {p.throughput_tok_s:>10.0f} | "
                  + " ".join(f"{speedup[s][-1]:>6.2f}" for s in SYSTEMS[1:])
                  + f" | {eff[-1]:>5.2f} | {p.fc_on_gpu_fraction:.2f}")
    for s, v in speedup.items():
        print(f"mean speedup over {s}: {np.mean(v):.2f} (paper {PAPER[s]})")
    print(f"mean energy efficiency over a100-attacc: {np.mean(eff):.2f} "
          f"(paper {PAPER_ENERGY_EFF})")


if __name__ == "__main__":
    main()
