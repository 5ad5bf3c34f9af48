"""RunConfig: the options of one simulation, typed, with help text that becomes CLI options."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from pimserve.errors import ConfigurationError
from pimserve.specs.base import Spec

DEFAULT_TIMELINE_STEPS = (0, 50)
"""Iterations a timeline covers when none are given: the first 50."""


def parse_steps(value: Any, what: str = "timeline_steps") -> tuple[int, int]:
    """A half-open iteration window ``(A, B)`` from ``"A:B"`` or a pair of integers.

    Iterations are counted from 0; ``0 <= A < B``. Raises ConfigurationError naming ``what``
    and the accepted form otherwise.
    """
    form = f"{what} must be A:B with whole numbers 0 <= A < B (iterations from 0, B excluded)"
    if isinstance(value, str):
        parts = value.strip().split(":")
        if len(parts) != 2:
            raise ConfigurationError(f"{form}; got '{value}'")
        try:
            a, b = int(parts[0]), int(parts[1])
        except ValueError:
            raise ConfigurationError(f"{form}; got '{value}'") from None
    elif isinstance(value, list | tuple) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        a, b = int(value[0]), int(value[1])
    else:
        raise ConfigurationError(f"{form}; got {value!r}")
    if a < 0 or b <= a:
        raise ConfigurationError(f"{form}; got {a}:{b}")
    return a, b


class RunConfig(Spec):
    """How a run serves its requests. Each field is a `pimserve run` option of the same name."""

    model_config = ConfigDict(**Spec.model_config, allow_inf_nan=False)  # no inf, no NaN

    batching: Literal["auto", "static", "continuous"] = Field(
        "auto",
        description="static: a batch starts together and the next starts when it empties "
        "(PAPI); continuous: admit arrivals every iteration while KV fits (vLLM); "
        "auto: static when every request arrives at t=0, else continuous",
    )
    batch: int = Field(16, gt=0, le=10_000_000,
                       description="static batch size, or max running requests (at most 10^7)")
    tlp: int = Field(1, gt=0, le=256, description="tokens verified per request per decode step "
                     "(speculation length; 1 = no speculation; at most 256)")
    acceptance: float = Field(0.8, ge=0, le=1, description="per-token draft acceptance prob.")
    speculation: str = Field("fixed", description="fixed | dynamic TLP")
    tlp_max: int = Field(8, gt=0, le=256,
                         description="upper bound on TLP for dynamic speculation (at most 256)")
    draft_model: str | None = Field(None, description="draft model priced on the GPU (optional)")
    prefill_chunk: int | None = Field(
        None, gt=0, le=100_000_000,
        description="chunked prefill: prompt tokens per request per iteration",
    )
    fc_placement: str | None = Field(None, description="override the system's FC placement")
    alpha: float | None = Field(None, gt=0, description="override PAPI's alpha")
    kv_block_tokens: int = Field(16, gt=0, le=10_000_000,
                                 description="KV block size in tokens (PagedAttention)")
    kv_model: Literal["summary", "exact"] = Field(
        "summary",
        description="KV hierarchy state: summary (a request beyond kv_summary_columns blocks "
        "keeps its cold blocks as weighted columns, each standing for several; per-step cost "
        "bounded whatever the context) or exact (one column per block; the reference)",
    )
    kv_summary_columns: int = Field(
        1024, ge=32, le=1_000_000,
        description="columns per request the summary KV model keeps before it merges cold "
        "blocks (32 .. 10^6; at most this many blocks per request are tracked one by one)",
    )
    kv_exact_max_blocks: int = Field(
        16384, ge=32, le=10**9,
        description="the summary KV model tracks a request block by block up to this many "
        "blocks and summarises it beyond (lowered where one column per block for every "
        "running request would pass 1 GiB; never below kv_summary_columns)",
    )
    kv_placement: str | None = Field(
        None,
        description="override the system's KV placement: single-tier | layered | "
        "layered-sparse | pam | offload",
    )
    sparse_ratio: float | None = Field(
        None, ge=1, description="override the KV compression of sparse reads (1 = dense)"
    )
    kv_x: float | None = Field(None, gt=0, description="override PAM's HBM:SSD importance x")
    kv_y: float | None = Field(None, gt=0, description="override PAM's DDR:SSD importance y")
    kv_mapping: Literal["greedy", "round-robin"] | None = Field(
        None, description="override the intra-device bank-group mapping"
    )
    pamattention: bool | None = Field(
        None, description="override PAMattention's two-stage reduction (ablation)"
    )
    kv_scheduling: bool | None = Field(
        None, description="override PAM's online inter-tier KV scheduling (ablation)"
    )
    migration: Literal["interface", "cpu"] | None = Field(
        None, description="override the KV migration path"
    )
    long_context: Literal["reject", "truncate", "allow"] = Field(
        "reject",
        description="requests longer than the model's context: reject (counted), truncate "
        "the prompt (counted), or allow: run them beyond the trained context as given (counted "
        "in the warnings; e.g. AttAcc's Lin 2048 + Lout 128 on LLaMA-65B)",
    )
    moe_router: Literal["uniform", "skewed"] = Field("uniform", description="MoE routing model")
    moe_skew: float = Field(1.0, ge=0, description="Zipf exponent of expert popularity (skewed)")
    ttft_slo_ms: float | None = Field(
        None, gt=0, description="TTFT SLO for goodput and SLO attainment, ms (None: none)"
    )
    tpot_slo_ms: float | None = Field(
        None, gt=0, description="TPOT SLO for goodput and SLO attainment, ms (None: none)"
    )
    seed: int = Field(0, ge=0, le=2**63 - 1,
                      description="seed of the run's one random generator (0 .. 2^63 - 1)")
    record_steps: bool = Field(
        False, description="keep a per-iteration log (time, RLP, TLP, FC placement) in the result"
    )
    max_iterations: int | None = Field(None, gt=0, le=10**15,
                                       description="stop after this many iterations")
    timeline_steps: tuple[int, int] | None = Field(
        None,
        description="record the schedule of iterations A..B-1 for a timeline (`A:B` or a pair)",
        json_schema_extra={"cli": False},  # `pimserve run --timeline PATH --timeline-steps A:B`
    )

    @field_validator("timeline_steps", mode="before")
    @classmethod
    def _window(cls, v: Any) -> tuple[int, int] | None:
        try:
            return None if v is None else parse_steps(v)
        except ConfigurationError as err:
            raise ValueError(str(err)) from None

    @field_validator("tlp_max")
    @classmethod
    def _tlp_within_max(cls, v: int, info: ValidationInfo) -> int:
        tlp = info.data.get("tlp")
        if info.data.get("speculation") == "dynamic" and isinstance(tlp, int) and tlp > v:
            raise ValueError(
                f"must be at least tlp ({tlp}): dynamic speculation starts at tlp and stays "
                f"within 1..tlp_max (got tlp_max {v})"
            )
        return v
