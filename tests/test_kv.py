"""KV hierarchy (PAM): placement invariants, Algorithm 2, mapping, qualitative results, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pimserve
from pimserve.engine.config import RunConfig
from pimserve.engine.kv import KVHierarchy
from pimserve.engine.system import BuiltSystem
from pimserve.errors import ConfigurationError, PimserveError
from pimserve.policies.kv_placement import algorithm2
from pimserve.specs import load_model, load_system
from pimserve.specs.base import validate
from pimserve.specs.system import SystemSpec


def small_tiers(placement: str = "pam", **kv) -> SystemSpec:
    """A three-tier system small enough that LLaMA3-8B's KV spills into every tier."""
    d = load_system("pam").model_dump()
    d["name"] = "small-tiers"
    d["tensor_parallel"], d["pipeline_parallel"] = 1, 1
    d["groups"][0]["count"] = 1
    d["groups"][1]["count"] = 2  # 32 GB of HBM-PIM, 16 GB of it for weights
    d["groups"][2]["count"] = 1
    d["groups"][3]["count"] = 1
    d["policies"]["kv"].update(placement=placement, **kv)
    return validate(SystemSpec, d, "system")


def check_invariants(kvh: KVHierarchy, live: dict[int, int]) -> None:
    """No block lost or duplicated; capacity never exceeded; freed slots hold nothing. Under
    the summary model a column stands for ``_wt`` blocks, the merged blocks' bank-group
    histogram holds exactly the blocks of the merged columns, tier by tier, and the merged
    blocks read are among them."""
    used = np.zeros(kvh.n_tiers, dtype=np.int64)
    for req, tokens in live.items():
        s = int(kvh.slot_of[req])
        assert s >= 0
        n = int(kvh.nblk[s])
        w = kvh._wt[s, :n]
        assert (w >= 1).all()
        assert int(w.sum()) == -(-tokens // kvh.block_tokens)
        t = kvh.tier[s, :n]
        assert (t >= 0).all(), "a live block has no tier"
        assert (kvh.tier[s, n:] == -1).all(), "a block beyond the request's length"
        used += np.bincount(t, weights=w, minlength=kvh.n_tiers).astype(np.int64)
        if kvh.summary_columns is None:
            assert (w == 1).all()
        else:
            assert n <= 2 * kvh.summary_columns + 4
            for k in range(kvh.n_tiers):
                hist = kvh._mh[s, kvh._hoff[k]: kvh._hoff[k + 1]]
                assert int(hist.sum()) == int(w[(w > 1) & (t == k)].sum())
            # the merged blocks read: a sub-histogram of the merged blocks
            assert (kvh._mr[s] >= 0).all() and (kvh._mr[s] <= kvh._mh[s]).all()
    live_slots = {int(kvh.slot_of[r]) for r in live}
    for s in set(range(kvh.max_slots)) - live_slots:
        assert (kvh.tier[s] == -1).all(), "a free slot still holds blocks"
    for k, tier in enumerate(kvh.tiers):
        assert tier.used == used[k]
        assert 0 <= tier.used <= tier.capacity_blocks


@pytest.mark.parametrize("placement", ["pam", "layered", "layered-sparse"])
@pytest.mark.parametrize("kv_model", ["exact", "summary"])
def test_placement_invariants_under_random_serving(placement: str, kv_model: str) -> None:
    spec, model = small_tiers(placement), load_model("llama3-8b")
    built = BuiltSystem.build(spec, model)
    rng = np.random.default_rng(1)
    # requests of 2,000-30,000 tokens: 125-1,875 blocks, so 128 summary columns merge
    cfg = RunConfig(batch=64, kv_model=kv_model, kv_summary_columns=128,
                    kv_exact_max_blocks=128)
    kvh = KVHierarchy(built, model, cfg, rng, max_slots=64, n_requests=400)
    cap_tokens = kvh.capacity_blocks * kvh.block_tokens
    live: dict[int, int] = {}
    next_id = 0
    spilled = set()
    for _step in range(120):
        # admit while the KV fits, grow every request, finish some
        while len(live) < 64 and sum(live.values()) + 40_000 < cap_tokens * 0.9:
            live[next_id] = int(rng.integers(2000, 30_000))
            next_id += 1
        ids = np.array(sorted(live), dtype=np.int64)
        grow = rng.integers(1, 3, ids.size)
        for i, g in zip(ids.tolist(), grow.tolist(), strict=True):
            live[i] += g
        tok = np.array([live[i] for i in ids.tolist()], dtype=np.int64)
        kvh.reserve(ids, tok)
        kvh.step(ids, tok, 1)
        check_invariants(kvh, live)
        spilled.update(k for k, t in enumerate(kvh.tiers) if t.used)
        done = [i for i in ids.tolist() if rng.random() < 0.03]
        kvh.release(np.array(done, dtype=np.int64))
        for i in done:
            live.pop(i)
        check_invariants(kvh, live)
    assert spilled == {0, 1, 2}, "the test should fill every tier"
    assert kvh._merged == (kv_model == "summary"), "the summary model should have merged"
    if placement == "pam":
        assert kvh.migrated_bytes > 0
    else:
        assert kvh.migrated_bytes == 0


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 60), st.integers(0, 60), st.integers(0, 60),
    st.floats(1.1, 20), st.floats(1.0, 10), st.integers(0, 2**31 - 1),
)
def test_algorithm2_moves_only_less_important_blocks_down(nh, nd, ns, x, y, seed) -> None:
    rng = np.random.default_rng(seed)
    imp = rng.lognormal(0, 1.5, nh + nd + ns)
    tier = np.repeat([0, 1, 2], [nh, nd, ns])
    rng.shuffle(tier)
    t = tier.copy()
    for a, b in algorithm2(imp, tier, x, y, max_swaps=10_000):
        assert a.size == b.size and a.size > 0
        assert (t[a] < t[b]).all(), "a swap goes from a faster tier to a slower one"
        assert (imp[a] < imp[b]).all(), "only a less important block moves to a slower tier"
        t[a], t[b] = t[b].copy(), t[a].copy()
    # counts are preserved
    assert (np.bincount(t, minlength=3) == np.bincount(tier, minlength=3)).all()


