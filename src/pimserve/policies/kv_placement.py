"""KV placement across memory tiers: where new KV blocks go, which blocks are read, what moves.

Registered in ``KV_PLACEMENT`` (each is a small record of behaviour; the per-block state and the
pricing live in :mod:`pimserve.engine.kv`):

- ``single-tier`` (AttAcc): all KV in the first tier; requests that do not fit wait or are
  rejected (the engine's capacity checks), nothing spills.
- ``layered`` (L-PIM): new blocks fill the fastest tier with room, then the next; dense reads;
  nothing moves afterwards.
- ``layered-sparse`` (LS-PIM): layered placement, sparse reads (Double Sparsity top-k at the
  compression ratio), static: blocks never move.
- ``pam`` (PAM): layered placement of new blocks, sparse reads, and every step the paper's
  Algorithm 2 (:func:`algorithm2`) swaps blocks so that the tiers' mean importance approaches
  ``x : y : 1``; greedy bank-group mapping and PAMattention's two-stage reduction.
- ``offload`` (vLLM with DeepSpeed-style offloading): layered placement over GPU memory, host
  DRAM and SSD, dense reads; KV outside GPU memory is fetched to the GPU for attention.

Ablations (PAM section 7.4) switch single mechanisms off through :class:`KVPolicySpec` or the
run options (``--no-pamattention``, ``--kv-mapping round-robin``, ``--no-kv-scheduling``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pimserve.registry import Registry


@dataclass(frozen=True)
class KVPlacement:
    """Behaviour of one KV placement policy (defaults that the ablation flags may override)."""

    name: str
    fill: str  # "first": only the first tier; "fastest": the fastest tier with room
    sparse_ratio: float  # default KV compression of the reads (1 = dense)
    mapping: str  # default bank-group mapping: "greedy" | "round-robin"
    pamattention: bool  # default: two-stage reduction on reduction units
    scheduling: bool  # default: Algorithm 2 every step
    doc: str = ""


KV_PLACEMENT: Registry[KVPlacement] = Registry("KV placement")


def _register(p: KVPlacement) -> None:
    KV_PLACEMENT.register(p.name, p.doc)(p)


_register(KVPlacement("single-tier", "first", 1.0, "round-robin", False, False,
                      "AttAcc: all KV in the first tier, no spill"))
_register(KVPlacement("layered", "fastest", 1.0, "round-robin", False, False,
                      "L-PIM: fill the fastest tier first, dense reads, no movement"))
_register(KVPlacement("layered-sparse", "fastest", 8.0, "round-robin", False, False,
                      "LS-PIM: layered placement with sparse (8x) reads, static"))
_register(KVPlacement("pam", "fastest", 8.0, "greedy", True, True,
                      "PAM: sparse reads, importance-driven scheduling (Algorithm 2), greedy "
                      "bank-group mapping, PAMattention"))
_register(KVPlacement("offload", "fastest", 1.0, "round-robin", False, False,
                      "vLLM + offloading: KV beyond GPU memory fetched over PCIe for attention"))


def _swap_prefix(
    low: np.ndarray, high: np.ndarray, meets: np.ndarray
) -> int:
    """Number of greedy swaps: valid pairs (``low < high``) until ``meets`` first holds."""
    valid = low < high
    n_valid = int(np.argmin(valid)) if not valid.all() else valid.size
    hit = np.nonzero(meets[: n_valid + 1])[0]
    return int(hit[0]) if hit.size else n_valid


def algorithm2(
    importance: np.ndarray,
    tier: np.ndarray,
    x: float,
    y: float,
    max_swaps: int,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """PAM's online KV scheduling (Algorithm 2) on one step's blocks.

    ``importance`` and ``tier`` (0 = HBM, 1 = DDR, 2 = SSD) are flat arrays over the resident
    blocks. With ``IS_t`` the mean importance of tier ``t`` and ``x* = IS_H / IS_S``,
    ``y* = IS_D / IS_S``:

    (a) HBM and DDR taken together against SSD: while ``x* + y* < x + y``, swap the least
        important DDR block (the least important HBM block if DDR is empty) with the most
        important SSD block;
    (b) while ``x* / y* < x / y``, swap the least important HBM block with the most important
        DDR block.

    A swap happens only when the faster tier's block is less important than the slower tier's,
    so tiers never trade a more important block down. The greedy loop is evaluated in closed
    form: candidates are sorted once and the number of swaps is the first prefix that meets the
    target (each swap keeps the tiers' block counts, so the means after ``j`` swaps follow from
    prefix sums). At most ``max_swaps`` swaps per stage are made in one step (migration
    bandwidth); the rest continue in the next steps.

    Returns the swaps as pairs of index arrays ``(from_faster, from_slower)`` into the inputs.
    """
    imp = np.asarray(importance, dtype=np.float64)
    t = np.asarray(tier)
    swaps: list[tuple[np.ndarray, np.ndarray]] = []
    idx = [np.nonzero(t == k)[0] for k in range(3)]
    n = [i.size for i in idx]
    sums = [float(imp[i].sum()) for i in idx]

    def ends(a: np.ndarray, b: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``cap`` least important of ``a`` (ascending), most important of ``b``."""
        ca, cb = min(cap, a.size), min(cap, b.size)
        pa = a[np.argpartition(imp[a], ca - 1)[:ca]] if ca < a.size else a
        pb = b[np.argpartition(-imp[b], cb - 1)[:cb]] if cb < b.size else b
        pa = pa[np.argsort(imp[pa], kind="stable")]
        pb = pb[np.argsort(-imp[pb], kind="stable")]
        m = min(pa.size, pb.size)
        return pa[:m], pb[:m]

    # (a) HBM + DDR against SSD
    if n[2] and (n[0] or n[1]) and max_swaps > 0:
        fast = 1 if n[1] else 0
        a, b = ends(idx[fast], idx[2], max_swaps)
        if a.size:
            ca = np.concatenate([[0.0], np.cumsum(imp[a])])
            cb = np.concatenate([[0.0], np.cumsum(imp[b])])
            s_fast = sums[fast] - ca + cb
            s_ssd = sums[2] - cb + ca
            mean_s = np.maximum(s_ssd / n[2], 1e-300)
            mh = (s_fast if fast == 0 else sums[0]) / max(n[0], 1)
            md = (s_fast if fast == 1 else sums[1]) / max(n[1], 1)
            xs = np.where(n[0] > 0, mh / mean_s, 0.0)
            ys = np.where(n[1] > 0, md / mean_s, 0.0)
            target = (x if n[0] else 0.0) + (y if n[1] else 0.0)
            j = _swap_prefix(imp[a], imp[b], xs + ys >= target)
            if j:
                swaps.append((a[:j], b[:j]))
                moved_a, moved_b = a[:j], b[:j]
                t = t.copy()
                t[moved_a], t[moved_b] = 2, fast
                idx = [np.nonzero(t == k)[0] for k in range(3)]
                sums = [float(imp[i].sum()) for i in idx]
    # (b) HBM against DDR
    if n[0] and n[1] and max_swaps > 0:
        a, b = ends(idx[0], idx[1], max_swaps)
        if a.size:
            ca = np.concatenate([[0.0], np.cumsum(imp[a])])
            cb = np.concatenate([[0.0], np.cumsum(imp[b])])
            mh = (sums[0] - ca + cb) / n[0]
            md = np.maximum((sums[1] - cb + ca) / n[1], 1e-300)
            j = _swap_prefix(imp[a], imp[b], mh / md >= x / y)
            if j:
                swaps.append((a[:j], b[:j]))
    return swaps


