"""KV-hierarchy policy settings (PAM): placement, sparse reads, locality model, ablation flags.

These are data; the code that acts on them is :mod:`pimserve.policies.kv_placement` (which
blocks go where, Algorithm 2) and :mod:`pimserve.engine.kv` (the per-block state and pricing).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pimserve.specs.base import Spec


class LocalitySpec(Spec):
    """Seeded statistical model of per-block attention scores (PAM's context locality).

    The simulator never sees real attention scores, so it draws them from a model with the
    properties PAM reports (section 3.2) and Double Sparsity relies on: a small set of important
    tokens (heavy-tailed per-block salience), clustered near the current token (a recency boost
    that decays with distance), the first block always important (the attention sink), and
    importance that persists across steps but drifts slowly (a small fraction of blocks redraw
    their salience every step). The score of block ``j`` of a request at a step is::

        S_j = salience_j x (1 + recency_boost x exp(-distance_j / recency_blocks))
                         x (sink_boost if j == 0 else 1)

    normalised to sum to 1 over the request's blocks. ``pimserve.attention.locality_stats``
    measures the same statistics (reuse between steps, distance to the current block, mass in
    the selected blocks) on real score matrices, so these parameters can be checked against a
    model's real attention (see docs/metrics.md, "locality model").
    """

    salience_sigma: float = Field(
        1.5, ge=0, description="log-normal sigma of per-block salience (0 = all blocks alike)"
    )
    recency_boost: float = Field(
        8.0, ge=0, description="score multiplier (minus 1) of the current block"
    )
    recency_blocks: float = Field(
        4.0, gt=0, description="decay length of the recency boost, in blocks"
    )
    sink_boost: float = Field(8.0, ge=1, description="score multiplier of the first block")
    drift_per_step: float = Field(
        0.01, ge=0, le=1, description="fraction of blocks whose salience is redrawn each step"
    )


class KVPolicySpec(Spec):
    """How a system places, reads and moves its KV blocks across tiers."""

    placement: str = Field(
        "single-tier", description="single-tier | layered | layered-sparse | pam | offload"
    )
    sparse_ratio: float | None = Field(
        None,
        ge=1,
        description="KV compression of the sparse reads (PAM: 8x Double Sparsity); None = the "
        "policy's default (8 for layered-sparse and pam, 1 = dense for the others)",
    )
    x: float = Field(
        8.0, gt=0, description="PAM target ratio of HBM to SSD mean importance (IS_H : IS_S)"
    )
    y: float = Field(
        2.0, gt=0, description="PAM target ratio of DDR to SSD mean importance (IS_D : IS_S)"
    )
    xy_source: str = Field("", description="how x and y were found")
    ema_lambda: float = Field(
        0.6, gt=0, le=1, description="weight of the new score in the importance EMA (PAM eq. 7)"
    )
    mapping: Literal["greedy", "round-robin"] | None = Field(
        None,
        description="intra-device bank-group mapping; None = the policy's default "
        "(greedy for pam, round-robin otherwise)",
    )
    mapping_window: int = Field(
        10, gt=0, description="steps of activation history the greedy mapping uses (PAM 6.1)"
    )
    pamattention: bool | None = Field(
        None,
        description="two-stage reduction on reduction units (PAMattention); off = fixed "
        "tiling with per-tile partials merged on the GPU; None = the policy's default",
    )
    scheduling: bool | None = Field(
        None, description="online inter-tier KV scheduling (Algorithm 2); None = default"
    )
    migration: Literal["interface", "cpu"] = Field(
        "interface",
        description="migration path: PAM's re-layout interface, or through the CPU (20x slower)",
    )
    locality: LocalitySpec = Field(default_factory=LocalitySpec)