def test_algorithm2_reaches_the_target_and_then_stops() -> None:
    rng = np.random.default_rng(0)
    imp = rng.lognormal(0, 1.5, 3000)
    t = rng.integers(0, 3, 3000)  # importance-blind placement: ratio near 1:1:1
    for _round in range(50):  # one call per decode step; (b) can undo a little of (a)
        swaps = algorithm2(imp, t, 8.0, 2.0, max_swaps=10_000)
        if not swaps:
            break
        for a, b in swaps:
            t[a], t[b] = t[b].copy(), t[a].copy()
    else:
        pytest.fail("Algorithm 2 did not settle in 50 steps")
    m = [imp[t == k].mean() for k in range(3)]
    assert (m[0] + m[1]) / m[2] >= 10.0 - 1e-9  # (a): x* + y* >= x + y
    assert m[0] / m[1] >= 4.0 - 1e-9  # (b): x* / y* >= x / y
    assert m[0] > m[1] > m[2]


def test_greedy_mapping_beats_round_robin_under_skewed_access() -> None:
    """Requests of equal length put their hot recent blocks on the same bank groups under
    round-robin (block index mod bank groups); PAM's greedy rule spreads them."""
    spec, model = small_tiers("pam"), load_model("llama3-8b")
    built = BuiltSystem.build(spec, model)
    times = {}
    for mapping in ("greedy", "round-robin"):
        cfg = RunConfig(batch=64, kv_mapping=mapping, kv_scheduling=False)
        kvh = KVHierarchy(built, model, cfg, np.random.default_rng(3), 64, 64)
        ids = np.arange(48)
        tok = np.full(48, 1500)  # all in HBM-PIM (256 bank groups per stack)
        total = 0.0
        for _ in range(30):
            tok = tok + 1
            kvh.reserve(ids, tok)
            total += kvh.step(ids, tok, 1).attention_s
        times[mapping] = total
    assert times["round-robin"] > 1.2 * times["greedy"]


