"""Runs of decode-only iterations priced in one call equal the step-by-step engine."""

from __future__ import annotations

import numpy as np
import pytest

from pimserve.api import load_workload
from pimserve.engine.config import RunConfig
from pimserve.engine.simulator import Simulator
from pimserve.specs.catalog import load_model, load_system


def _run(system: str, model: str, workload: str, fast: bool, n: int = 48,
         rate: float | None = None, **opts):
    reqs, _ = load_workload(workload, n_requests=n, rate_per_s=rate, seed=3)
    cfg = RunConfig(record_steps=True, seed=3, **opts)
    sim = Simulator(load_system(system), load_model(model), reqs, cfg)
    assert sim.fast_runs  # these configurations qualify
    sim.fast_runs = fast
    return sim.run()


CASES = [
    ("papi", "llama-65b", "dolly-creative", None, {"batch": 16, "batching": "static"}),
    ("a100-attacc", "llama-65b", "dolly-qa", 4.0, {"batch": 8, "batching": "continuous"}),
    ("gpu-only", "llama3-8b", "sharegpt", 20.0, {"batch": 32, "batching": "continuous"}),
    ("attacc-only", "gpt3-175b", "dolly-creative", None, {"batch": 8, "batching": "static"}),
]


@pytest.mark.parametrize(("system", "model", "workload", "rate", "opts"), CASES)
def test_fast_runs_equal_the_step_by_step_engine(system, model, workload, rate, opts):
    slow = _run(system, model, workload, False, rate=rate, **opts)
    fast = _run(system, model, workload, True, rate=rate, **opts)
    _assert_same_results(fast, slow)


def _assert_same_results(fast, slow, rel: float = 1e-9) -> None:
    """Equal iterations and tokens, times and energies to ``rel``, and the per-iteration
    record (it stays exact)."""
    assert fast.iterations == slow.iterations
    assert fast.output_tokens == slow.output_tokens
    assert fast.requests_completed == slow.requests_completed
    assert fast.simulated_time_s == pytest.approx(slow.simulated_time_s, rel=rel)
    assert fast.energy_j == pytest.approx(slow.energy_j, rel=rel)
    assert fast.decode_time_s == pytest.approx(slow.decode_time_s, rel=rel)
    for k, v in slow.time_breakdown_s.items():
        assert fast.time_breakdown_s[k] == pytest.approx(v, rel=rel, abs=1e-15), k
    for k, v in slow.energy_breakdown_j.items():
        assert fast.energy_breakdown_j[k] == pytest.approx(v, rel=rel, abs=1e-15), k
    for k, v in slow.tpot_ms.items():
        if v is not None:
            assert fast.tpot_ms[k] == pytest.approx(v, rel=rel), k
    fs, ss = fast.extra["steps"], slow.extra["steps"]
    assert set(fs) == set(ss)
    for k in ss:
        np.testing.assert_allclose(np.asarray(fs[k], dtype=float),
                                   np.asarray(ss[k], dtype=float), rtol=rel, err_msg=k)


def test_a_long_static_batch_is_mostly_runs():
    """A static batch of equal requests: a handful of priced calls instead of one per step."""
    from pimserve.engine import pricing

    calls = {"step": 0, "run": 0}
    step, run = pricing.IterationPricer.step, pricing.IterationPricer.decode_run

    def count_step(self, *a, **k):
        calls["step"] += 1
        return step(self, *a, **k)

    def count_run(self, *a, **k):
        calls["run"] += 1
        return run(self, *a, **k)

    mp = pytest.MonkeyPatch()
    mp.setattr(pricing.IterationPricer, "step", count_step)
    mp.setattr(pricing.IterationPricer, "decode_run", count_run)
    try:
        from pimserve.workload.request import Requests

        req = Requests(id=np.arange(8), arrival_s=np.zeros(8),
                       prompt_tokens=np.full(8, 100), output_tokens=np.full(8, 1000))
        cfg = RunConfig(batch=8, batching="static")
        r = Simulator(load_system("papi"), load_model("llama-65b"), req, cfg).run()
    finally:
        mp.undo()
    assert r.iterations == 1000  # prefill + 999 decode iterations
    assert calls["run"] == 1 and calls["step"] == 1  # prefill, one run (it finishes them)


#: (system, model, workload, rate, options, whether some runs go on past finishing requests)
KV_CASES = [
    ("pam", "llama-65b", "dolly-creative", 4.0, {"batch": 16, "batching": "continuous"}, True),
    ("pam", "llama-65b", "sharegpt", 8.0, {"batch": 32, "batching": "continuous"}, True),
    ("pam", "llama-65b", "dolly-creative", None, {"batch": 16, "batching": "static"}, True),
    # round-robin mapping, fixed tiling (partials leave HBM-PIM every step)
    ("pam", "llama-65b", "dolly-creative", 4.0,
     {"batch": 16, "batching": "continuous", "kv_mapping": "round-robin", "pamattention": False},
     True),
    # requests past 32 blocks go to the summary model: runs stop before it
    ("pam", "llama-65b", "sharegpt", 8.0,
     {"batch": 16, "batching": "continuous", "kv_exact_max_blocks": 32, "kv_summary_columns": 32},
     False),  # (a full batch with a queue: runs end where requests finish)
]


