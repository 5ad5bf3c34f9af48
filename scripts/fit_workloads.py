"""Fit the synthetic workload presets to the real traces in ``../shared/traces``.

Reads the shared trace files by path (they are never copied into the repository) and writes
``src/pimserve/workload/data/length_quantiles.json``: for each data set, quantiles of the prompt
and output lengths (tokens) at a fixed percentile grid, summary statistics, the Spearman rank
correlation between prompt and output length and, for timestamped traces, the arrival rate
(requests/s) and inter-arrival CV. The presets in ``pimserve.workload.presets`` sample from it.

Usage: python scripts/fit_workloads.py [--traces DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pimserve.workload.request import Requests
from pimserve.workload.traces import load_trace

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TRACES = REPO.parent / "shared" / "traces"
DEFAULT_OUT = REPO / "src" / "pimserve" / "workload" / "data" / "length_quantiles.json"

#: Percentile grid (0..100): every percent, plus a finer grid in the top percent, where long
#: tails (Azure conv: p99 4142, max 14050 tokens) would otherwise be interpolated linearly over
#: 1 % of the mass and inflate the sampled mean.
PERCENTILES: list[float] = (
    [float(p) for p in range(0, 100)]
    + [round(99 + 0.1 * i, 1) for i in range(1, 10)]
    + [99.95, 99.99, 100.0]
)

#: (key, file, format, loader options, licence / citation)
DATASETS: list[tuple[str, str, str, dict[str, Any], str]] = [
    ("azure-conv", "azure_llm_2023_conv.csv", "azure", {},
     "Azure LLM inference trace 2023 (Azure/AzurePublicDataset), CC-BY 4.0; "
     "Patel et al., Splitwise, ISCA 2024"),
    ("azure-code", "azure_llm_2023_code.csv", "azure", {},
     "Azure LLM inference trace 2023 (Azure/AzurePublicDataset), CC-BY 4.0; "
     "Patel et al., Splitwise, ISCA 2024"),
    ("dolly-creative", "dolly_lengths_gpt2.csv", "dolly", {"category": "creative_writing"},
     "databricks-dolly-15k (CC BY-SA 3.0) GPT-2 token lengths, category creative_writing"),
    ("dolly-open-qa", "dolly_lengths_gpt2.csv", "dolly", {"category": "open_qa"},
     "databricks-dolly-15k (CC BY-SA 3.0) GPT-2 token lengths, category open_qa"),
    ("arxiv-sum", "arxiv_summarization_lengths_llama2.csv", "arxiv", {},
     "arXiv summarization lengths (LLaMA-2 tokenizer) from microsoft/vidur, MIT"),
]  # fmt: skip


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""

    def ranks(a: np.ndarray) -> np.ndarray:
        order = np.argsort(a, kind="stable")
        r = np.empty(a.size)
        r[order] = np.arange(a.size, dtype=float)
        _, inv, counts = np.unique(a, return_inverse=True, return_counts=True)
        sums = np.bincount(inv, weights=r)
        return sums[inv] / counts[inv]

    rx, ry = ranks(x), ranks(y)
    return float(np.corrcoef(rx, ry)[0, 1])


def fit(req: Requests, key: str, file: str, licence: str) -> dict[str, Any]:
    """The JSON entry for one data set."""
    st = req.stats()
    entry: dict[str, Any] = {
        "file": file,
        "source": licence,
        "n": len(req),
        "prompt": {
            "values": [round(float(v), 3) for v in np.percentile(req.prompt_tokens, PERCENTILES)],
            **{k[len("input_") :]: st[k] for k in st if k.startswith("input_")},
        },
        "output": {
            "values": [round(float(v), 3) for v in np.percentile(req.output_tokens, PERCENTILES)],
            **{k[len("output_") :]: st[k] for k in st if k.startswith("output_")},
        },
        "rank_correlation": round(spearman(req.prompt_tokens, req.output_tokens), 4),
    }
    if st["duration_s"]:
        entry["duration_s"] = st["duration_s"]
        entry["rate_per_s"] = st["rate_per_s"]
        entry["interarrival_cv"] = st["interarrival_cv"]
    return entry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--traces", type=Path, default=DEFAULT_TRACES, help="shared traces folder")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write")
    args = ap.parse_args(argv)
    out: dict[str, Any] = {
        "generated_by": "scripts/fit_workloads.py",
        "description": (
            "Quantiles (numpy linear percentiles) of prompt/output token lengths of the shared "
            "traces, with summary statistics; statistics only, no trace rows."
        ),
        "percentiles": PERCENTILES,
        "datasets": {},
    }
    for key, file, fmt, opts, licence in DATASETS:
        req = load_trace(args.traces / file, fmt, **opts)
        out["datasets"][key] = fit(req, key, file, licence)
        d = out["datasets"][key]
        print(
            f"{key:15s} n={d['n']:6d} prompt mean {d['prompt']['mean']:8.1f} "
            f"output mean {d['output']['mean']:7.1f} rho_s {d['rank_correlation']:+.3f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(out, indent=1)
    # one line per list of numbers, so the file stays readable and diffs stay small
    text = re.sub(
        r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text
    )
    args.out.write_text(text + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