def _ends_weighted(
    imp: np.ndarray, w: np.ndarray, a: np.ndarray, b: np.ndarray, cap: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`algorithm2`'s candidates over weighted columns, block by block: up to ``cap``
    least important blocks of columns ``a`` (ascending) and most important of ``b``
    (descending), each given as its column's index (a column of weight ``w`` stands for ``w``
    blocks of its importance, so it appears up to ``w`` times)."""
    out = []
    for cols, sign in ((a, 1.0), (b, -1.0)):
        o = cols[np.argsort(sign * imp[cols], kind="stable")]
        cw = np.cumsum(w[o])
        o = o[: int(np.searchsorted(cw, cap)) + 1]
        out.append(np.repeat(o, w[o])[:cap])
    m = min(out[0].size, out[1].size)
    return out[0][:m], out[1][:m]


def algorithm2_stage(
    importance: np.ndarray,
    tier: np.ndarray,
    weights: np.ndarray,
    x: float,
    y: float,
    max_swaps: int,
    stage: str,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One stage of :func:`algorithm2` over weighted columns (the summary KV model's state: a
    column of weight ``w`` stands for ``w`` blocks of one importance, on one tier).

    ``stage`` ``"a"``: HBM and DDR together against SSD; ``"b"``: HBM against DDR. The rule is
    :func:`algorithm2`'s, block by block: with unit weights the same blocks trade tiers.
    Returns ``(from_faster, from_slower, fast_tier)``: two arrays of equal length, one entry
    per swapped block, naming its column (a column may appear several times: that many of its
    blocks move), and the faster side's tier.
    """
    imp = np.asarray(importance, dtype=np.float64)
    w = np.asarray(weights, dtype=np.int64)
    t = np.asarray(tier)
    idx = [np.nonzero(t == k)[0] for k in range(3)]
    n = [int(w[i].sum()) for i in idx]
    sums = [float((imp[i] * w[i]).sum()) for i in idx]
    none = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), 0)
    if max_swaps <= 0:
        return none
    if stage == "a":
        if not (n[2] and (n[0] or n[1])):
            return none
        fast = 1 if n[1] else 0
        a, b = _ends_weighted(imp, w, idx[fast], idx[2], max_swaps)
        if not a.size:
            return none
        ca = np.concatenate([[0.0], np.cumsum(imp[a])])
        cb = np.concatenate([[0.0], np.cumsum(imp[b])])
        s_fast = sums[fast] - ca + cb
        s_ssd = sums[2] - cb + ca
        mean_s = np.maximum(s_ssd / n[2], 1e-300)
        mh = (s_fast if fast == 0 else sums[0]) / max(n[0], 1)
        md = (s_fast if fast == 1 else sums[1]) / max(n[1], 1)
        xs = np.where(n[0] > 0, mh / mean_s, 0.0)
        ys = np.where(n[1] > 0, md / mean_s, 0.0)
        target = (x if n[0] else 0.0) + (y if n[1] else 0.0)
        j = _swap_prefix(imp[a], imp[b], xs + ys >= target)
        return a[:j], b[:j], fast
    if not (n[0] and n[1]):
        return none
    a, b = _ends_weighted(imp, w, idx[0], idx[1], max_swaps)
    if not a.size:
        return none
    ca = np.concatenate([[0.0], np.cumsum(imp[a])])
    cb = np.concatenate([[0.0], np.cumsum(imp[b])])
    mh = (sums[0] - ca + cb) / n[0]
    md = np.maximum((sums[1] - cb + ca) / n[1], 1e-300)
    j = _swap_prefix(imp[a], imp[b], mh / md >= x / y)
    return a[:j], b[:j], 0


__all__ = ["KV_PLACEMENT", "KVPlacement", "algorithm2", "algorithm2_stage"]
