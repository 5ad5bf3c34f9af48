"""Per-expert FC placement on Mixtral-8x7B (PAPI argues for it in 6.5; pimserve measures it).

    python benchmarks/moe_placement.py

Serves dolly-creative in static batches of 128 with TLP 4 on the `papi` system under each FC
placement policy, with uniform and skewed (Zipf 1.2) routing.
"""

from __future__ import annotations

from pimserve import simulate


def main() -> None:
    print("router   policy      tok/s   TPOT ms   J/token  FC on GPU")
    for router in ("uniform", "skewed"):
        for policy in ("papi", "static-gpu", "static-pim", "oracle"):
            r = simulate("papi", "mixtral-8x7b", "dolly-creative", n_requests=256, batch=128,
                         tlp=4, fc_placement=policy, moe_router=router, moe_skew=1.2, seed=0)
            print(f"{router:<8} {policy:<10} {r.throughput_tok_s:>7.0f} "
                  f"{r.tpot_ms['mean']:>8.2f} {r.energy_per_token_j:>9.3f} "
                  f"{r.fc_on_gpu_fraction:>9.2f}")


if __name__ == "__main__":
    main()
