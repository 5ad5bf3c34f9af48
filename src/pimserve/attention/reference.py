"""Plain reference attention (float64), the ground truth for PAMattention and sparse attention.

Shapes (all arrays are numpy):

- ``q``: ``(n_q_heads, t_q, d)``: ``t_q`` query tokens (1 for plain decode, TLP > 1 for
  speculative tokens, a chunk for prefill).
- ``k``, ``v``: ``(n_kv_heads, t_kv, d)``. Grouped-query attention (GQA): ``n_q_heads`` is a
  multiple of ``n_kv_heads`` and query head ``h`` reads KV head ``h // (n_q_heads // n_kv_heads)``.

Logits are scaled by ``1 / sqrt(d)``. Causal masking: query token ``i`` (0-based among the
``t_q`` queries) sits at absolute position ``causal_offset + i`` (by default
``causal_offset = t_kv - t_q``, i.e. the last ``t_q`` KV entries are the queries' own K/V) and may
attend KV positions ``<=`` that position. A query row with no visible KV position returns 0.
"""

from __future__ import annotations

import numpy as np

__all__ = ["causal_mask", "check_qkv", "query_positions", "reference_attention"]


def check_qkv(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> int:
    """Validate q/k/v shapes and return the GQA group size ``n_q_heads // n_kv_heads``.

    Raises ValueError naming the offending array when a shape does not fit.
    """
    if q.ndim != 3 or k.ndim != 3 or v.ndim != 3:
        raise ValueError(
            f"q, k, v must be 3-D (heads, tokens, d); got q{q.shape}, k{k.shape}, v{v.shape}"
        )
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape; got k{k.shape}, v{v.shape}")
    n_q, _, d = q.shape
    n_kv, _, d_kv = k.shape
    if d != d_kv:
        raise ValueError(f"head dim of q ({d}) and k ({d_kv}) differ")
    if n_kv == 0 or n_q % n_kv != 0:
        raise ValueError(f"n_q_heads ({n_q}) must be a positive multiple of n_kv_heads ({n_kv})")
    return n_q // n_kv


def as_qkv(
    q: np.ndarray, k: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """q, k, v as float64 arrays, checked (:func:`check_qkv`), and the GQA group size."""
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    return q, k, v, check_qkv(q, k, v)


def query_positions(t_q: int, t_kv: int, causal_offset: int | None = None) -> np.ndarray:
    """Absolute positions of the ``t_q`` query tokens, shape ``(t_q,)`` int64.

    ``causal_offset`` is the position of query 0; by default ``t_kv - t_q`` (the queries are the
    last ``t_q`` KV entries), which requires ``t_q <= t_kv``.
    """
    if causal_offset is None:
        if t_q > t_kv:
            raise ValueError(
                f"t_q ({t_q}) > t_kv ({t_kv}): the queries' own K/V must be in the KV cache; "
                "pass causal_offset explicitly"
            )
        causal_offset = t_kv - t_q
    return np.arange(causal_offset, causal_offset + t_q, dtype=np.int64)


def causal_mask(t_q: int, t_kv: int, causal_offset: int | None = None) -> np.ndarray:
    """Boolean mask ``(t_q, t_kv)``: True where query ``i`` may attend KV position ``j``.

    Query ``i`` sits at absolute position ``causal_offset + i`` (default ``t_kv - t_q``) and sees
    positions ``j <= causal_offset + i``.
    """
    qpos = query_positions(t_q, t_kv, causal_offset)
    return np.arange(t_kv, dtype=np.int64)[None, :] <= qpos[:, None]


def reference_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    causal_offset: int | None = None,
    *,
    causal: bool = True,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Exact softmax attention, computed in float64 with a max-subtracted (stable) softmax.

    Args:
        q: queries ``(n_q_heads, t_q, d)``.
        k: keys ``(n_kv_heads, t_kv, d)``.
        v: values ``(n_kv_heads, t_kv, d)``.
        causal_offset: absolute position of query 0 (default ``t_kv - t_q``); used when
            ``causal`` is True.
        causal: apply causal masking among the query tokens (default True).
        mask: optional extra boolean mask of visible KV positions, broadcastable to
            ``(n_q_heads, t_q, t_kv)`` (True = visible); combined (AND) with the causal mask.
            Sparse attention uses it to restrict each query to its selected tokens.

    Returns:
        ``(n_q_heads, t_q, d)`` float64 attention output; rows with no visible KV position are 0.
    """
    q, k, v, group = as_qkv(q, k, v)
    n_q, t_q, d = q.shape
    t_kv = k.shape[1]

    k_h = np.repeat(k, group, axis=0)  # (n_q, t_kv, d): head h -> kv head h // group
    v_h = np.repeat(v, group, axis=0)
    logits = np.einsum("hqd,hkd->hqk", q, k_h) / np.sqrt(d)

    visible = np.ones((n_q, t_q, t_kv), dtype=bool)
    if causal:
        visible &= causal_mask(t_q, t_kv, causal_offset)[None, :, :]
    if mask is not None:
        visible &= np.broadcast_to(np.asarray(mask, dtype=bool), visible.shape)
    logits = np.where(visible, logits, -np.inf)

    if t_kv == 0:
        return np.zeros((n_q, t_q, d), dtype=np.float64)
    m = logits.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)  # fully masked rows: exp(-inf - 0) = 0, no NaN
    p = np.exp(logits - m)
    den = p.sum(axis=-1, keepdims=True)
    num = np.einsum("hqk,hkd->hqd", p, v_h)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out