@pytest.mark.parametrize(("system", "model", "workload", "rate", "opts", "spans"), KV_CASES)
def test_kv_runs_equal_the_step_by_step_engine(system, model, workload, rate, opts, spans):
    """PAM's KV hierarchy: runs of one-tier KV steps (``KVHierarchy.decode_run``) give the
    step-by-step engine's iterations, tokens, times, energies, per-step records and KV
    results, and some runs are taken, some of them going on past requests that finish
    inside them."""
    from pimserve.engine import kv as kvmod

    taken, spanned = [], []
    run_fn = kvmod.KVHierarchy.decode_run

    def counted(self, reqs, ctx0, q_tokens, k, last=None):
        out = run_fn(self, reqs, ctx0, q_tokens, k, last)
        taken.append(0 if out is None else out.k)
        if out is not None and last is not None and int(last.min()) < out.k - 1:
            spanned.append(out.k)
        return out

    mp = pytest.MonkeyPatch()
    mp.setattr(kvmod.KVHierarchy, "decode_run", counted)
    try:
        slow = _run(system, model, workload, False, n=64, rate=rate, **opts)
        assert not taken
        fast = _run(system, model, workload, True, n=64, rate=rate, **opts)
    finally:
        mp.undo()
    assert sum(taken) > 0
    assert bool(spanned) == spans
    _assert_same_kv_results(fast, slow)


def _assert_same_kv_results(fast, slow) -> None:
    """:func:`_assert_same_results`, and equal KV results."""
    rel = 1e-9
    _assert_same_results(fast, slow, rel)
    assert fast.kv_bytes_by_tier == pytest.approx(slow.kv_bytes_by_tier, rel=rel)
    assert fast.extra["kv_peak_bytes_by_tier"] == slow.extra["kv_peak_bytes_by_tier"]
    assert fast.attention_time_by_tier_s == pytest.approx(slow.attention_time_by_tier_s,
                                                          rel=rel)
    assert fast.migrated_bytes == slow.migrated_bytes
    assert fast.sparse_read_fraction == slow.sparse_read_fraction


def test_kv_runs_stop_where_the_first_tier_fills():
    """A static batch that fills HBM-PIM to within a few blocks: the decode steps spill to
    DDR-PIM part way, where runs stop (the multi-tier step, Algorithm 2's migrations); the
    results equal the step-by-step engine's."""
    from pimserve.workload.request import Requests

    def run(fast: bool):
        system, model = load_system("pam"), load_model("llama-65b")
        probe = Simulator(system, model, Requests(id=np.arange(1), arrival_s=np.zeros(1),
                                                  prompt_tokens=np.ones(1, dtype=np.int64),
                                                  output_tokens=np.ones(1, dtype=np.int64)))
        assert probe.kvh is not None
        cap = probe.kvh.tiers[0].capacity_blocks
        n = 128
        prompt = (cap // n - 1) * 16  # the first decode token: cap // n blocks each
        req = Requests(id=np.arange(n), arrival_s=np.zeros(n),
                       prompt_tokens=np.full(n, prompt), output_tokens=np.full(n, 80))
        cfg = RunConfig(batch=n, batching="static", record_steps=True, seed=2)
        sim = Simulator(system, model, req, cfg)
        assert sim.fast_runs
        sim.fast_runs = fast
        return sim.run()

    from pimserve.engine import kv as kvmod

    taken = []
    run_fn = kvmod.KVHierarchy.decode_run

    def counted(self, *a, **k):
        out = run_fn(self, *a, **k)
        taken.append(0 if out is None else out.k)
        return out

    slow = run(False)
    mp = pytest.MonkeyPatch()
    mp.setattr(kvmod.KVHierarchy, "decode_run", counted)
    try:
        fast = run(True)
    finally:
        mp.undo()
    assert sum(taken) >= 8  # the steps before the spill
    assert slow.kv_bytes_by_tier["ddr"] > 0 and slow.migrated_bytes > 0  # it spilled
    _assert_same_kv_results(fast, slow)


def test_kv_runs_split_by_the_cell_bound_give_the_same_results():
    """Runs capped at a few steps (``RUN_CELLS``: the [step, request, block] arrays' bound)
    are priced in more calls with the same results."""
    from pimserve.engine import kv as kvmod

    opts = {"batch": 16, "batching": "static"}
    slow = _run("pam", "llama-65b", "dolly-creative", False, n=32, **opts)
    mp = pytest.MonkeyPatch()
    mp.setattr(kvmod, "RUN_CELLS", 16 * 16 * 4)  # a handful of steps per call
    try:
        fast = _run("pam", "llama-65b", "dolly-creative", True, n=32, **opts)
    finally:
        mp.undo()
    _assert_same_kv_results(fast, slow)