def _serve(
    kvh: KVHierarchy, seed: int, steps: int = 40, one_call: bool = False, short_until: int = 0
) -> list:
    """Admit, grow, step and finish random requests; every step's outputs, then the final
    per-block placement and the summary. Before step ``short_until`` prompts are short (the
    KV stays on the first tier), then up to 20,000 tokens."""
    rng = np.random.default_rng(seed)
    cap_tokens = kvh.capacity_blocks * kvh.block_tokens
    live: dict[int, int] = {}
    next_id = 0
    out: list = []
    for _step in range(steps):
        new = []
        while len(live) < 40 and sum(live.values()) + 40_000 < 0.85 * cap_tokens:
            longest = 2_000 if _step < short_until else 20_000
            live[next_id] = int(rng.integers(1, longest))  # a new request: its whole prompt
            new.append(next_id)
            next_id += 1
        ids = np.array(sorted(live), dtype=np.int64)
        for i in ids.tolist():
            live[i] += 1
        tok = np.array([live[i] for i in ids.tolist()], dtype=np.int64)
        if one_call:  # as the simulator: prompts first, then step(..., reserve=True)
            written = 0.0
            if new:
                written = kvh.reserve(np.array(new), np.array([live[i] - 1 for i in new]))
            st = kvh.step(ids, tok, 1, reserve=True)
            written += st.write_s
        else:
            written = kvh.reserve(ids, tok)
            st = kvh.step(ids, tok, 1)
        out.append((written, st.attention_s, st.attention_j, st.communication_s,
                    st.migration_s, list(st.by_tier_s), list(st.partials_by_tier_s),
                    st.reduction_s, st.fetch_s))
        done = [i for i in ids.tolist() if rng.random() < 0.05]
        kvh.release(np.array(done, dtype=np.int64))
        for i in done:
            live.pop(i)
    out.append((kvh.tier.tolist(), kvh.nblk.tolist(), kvh.summary()))
    return out


@pytest.mark.parametrize("placement", ["pam", "layered-sparse", "layered"])
@pytest.mark.parametrize(
    "switch", ["narrow-gather", "sink-unfolded", "scores-unchecked", "one-tier-general",
               "one-tier-general-two-calls", "resident-recounted"]
)
def test_fast_paths_give_the_same_results(placement: str, switch: str) -> None:
    """The step's speed paths (whole-row gathers, the sink boost folded into the recency table,
    relying on positive scores: importance 0 marks a new block, the one-tier decode step)
    give bit-identical results to the general ones, across spills into every tier,
    migrations and finished requests."""
    spec, model = small_tiers(placement), load_model("llama3-8b")
    built = BuiltSystem.build(spec, model)
    runs = []
    fast_steps = 0
    for general in (False, True):
        kvh = KVHierarchy(built, model, RunConfig(batch=48), np.random.default_rng(5), 48, 4000)
        if general and switch == "narrow-gather":
            kvh._wide_factor = 0
        elif general and switch == "sink-unfolded":
            kvh._fold_sink = False
        elif general and switch == "scores-unchecked":
            kvh._positive_scores = False  # NaN marks a new block; zero-score guards on
        elif general and switch == "resident-recounted":
            kvh._incremental_resident = False  # one count over the step's blocks each step
        elif general:  # one-tier-general*
            kvh._fast_one_tier = False
        if not general:  # count the steps the one-tier path takes
            fast = kvh._step_one_tier

            def counted(*a: object, _f=fast) -> object:
                nonlocal fast_steps
                out = _f(*a)
                fast_steps += out is not None
                return out

            kvh._step_one_tier = counted
        # the one-tier path: short prompts on the first tier, then a spill
        one_tier = switch.startswith("one-tier-general")
        scenario = {"steps": 60, "short_until": 15} if one_tier else {}
        runs.append(_serve(kvh, 11, one_call=not switch.endswith("two-calls"), **scenario))
    assert runs[0] == runs[1]
    kv_bytes = runs[0][-1][2]["kv_bytes_by_tier"]
    if one_tier:
        assert fast_steps > 10, "the test should exercise the one-tier path"
        assert kv_bytes["ddr"] > 0, "the test should spill beyond the first tier"
    else:
        assert kv_bytes["ssd"] > 0, "the test should fill every tier"


