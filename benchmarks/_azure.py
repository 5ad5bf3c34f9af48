"""The Azure LLM conversation trace for the engine benchmarks: ``../shared`` beside the
repository when it is there, else the synthetic ``azure-conv`` preset (the same statistics,
as many requests)."""

from __future__ import annotations

from pathlib import Path

from pimserve.workload import Requests, load_trace
from pimserve.workload.presets import WORKLOADS

AZURE_CONV = Path(__file__).resolve().parents[2] / "shared" / "traces" / "azure_llm_2023_conv.csv"
AZURE_CONV_REQUESTS = 19366  # requests in the real trace


def azure_conv(path: Path | str = AZURE_CONV) -> tuple[Requests, str]:
    """(the whole trace at ``path``, or the synthetic preset where it does not exist, a label
    naming which)."""
    path = Path(path)
    if path.exists():
        return load_trace(str(path), "azure"), path.name
    return (WORKLOADS.get("azure-conv")(AZURE_CONV_REQUESTS, 0, None),
            "azure-conv (synthetic; trace not found)")
