"""The summary KV model against the exact per-block model (the reference).

The summary model (``kv_model="summary"``) keeps at most about ``kv_summary_columns`` columns
per request: beyond that, cold blocks merge into weighted columns, so a step's cost does not
grow with the context. These tests run both models where the exact one is feasible and bound
the differences; docs/models.md ("The summary KV model") says what the summary keeps and loses.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pimserve import simulate
from pimserve.api import load_workload
from pimserve.engine.config import RunConfig
from pimserve.engine.kv import KVHierarchy
from pimserve.engine.system import BuiltSystem
from pimserve.policies.kv_placement import algorithm2, algorithm2_stage
from pimserve.specs import load_model, load_system
from pimserve.specs.base import validate
from pimserve.specs.system import SystemSpec
from pimserve.workload.request import Requests


def _three_tiers() -> SystemSpec:
    """PAM shrunk so that Llama-3.1-8B's long requests spill over HBM-PIM and DDR-PIM (and
    Algorithm 2 migrates between them)."""
    d = load_system("pam").model_dump()
    d["name"] = "small-tiers"
    d["tensor_parallel"], d["pipeline_parallel"] = 1, 1
    for i, count in enumerate((1, 2, 1, 1)):
        d["groups"][i]["count"] = count
    return validate(SystemSpec, d, "system")


def _mean_results(spec: SystemSpec, reqs: Requests, kv_model: str, seeds: int,
                  **opts: object) -> dict[str, float]:
    """Result fields averaged over ``seeds`` seeds (the locality model's draws differ)."""
    rows = []
    for seed in range(seeds):
        r = simulate(spec, "llama3.1-8b", reqs, batch=len(reqs), kv_model=kv_model,
                     seed=seed, **opts)
        d = r.to_dict()
        rows.append({
            "throughput": r.throughput_tok_s,
            **{f"attention_{k}": v for k, v in d["attention_time_by_tier_s"].items()},
            **{f"kv_{k}": v for k, v in d["kv_bytes_by_tier"].items()},
            "migrated": d["migrated_bytes"],
        })
    return {k: float(np.mean([row[k] for row in rows])) for k in rows[0]}


def _long_requests(n: int, lo: int, hi: int) -> Requests:
    rng = np.random.default_rng(0)
    return Requests(id=np.arange(n), arrival_s=np.zeros(n),
                    prompt_tokens=rng.integers(lo, hi, n), output_tokens=rng.integers(24, 72, n))


def test_summary_matches_the_exact_model_on_three_tiers() -> None:
    """12 requests of 15k-45k tokens (940-2,800 blocks) with 512 summary columns: the summary
    merges most of each request's blocks, the KV spills into DDR-PIM and Algorithm 2 migrates.
    Means over the same 3 seeds (deterministic): throughput, attention time per tier, KV per
    tier and migrated bytes within 2% (measured: at most 0.9%). A single seed's HBM-PIM
    attention moves by about 4% either way, so another choice of seeds may need a wider
    bound; the bound is the issue's, on these seeds. HBM-PIM's attention waits on its busiest
    bank group: it holds because the blocks the steps read stay columns of their own (and the
    summary tracks where the merged ones read lie, docs/models.md)."""
    spec, reqs = _three_tiers(), _long_requests(12, 15_000, 45_000)
    opts = {"kv_summary_columns": 512, "kv_exact_max_blocks": 512}
    exact = _mean_results(spec, reqs, "exact", 3, **opts)
    summ = _mean_results(spec, reqs, "summary", 3, **opts)
    assert exact["kv_ddr"] > 0 and exact["migrated"] > 0, "the workload should spill and migrate"

    def rel(k: str) -> float:
        return abs(summ[k] / exact[k] - 1.0)

    for k in ("throughput", "kv_hbm", "kv_ddr", "attention_hbm", "attention_ddr", "migrated"):
        assert rel(k) <= 0.02, (k, summ[k], exact[k])


def test_summary_matches_the_exact_model_on_one_tier() -> None:
    """PAM's own system on 8 Write_doc requests at 4-token blocks (about 1,500 blocks each,
    merged down to 256 columns), all on HBM-PIM: means over the same 3 seeds of throughput,
    HBM-PIM attention time and KV within 2% (measured: 0.0%, 0.5%, 0%)."""
    reqs, _ = load_workload("write-doc", n_requests=8, seed=0)
    rows = {}
    for kv_model in ("exact", "summary"):
        vals = []
        for seed in range(3):
            r = simulate("pam", "llama3-70b", reqs, batch=8, kv_block_tokens=4,
                         kv_model=kv_model, kv_summary_columns=256, kv_exact_max_blocks=256,
                         seed=seed)
            d = r.to_dict()
            vals.append((r.throughput_tok_s, d["attention_time_by_tier_s"]["hbm"],
                         d["kv_bytes_by_tier"]["hbm"]))
        rows[kv_model] = np.mean(vals, axis=0)
    rel = np.abs(rows["summary"] / rows["exact"] - 1.0)
    assert np.all(rel <= 0.02), rel


def test_summary_matches_the_exact_model_with_round_robin_mapping() -> None:
    """As above with round-robin bank-group mapping (a block's bank group follows its index in
    its request: the summary keeps each single column's index, so that a block Algorithm 2
    moves lands where the exact model puts it). Means over the same 3 seeds: throughput, KV
    per tier, DDR-PIM attention and migrated bytes within 2% (measured: at most 0.4%);
    HBM-PIM attention within 4% (measured: +2.6%). Over 48 seeds it is +0.7% to +2.5%
    (docs/models.md): a residual bias of about 1.7% that 3 seeds, each moving it by about 4%,
    cannot bound at 2%."""
    spec, reqs = _three_tiers(), _long_requests(12, 15_000, 45_000)
    opts = {"kv_summary_columns": 512, "kv_exact_max_blocks": 512, "kv_mapping": "round-robin"}
    exact = _mean_results(spec, reqs, "exact", 3, **opts)
    summ = _mean_results(spec, reqs, "summary", 3, **opts)
    for k in ("throughput", "kv_hbm", "kv_ddr", "attention_hbm", "attention_ddr", "migrated"):
        bound = 0.04 if k == "attention_hbm" else 0.02
        assert abs(summ[k] / exact[k] - 1.0) <= bound, (k, summ[k], exact[k])


@pytest.mark.parametrize("mapping", ["greedy", "round-robin"])
def test_summary_reads_the_exact_models_blocks_without_drift_or_migration(mapping) -> None:
    """Without drift and without Algorithm 2 the blocks a step reads are the exact model's,
    which the summary keeps as columns of their own (merging only colder ones): HBM-PIM's
    attention, which waits on its busiest bank group, within 0.5% of the exact model's
    (measured: 0.0%; when a merge could take every pair of columns, the read blocks merged
    too and their reads were drawn from histograms: +4.7% with round-robin, -2.7% greedy)."""
    d = _three_tiers().model_dump()
    d["policies"]["kv"]["locality"]["drift_per_step"] = 0.0
    spec = validate(SystemSpec, d, "system")
    reqs = _long_requests(12, 15_000, 45_000)
    opts = {"kv_summary_columns": 1024, "kv_exact_max_blocks": 1024, "kv_mapping": mapping,
            "kv_scheduling": False, "batching": "static"}
    exact = _mean_results(spec, reqs, "exact", 2, **opts)
    summ = _mean_results(spec, reqs, "summary", 2, **opts)
    assert abs(summ["attention_hbm"] / exact["attention_hbm"] - 1.0) <= 0.005


def test_round_robin_summary_maps_single_columns_by_their_index() -> None:
    """Round-robin on the summary model: after merges, drift and Algorithm 2's moves, every
    column of one block whose index is known sits on bank group ``index mod n_bg`` of its
    tier, as in the exact model; some of them moved between tiers."""
    from pimserve.engine.simulator import Simulator

    spec, reqs = _three_tiers(), _long_requests(12, 15_000, 45_000)
    cfg = RunConfig(batch=12, batching="static", kv_summary_columns=512,
                    kv_exact_max_blocks=512, kv_mapping="round-robin", max_iterations=30)
    sim = Simulator(spec, load_model("llama3.1-8b"), reqs, cfg)
    kvh = sim.kvh
    sim.run()
    assert kvh is not None and kvh._idx is not None and kvh.migrated_bytes > 0
    slots = np.flatnonzero(kvh.nblk[:-1] > 0)
    assert kvh._has_merged[slots].any()
    C = int(kvh.nblk[slots].max())
    valid = np.arange(C) < kvh.nblk[slots][:, None]
    one = valid & (kvh._wt[slots, :C] == 1) & (kvh._idx[slots, :C] >= 0)
    codes = kvh._bgx[slots, :C][one].astype(np.int64)
    idx = kvh._idx[slots, :C][one].astype(np.int64)
    tier = kvh._tier_of_code[codes]
    off = np.asarray(kvh._bg_off)[tier]
    nbg = np.array([t.n_bg for t in kvh.tiers])[tier]
    assert all(t.sets == 1 for t in kvh.tiers)
    assert np.array_equal(codes - off, idx % nbg)
    assert (tier > 0).any() and (tier == 0).any()


def _resident_by_code(kvh: KVHierarchy, slots: np.ndarray) -> np.ndarray:
    C = max(int(kvh.nblk[slots].max()), 1)
    valid = np.arange(C) < kvh.nblk[slots][:, None]
    return kvh._resident_loads(slots, kvh._bgx[slots, :C], kvh._wt[slots, :C] * valid)


def test_a_long_prompt_taken_in_rounds_is_mapped_as_one_allocation() -> None:
    """The summary appends a long prompt 2S columns a round, merging in between; the greedy
    mapping's cycle over the bank groups goes on from round to round, so every bank group of
    every tier holds as many of the prompts' blocks as under the exact model's single
    allocation (here 3 prompts of 50k tokens, 9,375 blocks, spilling into DDR-PIM)."""
    spec, model = _three_tiers(), load_model("llama3.1-8b")
    built = BuiltSystem.build(spec, model)
    reqs, tokens = np.arange(3), np.full(3, 50_000)
    counts = []
    for kv_model in ("exact", "summary"):
        cfg = RunConfig(batch=4, kv_model=kv_model, kv_summary_columns=256,
                        kv_exact_max_blocks=256)
        kvh = KVHierarchy(built, model, cfg, np.random.default_rng(0), max_slots=4,
                          n_requests=3)
        kvh.reserve(reqs, tokens)
        assert kvh.tiers[1].used > 0, "the prompts should spill"
        counts.append(_resident_by_code(kvh, kvh.slot_of[reqs]))
    assert counts[1].sum() == counts[0].sum() == 3 * 3_125
    np.testing.assert_array_equal(counts[0], counts[1])


def test_summary_is_the_exact_model_below_its_columns() -> None:
    """Requests shorter than the summary's columns never merge: both models give the same
    run to the bit (the exact paths run)."""
    spec, reqs = _three_tiers(), _long_requests(6, 2_000, 6_000)  # <= 375 blocks
    a = simulate(spec, "llama3.1-8b", reqs, batch=6, kv_model="exact").to_dict()
    b = simulate(spec, "llama3.1-8b", reqs, batch=6, kv_model="summary",
                 kv_summary_columns=512, kv_exact_max_blocks=512).to_dict()
    for k in ("throughput_tok_s", "simulated_time_s", "attention_time_by_tier_s",
              "migrated_bytes", "kv_bytes_by_tier"):
        assert a[k] == b[k], k


def test_summary_state_is_bounded_where_the_exact_model_refuses() -> None:
    """A 2-million-token request at 1-token blocks next to room for 4,096 requests: the exact
    model's per-block state (slots x blocks) is over its bound, a clear error; the summary
    holds a fixed number of columns per request and runs it, all 2 million blocks counted."""
    from pimserve.errors import ConfigurationError

    req = Requests(id=np.arange(1), arrival_s=np.zeros(1), prompt_tokens=np.array([2_000_000]),
                   output_tokens=np.array([2]))
    opts = {"kv_block_tokens": 1, "long_context": "allow", "batch": 4096}
    with pytest.raises(ConfigurationError, match="per-block KV state"):
        simulate("pam", "llama3.1-8b", req, kv_model="exact", max_iterations=2, **opts)
    r = simulate("pam", "llama3.1-8b", req, **opts).to_dict()
    assert r["requests_completed"] == 1
    kv_per_token = 2 * 8 * 128 * 32 * 2  # K and V x 8 KV heads x 128 x 32 layers x 2 B
    assert r["kv_bytes_by_tier"]["hbm"] == pytest.approx(2_000_000 * kv_per_token, rel=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.integers(5, 400), st.integers(1, 6), st.floats(1.5, 16), st.integers(0, 2**31 - 1))
def test_weighted_algorithm2_is_algorithm2_on_the_blocks(ncol, wmax, x, seed) -> None:
    """Algorithm 2 on weighted columns swaps the same importances, block for block, as the
    exact Algorithm 2 on the blocks the columns stand for (stage a; stage b on the result)."""
    rng = np.random.default_rng(seed)
    imp = rng.lognormal(0, 1.5, ncol)
    tier = rng.integers(0, 3, ncol)
    w = rng.integers(1, wmax + 1, ncol)
    cap = int(rng.integers(1, 3 * ncol))
    blocks_imp, blocks_tier = np.repeat(imp, w), np.repeat(tier, w)
    exact = algorithm2(blocks_imp, blocks_tier, x, x / 4, cap)
    fa, fb, _ = algorithm2_stage(imp, tier, w, x, x / 4, cap, "a")
    n_blocks = [0, 0, 0]
    for k in range(3):
        n_blocks[k] = int(w[tier == k].sum())
    stage_a = exact[0] if exact and n_blocks[2] and (n_blocks[0] or n_blocks[1]) else None
    if stage_a is None or not fa.size:
        assert fa.size == 0 or stage_a is not None
        return
    a, b = stage_a
    assert fa.size == a.size == fb.size
    np.testing.assert_allclose(np.sort(imp[fa]), np.sort(blocks_imp[a]))
    np.testing.assert_allclose(np.sort(imp[fb]), np.sort(blocks_imp[b]))