def test_resident_loads_kept_across_writes_equal_a_recount() -> None:
    """The step's resident blocks by bank group, kept from one count over every block held
    (updated by reservations, Algorithm 2's moves, runs and releases; recounted after the
    summary model's writes), equal a count over the step's own blocks at every step: with
    requests holding blocks outside the step, with requests summarised and released."""
    spec, model = small_tiers("pam"), load_model("llama3-8b")
    built = BuiltSystem.build(spec, model)
    cfg = RunConfig(batch=48, kv_summary_columns=32, kv_exact_max_blocks=256)
    kvh = KVHierarchy(built, model, cfg, np.random.default_rng(2), 48, 4000)
    kept = kvh._resident
    seen = {"steps": 0, "outside": 0, "recounts": 0}

    def checked(slots: np.ndarray, bgs: np.ndarray) -> np.ndarray:
        seen["recounts"] += kvh._held is None
        out = kept(slots, bgs)
        want = np.bincount(bgs.ravel(), minlength=kvh._n_codes)
        np.testing.assert_array_equal(out[1:], want[1:])
        hold = kvh.nblk[: kvh.max_slots] > 0
        hold[slots] = False
        seen["steps"] += 1
        seen["outside"] += bool(hold.any())
        return out

    kvh._resident = checked
    rng = np.random.default_rng(4)
    live: dict[int, int] = {}
    for i in range(40):  # short requests (exact), a few long ones (summarised): 3 tiers
        live[i] = int(rng.integers(100, 4000)) if i % 6 else int(rng.integers(20_000, 40_000))
    kvh.reserve(np.array(list(live)), np.array(list(live.values())))
    for step in range(40):
        ids = np.array(sorted(live), dtype=np.int64)
        if step % 3:  # a step of the short requests only: the rest wait, holding blocks
            ids = ids[ids % 6 != 0]
        for i in ids.tolist():
            live[i] += 1
        kvh.step(ids, np.array([live[i] for i in ids.tolist()]), 1, reserve=True)
        done = [i for i in ids.tolist() if rng.random() < 0.04]
        kvh.release(np.array(done, dtype=np.int64))
        for i in done:
            live.pop(i)
    assert kvh.migrated_bytes > 0, "the test should move blocks between tiers"
    assert seen["outside"] > 5 and seen["recounts"] >= 1
    assert seen["steps"] - seen["recounts"] > 5, "steps after kept updates, not recounts"


def _scores(kvh: KVHierarchy, req: int) -> np.ndarray:
    """The locality model's normalised scores S of request ``req``'s blocks from its current
    salience (LocalitySpec's formula, in float64)."""
    loc = kvh.loc
    slot = int(kvh.slot_of[req])
    n = int(kvh.nblk[slot])
    d = n - 1 - np.arange(n)
    s = kvh.sal[slot, :n] * (1.0 + loc.recency_boost * np.exp(-d / loc.recency_blocks))
    s[0] *= loc.sink_boost
    return s / s.sum()


