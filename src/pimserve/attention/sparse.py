"""Double-Sparsity-like token selection (Yang et al., arXiv 2408.07092) and locality statistics.

Double Sparsity combines *channel* sparsity and *token* sparsity: an offline calibration labels
the ``r`` outlier channels of every KV head (the channels with the largest magnitude); at decode
time the approximate attention logits over only those channels (the "label cache") rank the KV
tokens, and exact attention runs over the top ``t_kv / ratio`` tokens. PAM (arXiv 2602.11521)
runs Double Sparsity at 8x in all its experiments; its "context locality" (facts/pam.md §2) is a
statement about which tokens this selection picks from one decode step to the next, which
:func:`locality_stats` measures on real score traces.

Shapes follow :mod:`pimserve.attention.reference`: ``q (n_q_heads, t_q, d)``,
``k, v (n_kv_heads, t_kv, d)``, GQA head ``h`` reads KV head ``h // (n_q_heads // n_kv_heads)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from pimserve.attention.pamattention import finalize, local_attention
from pimserve.attention.reference import (
    as_qkv,
    causal_mask,
    check_qkv,
    query_positions,
    reference_attention,
)

__all__ = [
    "approx_scores",
    "label_channels",
    "locality_stats",
    "select_topk",
    "sparse_attention",
]

SelectMode = Literal["head", "request"]


def _check_ratio(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 1.0:
        raise ValueError(f"{name} must be a finite number >= 1 (1 = dense), got {value!r}")
    return value


def label_channels(k: np.ndarray, r: int) -> np.ndarray:
    """Outlier channels per KV head: the ``r`` channels with the largest mean ``|K|`` over tokens.

    Double Sparsity finds these offline on calibration data; here they are computed from the
    given keys.

    Args:
        k: ``(n_kv_heads, t_kv, d)`` keys.
        r: channels to keep, ``1 <= r``; clipped to ``d``.

    Returns:
        ``(n_kv_heads, min(r, d))`` int64 channel indices per head, by decreasing mean ``|K|``
        (ties: lower channel index first).
    """
    k = np.asarray(k, dtype=np.float64)
    if k.ndim != 3:
        raise ValueError(f"k must be 3-D (n_kv_heads, t_kv, d), got shape {k.shape}")
    if r < 1:
        raise ValueError(f"r must be >= 1, got {r}")
    r = min(int(r), k.shape[2])
    # mean |K| over tokens, (n_kv, d); no tokens: all channels tie
    mag = np.abs(k).mean(axis=1) if k.shape[1] else np.zeros((k.shape[0], k.shape[2]))
    return np.argsort(-mag, axis=-1, kind="stable")[:, :r].astype(np.int64)


def approx_scores(q: np.ndarray, k: np.ndarray, channels: np.ndarray) -> np.ndarray:
    """Approximate logits ``q . k / sqrt(d)`` summed over each KV head's labelled channels only.

    Args:
        q: ``(n_q_heads, t_q, d)`` queries.
        k: ``(n_kv_heads, t_kv, d)`` keys.
        channels: ``(n_kv_heads, r)`` int channel indices (from :func:`label_channels`); query
            head ``h`` uses the channels of its KV head ``h // group``.

    Returns:
        ``(n_q_heads, t_q, t_kv)`` float64 approximate logits, one per (head, query, KV position),
        not aggregated and not causally masked. Scaled by ``1 / sqrt(d)`` with the full head dim
        ``d``, so with all ``d`` channels they equal the exact logits.
    """
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    group = check_qkv(q, k, k)
    n_q, t_q, d = q.shape
    n_kv, t_kv, _ = k.shape
    ch = np.asarray(channels, dtype=np.int64)
    if ch.ndim != 2 or ch.shape[0] != n_kv:
        raise ValueError(f"channels must have shape (n_kv_heads={n_kv}, r), got {ch.shape}")
    if ch.size and (ch.min() < 0 or ch.max() >= d):
        raise ValueError(f"channels must lie in [0, {d})")
    r = ch.shape[1]
    k_sel = np.take_along_axis(k, ch[:, None, :], axis=2)  # (n_kv, t_kv, r)
    q_sel = np.take_along_axis(q, np.repeat(ch, group, axis=0)[:, None, :], axis=2)
    qg = q_sel.reshape(n_kv, group, t_q, r)
    s = np.einsum("kgqr,knr->kgqn", qg, k_sel).reshape(n_q, t_q, t_kv)
    return s / math.sqrt(d)


def select_topk(scores: np.ndarray, k_tokens: int, mode: SelectMode = "head") -> np.ndarray:
    """Top-``k_tokens`` KV positions by score.

    Args:
        scores: ``(..., t_kv)`` scores, e.g. ``(n_q_heads, t_q, t_kv)`` from
            :func:`approx_scores`; ``-inf`` marks positions that must not be preferred.
        k_tokens: tokens to keep per row, clipped to ``[0, t_kv]``.
        mode: ``"head"`` (Double Sparsity): each row (head, query token) selects its own
            ``k_tokens`` positions; ``"request"``: the union over all rows, i.e. the set of KV
            positions some head/query needs (at least ``k_tokens``, at most ``t_kv``), which is
            what a tier must read for the request.

    Returns:
        ``"head"``: ``(..., k)`` int64, each row's positions in increasing order;
        ``"request"``: ``(n_sel,)`` int64 sorted unique positions. Ties go to the lower position.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim < 1:
        raise ValueError("scores must have at least one axis (t_kv)")
    t_kv = s.shape[-1]
    k = max(0, min(int(k_tokens), t_kv))
    idx = np.argsort(-s, axis=-1, kind="stable")[..., :k]
    idx = np.sort(idx, axis=-1).astype(np.int64)
    if mode == "head":
        return idx
    if mode == "request":
        return np.unique(idx).astype(np.int64)
    raise ValueError(f"mode must be 'head' or 'request', got {mode!r}")


