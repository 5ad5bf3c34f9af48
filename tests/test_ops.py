"""ops: one iteration's kernels, FLOPs and bytes checked against hand calculations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pimserve.errors import ConfigurationError
from pimserve.ops import BatchShape, FCKernel, fc_intensity_eq1, iteration
from pimserve.specs import load_model

LLAMA65 = load_model("llama-65b")
LLAMA3_70 = load_model("llama3-70b")
MIXTRAL = load_model("mixtral-8x7b")


# ---- PAPI Eq. 1 ---------------------------------------------------------------------------------
@pytest.mark.parametrize("h", [8192, 9216, 12288])
@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 32, 64])
def test_fc_intensity_is_papi_eq1_and_about_rlp_x_tlp(h, n):
    ai = FCKernel("fc", m=n, k=h, n=h).intensity
    assert ai == fc_intensity_eq1(n, h)  # same formula, exact
    # n / (1 + 2n/h): worst case n = 64, h = 8192 -> 1/(1 + 1/64), 1.6% below 64
    assert abs(ai - n) / n < 0.05
    assert ai < n


def test_eq1_by_hand():
    # RLP x TLP = 4, h = 4: 4*16*2 / ((2*4*4 + 16)*2) = 128 / 96
    assert fc_intensity_eq1(4, 4) == pytest.approx(128 / 96, rel=1e-15)
    assert np.allclose(fc_intensity_eq1(np.array([1, 4]), 4), [32 / 48, 128 / 96])


# ---- attention intensity ------------------------------------------------------------------------
@pytest.mark.parametrize(("model", "group"), [(LLAMA65, 1), (LLAMA3_70, 8)])
@pytest.mark.parametrize("tlp", [1, 2, 4, 8])
def test_attention_intensity_is_tlp_times_group(model, group, tlp):
    assert model.group_size == group
    batch = BatchShape.from_uniform(rlp=4, tlp=tlp, context=[4096, 5000, 8000, 2048])
    it = iteration(model, batch)
    score, _, context = it.attention
    # score: 2 q c H d FLOPs over c KV d 2 bytes = q H / KV = TLP x group, exactly
    assert np.all(score.intensity == tlp * group)
    # with Q in and the output out: q G / (1 + q G / c): at most 8 x 8 / 2048 = 3.1% below
    flops = score.flops + context.flops
    nbytes = score.kv_bytes + context.kv_bytes + score.q_bytes + context.out_bytes
    assert np.allclose(flops / nbytes, tlp * group, rtol=0.04)
    assert np.all(flops / nbytes < tlp * group)


# ---- FLOPs and bytes by hand --------------------------------------------------------------------
def test_llama65b_decode_one_token_flops_by_hand():
    it = iteration(LLAMA65, BatchShape.from_uniform(rlp=1, tlp=1, context=1024))
    # FC: 2 FLOPs per weight except the input embedding (a lookup):
    # params 65,284,341,760 - 32000 x 8192 (262,144,000) = 65,022,197,760 -> x2
    fc = 2 * 65_022_197_760
    # attention per layer: score 2 x 1 x 1024 x 64 x 128 = 16,777,216; softmax 5 x 1024 x 64
    # = 327,680; context 16,777,216 -> 33,882,112 x 80 layers = 2,710,568,960
    attn = 2_710_568_960
    assert it.fc_flops == fc
    assert it.attention_flops == attn
    assert it.flops == 132_754_964_480 == fc + attn
    # reads every weight once but the embedding: 65,022,197,760 x 2 B
    assert it.weight_bytes == 2 * 65_022_197_760
    # KV read: 1024 tokens x 2.5 MiB
    assert it.kv_bytes == 1024 * 2.5 * 2**20


def test_llama65b_kernel_shapes():
    it = iteration(LLAMA65, BatchShape.from_uniform(rlp=8, tlp=4, context=512))
    shapes = {k.name: (k.m, k.k, k.n, k.count, k.group) for k in it.fc}
    assert shapes == {
        "qkv": (32, 8192, 3 * 8192, 80, "attn_fc"),
        "o_proj": (32, 8192, 8192, 80, "attn_fc"),
        "ffn_gate": (32, 8192, 22016, 80, "ffn"),
        "ffn_up": (32, 8192, 22016, 80, "ffn"),
        "ffn_down": (32, 22016, 8192, 80, "ffn"),
        "lm_head": (32, 8192, 32000, 1, "lm_head"),  # every speculative token needs logits
    }
    assert [a.op for a in it.attention] == ["score", "softmax", "context"]
    assert all(a.count == 80 and a.n_requests == 8 for a in it.attention)
    assert it.collectives == [] and it.tokens == 32 and it.rlp == 8
    assert list(it.groups()) == ["attn_fc", "ffn", "lm_head"]


def test_gqa_and_relu_shapes():
    it = iteration(LLAMA3_70, BatchShape.decode([100, 200]))
    qkv = it.fc[0]
    assert (qkv.k, qkv.n) == (8192, 8192 + 2 * 1024)  # 64 q heads + 2 x 8 kv heads of 128
    opt = iteration(load_model("opt-66b"), BatchShape.decode([10]))
    assert [k.name for k in opt.fc] == ["qkv", "o_proj", "ffn_up", "ffn_down", "lm_head"]


@pytest.mark.parametrize("name", ["llama-65b", "gpt3-175b", "mixtral-8x7b", "qwen2.5-32b"])
def test_weight_bytes_read_are_the_model_minus_input_embedding(name):
    # with every expert active (M x top_k >= E), one iteration reads each weight once; the
    # input embedding is a lookup, and a tied LM head reads the embedding matrix itself
    m = load_model(name)
    it = iteration(m, BatchShape.from_uniform(rlp=16, tlp=1, context=64))
    embedding = 0 if m.tied_embeddings else m.vocab_size * m.hidden_size
    assert it.weight_bytes == (m.n_params - embedding) * m.dtype_bytes


def test_kv_bytes_are_context_times_kv_per_token():
    ctx = np.array([1, 17, 4096, 333])
    it = iteration(LLAMA3_70, BatchShape(q_tokens=[1, 1, 4, 2], context=ctx))
    assert it.kv_bytes == ctx.sum() * LLAMA3_70.kv_bytes_per_token  # 4447 x 320 KiB


# ---- tensor parallelism -------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(["llama-65b", "llama3-70b", "llama2-70b", "llama3-8b"]),
    st.sampled_from([2, 4, 8]),
    st.lists(st.tuples(st.integers(1, 16), st.integers(0, 5000)), min_size=1, max_size=20),
)
def test_tp_splits_conserve_flops_weights_and_kv(name, tp, reqs):
    m = load_model(name)
    q = np.array([r[0] for r in reqs])
    batch = BatchShape(q, q + np.array([r[1] for r in reqs]))
    one, rank = iteration(m, batch), iteration(m, batch, tp=tp)
    assert rank.flops * tp == one.flops
    assert rank.weight_bytes * tp == one.weight_bytes
    assert rank.kv_bytes * tp == one.kv_bytes  # 8 KV heads split over <= 8 ranks
    assert [(c.bytes, c.participants, c.count) for c in rank.collectives] == [
        (batch.tokens * m.hidden_size * 2, tp, m.n_layers)
    ] * 2


def test_kv_heads_replicate_beyond_their_count():
    # Llama-3-8B: 32 q heads, 8 KV heads; 16 ranks -> 2 q heads and 1 (replicated) KV head each
    score = iteration(load_model("llama3-8b"), BatchShape.decode([9]), tp=16).attention[0]
    assert (score.n_heads, score.n_kv_heads) == (2, 1)


@pytest.mark.parametrize("tp", [0, 3, 2.0])
def test_bad_tp_is_a_configuration_error(tp):
    with pytest.raises(ConfigurationError, match="tp"):
        iteration(LLAMA65, BatchShape.decode([1]), tp=tp)


# ---- MoE ----------------------------------------------------------------------------------------
def _expert_kernels(it):
    return [k for k in it.fc if k.group.startswith("expert")]


def test_moe_default_routing_is_uniform_and_conserves_tokens():
    it = iteration(MIXTRAL, BatchShape.from_uniform(rlp=5, tlp=2, context=100))
    # M = 10 tokens x top-2 = 20 assignments over 8 experts: 4 experts get 3, 4 get 2
    assert it.expert_tokens.tolist() == [3, 3, 3, 3, 2, 2, 2, 2]
    ups = [k for k in _expert_kernels(it) if k.name == "expert_up"]
    assert sum(k.m for k in ups) == 10 * 2
    assert max(k.m for k in ups) == 3  # ceil(20 / 8)
    router = next(k for k in it.fc if k.name == "router")
    assert (router.m, router.k, router.n, router.group) == (10, 4096, 8, "router")
    assert "ffn" not in it.groups()


def test_moe_experts_without_tokens_run_nothing():
    it = iteration(MIXTRAL, BatchShape.decode([5, 6]), expert_tokens=[2, 0, 0, 1, 0, 1, 0, 0])
    assert {k.group for k in _expert_kernels(it)} == {"expert0", "expert3", "expert5"}
    assert len(_expert_kernels(it)) == 3 * 3  # gate, up, down each


def test_moe_per_layer_routing_groups_equal_layers():
    routing = np.zeros((32, 8), dtype=int)
    routing[:, 0] = 1  # one token, top-2: expert 0 every layer, then expert 1 or 2
    routing[:20, 1] = 1
    routing[20:, 2] = 1
    it = iteration(MIXTRAL, BatchShape.decode([7]), expert_tokens=routing)
    counts = {k.group: k.count for k in _expert_kernels(it) if k.name == "expert_up"}
    assert counts == {"expert0": 32, "expert1": 20, "expert2": 12}


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.integers(0, 2**31 - 1))
def test_moe_routed_tokens_sum_to_m_times_topk(m, seed):
    rng = np.random.default_rng(seed)
    # each token picks 2 distinct experts of 8: vectorised top-2 of random scores
    picks = np.argsort(rng.random((m, 8)), axis=1)[:, :2]
    tokens = np.bincount(picks.ravel(), minlength=8)
    it = iteration(MIXTRAL, BatchShape.decode(np.zeros(m, dtype=int)), expert_tokens=tokens)
    ups = [k for k in _expert_kernels(it) if k.name == "expert_up"]
    assert sum(k.m for k in ups) == m * 2
    # expert FLOPs: 2 x (M x top_k) x 3 matrices x h x ffn x layers
    expert_flops = sum(k.flops * k.count for k in _expert_kernels(it))
    assert expert_flops == 2 * m * 2 * 3 * 4096 * 14336 * 32


@pytest.mark.parametrize(
    ("tokens", "match"),
    [
        ([3, 3, 3, 3, 3, 3, 3, 3], "sum to"),
        ([9, 0, 0, 0, 0, 0, 0, 1], "0..5"),
        ([1, 1, 1], "shape"),
        ([1.5, 1.5, 1, 1, 1, 1, 1, 2], "whole"),
    ],
)
def test_bad_expert_tokens_are_configuration_errors(tokens, match):
    with pytest.raises(ConfigurationError, match=match):
        iteration(MIXTRAL, BatchShape.decode([1] * 5), expert_tokens=np.array(tokens))


def test_expert_tokens_for_a_dense_model_is_an_error():
    with pytest.raises(ConfigurationError, match="dense"):
        iteration(LLAMA65, BatchShape.decode([1]), expert_tokens=np.array([1]))


# ---- BatchShape and the LM head -----------------------------------------------------------------
def test_lm_head_rows_for_prefill_decode_and_mixed():
    pre = BatchShape.prefill([100, 50], past=[0, 200], last_chunk=[True, False])
    assert pre.context.tolist() == [100, 250] and pre.logits.tolist() == [1, 0]
    dec = BatchShape.decode([10, 20, 30], tlp=4)
    mixed = BatchShape.concat(pre, dec)
    it = iteration(LLAMA65, mixed)
    head = it.fc[-1]
    assert head.name == "lm_head" and head.m == 1 + 3 * 4 and head.count == 1
    assert it.tokens == 150 + 12 and it.fc[0].m == 162
    mid = BatchShape.prefill([64], last_chunk=False)
    assert "lm_head" not in iteration(LLAMA65, mid).groups()
    assert "lm_head" not in iteration(LLAMA65, dec, lm_head=False).groups()


def test_from_uniform_broadcasts_and_copies():
    ctx = np.array([5, 6, 7])
    b = BatchShape.from_uniform(3, 2, ctx)
    ctx[0] = 1  # the batch holds its own, read-only copy
    assert b.context.tolist() == [5, 6, 7] and b.q_tokens.tolist() == [2, 2, 2]
    assert b.past.tolist() == [3, 4, 5] and b.context.dtype == np.int64
    with pytest.raises(ValueError):
        b.q_tokens[0] = 9
    assert BatchShape.from_uniform(2, 1, 10).context.tolist() == [10, 10]


@pytest.mark.parametrize(
    ("q", "c", "match"),
    [
        ([1, 1], [5], "one entry per request"),
        ([0, 1], [5, 5], "q_tokens must be >= 1"),
        ([4, 1], [3, 5], "context must be >= q_tokens"),
        ([], [], "at least one request"),
        ([1.5], [3], "whole numbers"),
    ],
)
def test_bad_batch_is_a_configuration_error(q, c, match):
    with pytest.raises(ConfigurationError, match=match):
        BatchShape(np.array(q), np.array(c))


@pytest.mark.parametrize(("rlp", "tlp"), [(0, 1), (1, 0)])
def test_from_uniform_rejects_zero(rlp, tlp):
    with pytest.raises(ConfigurationError):
        BatchShape.from_uniform(rlp, tlp, 10)


def test_attention_is_vectorised_per_request():
    q = np.array([1, 4, 8])
    c = np.array([10, 100, 1000])
    it = iteration(LLAMA3_70, BatchShape(q, c))
    score = it.attention[0]
    # per request: 2 q c x 64 heads x 128 = 16384 q c
    assert score.flops.tolist() == (16384 * q * c).tolist()
    assert score.q_tokens is it.batch.q_tokens  # no per-request copies


def test_prefill_with_mismatched_past_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="one entry per request"):
        BatchShape.prefill([4, 5], past=[1, 2, 3])