def test_importance_is_kept_while_the_kv_spans_tiers() -> None:
    """PAM's importance EMA feeds only Algorithm 2, which runs while the KV spans more than one
    tier: on one tier it is not updated; at the first step on more than one tier every
    stepping block starts afresh (I = S, whatever it held before), then I = 0.6 S + 0.4 I."""
    spec, model = small_tiers("pam"), load_model("llama3-8b")
    built = BuiltSystem.build(spec, model)
    cfg = RunConfig(batch=48, kv_model="exact")  # (the per-block semantics)
    kvh = KVHierarchy(built, model, cfg, np.random.default_rng(1), 48, 100)
    ids, tok = np.arange(10), np.full(10, 1000)
    kvh.reserve(ids, tok)
    for _ in range(5):
        tok += 1
        kvh.step(ids, tok, 1, reserve=True)
    assert not kvh.imp.any(), "no importance is kept on one tier"
    kvh.imp[:] = 0.5  # what a stale EMA would hold
    kvh.reserve(np.array([10]), np.array([150_000]))  # beyond the HBM tier's 140k tokens
    assert kvh.tiers[1].used > 0
    ids, tok = np.arange(11), np.append(tok + 1, 150_001)
    kvh.step(ids, tok, 1)
    first = {}
    for r in ids.tolist():
        slot, n = int(kvh.slot_of[r]), int(kvh.nblk[int(kvh.slot_of[r])])
        first[r] = _scores(kvh, r)
        np.testing.assert_allclose(kvh.imp[slot, :n], first[r], rtol=2e-5, atol=1e-9)
    tok += 1
    kvh.step(ids, tok, 1)
    for r in (0, 10):
        slot, n = int(kvh.slot_of[r]), int(kvh.nblk[int(kvh.slot_of[r])])
        want = 0.6 * _scores(kvh, r) + 0.4 * first[r]
        np.testing.assert_allclose(kvh.imp[slot, :n], want, rtol=2e-5, atol=1e-9)


def test_every_block_drifts_at_the_stated_rate() -> None:
    """LocalitySpec's ``drift_per_step``: each block, of a short request or a long one, redraws
    its salience with that probability per step (not each request's blocks at a rate that
    depends on how many blocks the others hold); cells beyond a request's blocks stay empty."""
    p = 0.05
    spec = small_tiers("pam", locality={"drift_per_step": p})
    model = load_model("llama3-8b")
    kvh = KVHierarchy(BuiltSystem.build(spec, model), model, RunConfig(batch=8),
                      np.random.default_rng(3), 8, 16)
    ids, tok = np.arange(2), np.array([4 * 16, 200 * 16])  # 4 and 200 blocks
    kvh.reserve(ids, tok)
    slots = kvh.slot_of[ids]
    steps = 400
    changed = np.zeros(2)
    before = kvh.sal[slots].copy()
    for _ in range(steps):
        kvh.step(ids, tok, 1)
        now = kvh.sal[slots].copy()
        changed += (now != before).sum(axis=1)
        before = now
    rate = changed / (np.array([4, 200]) * steps)
    # expected 0.05 for both (short request: 80 of 1,600 block-steps, sd ~9); drawing the
    # request uniformly would give the short one's blocks ~0.6 and the long one's ~0.026
    assert rate == pytest.approx([p, p], rel=0.35)
    assert (before[0, 4:] == 0).all() and (before[1, 200:] == 0).all()


def test_without_pamattention_every_read_blocks_partial_crosses_the_stacks_io() -> None:
    """Fixed tiling (``pamattention: false``) sends every read block's partial (O, m, l) of
    every head to the GPUs; from HBM-PIM, the GPUs' own stacks, over the stacks' I/O. With
    PAMattention a request on one tier has its result on HBM-PIM: nothing leaves, and there is
    no inter-device reduction to run."""
    spec, model = small_tiers("pam"), load_model("llama3-8b")
    built = BuiltSystem.build(spec, model)
    ids, tok = np.arange(6), np.array([300, 700, 1200, 2000, 90, 4000])
    steps = {}
    for pam in (True, False):
        kvh = KVHierarchy(built, model, RunConfig(batch=8, pamattention=pam),
                          np.random.default_rng(5), 8, 16)
        kvh.reserve(ids, tok)
        steps[pam] = (kvh.step(ids, tok, 1), kvh.read_blocks, kvh)
    (on, read_on, kvh), (off, read_off, _) = steps[True], steps[False]
    assert read_on == read_off  # the same draws: the same blocks read
    hbm = kvh.tiers[0]
    assert hbm.group.link is None and kvh.tiers[1].used == 0  # one tier, the GPUs' own
    per_block = model.n_heads * (model.head_dim + 2) * model.dtype_bytes  # one layer
    io = hbm.group.device.io_bytes_per_s * hbm.group.count
    expect = model.n_layers * read_off * per_block / io
    assert on.partials_by_tier_s[0] == 0 and on.reduction_s == 0
    assert off.partials_by_tier_s[0] == pytest.approx(expect, rel=1e-12)
    assert off.attention_s - on.attention_s == pytest.approx(expect, rel=1e-9)
    assert off.attention_j > on.attention_j


