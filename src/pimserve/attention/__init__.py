"""Numerical attention kernels: reference attention, PAMattention split/merge, sparse selection.

Everything here is real numpy code (float64), tested for exactness against
:func:`reference_attention`, so that the split/merge logic the simulator prices is the logic that
is proven correct.
"""

from pimserve.attention.pamattention import (
    PartialAttention,
    device_blocks,
    empty_partial,
    finalize,
    local_attention,
    merge,
    pam_attention,
    split_plan,
)
from pimserve.attention.reference import (
    causal_mask,
    check_qkv,
    query_positions,
    reference_attention,
)
from pimserve.attention.sparse import (
    approx_scores,
    label_channels,
    locality_stats,
    select_topk,
    sparse_attention,
)

__all__ = [
    "PartialAttention",
    "approx_scores",
    "causal_mask",
    "check_qkv",
    "device_blocks",
    "empty_partial",
    "finalize",
    "label_channels",
    "local_attention",
    "locality_stats",
    "merge",
    "pam_attention",
    "query_positions",
    "reference_attention",
    "select_topk",
    "sparse_attention",
    "split_plan",
]