def sparse_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    ratio: float = 8.0,
    channel_ratio: float = 8.0,
    *,
    mode: SelectMode = "head",
    causal: bool = True,
    causal_offset: int | None = None,
    channels: np.ndarray | None = None,
) -> np.ndarray:
    """Double-Sparsity-like attention: approximate scores pick tokens, exact attention over them.

    Selects ``ceil(t_kv / ratio)`` KV tokens by approximate logits over
    ``ceil(d / channel_ratio)`` labelled channels per KV head (future positions excluded when
    ``causal``), then computes exact softmax attention over the selected tokens only.

    Args:
        q: ``(n_q_heads, t_q, d)``; k, v: ``(n_kv_heads, t_kv, d)``.
        ratio: token compression, ``>= 1`` (1 = dense attention).
        channel_ratio: channel compression for the approximate scores, ``>= 1``.
        mode: ``"head"``: every (head, query) attends its own top tokens (Double Sparsity);
            ``"request"``: all heads attend the union of the per-head selections (one gather).
        causal, causal_offset: causal masking as in ``reference_attention``.
        channels: precomputed ``(n_kv_heads, r)`` labels (offline calibration); default
            :func:`label_channels` on ``k``.

    Returns:
        ``(n_q_heads, t_q, d)`` float64. With ``ratio = 1`` it equals ``reference_attention``.

    Raises:
        ValueError: ``ratio`` or ``channel_ratio`` < 1, or an unknown ``mode``.
    """
    ratio = _check_ratio(ratio, "ratio")
    channel_ratio = _check_ratio(channel_ratio, "channel_ratio")
    if mode not in ("head", "request"):
        raise ValueError(f"mode must be 'head' or 'request', got {mode!r}")
    q, k, v, _ = as_qkv(q, k, v)
    n_q, t_q, d = q.shape
    t_kv = k.shape[1]
    k_tokens = math.ceil(t_kv / ratio)
    if channels is None:
        channels = label_channels(k, max(1, math.ceil(d / channel_ratio)))
    scores = approx_scores(q, k, channels)
    if causal:
        scores = np.where(causal_mask(t_q, t_kv, causal_offset)[None], scores, -np.inf)

    sel = select_topk(scores, k_tokens, mode=mode)
    if mode == "head":
        mask = np.zeros((n_q, t_q, t_kv), dtype=bool)
        np.put_along_axis(mask, sel, True, axis=-1)
        return reference_attention(q, k, v, causal_offset, causal=causal, mask=mask)
    q_pos = query_positions(t_q, t_kv, causal_offset) if causal else None
    return finalize(local_attention(q, k[:, sel], v[:, sel], sel, q_pos))