def test_a_step_before_any_reserve_gives_a_slot_and_reads_nothing() -> None:
    spec, model = small_tiers("pam"), load_model("llama3-8b")
    built = BuiltSystem.build(spec, model)
    kvh = KVHierarchy(built, model, RunConfig(batch=8), np.random.default_rng(1), 8, 16)
    ids, tok = np.arange(3), np.full(3, 100)
    kvh.reserve(ids[:2], tok[:2])
    st = kvh.step(ids, tok, 1)  # request 2 holds no block yet
    s = int(kvh.slot_of[2])
    assert s >= 0 and kvh.nblk[s] == 0
    assert st.attention_s > 0
    assert kvh.read_blocks == 2 and kvh.resident_blocks == 2 * 7  # ceil(7 / 8) each
    check_invariants(kvh, {0: 100, 1: 100})
    kvh.reserve(ids, tok + 1)
    kvh.step(ids, tok + 1, 1)
    check_invariants(kvh, {0: 101, 1: 101, 2: 101})


# ------------------------------------------------------------------------------------------
# qualitative results (PAM section 7)
# ------------------------------------------------------------------------------------------
def run(system: str, batch: int, n: int, **kw) -> pimserve.RunResult:
    return pimserve.simulate(system, "llama3-70b", "arxiv-sum", n_requests=n, batch=batch, **kw)


def test_pam_beats_ls_pim_beats_l_pim_on_long_context_batch_256() -> None:
    thr = {s: run(s, 256, 256).throughput_tok_s for s in ("pam", "ls-pim", "l-pim")}
    assert thr["pam"] > thr["ls-pim"] > thr["l-pim"]


@pytest.fixture(scope="module")
def spill_runs() -> dict[str, pimserve.RunResult]:
    """Batch 1024 kept full (offline, continuous): the KV spills from HBM-PIM into DDR-PIM."""
    runs = {
        "pam": {}, "no-pamattention": {"pamattention": False},
        "no-mapping": {"kv_mapping": "round-robin"}, "no-scheduling": {"kv_scheduling": False},
    }
    out = {k: run("pam", 1024, 1024, batching="continuous", max_iterations=300, **o)
           for k, o in runs.items()}
    for s in ("ls-pim", "l-pim", "vllm-offload"):
        out[s] = run(s, 1024, 1024, batching="continuous", max_iterations=300)
    return out


def test_kv_spills_and_tiers_rank_as_the_paper_says(spill_runs) -> None:
    r = spill_runs
    assert r["pam"].kv_bytes_by_tier["ddr"] > 0.2 * sum(r["pam"].kv_bytes_by_tier.values())
    thr = {k: v.throughput_tok_s for k, v in r.items()}
    assert thr["pam"] > thr["ls-pim"] > thr["l-pim"] > thr["vllm-offload"]
    assert r["pam"].migrated_bytes > 0 and r["ls-pim"].migrated_bytes == 0
    assert r["pam"].sparse_read_fraction < 0.2 and r["l-pim"].sparse_read_fraction == 1.0


@pytest.mark.parametrize("ablation", ["no-pamattention", "no-mapping", "no-scheduling"])
def test_each_ablation_makes_pam_slower(spill_runs, ablation: str) -> None:
    full, less = spill_runs["pam"], spill_runs[ablation]
    assert less.time_breakdown_s["attention"] > full.time_breakdown_s["attention"]
    assert less.throughput_tok_s < full.throughput_tok_s


def test_attacc_runs_out_of_kv_where_pam_does_not() -> None:
    # PAM 7.3: AttAcc (KV in HBM only) runs out of memory at LLaMA3-70B's larger offline
    # batches; PAM spills to DDR and SSD
    with pytest.raises(ConfigurationError, match="KV"):
        run("attacc-h100", 1024, 1024, batching="static")
    assert run("pam", 1024, 1024, batching="static", max_iterations=5).requests_rejected == 0


