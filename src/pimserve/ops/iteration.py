"""One iteration's work: the kernels a decoder-only model runs for one batch step.

:func:`iteration` turns a :class:`~pimserve.specs.model.ModelSpec` and a :class:`BatchShape`
(how many query tokens each request processes this step and how many KV tokens it attends) into
an :class:`Iteration`: per-layer FC kernels (QKV, output projection, FFN or MoE router and
experts), the LM head, the attention kernels (score, softmax, context) and the tensor-parallel
all-reduces. All decoder layers are alike, so each per-layer kernel carries ``count =
n_layers`` instead of being repeated. Per-request quantities stay numpy arrays; nothing loops
over requests or tokens.

Kernels are the share of **one tensor-parallel rank**: with ``tp`` ranks, the QKV, FFN up/gate
and LM head weights are split along their output (``n``) dimension and the output projection
and FFN down along their input (``k``) dimension (Megatron-LM style); each rank runs
``n_heads / tp`` query heads and ``max(1, n_kv_heads / tp)`` KV heads (KV heads are replicated
when there are fewer than ranks). The MoE router is small and replicated on every rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pimserve.errors import ConfigurationError
from pimserve.ops.kernels import AttentionKernel, AttnOp, CollectiveKernel, FCKernel
from pimserve.specs.model import ModelSpec

ATTENTION_OPS: tuple[AttnOp, ...] = ("score", "softmax", "context")


def _whole(arr: np.ndarray) -> bool:
    """True when every element of ``arr`` is a whole number (integer dtype or integral floats)."""
    if arr.size == 0 or np.issubdtype(arr.dtype, np.integer):
        return True
    return bool(np.issubdtype(arr.dtype, np.number) and np.all(np.mod(arr, 1) == 0))


def _int_array(values: Any, field: str) -> np.ndarray:
    """``values`` as a fresh, read-only 1-D int64 array; whole-valued floats are accepted."""
    arr = np.array(values, copy=True)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ConfigurationError(f"{field} must be a 1-D array of per-request counts")
    if not _whole(arr):
        raise ConfigurationError(f"{field} must hold whole numbers of tokens")
    out = arr.astype(np.int64)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class BatchShape:
    """The shape of one batch step, per request (numpy arrays of token counts).

    - ``q_tokens[i]``: tokens request ``i`` processes this step: a prefill chunk, 1 for a plain
      decode step, or TLP (the speculation length) when a draft is verified.
    - ``context[i]``: KV tokens request ``i`` attends after this step, that is the tokens it
      already had in the KV cache plus ``q_tokens[i]``.
    - ``logit_tokens[i]``: tokens of request ``i`` whose logits the LM head computes. Default:
      ``q_tokens`` (decode and speculative verification need logits for every token); a
      prefill chunk needs 1 if it ends the prompt and 0 otherwise (see :meth:`prefill`).

    Arrays are copied and made read-only. Invalid shapes raise ``ConfigurationError``.
    """

    q_tokens: np.ndarray
    context: np.ndarray
    logit_tokens: np.ndarray | None = None

    def __post_init__(self) -> None:
        q = _int_array(self.q_tokens, "q_tokens")
        c = _int_array(self.context, "context")
        if q.shape != c.shape:
            raise ConfigurationError(
                f"q_tokens and context must have one entry per request (got {q.size} and {c.size})"
            )
        if q.size == 0:
            raise ConfigurationError("a batch needs at least one request (q_tokens is empty)")
        if np.any(q < 1):
            raise ConfigurationError(
                f"q_tokens must be >= 1 for every request (got {int(q.min())})"
            )
        if np.any(c < q):
            i = int(np.argmax(c < q))
            raise ConfigurationError(
                f"context must be >= q_tokens (past + new tokens); request {i} has "
                f"context {int(c[i])} < q_tokens {int(q[i])}"
            )
        if self.logit_tokens is None:
            lt = q
        else:
            lt = _int_array(self.logit_tokens, "logit_tokens")
            if lt.shape != q.shape:
                raise ConfigurationError(
                    f"logit_tokens must have one entry per request "
                    f"(got {lt.size}, expected {q.size})"
                )
            if np.any(lt < 0) or np.any(lt > q):
                raise ConfigurationError("logit_tokens must lie in 0..q_tokens for every request")
        object.__setattr__(self, "q_tokens", q)
        object.__setattr__(self, "context", c)
        object.__setattr__(self, "logit_tokens", lt)

    # ---- constructors --------------------------------------------------------------------
    @classmethod
    def from_uniform(
        cls, rlp: int, tlp: int, context: int | Sequence[int] | np.ndarray
    ) -> BatchShape:
        """``rlp`` requests each processing ``tlp`` tokens and attending ``context`` KV tokens
        (a scalar for all, or one value per request) after the step."""
        if rlp < 1:
            raise ConfigurationError(f"rlp (requests in the batch) must be >= 1 (got {rlp})")
        if tlp < 1:
            raise ConfigurationError(f"tlp (tokens per request per step) must be >= 1 (got {tlp})")
        ctx = np.broadcast_to(np.asarray(context), (rlp,)) if np.ndim(context) == 0 else context
        return cls(np.full(rlp, tlp, dtype=np.int64), np.asarray(ctx))

    @classmethod
    def decode(cls, past: int | Sequence[int] | np.ndarray, tlp: int = 1) -> BatchShape:
        """Decode (or speculative verification of ``tlp`` tokens) for requests that already
        hold ``past`` KV tokens each (one value per request)."""
        p = _int_array(past, "past")
        if tlp < 1:
            raise ConfigurationError(f"tlp (tokens per request per step) must be >= 1 (got {tlp})")
        if np.any(p < 0):
            raise ConfigurationError("past KV tokens must be >= 0")
        return cls(np.full(p.shape, tlp, dtype=np.int64), p + tlp)

    @classmethod
    def prefill(
        cls,
        chunk: int | Sequence[int] | np.ndarray,
        past: int | Sequence[int] | np.ndarray = 0,
        last_chunk: bool | Sequence[bool] | np.ndarray = True,
    ) -> BatchShape:
        """Prefill ``chunk`` prompt tokens per request on top of ``past`` cached tokens; a
        request needs one token's logits when its chunk is the prompt's last."""
        q = _int_array(chunk, "chunk")
        try:
            p = np.broadcast_to(_int_array(past, "past"), q.shape)
            last = np.broadcast_to(np.asarray(last_chunk, dtype=bool), q.shape)
        except ValueError:
            raise ConfigurationError(
                f"past and last_chunk must be scalars or have one entry per request ({q.size})"
            ) from None
        if np.any(p < 0):
            raise ConfigurationError("past KV tokens must be >= 0")
        return cls(q, p + q, last.astype(np.int64))

    @classmethod
    def concat(cls, *batches: BatchShape) -> BatchShape:
        """One batch holding the requests of ``batches`` in order (mixed prefill + decode)."""
        if not batches:
            raise ConfigurationError("concat needs at least one batch")
        return cls(
            np.concatenate([b.q_tokens for b in batches]),
            np.concatenate([b.context for b in batches]),
            np.concatenate([b.logits for b in batches]),
        )

    # ---- derived -------------------------------------------------------------------------
    @property
    def rlp(self) -> int:
        """Requests in the batch (request-level parallelism)."""
        return int(self.q_tokens.shape[0])

    @property
    def tokens(self) -> int:
        """Tokens processed this step, M = sum of q_tokens (the FC kernels' m)."""
        return int(self.q_tokens.sum())

    @property
    def past(self) -> np.ndarray:
        """KV tokens each request held before this step."""
        return self.context - self.q_tokens

    @property
    def logits(self) -> np.ndarray:
        """``logit_tokens`` as a (never None) array."""
        assert self.logit_tokens is not None  # set in __post_init__
        return self.logit_tokens


@dataclass(frozen=True, eq=False)
class Iteration:
    """The kernels of one batch step on one tensor-parallel rank.

    ``fc`` holds per-layer FC kernels (``count = n_layers``) labelled by ``group`` (the unit
    PAPI places on GPU or FC-PIM): ``attn_fc`` (qkv, o_proj), ``ffn`` (dense FFN), ``router``
    and ``expert{e}`` (MoE), and ``lm_head`` (``count = 1``). ``attention`` holds the score,
    softmax and context kernels (``count = n_layers``). ``collectives`` holds the two
    all-reduces per layer when ``tp > 1``. ``expert_tokens`` is the routing used: tokens sent
    to each expert per layer, shape ``(n_experts,)`` or ``(n_layers, n_experts)``; None for a
    dense model.
    """

    model: ModelSpec
    batch: BatchShape
    tp: int
    fc: list[FCKernel]
    attention: list[AttentionKernel]
    collectives: list[CollectiveKernel]
    expert_tokens: np.ndarray | None = None

    @property
    def tokens(self) -> int:
        """M: tokens processed this step (sum of q_tokens)."""
        return self.batch.tokens

    @property
    def rlp(self) -> int:
        """Requests in the batch."""
        return self.batch.rlp

    @property
    def fc_flops(self) -> float:
        """FLOPs of all FC kernels on one rank (2 per multiply-accumulate)."""
        return float(sum(k.flops * k.count for k in self.fc))

    @property
    def attention_flops(self) -> float:
        """FLOPs of all attention kernels on one rank, summed over requests."""
        return float(sum(float(a.flops.sum()) * a.count for a in self.attention))

    @property
    def flops(self) -> float:
        """FLOPs of the whole iteration on one rank (FC + attention)."""
        return self.fc_flops + self.attention_flops

    @property
    def weight_bytes(self) -> float:
        """Bytes of FC weights one rank reads (each kernel's weight once per instance)."""
        return float(sum(k.weight_bytes * k.count for k in self.fc))

    @property
    def kv_bytes(self) -> float:
        """Bytes of K and V one rank reads in attention, summed over requests and layers."""
        return float(sum(float(a.kv_bytes.sum()) * a.count for a in self.attention))

    @property
    def collective_bytes(self) -> float:
        """Bytes all-reduced per participant over the iteration."""
        return float(sum(c.bytes * c.count for c in self.collectives))

    def groups(self) -> dict[str, list[FCKernel]]:
        """FC kernels by placement group, in order of first appearance."""
        out: dict[str, list[FCKernel]] = {}
        for k in self.fc:
            out.setdefault(k.group, []).append(k)
        return out


def _check_tp(model: ModelSpec, tp: int) -> None:
    if isinstance(tp, bool) or not isinstance(tp, int | np.integer) or tp < 1:
        raise ConfigurationError(f"tp (tensor-parallel ranks) must be an integer >= 1 (got {tp!r})")
    if model.n_heads % tp:
        raise ConfigurationError(
            f"tp={tp} must divide the {model.n_heads} query heads of {model.name}"
        )
    kv = model.n_kv_heads
    if (kv >= tp and kv % tp) or (kv < tp and tp % kv):
        raise ConfigurationError(
            f"tp={tp} must divide, or be a multiple of, the {kv} KV heads of {model.name}"
        )


def _uniform_expert_tokens(model: ModelSpec, m: int) -> np.ndarray:
    """Expected tokens per expert for uniform routing: M*top_k spread evenly, the first
    (M*top_k mod E) experts getting one more (so every expert has floor or ceil of
    M*top_k/E and the total is exactly M*top_k)."""
    base, extra = divmod(m * model.experts_per_token, model.n_experts)
    out = base + (np.arange(model.n_experts) < extra).astype(np.int64)
    out.setflags(write=False)
    return out


def _check_expert_tokens(model: ModelSpec, m: int, tokens: Any) -> np.ndarray:
    arr = np.array(tokens, copy=True)
    e, k = model.n_experts, model.experts_per_token
    if arr.shape not in ((e,), (model.n_layers, e)):
        raise ConfigurationError(
            f"expert_tokens must have shape ({e},) or ({model.n_layers}, {e}) for "
            f"{model.name} (got {arr.shape})"
        )
    if not _whole(arr):
        raise ConfigurationError("expert_tokens must hold whole numbers of tokens")
    arr = arr.astype(np.int64)
    if np.any(arr < 0) or np.any(arr > m):
        raise ConfigurationError(
            f"expert_tokens must lie in 0..{m} "
            f"(each of the {m} tokens visits an expert at most once)"
        )
    sums = np.atleast_1d(arr.sum(axis=-1))
    if np.any(sums != m * k):
        bad = int(sums[np.argmax(sums != m * k)])
        raise ConfigurationError(
            f"expert_tokens must sum to tokens x top_k = {m} x {k} = {m * k} per layer (got {bad})"
        )
    arr.setflags(write=False)
    return arr


def _ffn(
    model: ModelSpec, m: int, ffn_rank: int, count: int, prefix: str, group: str
) -> list[FCKernel]:
    """One FFN (dense or one expert): [gate,] up (h -> ffn/tp) and down (ffn/tp -> h)."""
    h, dt = model.hidden_size, model.dtype_bytes
    names = ("gate", "up") if model.ffn_kind == "swiglu" else ("up",)
    out = [FCKernel(f"{prefix}_{n}", m, h, ffn_rank, count, dt, group) for n in names]
    out.append(FCKernel(f"{prefix}_down", m, ffn_rank, h, count, dt, group))
    return out


def iteration(
    model: ModelSpec,
    batch: BatchShape,
    tp: int = 1,
    expert_tokens: np.ndarray | None = None,
    lm_head: bool = True,
) -> Iteration:
    """The kernels one tensor-parallel rank runs for ``batch`` on ``model``.

    FC kernels have ``m = M`` (total tokens this step) and per-rank weight shapes: QKV
    ``k = hidden, n = (q_dim + 2 kv_dim) / tp``; output projection ``k = q_dim / tp,
    n = hidden``; FFN gate/up ``n = ffn / tp``, down ``k = ffn / tp``. For MoE models the
    router (``n = n_experts``, replicated) and each expert's gate/up/down with ``m`` = tokens
    routed to that expert (``expert_tokens``, shape ``(n_experts,)`` for every layer alike or
    ``(n_layers, n_experts)``; default the uniform expectation, see
    :func:`_uniform_expert_tokens`); experts with no tokens run no kernel. The LM head
    (``count = 1``, ``n = vocab / tp``) has ``m`` = the batch's logit tokens: every token of a
    decode or speculative-verification step (the verifier needs logits for each drafted
    token), one per request whose prefill ends this step; ``lm_head=False`` leaves it out.
    Attention kernels hold the per-request arrays. With ``tp > 1``, two all-reduces per layer
    (after the output projection and after the FFN) of ``M x hidden x dtype_bytes`` bytes;
    the LM head's logit gather is not modelled.
    """
    _check_tp(model, tp)
    m = batch.tokens
    h, d, dt, layers = model.hidden_size, model.head_dim, model.dtype_bytes, model.n_layers
    heads = model.n_heads // tp
    kv_heads = max(1, model.n_kv_heads // tp)

    fc = [
        FCKernel("qkv", m, h, (heads + 2 * kv_heads) * d, layers, dt, "attn_fc"),
        FCKernel("o_proj", m, heads * d, h, layers, dt, "attn_fc"),
    ]
    ffn_rank = math.ceil(model.ffn_size / tp)
    routed: np.ndarray | None = None
    if not model.is_moe:
        if expert_tokens is not None:
            raise ConfigurationError(f"expert_tokens given for dense model {model.name}")
        fc += _ffn(model, m, ffn_rank, layers, "ffn", "ffn")
    else:
        fc.append(FCKernel("router", m, h, model.n_experts, layers, dt, "router"))
        routed = (
            _uniform_expert_tokens(model, m)
            if expert_tokens is None
            else _check_expert_tokens(model, m, expert_tokens)
        )
        for e in range(model.n_experts):  # loop over experts (a handful), not requests
            if routed.ndim == 1:
                values, counts = routed[e : e + 1], np.array([layers])
            else:
                values, counts = np.unique(routed[:, e], return_counts=True)
            for tokens_e, n_layers_e in zip(values.tolist(), counts.tolist(), strict=True):
                if tokens_e > 0:
                    fc += _ffn(model, tokens_e, ffn_rank, n_layers_e, "expert", f"expert{e}")
    logit_tokens = int(batch.logits.sum())
    if lm_head and logit_tokens > 0:
        vocab_rank = math.ceil(model.vocab_size / tp)
        fc.append(FCKernel("lm_head", logit_tokens, h, vocab_rank, 1, dt, "lm_head"))

    attention = [
        AttentionKernel(op, batch.q_tokens, batch.context, heads, kv_heads, d, layers, dt)
        for op in ATTENTION_OPS
    ]
    collectives: list[CollectiveKernel] = []
    if tp > 1:
        nbytes = float(m * h * dt)
        collectives = [
            CollectiveKernel("allreduce_attn", nbytes, tp, layers),
            CollectiveKernel("allreduce_ffn", nbytes, tp, layers),
        ]
    return Iteration(model, batch, tp, fc, attention, collectives, routed)


def fc_intensity_eq1(rlp_tlp: float | np.ndarray, h: int) -> float | np.ndarray:
    """PAPI Eq. 1: arithmetic intensity (FLOP/byte) of an FP16 ``h x h`` FC layer with input
    ``(RLP*TLP) x h``: ``RLP*TLP * h^2 * 2 / ((2 * RLP*TLP * h + h^2) * 2)``, about RLP x TLP
    when h >> RLP x TLP. Reference for tests; the simulator uses ``FCKernel.intensity``."""
    n = np.asarray(rlp_tlp, dtype=np.float64)
    hf = float(h)
    ai = n * hf * hf * 2.0 / ((2.0 * n * hf + hf * hf) * 2.0)
    return float(ai) if ai.ndim == 0 else ai