def _block_max(s: np.ndarray, block_tokens: int) -> np.ndarray:
    nb = math.ceil(s.size / block_tokens)
    padded = np.full(nb * block_tokens, -np.inf)
    padded[: s.size] = s
    return padded.reshape(nb, block_tokens).max(axis=1)


def locality_stats(
    score_steps: Sequence[np.ndarray],
    ratio: float = 8.0,
    block_tokens: int = 16,
    *,
    kind: Literal["logits", "probs"] = "logits",
) -> dict[str, float]:
    """Context-locality statistics of top-k *block* selection over a sequence of decode steps.

    Step ``j`` gives one score per KV position, ``score_steps[j]`` of length ``n_j``
    (non-decreasing in ``j``), e.g. attention logits or probabilities averaged over heads. Block
    ``b`` holds positions ``[b * block_tokens, (b + 1) * block_tokens)`` (the last one may be
    partial; block ids are stable across steps); a block's score is the **max** of its tokens'
    scores (one hot token makes the block worth reading). Each step selects the top
    ``ceil(n_blocks / ratio)`` blocks (ties: lower block id).

    Args:
        score_steps: list of 1-D score arrays, one per decode step.
        ratio: block compression ``>= 1``.
        block_tokens: tokens per block (the KV page size).
        kind: ``"logits"``: scores are pre-softmax logits, mass = softmax over the step;
            ``"probs"``: non-negative weights (e.g. attention probabilities), mass = share of
            their sum.

    Returns:
        Plain floats:

        - ``reuse``: mean Jaccard overlap of the selected block sets of consecutive steps
          (NaN with a single step);
        - ``distance_to_current_blocks_mean`` / ``_median`` / ``_p90``: distance in blocks from
          each selected block to the step's current (last) block, pooled over steps;
        - ``mass_top_fraction``: mean fraction of the step's softmax mass in the selected blocks;
        - ``sink_selected``: fraction of steps that select block 0;
        - ``steps``: number of steps; ``blocks_selected_mean``: mean blocks selected per step.
    """
    ratio = _check_ratio(ratio, "ratio")
    if block_tokens < 1:
        raise ValueError(f"block_tokens must be >= 1, got {block_tokens}")
    if kind not in ("logits", "probs"):
        raise ValueError(f"kind must be 'logits' or 'probs', got {kind!r}")
    steps = [np.asarray(s, dtype=np.float64) for s in score_steps]
    if not steps:
        raise ValueError("score_steps is empty")
    prev_n = 0
    for j, s in enumerate(steps):
        if s.ndim != 1 or s.size == 0:
            raise ValueError(f"score_steps[{j}] must be a non-empty 1-D array, got {s.shape}")
        if s.size < prev_n:
            raise ValueError(f"score_steps lengths must be non-decreasing (step {j})")
        if kind == "probs" and (s.min() < 0 or s.sum() <= 0):
            raise ValueError(f"score_steps[{j}]: probs must be >= 0 with a positive sum")
        prev_n = s.size

    selections: list[np.ndarray] = []
    distances: list[np.ndarray] = []
    masses: list[float] = []
    sink = 0
    for s in steps:
        blocks = _block_max(s, block_tokens)
        nb = blocks.size
        sel = np.sort(np.argsort(-blocks, kind="stable")[: math.ceil(nb / ratio)])
        selections.append(sel)
        distances.append((nb - 1) - sel)
        sink += int(sel.size > 0 and sel[0] == 0)
        p = np.exp(s - s.max()) if kind == "logits" else s
        in_sel = np.isin(np.arange(s.size) // block_tokens, sel)
        masses.append(float(p[in_sel].sum() / p.sum()))

    jacc = []
    for a, b in itertools.pairwise(selections):
        union = np.union1d(a, b).size
        jacc.append(np.intersect1d(a, b).size / union if union else 1.0)
    dist = np.concatenate(distances).astype(np.float64)
    return {
        "steps": float(len(steps)),
        "reuse": float(np.mean(jacc)) if jacc else float("nan"),
        "distance_to_current_blocks_mean": float(dist.mean()),
        "distance_to_current_blocks_median": float(np.median(dist)),
        "distance_to_current_blocks_p90": float(np.percentile(dist, 90)),
        "mass_top_fraction": float(np.mean(masses)),
        "sink_selected": sink / len(steps),
        "blocks_selected_mean": float(np.mean([x.size for x in selections])),
    }
