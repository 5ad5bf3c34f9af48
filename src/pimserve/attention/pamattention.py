"""PAMattention: attention split over memory tiers and merged exactly (PAM, arXiv 2602.11521).

PAM's Algorithm 1 (§5.1) splits K/V by the device that stores them (HBM-PIM, DDR-PIM, SSD-PIM;
here any number of devices), runs *Local_Attention* on every device in parallel, itself parallel
over token blocks, then reduces in two stages: an intra-device reduction over the blocks of a
device and an inter-device reduction over the devices (done in HBM-PIM's reduction units in the
paper). Every partial result is a triple ``(O, m, l)``:

- ``O``: un-normalised output ``sum_j exp(s_j - m) v_j``, shape ``(n_q_heads, t_q, d)``;
- ``m``: row maximum of the logits ``s_j``, shape ``(n_q_heads, t_q)`` (``-inf`` if no token);
- ``l``: ``sum_j exp(s_j - m)``, shape ``(n_q_heads, t_q)`` (0 if no token).

Two partials merge exactly (online softmax, FlashDecoding split-KV): ``m = max(m_1, m_2)``,
``l = e^{m_1 - m} l_1 + e^{m_2 - m} l_2``, ``O = e^{m_1 - m} O_1 + e^{m_2 - m} O_2``, and the
attention output is ``O / l``. The merge is associative and commutative, so any split and any
reduction order give the same result up to float rounding.

Note on the paper's Algorithm 1: as printed, line 19 sets ``l = m^(t) + log(sum(l))`` (a
log-sum-exp normaliser) while the function returns ``O / l``, which needs the *linear* sum
``sum_j exp(m_j - m^(t)) l_j``; with the log-sum-exp form ``O / l`` is not softmax attention.
pimserve uses the linear-sum form (the standard FlashDecoding merge), which is exact; the
log-sum-exp value ``m + log(l)`` is available from a :class:`PartialAttention` as ``lse``.

:func:`split_plan` gives the per-stage counts (blocks and tokens per device, partials merged by
each reduction stage) that a cost model prices; :func:`pam_attention` executes exactly that plan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from pimserve.attention.reference import as_qkv, query_positions

__all__ = [
    "PartialAttention",
    "device_blocks",
    "empty_partial",
    "finalize",
    "local_attention",
    "merge",
    "pam_attention",
    "partial_elements",
    "split_plan",
]


class PartialAttention(NamedTuple):
    """Un-normalised partial attention over a subset of KV tokens.

    Attributes:
        o: ``(n_q_heads, t_q, d)`` float64, ``sum_j exp(s_j - m) v_j``.
        m: ``(n_q_heads, t_q)`` float64, running max of the logits (``-inf`` if no token seen).
        l: ``(n_q_heads, t_q)`` float64, ``sum_j exp(s_j - m)`` (0 if no token seen).
    """

    o: np.ndarray
    m: np.ndarray
    l: np.ndarray  # noqa: E741 - the paper's name

    @property
    def lse(self) -> np.ndarray:
        """Log-sum-exp of the logits, ``m + log(l)``, shape ``(n_q_heads, t_q)``; -inf if empty."""
        with np.errstate(divide="ignore"):
            return np.where(self.l > 0, self.m + np.log(np.where(self.l > 0, self.l, 1.0)), -np.inf)


def partial_elements(n_q_heads: int, t_q: int, d: int) -> int:
    """Values in one :class:`PartialAttention` of ``n_q_heads`` heads x ``t_q`` query tokens:
    ``o`` (``d`` each) plus ``m`` and ``l`` (one each): ``n_q_heads x t_q x (d + 2)``. The
    engine prices the partials a tier sends and the merge that combines them by this count
    (one definition of what a partial is: ``tests/test_attention.py`` checks it against the
    arrays :func:`local_attention` returns)."""
    return n_q_heads * t_q * (d + 2)


def empty_partial(n_q_heads: int, t_q: int, d: int) -> PartialAttention:
    """The neutral element of :func:`merge`: ``o = 0``, ``m = -inf``, ``l = 0``."""
    return PartialAttention(
        o=np.zeros((n_q_heads, t_q, d), dtype=np.float64),
        m=np.full((n_q_heads, t_q), -np.inf, dtype=np.float64),
        l=np.zeros((n_q_heads, t_q), dtype=np.float64),
    )


def local_attention(
    q: np.ndarray,
    k_blk: np.ndarray,
    v_blk: np.ndarray,
    positions: np.ndarray,
    q_positions: np.ndarray | None,
) -> PartialAttention:
    """Partial attention of all queries over one block of KV (one PU's work in PAM).

    Args:
        q: ``(n_q_heads, t_q, d)`` queries (GQA: head ``h`` reads KV head ``h // group``).
        k_blk: ``(n_kv_heads, n, d)`` keys of the block (``n`` may be 0).
        v_blk: ``(n_kv_heads, n, d)`` values of the block.
        positions: ``(n,)`` int absolute token positions of the block's KV entries (any order).
        q_positions: ``(t_q,)`` int absolute positions of the queries; KV positions greater than
            a query's position are masked for that query. None disables masking.

    Returns:
        :class:`PartialAttention` with logits scaled by ``1 / sqrt(d)``. An empty block or a fully
        masked row gives ``m = -inf``, ``l = 0``, ``o = 0`` (no NaN, no warning).
    """
    q, k_blk, v_blk, group = as_qkv(q, k_blk, v_blk)
    n_q, t_q, d = q.shape
    n = k_blk.shape[1]
    positions = np.asarray(positions, dtype=np.int64).reshape(-1)
    if positions.shape[0] != n:
        raise ValueError(f"positions has {positions.shape[0]} entries, block has {n} tokens")
    if n == 0:
        return empty_partial(n_q, t_q, d)

    # (n_kv, group, t_q, d) x (n_kv, n, d) -> (n_kv, group, t_q, n) -> (n_q, t_q, n)
    qg = q.reshape(n_q // group, group, t_q, d)
    logits = np.einsum("kgqd,knd->kgqn", qg, k_blk).reshape(n_q, t_q, n) / math.sqrt(d)
    if q_positions is not None:
        qpos = np.asarray(q_positions, dtype=np.int64).reshape(-1)
        if qpos.shape[0] != t_q:
            raise ValueError(f"q_positions has {qpos.shape[0]} entries, q has {t_q} tokens")
        visible = positions[None, :] <= qpos[:, None]  # (t_q, n)
        logits = np.where(visible[None, :, :], logits, -np.inf)

    m = logits.max(axis=-1)  # (n_q, t_q), -inf on fully masked rows
    m_safe = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(logits - m_safe[..., None])  # masked entries: exp(-inf) = 0
    l = p.sum(axis=-1)  # noqa: E741
    pg = p.reshape(n_q // group, group, t_q, n)
    o = np.einsum("kgqn,knd->kgqd", pg, v_blk).reshape(n_q, t_q, d)
    return PartialAttention(o=o, m=m, l=l)


def merge(parts: Sequence[PartialAttention]) -> PartialAttention:
    """Exact log-sum-exp (online-softmax) merge of partial attentions.

    ``m = max_j m_j``; ``l = sum_j e^{m_j - m} l_j``; ``o = sum_j e^{m_j - m} o_j``. Safe for
    ``-inf`` entries: an empty partial gets weight 0 and a row empty in every part stays
    ``(m = -inf, l = 0, o = 0)``. All parts must have the same shapes.

    Raises:
        ValueError: if ``parts`` is empty or the shapes differ.
    """
    parts = list(parts)
    if not parts:
        raise ValueError("merge needs at least one PartialAttention")
    shape_o, shape_m = parts[0].o.shape, parts[0].m.shape
    for p in parts:
        if p.o.shape != shape_o or p.m.shape != shape_m or p.l.shape != shape_m:
            raise ValueError(f"partial shapes differ: {p.o.shape} vs {shape_o}")
    if len(parts) == 1:
        return parts[0]
    ms = np.stack([p.m for p in parts])  # (P, n_q, t_q)
    m = ms.max(axis=0)
    m_safe = np.where(np.isfinite(m), m, 0.0)
    w = np.exp(ms - m_safe[None])  # -inf - finite = -inf -> weight 0; never inf - inf
    l = np.einsum("pht,pht->ht", w, np.stack([p.l for p in parts]))  # noqa: E741
    o = np.einsum("pht,phtd->htd", w, np.stack([p.o for p in parts]))
    return PartialAttention(o=o, m=m, l=l)


def finalize(part: PartialAttention) -> np.ndarray:
    """Normalised attention ``o / l``, shape ``(n_q_heads, t_q, d)``; rows with ``l = 0`` give 0."""
    out = np.zeros_like(part.o, dtype=np.float64)
    np.divide(part.o, part.l[..., None], out=out, where=part.l[..., None] > 0)
    return out


def _check_devices(device_of_token: np.ndarray, n_devices: int | None) -> tuple[np.ndarray, int]:
    dev = np.asarray(device_of_token)
    if dev.ndim != 1:
        raise ValueError(f"device_of_token must be 1-D, got shape {dev.shape}")
    if dev.size and not np.issubdtype(dev.dtype, np.integer):
        raise ValueError(f"device_of_token must hold integers, got dtype {dev.dtype}")
    dev = dev.astype(np.int64)
    if dev.size and dev.min() < 0:
        raise ValueError("device_of_token must be >= 0")
    needed = int(dev.max()) + 1 if dev.size else 0
    if n_devices is None:
        n_devices = needed
    elif n_devices < needed:
        raise ValueError(f"n_devices ({n_devices}) < largest device id + 1 ({needed})")
    return dev, n_devices


def device_blocks(
    device_of_token: np.ndarray, block_tokens: int = 16, n_devices: int | None = None
) -> list[list[np.ndarray]]:
    """Token positions of each block on each device.

    Returns a list over device ids ``0 .. n_devices - 1``; entry ``i`` is the list of blocks of
    device ``i`` (empty if the device holds no token); a block is an int64 array of at most
    ``block_tokens`` absolute KV positions: the device's tokens in position order, cut into
    consecutive runs of ``block_tokens`` (the device's tokens need not be contiguous).
    """
    if block_tokens < 1:
        raise ValueError(f"block_tokens must be >= 1, got {block_tokens}")
    dev, n_devices = _check_devices(device_of_token, n_devices)
    out: list[list[np.ndarray]] = []
    for i in range(n_devices):
        pos = np.flatnonzero(dev == i).astype(np.int64)
        out.append([pos[s : s + block_tokens] for s in range(0, pos.size, block_tokens)])
    return out


def split_plan(
    device_of_token: np.ndarray, block_tokens: int = 16, n_devices: int | None = None
) -> dict[str, Any]:
    """Per-stage counts of PAMattention for one request (one layer, all heads), for a cost model.

    Args:
        device_of_token: ``(t_kv,)`` int device id of every KV position.
        block_tokens: tokens per local-attention block (a PU's tile).
        n_devices: number of devices (default: largest id + 1); devices may hold no token.

    Returns:
        A dict of plain ints / lists of ints (lists indexed by device id):

        - ``n_devices``: devices considered;
        - ``tokens_per_device``: KV tokens on each device;
        - ``blocks_per_device``: local-attention blocks on each device,
          ``ceil(tokens / block_tokens)``;
        - ``total_tokens``, ``total_blocks``;
        - ``intra_merge_inputs``: partials each device's intra-device reduction merges
          (= its blocks; 0 or 1 means no merge work);
        - ``inter_merge_inputs``: partials the inter-device reduction merges (devices with
          at least one token);
        - ``active_devices``: ids of the devices with at least one token.
    """
    blocks = device_blocks(device_of_token, block_tokens, n_devices)
    tokens = [int(sum(b.size for b in bl)) for bl in blocks]
    n_blocks = [len(bl) for bl in blocks]
    active = [i for i, t in enumerate(tokens) if t > 0]
    return {
        "n_devices": len(blocks),
        "block_tokens": int(block_tokens),
        "tokens_per_device": tokens,
        "blocks_per_device": n_blocks,
        "total_tokens": int(sum(tokens)),
        "total_blocks": int(sum(n_blocks)),
        "intra_merge_inputs": list(n_blocks),
        "inter_merge_inputs": len(active),
        "active_devices": active,
    }


def pam_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    device_of_token: np.ndarray,
    block_tokens: int = 16,
    causal: bool = True,
    *,
    causal_offset: int | None = None,
    n_devices: int | None = None,
) -> np.ndarray:
    """PAM's Algorithm 1: split KV by device and block, local attention, two-stage exact merge.

    Args:
        q: ``(n_q_heads, t_q, d)`` queries.
        k: ``(n_kv_heads, t_kv, d)`` keys; v: same shape, values.
        device_of_token: ``(t_kv,)`` int device id of every KV position (any number of devices;
            a device may hold no token; a device's tokens need not be contiguous).
        block_tokens: tokens per local-attention block within a device.
        causal: mask KV positions after each query's absolute position (see
            :func:`pimserve.attention.reference.reference_attention`).
        causal_offset: absolute position of query 0 (default ``t_kv - t_q``).
        n_devices: number of devices (default: largest id + 1).

    Returns:
        ``(n_q_heads, t_q, d)`` float64, equal to ``reference_attention`` up to float rounding
        (the merge uses the linear-sum normaliser; see the module docstring).
    """
    q, k, v, _ = as_qkv(q, k, v)
    n_q, t_q, d = q.shape
    t_kv = k.shape[1]
    dev = np.asarray(device_of_token)
    if dev.shape != (t_kv,):
        raise ValueError(f"device_of_token has shape {dev.shape}, expected ({t_kv},)")
    q_pos = query_positions(t_q, t_kv, causal_offset) if causal else None

    per_device: list[PartialAttention] = []
    for blocks in device_blocks(dev, block_tokens, n_devices):
        if not blocks:  # device without tokens: nothing to compute or merge
            continue
        local = [local_attention(q, k[:, b], v[:, b], b, q_pos) for b in blocks]
        per_device.append(merge(local))  # intra-device reduction
    if not per_device:
        return np.zeros((n_q, t_q, d), dtype=np.float64)
    return finalize(merge(per_device))  # inter-device reduction, then O / l