def test_l_pim_ssd_holds_most_kv_and_dominates_attention() -> None:
    # PAM 7.3: in L-PIM the SSD holds > 65% of the KV and takes > 93% of the attention time;
    # with PAM's Table 1 capacities this happens at its online batch of 8192
    r = run("l-pim", 8192, 8192, batching="continuous", max_iterations=8)
    kv, at = r.kv_bytes_by_tier, r.attention_time_by_tier_s
    assert kv["ssd"] / sum(kv.values()) > 0.65
    assert at["ssd"] / sum(at.values()) > 0.93


def test_one_group_systems_report_tier_fields() -> None:
    r = pimserve.simulate("papi", "llama-65b", "dolly-creative", n_requests=16, batch=16)
    assert set(r.kv_bytes_by_tier) == {"attn"} and r.kv_bytes_by_tier["attn"] > 0
    assert r.attention_time_by_tier_s["attn"] == pytest.approx(r.time_breakdown_s["attention"])
    assert r.migrated_bytes == 0 and r.sparse_read_fraction == 1.0


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------
def test_tiers_that_cannot_hold_the_model() -> None:
    d = load_system("pam").model_dump()
    d["groups"][1]["count"] = 4  # 64 GB of HBM-PIM for 141 GB of LLaMA3-70B weights
    spec = validate(SystemSpec, d, "system")
    with pytest.raises(ConfigurationError, match="weights"):
        pimserve.simulate(spec, "llama3-70b", "arxiv-sum", n_requests=4)


@pytest.mark.parametrize(
    ("opts", "field"),
    [({"sparse_ratio": 0.5}, "sparse_ratio"), ({"kv_x": 0}, "kv_x"), ({"kv_y": -1}, "kv_y")],
)
def test_bad_kv_run_options(opts: dict, field: str) -> None:
    with pytest.raises(PimserveError, match=field):
        pimserve.simulate("pam", "llama3-70b", "arxiv-sum", n_requests=4, **opts)


@pytest.mark.parametrize(
    ("kv", "field"),
    [({"sparse_ratio": 0.9}, "sparse_ratio"), ({"x": 0}, "x"), ({"y": -2}, "y"),
     ({"placement": "pam", "mapping": "random"}, "mapping")],
)
def test_bad_kv_policy_in_a_system_file(kv: dict, field: str) -> None:
    d = load_system("pam").model_dump()
    d["policies"]["kv"].update(kv)
    with pytest.raises(PimserveError, match=field):
        validate(SystemSpec, d, "system")


def test_unknown_kv_placement_names_the_choices() -> None:
    with pytest.raises(PimserveError, match="layered"):
        pimserve.simulate("pam", "llama3-70b", "arxiv-sum", n_requests=4,
                          kv_placement="fastest-first")


def test_kv_placement_needs_tiers() -> None:
    with pytest.raises(ConfigurationError, match="kv_tier"):
        pimserve.simulate("papi", "llama-65b", "dolly-creative", n_requests=4,
                          kv_placement="pam")


def test_offload_fetch_stall_is_counted_once() -> None:
    """vLLM-offloading overlaps the KV fetch with the GPUs' attention: attention time is the
    compute alone, whatever the link, and only the fetch beyond it stalls the iteration.
    Halving a fetch-bound link therefore leaves attention time unchanged and adds the extra
    fetch time to communication only."""
    from pimserve.experiments.reproduce.common import scaled_system

    runs = {}
    for f in (1.0, 0.5):
        spec = scaled_system("vllm-offload", links={"pcie5": {"bw_gbps": 0.02 * f}})
        runs[f] = pimserve.simulate(spec, "llama3-70b", "arxiv-sum", n_requests=1024,
                                    batch=1024,
                           batching="continuous", max_iterations=20, seed=0)
    a, b = runs[1.0].time_breakdown_s, runs[0.5].time_breakdown_s
    assert b["attention"] == pytest.approx(a["attention"], rel=1e-9)
    assert b["communication"] > 1.5 * a["communication"]
    total_a = sum(a.values())
    assert total_a == pytest.approx(runs[1.0].simulated_time_s, rel=1e-9)
