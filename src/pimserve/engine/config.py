"""RunConfig: the options of one simulation, typed, with help text that becomes CLI options."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pimserve.specs.base import Spec


class RunConfig(Spec):
    """How a run serves its requests. Each field is a `pimserve run` option of the same name."""

    batching: Literal["auto", "static", "continuous"] = Field(
        "auto",
        description="static: a batch starts together and the next starts when it empties "
        "(PAPI); continuous: admit arrivals every iteration while KV fits (vLLM); "
        "auto: static when every request arrives at t=0, else continuous",
    )
    batch: int = Field(16, gt=0, description="static batch size, or max running requests")
    tlp: int = Field(1, gt=0, description="tokens verified per request per decode step "
                     "(speculation length; 1 = no speculation)")
    acceptance: float = Field(0.8, ge=0, le=1, description="per-token draft acceptance prob.")
    speculation: str = Field("fixed", description="fixed | dynamic TLP")
    tlp_max: int = Field(8, gt=0, description="upper bound on TLP for dynamic speculation")
    draft_model: str | None = Field(None, description="draft model priced on the GPU (optional)")
    prefill_chunk: int | None = Field(
        None, gt=0, description="chunked prefill: prompt tokens per request per iteration"
    )
    fc_placement: str | None = Field(None, description="override the system's FC placement")
    alpha: float | None = Field(None, gt=0, description="override PAPI's alpha")
    kv_block_tokens: int = Field(16, gt=0, description="KV block size in tokens (PagedAttention)")
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
    long_context: Literal["reject", "truncate"] = Field(
        "reject",
        description="requests longer than the model's context: reject (counted) or truncate "
        "the prompt (counted)",
    )
    moe_router: Literal["uniform", "skewed"] = Field("uniform", description="MoE routing model")
    moe_skew: float = Field(1.0, ge=0, description="Zipf exponent of expert popularity (skewed)")
    seed: int = Field(0, description="seed of the run's one random generator")
    record_steps: bool = Field(
        False, description="keep a per-iteration log (time, RLP, TLP, FC placement) in the result"
    )
    max_iterations: int | None = Field(None, gt=0, description="stop after this many iterations")
