"""GPU ``head_per_sm`` attention (AttAcc's: one (request, KV head) per SM, in waves of n_sms):
hand-computed wave times, the wave packing against a per-pair brute force, and the AttAcc
reference runs (LLaMA-65B on 8 A100, GPU only) in ../shared/validation/attacc."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pimserve.errors import SpecError
from pimserve.hardware.cost import cost_model_for
from pimserve.hardware.gpu import GPUAttAccModel, GPUModel, GPURooflineModel, wave_time_s
from pimserve.ops.kernels import AttentionKernel
from pimserve.specs import load_device, load_model
from pimserve.specs.base import read_yaml, validate
from pimserve.specs.catalog import PRESETS
from pimserve.specs.devices import GPUSpec

REL = 1e-9
A100A = load_device("a100-hbm3")
SPLIT = A100A.model_copy(update={"attention_kernel": "split_kv"})
EFF_BW = 3352e9 * 0.85  # 2849.2e9 B/s, AttAcc A100a x MAX_OFF_MEM_BW_UTIL
EFF_FLOPS = 312e12 * 0.8  # 249.6e12 FLOP/s, AttAcc A100a x MAX_COMPUTE_UTIL
S = 108  # A100 SMs (AttAcc NUM_CORE)

SHARED = Path(__file__).parents[2] / "shared"
REFERENCE = SHARED / "validation" / "attacc" / "end_to_end_llama65b.csv"


def attn(op: str, n_req: int, heads: int, context: int, kv_heads: int | None = None,
         q: int = 1) -> AttentionKernel:
    return AttentionKernel(
        op,  # type: ignore[arg-type]
        q_tokens=np.full(n_req, q, dtype=np.int64),
        context=np.full(n_req, context, dtype=np.int64),
        n_heads=heads,
        n_kv_heads=heads if kv_heads is None else kv_heads,
        head_dim=128,
    )


def total(model: GPUModel, k: AttentionKernel) -> float:
    return float(np.sum(model.cost(k).time_s))


# ------------------------------------------------------------------------------------ presets
def test_presets_name_their_attention_kernel():
    raw = {d["name"]: d for d in read_yaml(PRESETS / "devices" / "gpu.yaml")}
    assert raw["a100-hbm3"]["attention_kernel"] == "head_per_sm"  # AttAcc's A100a
    assert A100A.attention_kernel == "head_per_sm"
    for name in ("a100", "h100", "h200"):  # datasheet GPUs keep the default
        assert load_device(name).attention_kernel == "split_kv"
    data = {k: v for k, v in raw["a100"].items() if k != "kind"}
    assert validate(GPUSpec, data, "x").attention_kernel == "split_kv"
    with pytest.raises(SpecError, match="attention_kernel"):
        validate(GPUSpec, {**data, "attention_kernel": "per_head"}, "gpu.yaml")
    assert GPUModel(A100A).attention_batch_coupled
    assert not GPUModel(SPLIT).attention_batch_coupled


# ------------------------------------------------------------------------------------ waves
# score, one head, L = 2048, d = 128: Q 128 + K 2048*128 + S 2048 elements = 264,320 x 2 B
# = 528,640 B; one SM draws 2849.2e9 / 108 B/s -> 108 * 528,640 / 2849.2e9 = 20.0386 us.
# Its compute, 2*2048*128 = 524,288 FLOP at 249.6e12 / 108, is 0.227 us: memory bound.
PAIR_SCORE_S = S * 528_640 / EFF_BW


@pytest.mark.parametrize(
    ("n_req", "heads", "waves"),
    [
        (1, 7, 1),  # 7 pairs on 108 SMs: one wave, 101 SMs idle
        (7, 1, 1),
        (1, 108, 1),  # a full wave
        (109, 1, 2),  # one pair past a full wave: two waves
        (1, 109, 2),
        (27, 8, 2),  # 216 pairs: exactly two waves
        (217, 1, 3),
    ],
)
def test_pairs_run_in_waves_of_n_sms(n_req, heads, waves):
    k = attn("score", n_req, heads, 2048)
    c = GPUModel(A100A).cost(k)
    assert float(np.sum(c.time_s)) == pytest.approx(waves * PAIR_SCORE_S, rel=REL)
    # the parts: memory bound, so memory_s is the time and compute_s its FLOP share
    np.testing.assert_allclose(c.memory_s, c.time_s, rtol=REL)
    flops_ratio = (S * 524_288 / EFF_FLOPS) / PAIR_SCORE_S
    np.testing.assert_allclose(c.compute_s, np.asarray(c.time_s) * flops_ratio, rtol=REL)
    # equal requests share the time equally
    np.testing.assert_allclose(c.time_s, waves * PAIR_SCORE_S / n_req, rtol=REL)


def test_one_wave_takes_as_long_as_one_pair_whatever_the_batch():
    g = GPUModel(A100A)
    one = total(g, attn("score", 1, 1, 2048))
    assert total(g, attn("score", 4, 8, 2048)) == pytest.approx(one, rel=REL)  # 32 pairs
    # split-KV instead spreads 32 pairs' bytes (no S write) over all SMs: 32/108 of a wave
    # minus the score write: 32 * (128 + 262,144) * 2 B / 2849.2e9
    assert total(GPUModel(SPLIT), attn("score", 4, 8, 2048)) == pytest.approx(
        32 * 262_272 * 2 / EFF_BW, rel=REL
    )


def test_softmax_and_context_go_through_hbm():
    g = GPUModel(A100A)
    # softmax, one pair, L 2048: reads S and writes P, 2 * 2048 * 2 B = 8,192 B;
    # 5 * 2048 = 10,240 FLOP (0.0044 us) -> 108 * 8,192 / 2849.2e9 = 0.3105 us
    assert total(g, attn("softmax", 3, 8, 2048)) == pytest.approx(S * 8_192 / EFF_BW, rel=REL)
    # context: P 2048 + V 2048*128 + O 128 elements, as the score: the same 528,640 B
    assert total(g, attn("context", 3, 8, 2048)) == pytest.approx(PAIR_SCORE_S, rel=REL)


def test_gqa_pair_is_one_kv_head_with_its_query_heads():
    # 64 query heads on 8 KV heads, q = 1, L = 2048, one request: 8 pairs, one wave; a pair
    # reads K once: Q 8*128 + K 2048*128 + S 8*2048 = 279,552 elements = 559,104 B
    g = GPUModel(A100A)
    assert total(g, attn("score", 1, 64, 2048, kv_heads=8)) == pytest.approx(
        S * 559_104 / EFF_BW, rel=REL
    )


def test_prefill_pair_can_be_compute_bound():
    # q = L = 2048, one head: score FLOPs 2*2048*2048*128 = 1,073,741,824 on one SM at
    # 249.6e12 / 108 FLOP/s = 464.6 us; bytes Q 2048*128 + K 2048*128 + S 2048*2048 =
    # 4,718,592 elements = 9,437,184 B at 2849.2e9 / 108 B/s = 357.7 us
    c = GPUModel(A100A).cost(attn("score", 1, 1, 2048, q=2048))
    assert float(c.time_s[0]) == pytest.approx(S * 1_073_741_824 / EFF_FLOPS, rel=REL)
    assert float(c.memory_s[0]) == pytest.approx(S * 9_437_184 / EFF_BW, rel=REL)


def test_mixed_contexts_pack_longest_first():
    # 100 pairs at L 4096 and 16 at L 1024 (one head per request): waves [100 long + 8 short],
    # [8 short]: time = t(4096) + t(1024), with t(L) = 108 (128 + 129 L) 2 / 2849.2e9
    def t(L: int) -> float:
        return S * (128 + 129 * L) * 2 / EFF_BW

    k = AttentionKernel("score", np.ones(116, dtype=np.int64),
                        np.array([4096] * 100 + [1024] * 16), 1, 1, 128)
    c = GPUModel(A100A).cost(k)
    assert float(np.sum(c.time_s)) == pytest.approx(t(4096) + t(1024), rel=REL)
    # the packing does not depend on the order of the requests
    rev = AttentionKernel("score", k.q_tokens, k.context[::-1].copy(), 1, 1, 128)
    np.testing.assert_allclose(GPUModel(A100A).cost(rev).time_s, np.asarray(c.time_s)[::-1],
                               rtol=REL)


def test_every_gpu_model_variant_uses_the_spec_kernel():
    k = attn("score", 109, 1, 2048)
    for cls in (GPUModel, GPURooflineModel, GPUAttAccModel):
        assert total(cls(A100A), k) == pytest.approx(2 * PAIR_SCORE_S, rel=REL)
    assert total(cost_model_for(A100A), k) == pytest.approx(2 * PAIR_SCORE_S, rel=REL)


def test_pair_alone_and_static_energy():
    g = GPUModel(A100A.model_copy(update={"static_power_w": 100.0}))
    pair = g.head_per_sm_pair(attn("score", 3, 8, 2048))
    np.testing.assert_allclose(pair.time_s, PAIR_SCORE_S, rtol=REL)  # one SM, no waves
    # 24 pairs, one wave: each request's share is a third; energy = 8 pairs' dynamic energy
    # (528,640 B x 32.4 pJ/B + 262,144 MACs x 0.32 pJ) + 100 W x the share
    c = g.cost(attn("score", 3, 8, 2048))
    dyn = 8 * (528_640 * (28.72 + 2.4 + 1.28) + 262_144 * 0.32) * 1e-12
    np.testing.assert_allclose(c.energy_j, dyn + 100.0 * PAIR_SCORE_S / 3, rtol=REL)


def test_energy_counts_the_unfused_bytes():
    # score, one pair, L 2048: 528,640 B through HBM, L2 and L1; 524,288 FLOP = 262,144 MACs
    c = GPUModel(A100A).cost(attn("score", 1, 1, 2048))
    pj = 528_640 * (28.72 + 2.4 + 1.28) + 262_144 * 0.32
    assert float(c.energy_j[0]) == pytest.approx(pj * 1e-12, rel=REL)


# ------------------------------------------------------------------------------------ packing
def test_wave_time_by_hand():
    # pairs 3,3 | 1,1 | 2,2 on 4 SMs, longest first: [3 3 2 2] [1 1] -> 3 + 1 = 4 s
    assert wave_time_s(np.array([3.0, 1.0, 2.0]), 2, 4) == 4.0
    # a request across two waves: 5,5,5 | 1 on 4 SMs -> [5 5 5 1] [1 1] -> 5 + 1 = 6 s
    assert wave_time_s(np.array([5.0, 1.0]), 3, 4) == 6.0
    # the order of the requests does not matter: in request order [1 1 1 5] [5 5] would be 10
    assert wave_time_s(np.array([1.0, 5.0]), 3, 4) == 6.0
    assert wave_time_s(np.zeros(0), 8, 108) == 0.0


def test_requests_share_the_wave_time_by_their_work():
    # 100 pairs at L 4096, 16 at L 1024, as in the test above: shares are t(L) x (total /
    # sum of pair times), so the long requests pay t(4096) / t(1024) = 4.0 times as much
    k = AttentionKernel("score", np.ones(116, dtype=np.int64),
                        np.array([4096] * 100 + [1024] * 16), 1, 1, 128)
    t = np.asarray(GPUModel(A100A).cost(k).time_s)
    assert t[0] / t[-1] == pytest.approx((128 + 129 * 4096) / (128 + 129 * 1024), rel=REL)
    np.testing.assert_allclose(t[:100], t[0], rtol=REL)


def _brute_force(pair_s: np.ndarray, h: int, s: int) -> float:
    """Every pair: repeat, sort longest first, chunk by s, add the chunk maxima."""
    t = np.sort(np.repeat(pair_s, h))[::-1]
    return float(sum(t[i : i + s].max() for i in range(0, len(t), s)))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0.0, 1e3, allow_nan=False), min_size=1, max_size=40),
    st.integers(1, 12),
    st.integers(1, 20),
)
def test_wave_time_matches_per_pair_brute_force(times, h, s):
    t = np.array(times)
    tot = wave_time_s(t, h, s)
    assert tot == pytest.approx(_brute_force(t, h, s), rel=1e-12, abs=1e-12)
    # never faster than the bandwidth-fluid bound, nor than the longest pair
    assert tot >= max(float(t.sum()) * h / s, float(t.max())) * (1 - 1e-12)
    # one more pair never makes it faster
    assert wave_time_s(np.append(t, 1.0), h, s) >= tot


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 400), st.integers(1, 64), st.integers(1, 200))
def test_equal_pairs_take_ceil_n_over_s_waves(n_req, h, s):
    got = wave_time_s(np.full(n_req, 2.5), h, s)
    assert got == pytest.approx(math.ceil(n_req * h / s) * 2.5, rel=1e-12)


# ------------------------------------------------------------------------------------ AttAcc
def _reference_rows() -> list[dict[str, str]]:
    if not REFERENCE.is_file():
        pytest.skip(f"{REFERENCE} not found (../shared is absent)")
    with REFERENCE.open() as f:
        return [r for r in csv.DictReader(f) if r["hw"] == "NONE"]


def _decode_attention_ms(model: GPUModel, lin: int, lout: int, bs: int,
                         ops: tuple[str, ...]) -> float:
    """AttAcc's per-step figure: one decode step's attention, ms, all 80 layers, tensor
    parallel 8 (each GPU has 64 / 8 heads of every request; they run at once, so one GPU's time
    is the step's), averaged over the Lout - 1 decode steps at context Lin + step
    (src/model.py ``build``: ``lin + stage`` for stage 1 .. lout - 1; src/system.py divides
    g_perf by lout - 1 and multiplies by ndec)."""
    m = load_model("llama-65b")
    per_step = []
    for step in range(1, lout):
        t = 0.0
        for op in ops:
            k = AttentionKernel(op, np.ones(bs, dtype=np.int64),  # type: ignore[arg-type]
                                np.full(bs, lin + step, dtype=np.int64),
                                m.n_heads, m.n_kv_heads, m.head_dim, 1, m.dtype_bytes)
            t += total(model, k.split_heads(8))
        per_step.append(t)
    return float(np.mean(per_step)) * m.n_layers * 1e3


def test_gpu_attention_matches_attacc_reference():
    """AttAcc's g_matmul is score + context only (its softmax is g_softmax, src/system.py
    g_perf); both are matched per row, and their geometric-mean error is within 5 %."""
    rows = _reference_rows()
    assert len(rows) == 9
    g = GPUModel(A100A)
    logs = []
    for r in rows:
        lin, lout, bs = int(r["Lin"]), int(r["Lout"]), int(r["bs"])
        mm = _decode_attention_ms(g, lin, lout, bs, ("score", "context"))
        sm = _decode_attention_ms(g, lin, lout, bs, ("softmax",))
        assert mm == pytest.approx(float(r["g_matmul"]), rel=1e-6), r
        assert sm == pytest.approx(float(r["g_softmax"]), rel=1e-6), r
        logs.append(math.log(mm / float(r["g_matmul"])))
    assert math.exp(float(np.mean(np.abs(logs)))) - 1 <= 0.05


def test_split_kv_does_not_reproduce_attacc_at_small_batch():
    # batch 4 at Lin 2048, Lout 2: 32 pairs per GPU fill 32 of 108 SMs in AttAcc; split-KV
    # keeps all busy and skips the score round trip: (2 L d + 2 d) / (2 L d + 2 L + 2 d) x
    # 32/108 = 0.294 of AttAcc's time at L = 2049
    row = next(r for r in _reference_rows()
               if (r["Lin"], r["Lout"], r["bs"]) == ("2048", "2", "4"))
    ratio = _decode_attention_ms(GPUModel(SPLIT), 2048, 2, 4, ("score", "context")) / float(
        row["g_matmul"]
    )
    assert ratio == pytest.approx(32 / 108 * (2049 * 128 + 128) / (2049 * 129 + 128), rel=1e-6)
