"""Numerical attention kernels: PAMattention and sparse attention against the plain reference.

PAMattention (split KV by device and block, local attention, intra- then inter-device merge) must
equal reference attention to float64 rounding for any shapes, GQA grouping, causal query tokens,
device layouts (empty devices, interleaved tokens) and extreme logits; the merge must be order
independent; sparse attention must be dense at ratio 1 and pick the true top tokens when it sees
all channels; locality statistics must recover a known synthetic structure.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pimserve.attention import (
    PartialAttention,
    approx_scores,
    causal_mask,
    device_blocks,
    empty_partial,
    finalize,
    label_channels,
    local_attention,
    locality_stats,
    merge,
    pam_attention,
    query_positions,
    reference_attention,
    select_topk,
    sparse_attention,
    split_plan,
)

PROPS = settings(max_examples=60, deadline=None)
FEW = settings(max_examples=25, deadline=None)
TOL = {"rtol": 1e-10, "atol": 1e-10}


@st.composite
def attention_case(draw: st.DrawFn) -> dict:
    """Random q/k/v (GQA), query tokens, device layout over 1-4 devices (some maybe empty)."""
    n_kv = draw(st.integers(1, 4))
    group = draw(st.integers(1, 4))
    t_q = draw(st.integers(1, 4))
    t_kv = draw(st.integers(t_q, 80))
    d = draw(st.sampled_from([4, 8, 16]))
    n_dev = draw(st.integers(1, 4))
    used = draw(st.lists(st.integers(0, n_dev - 1), min_size=1, max_size=n_dev, unique=True))
    layout = draw(st.sampled_from(["random", "contiguous"]))
    block_tokens = draw(st.integers(1, 8))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    q = rng.standard_normal((n_kv * group, t_q, d))
    k = rng.standard_normal((n_kv, t_kv, d))
    v = rng.standard_normal((n_kv, t_kv, d))
    dev = rng.choice(np.array(sorted(used)), size=t_kv)
    if layout == "contiguous":  # tier-like: a prefix on device a, then device b, ...
        dev = np.sort(dev)
    return {
        "q": q,
        "k": k,
        "v": v,
        "dev": dev,
        "n_dev": n_dev,
        "block_tokens": block_tokens,
    }


# ---------------------------------------------------------------- reference


def test_reference_single_query_matches_formula() -> None:
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 1, 8))
    k = rng.standard_normal((1, 5, 8))
    v = rng.standard_normal((1, 5, 8))
    out = reference_attention(q, k, v)
    for h in range(2):
        s = k[0] @ q[h, 0] / math.sqrt(8)
        p = np.exp(s - s.max())
        np.testing.assert_allclose(out[h, 0], (p / p.sum()) @ v[0], **TOL)


def test_causal_mask_and_positions() -> None:
    m = causal_mask(2, 4)
    assert m.tolist() == [[True, True, True, False], [True, True, True, True]]
    assert query_positions(3, 10).tolist() == [7, 8, 9]
    assert query_positions(2, 10, causal_offset=0).tolist() == [0, 1]
    with pytest.raises(ValueError, match="t_q"):
        query_positions(5, 3)


def test_reference_rejects_bad_shapes() -> None:
    q = np.zeros((3, 1, 4))
    k = np.zeros((2, 5, 4))
    with pytest.raises(ValueError, match="multiple"):
        reference_attention(q, k, k)
    with pytest.raises(ValueError, match="head dim"):
        reference_attention(np.zeros((2, 1, 8)), k, k)


# ---------------------------------------------------------------- PAMattention


@PROPS
@given(attention_case())
def test_pam_equals_reference(case: dict) -> None:
    q, k, v = case["q"], case["k"], case["v"]
    out = pam_attention(q, k, v, case["dev"], case["block_tokens"], n_devices=case["n_dev"])
    np.testing.assert_allclose(out, reference_attention(q, k, v), **TOL)
    assert out.shape == q.shape and out.dtype == np.float64


@FEW
@given(attention_case(), st.integers(-3, 80))
def test_pam_equals_reference_noncausal_and_offset(case: dict, offset: int) -> None:
    q, k, v, dev, bt = case["q"], case["k"], case["v"], case["dev"], case["block_tokens"]
    np.testing.assert_allclose(
        pam_attention(q, k, v, dev, bt, causal=False),
        reference_attention(q, k, v, causal=False),
        **TOL,
    )
    # explicit offset: rows before position 0 see nothing and must be 0 in both
    np.testing.assert_allclose(
        pam_attention(q, k, v, dev, bt, causal_offset=offset),
        reference_attention(q, k, v, causal_offset=offset),
        **TOL,
    )


@FEW
@given(attention_case())
def test_pam_extreme_logits(case: dict) -> None:
    q, k, v = case["q"], case["k"], case["v"]
    group = q.shape[0] // k.shape[0]
    logits = np.einsum("hqd,hkd->hqk", q, np.repeat(k, group, axis=0)) / math.sqrt(q.shape[2])
    q = q * (1e4 / np.abs(logits).max())  # logits now span about [-1e4, 1e4]
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out = pam_attention(q, k, v, case["dev"], case["block_tokens"])
        ref = reference_attention(q, k, v)
    assert np.isfinite(out).all()
    # logits of size 1e4 carry ~1e-12 absolute rounding, amplified by exp
    np.testing.assert_allclose(out, ref, rtol=1e-8, atol=1e-8)


def test_pam_causal_speculative_tokens_hand_check() -> None:
    """4 query tokens on 9 KV entries: query i sees positions 0 .. 5 + i, whatever the layout."""
    rng = np.random.default_rng(1)
    q = rng.standard_normal((4, 4, 8))
    k = rng.standard_normal((2, 9, 8))
    v = rng.standard_normal((2, 9, 8))
    dev = np.array([2, 0, 2, 1, 0, 2, 0, 2, 1])  # interleaved; device 3 declared but empty
    out = pam_attention(q, k, v, dev, block_tokens=2, n_devices=4)
    for i in range(4):
        visible = 6 + i
        sub = reference_attention(q[:, i : i + 1], k[:, :visible], v[:, :visible], causal=False)
        np.testing.assert_allclose(out[:, i : i + 1], sub, **TOL)


def test_pam_single_device_and_one_token_blocks() -> None:
    rng = np.random.default_rng(2)
    q = rng.standard_normal((8, 2, 16))
    k = rng.standard_normal((2, 33, 16))
    v = rng.standard_normal((2, 33, 16))
    ref = reference_attention(q, k, v)
    for bt in (1, 16, 64):
        np.testing.assert_allclose(pam_attention(q, k, v, np.zeros(33, int), bt), ref, **TOL)


def test_pam_rejects_bad_device_vector() -> None:
    q = np.zeros((1, 1, 4))
    k = np.zeros((1, 3, 4))
    with pytest.raises(ValueError, match="device_of_token"):
        pam_attention(q, k, k, np.zeros(4, int))
    with pytest.raises(ValueError, match=">= 0"):
        pam_attention(q, k, k, np.array([0, -1, 0]))
    with pytest.raises(ValueError, match="block_tokens"):
        pam_attention(q, k, k, np.zeros(3, int), block_tokens=0)


# ---------------------------------------------------------------- partials and merge


def test_empty_block_and_fully_masked_rows() -> None:
    rng = np.random.default_rng(3)
    q = rng.standard_normal((2, 3, 4))
    k = rng.standard_normal((1, 5, 4))
    v = rng.standard_normal((1, 5, 4))
    with np.errstate(all="raise"):
        empty = local_attention(q, k[:, :0], v[:, :0], np.zeros(0, int), np.array([0, 1, 2]))
        # block at positions 10..14 is in every query's future
        masked = local_attention(q, k, v, np.arange(10, 15), np.array([0, 1, 2]))
        for p in (empty, masked):
            assert np.all(p.m == -np.inf) and np.all(p.l == 0) and np.all(p.o == 0)
            assert np.all(finalize(p) == 0)
        both = merge([empty, masked])
        assert np.all(both.m == -np.inf) and np.all(both.l == 0) and np.all(both.o == 0)
        real = local_attention(q, k, v, np.arange(5), None)
        merged = merge([empty, real, masked, empty_partial(2, 3, 4)])
    np.testing.assert_array_equal(merged.m, real.m)
    np.testing.assert_allclose(finalize(merged), finalize(real), **TOL)


def test_partial_row_masking_mixed() -> None:
    """One block where query 0 sees nothing and query 1 sees one token."""
    q = np.ones((1, 2, 4))
    k = np.ones((1, 2, 4))
    v = np.arange(8.0).reshape(1, 2, 4)
    p = local_attention(q, k, v, np.array([5, 6]), np.array([4, 5]))
    assert p.m[0, 0] == -np.inf and p.l[0, 0] == 0
    assert p.l[0, 1] == 1.0
    np.testing.assert_allclose(finalize(p)[0], [[0, 0, 0, 0], [0, 1, 2, 3]])


@PROPS
@given(attention_case(), st.integers(1, 6), st.randoms(use_true_random=False))
def test_merge_associative_and_order_independent(case: dict, n_parts: int, rnd) -> None:
    q, k, v = case["q"], case["k"], case["v"]
    t_kv = k.shape[1]
    qpos = query_positions(q.shape[1], t_kv)
    labels = np.array([rnd.randrange(n_parts) for _ in range(t_kv)])
    parts = []
    for i in range(n_parts):  # some parts may be empty
        pos = np.flatnonzero(labels == i)
        parts.append(local_attention(q, k[:, pos], v[:, pos], pos, qpos))
    flat = merge(parts)
    shuffled = list(parts)
    rnd.shuffle(shuffled)
    left = parts[0]
    for p in parts[1:]:
        left = merge([left, p])
    right = parts[-1]
    for p in reversed(parts[:-1]):
        right = merge([p, right])
    ref = reference_attention(q, k, v)
    for m in (flat, merge(shuffled), left, right):
        np.testing.assert_allclose(finalize(m), ref, **TOL)
        np.testing.assert_array_equal(m.m, flat.m)  # max is exact
        np.testing.assert_allclose(m.l, flat.l, rtol=1e-12)
        np.testing.assert_allclose(m.lse, flat.lse, rtol=1e-12)


def test_merge_rejects_empty_and_mismatched() -> None:
    with pytest.raises(ValueError, match="at least one"):
        merge([])
    with pytest.raises(ValueError, match="shapes"):
        merge([empty_partial(1, 1, 4), empty_partial(2, 1, 4)])


def test_partial_is_unpackable() -> None:
    o, m, l = empty_partial(1, 2, 3)  # noqa: E741
    assert o.shape == (1, 2, 3) and m.shape == l.shape == (1, 2)
    assert isinstance(empty_partial(1, 1, 1), PartialAttention)


# ---------------------------------------------------------------- split plan


def test_split_plan_hand_example() -> None:
    dev = np.array([0, 0, 0, 2, 2, 0, 0, 2, 0, 0])  # device 0: 7 tokens, 1: none, 2: 3 tokens
    plan = split_plan(dev, block_tokens=3, n_devices=4)
    assert plan["n_devices"] == 4
    assert plan["tokens_per_device"] == [7, 0, 3, 0]
    assert plan["blocks_per_device"] == [3, 0, 1, 0]
    assert plan["intra_merge_inputs"] == [3, 0, 1, 0]
    assert plan["inter_merge_inputs"] == 2
    assert plan["active_devices"] == [0, 2]
    assert plan["total_tokens"] == 10 and plan["total_blocks"] == 4
    blocks = device_blocks(dev, 3, n_devices=4)
    assert [b.tolist() for b in blocks[0]] == [[0, 1, 2], [5, 6, 8], [9]]
    assert [b.tolist() for b in blocks[2]] == [[3, 4, 7]]
    assert blocks[1] == [] and blocks[3] == []


@PROPS
@given(attention_case())
def test_split_plan_consistent(case: dict) -> None:
    dev, bt, n_dev = case["dev"], case["block_tokens"], case["n_dev"]
    plan = split_plan(dev, bt, n_devices=n_dev)
    counts = np.bincount(dev, minlength=n_dev)
    assert plan["tokens_per_device"] == counts.tolist()
    assert plan["blocks_per_device"] == [math.ceil(c / bt) for c in counts]
    assert plan["inter_merge_inputs"] == int((counts > 0).sum())
    assert plan["total_tokens"] == dev.size
    blocks = device_blocks(dev, bt, n_devices=n_dev)
    allpos = np.sort(np.concatenate([b for bl in blocks for b in bl]))
    np.testing.assert_array_equal(allpos, np.arange(dev.size))  # a partition of the KV
    assert all(b.size <= bt for bl in blocks for b in bl)


# ---------------------------------------------------------------- sparse attention


@FEW
@given(attention_case(), st.sampled_from(["head", "request"]))
def test_sparse_ratio_one_is_dense(case: dict, mode: str) -> None:
    q, k, v = case["q"], case["k"], case["v"]
    out = sparse_attention(q, k, v, ratio=1.0, mode=mode)
    np.testing.assert_allclose(out, reference_attention(q, k, v), **TOL)


@FEW
@given(attention_case(), st.integers(1, 10))
def test_full_channels_pick_true_top_tokens(case: dict, k_tokens: int) -> None:
    q, k = case["q"], case["k"]
    n_kv, t_kv, d = k.shape
    group = q.shape[0] // n_kv
    chans = label_channels(k, d)
    assert chans.shape == (n_kv, d)
    scores = approx_scores(q, k, chans)
    exact = np.einsum("hqd,hkd->hqk", q, np.repeat(k, group, axis=0)) / math.sqrt(d)
    np.testing.assert_allclose(scores, exact, **TOL)
    sel = select_topk(scores, k_tokens)
    kk = min(k_tokens, t_kv)
    assert sel.shape == (*q.shape[:2], kk)
    # every selected score >= every unselected score, per (head, query)
    for h, i in itertools.product(range(q.shape[0]), range(q.shape[1])):
        chosen = np.zeros(t_kv, bool)
        chosen[sel[h, i]] = True
        if kk < t_kv:
            assert exact[h, i, chosen].min() >= exact[h, i, ~chosen].max() - 1e-12
    union = select_topk(scores, k_tokens, mode="request")
    np.testing.assert_array_equal(union, np.unique(sel))


@FEW
@given(attention_case(), st.sampled_from([2.0, 3.5, 8.0]))
def test_sparse_attention_is_exact_over_selected(case: dict, ratio: float) -> None:
    """With all channels, sparse attention = reference restricted to the true top tokens."""
    q, k, v = case["q"], case["k"], case["v"]
    t_q, t_kv, d = q.shape[1], k.shape[1], q.shape[2]
    group = q.shape[0] // k.shape[0]
    exact = np.einsum("hqd,hkd->hqk", q, np.repeat(k, group, axis=0)) / math.sqrt(d)
    exact = np.where(causal_mask(t_q, t_kv)[None], exact, -np.inf)
    sel = select_topk(exact, math.ceil(t_kv / ratio))
    mask = np.zeros(exact.shape, bool)
    np.put_along_axis(mask, sel, True, axis=-1)
    want = reference_attention(q, k, v, mask=mask)
    got = sparse_attention(q, k, v, ratio=ratio, channel_ratio=1.0)
    np.testing.assert_allclose(got, want, **TOL)
    # request mode: every head attends the union of the selections
    union = np.unique(sel)
    sub = reference_attention(q, k, v, mask=np.isin(np.arange(t_kv), union)[None, None, :])
    got_req = sparse_attention(q, k, v, ratio=ratio, channel_ratio=1.0, mode="request")
    np.testing.assert_allclose(got_req, sub, **TOL)


def test_label_channels_finds_outliers() -> None:
    rng = np.random.default_rng(4)
    k = rng.standard_normal((2, 50, 16)) * 0.1
    k[0, :, [3, 11]] *= 100.0
    k[1, :, [0, 7]] *= 100.0
    k[1, :, 7] *= 2.0
    chans = label_channels(k, 2)
    assert sorted(chans[0].tolist()) == [3, 11]
    assert chans[1].tolist() == [7, 0]  # by decreasing magnitude


def test_sparse_rejects_bad_ratio() -> None:
    x = np.zeros((1, 1, 4))
    with pytest.raises(ValueError, match="ratio"):
        sparse_attention(x, x, x, ratio=0.5)
    with pytest.raises(ValueError, match="channel_ratio"):
        sparse_attention(x, x, x, channel_ratio=0.0)
    with pytest.raises(ValueError, match="mode"):
        sparse_attention(x, x, x, mode="tile")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ratio"):
        locality_stats([np.zeros(4)], ratio=0.9)


# ---------------------------------------------------------------- locality statistics


def _hot_block_steps(rng: np.random.Generator, n_steps: int = 16) -> list[np.ndarray]:
    """Steps of 497..512 tokens (32 blocks of 16): hot blocks 0, 10, 20 and the current block."""
    steps = []
    for j in range(n_steps):
        n = 497 + j
        s = rng.standard_normal(n)
        s[[3, 165, 330]] = 12.0  # blocks 0 (attention sink), 10, 20
        s[n - 1] = 12.0  # the current token, block 31
        steps.append(s)
    return steps


def test_locality_hot_blocks() -> None:
    stats = locality_stats(_hot_block_steps(np.random.default_rng(5)), ratio=8.0, block_tokens=16)
    assert all(isinstance(x, float) for x in stats.values())
    assert stats["steps"] == 16.0
    assert stats["blocks_selected_mean"] == 4.0  # ceil(32 / 8)
    assert stats["reuse"] == pytest.approx(1.0)
    dist = np.array([31, 21, 11, 0] * 16, dtype=float)
    assert stats["distance_to_current_blocks_mean"] == pytest.approx(dist.mean())
    assert stats["distance_to_current_blocks_median"] == pytest.approx(np.median(dist))
    assert stats["distance_to_current_blocks_p90"] == pytest.approx(np.percentile(dist, 90))
    assert stats["sink_selected"] == 1.0
    assert 0.8 < stats["mass_top_fraction"] <= 1.0


def test_locality_probs_kind_matches_logits() -> None:
    steps = _hot_block_steps(np.random.default_rng(6), n_steps=4)
    probs = [np.exp(s - s.max()) / np.exp(s - s.max()).sum() for s in steps]
    a = locality_stats(steps)
    b = locality_stats(probs, kind="probs")
    for key in a:
        assert a[key] == pytest.approx(b[key])


def test_locality_random_scores_low_reuse() -> None:
    rng = np.random.default_rng(7)
    steps = [rng.standard_normal(1024) for _ in range(30)]  # 64 blocks, 8 selected, i.i.d.
    stats = locality_stats(steps, ratio=8.0, block_tokens=16)
    assert stats["reuse"] < 0.3  # random 8-of-64 sets overlap ~0.07
    assert stats["sink_selected"] < 0.5
    assert stats["mass_top_fraction"] < 0.6
    assert 20 < stats["distance_to_current_blocks_mean"] < 44


def test_locality_single_step_and_validation() -> None:
    stats = locality_stats([np.arange(40.0)], ratio=2.0, block_tokens=8)  # 5 blocks, pick 3
    assert math.isnan(stats["reuse"])
    assert stats["distance_to_current_blocks_mean"] == pytest.approx(1.0)  # blocks 2, 3, 4
    assert stats["sink_selected"] == 0.0
    with pytest.raises(ValueError, match="non-decreasing"):
        locality_stats([np.zeros(10), np.zeros(5)])
    with pytest.raises(ValueError, match="empty"):
        locality_stats([])
    with pytest.raises(ValueError, match="probs"):
        locality_stats([np.array([-1.0, 2.0])], kind="probs")


def test_partial_elements_is_the_size_of_a_partial():
    """The engine prices partials by partial_elements; it counts exactly the values of the
    PartialAttention that local_attention returns (o, m and l)."""
    import numpy as np

    from pimserve.attention.pamattention import local_attention, partial_elements

    rng = np.random.default_rng(0)
    h, t, d, n = 4, 2, 16, 40
    q = rng.normal(size=(h, t, d))
    k = rng.normal(size=(2, n, d))  # GQA: 2 KV heads for 4 query heads
    v = rng.normal(size=(2, n, d))
    part = local_attention(q, k, v, np.arange(n), None)
    assert part.o.size + part.m.size + part.l.size == partial_elements(h, t, d)
