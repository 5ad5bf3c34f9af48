"""Kernels: the units of work one iteration asks of the hardware.

Three kinds, all frozen dataclasses:

- :class:`FCKernel`: a GEMM/GEMV ``(m x k) @ (k x n)`` against a weight matrix. ``m`` is the
  tokens in flight (RLP x TLP in decode); the weight is read once per kernel and reused ``m``
  times. Hashable, so costs are memoised by shape.
- :class:`AttentionKernel`: attention of each request's query tokens over its KV segment, with
  per-request numpy arrays (vectorised over the batch). ``op`` is ``score`` (Q K^T),
  ``softmax``, or ``context`` (P V).
- :class:`CollectiveKernel`: a tensor-parallel all-reduce of ``bytes`` over ``participants``.

``count`` says how many identical instances run per iteration (for example once per layer).
FLOPs count a multiply-accumulate as 2 FLOPs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

FCName = Literal[
    "qkv", "o_proj", "ffn_gate", "ffn_up", "ffn_down", "router", "expert_up", "expert_gate",
    "expert_down", "lm_head",
]


@dataclass(frozen=True, slots=True)
class FCKernel:
    """A fully-connected kernel: ``m`` tokens times a ``k x n`` weight, ``count`` times."""

    name: str
    m: int
    k: int
    n: int
    count: int = 1
    dtype_bytes: int = 2
    group: str = "fc"  # the FC kernel group PAPI places as one (e.g. "attn_fc", "ffn", "expert3")

    @property
    def flops(self) -> float:
        """FLOPs of one instance (2 per MAC)."""
        return 2.0 * self.m * self.k * self.n

    @property
    def weight_bytes(self) -> float:
        return float(self.k * self.n * self.dtype_bytes)

    @property
    def input_bytes(self) -> float:
        return float(self.m * self.k * self.dtype_bytes)

    @property
    def output_bytes(self) -> float:
        return float(self.m * self.n * self.dtype_bytes)

    @property
    def bytes_total(self) -> float:
        """Minimum bytes moved from memory: weights once, inputs and outputs once."""
        return self.weight_bytes + self.input_bytes + self.output_bytes

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, FLOP per byte (PAPI Eq. 1 for a square weight)."""
        return self.flops / self.bytes_total

    @property
    def reuse(self) -> int:
        """How many tokens use each weight element read (RLP x TLP in decode)."""
        return self.m

    def split(self, ways: int, axis: Literal["n", "k"] = "n") -> FCKernel:
        """The shard one of ``ways`` devices computes when the weight is split along ``axis``."""
        if ways <= 1:
            return self
        if axis == "n":
            return replace(self, n=math.ceil(self.n / ways))
        return replace(self, k=math.ceil(self.k / ways))

    def with_m(self, m: int) -> FCKernel:
        return replace(self, m=m)


AttnOp = Literal["score", "softmax", "context"]


@dataclass(frozen=True, slots=True, eq=False)
class AttentionKernel:
    """Attention of each request over its KV (segment), vectorised over requests.

    ``q_tokens[i]`` query tokens of request ``i`` attend ``context[i]`` KV tokens. Heads are
    ``n_heads`` query heads sharing ``n_kv_heads`` KV heads (GQA). ``segment`` names the KV
    segment (a tier) when the KV is split; the engine builds one kernel per segment.
    ``read_run_tokens`` > 0 says the KV is read as scattered runs of that many tokens (a
    sparse attention reading selected KV blocks) rather than one contiguous stretch; devices
    with a coarse read unit (flash pages) pay whole units per run.
    """

    op: AttnOp
    q_tokens: np.ndarray
    context: np.ndarray
    n_heads: int
    n_kv_heads: int
    head_dim: int
    count: int = 1
    dtype_bytes: int = 2
    segment: str = "all"
    name: str = field(default="")
    read_run_tokens: int = 0

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", f"attn_{self.op}")

    @property
    def n_requests(self) -> int:
        return int(self.q_tokens.shape[0])

    @property
    def group_size(self) -> int:
        return self.n_heads // self.n_kv_heads

    @property
    def flops(self) -> np.ndarray:
        """Per-request FLOPs of one instance (all heads)."""
        qc = self.q_tokens.astype(np.float64) * self.context
        if self.op == "softmax":
            return 5.0 * qc * self.n_heads  # max, subtract, exp, sum, divide
        return 2.0 * qc * self.n_heads * self.head_dim

    @property
    def kv_bytes(self) -> np.ndarray:
        """Per-request bytes of K (score) or V (context) read; softmax reads none."""
        if self.op == "softmax":
            return np.zeros(self.n_requests)
        return self.context.astype(np.float64) * self.n_kv_heads * self.head_dim * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of K (score) or V (context) per token, all of the kernel's KV heads."""
        return self.n_kv_heads * self.head_dim * self.dtype_bytes

    @property
    def score_bytes(self) -> np.ndarray:
        """Per-request bytes of the score matrix (written by score, read by softmax/context)."""
        return self.q_tokens.astype(np.float64) * self.context * self.n_heads * self.dtype_bytes

    @property
    def q_bytes(self) -> np.ndarray:
        """Per-request bytes of the query vectors sent to the device (score)."""
        return self.q_tokens.astype(np.float64) * self.n_heads * self.head_dim * self.dtype_bytes

    @property
    def out_bytes(self) -> np.ndarray:
        """Per-request bytes of the attention output (context)."""
        return self.q_bytes

    @property
    def intensity(self) -> np.ndarray:
        """FLOP per KV byte: about TLP x (query heads per KV head)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.kv_bytes > 0, self.flops / self.kv_bytes, 0.0)

    def split_heads(self, ways: int) -> AttentionKernel:
        """The share of one of ``ways`` devices when KV heads are spread over them."""
        if ways <= 1:
            return self
        kv = max(1, math.ceil(self.n_kv_heads / ways))
        return replace(self, n_kv_heads=kv, n_heads=kv * self.group_size)

    def subset(self, idx: np.ndarray) -> AttentionKernel:
        """The kernel restricted to requests ``idx`` (an index array or boolean mask)."""
        return replace(self, q_tokens=self.q_tokens[idx], context=self.context[idx])


@dataclass(frozen=True, slots=True)
class CollectiveKernel:
    """An all-reduce of ``bytes`` (per participant) among ``participants`` devices."""

    name: str
    bytes: float
    participants: int
    count: int = 1


Kernel = FCKernel | AttentionKernel | CollectiveKernel
