"""SLO search: peak request rate (and throughput) under a TPOT SLO, by bisection.

Small runs (llama3-8b on gpu-only, 100-150 ShareGPT-like requests) keep the file to seconds.
The "meets" checks below recompute the rule from a fresh ``simulate`` run and the workload's
arrival times rather than calling the module's own judge.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from pimserve import simulate
from pimserve.api import load_workload
from pimserve.cli.main import main
from pimserve.errors import ConfigurationError, PimserveError
from pimserve.experiments.slo import judge, slo_search

SYS, MODEL, WL = "gpu-only", "llama3-8b", "sharegpt"
N = 120
# batch 256: enough running requests that TPOT grows with load (about 4.4 ms alone to 6.0 ms
# at ~30 req/s for this model), so a few-ms SLO binds on TPOT rather than on queueing.
BATCH = 256


def meets_by_hand(rate: float, slo_ms: float, n: int = N, max_wait_fraction: float = 0.02,
                  **opts) -> bool:
    """The documented rule recomputed from a fresh simulate run at ``rate`` req/s."""
    r = simulate(SYS, MODEL, WL, n_requests=n, rate_per_s=rate, seed=0, **opts)
    reqs, _ = load_workload(WL, n_requests=n, rate_per_s=rate, seed=0)
    window_s = float(np.max(reqs.arrival_s) - np.min(reqs.arrival_s))
    return (
        r.tpot_ms["p99"] is not None
        and r.tpot_ms["p99"] <= slo_ms
        and r.requests_rejected == 0
        and r.requests_completed == r.requests_total
        and r.ttft_ms["p99"] / 1e3 <= max_wait_fraction * window_s
    )


@pytest.fixture(scope="module")
def search_55():
    return slo_search(SYS, MODEL, WL, 5.5, n_requests=N, batch=BATCH)


def test_best_rate_meets_and_a_rate_1_plus_2tol_higher_does_not(search_55):
    res = search_55
    assert res.met and res.best_rate_per_s is not None
    tol = res.settings["tol"]
    # the bracket closed to within tol: hi - lo <= tol * lo
    assert res.bracket_hi_per_s is not None
    assert res.bracket_hi_per_s - res.best_rate_per_s <= tol * res.best_rate_per_s + 1e-12
    assert meets_by_hand(res.best_rate_per_s, 5.5, batch=BATCH)
    assert not meets_by_hand(res.best_rate_per_s * (1 + 2 * tol), 5.5, batch=BATCH)
    # the reported numbers are the best probe's
    best = max((p for p in res.probes if p.met), key=lambda p: p.rate_per_s)
    assert best.rate_per_s == res.best_rate_per_s
    assert res.throughput_tok_s == best.throughput_tok_s and res.tpot_ms == best.tpot_ms <= 5.5
    assert res.capacity_req_s is not None and res.capacity_req_s > 0
    assert len(res.probes) <= res.settings["max_probes"]
    assert "bisection" in res.how and "5.5 ms" in res.how


def test_probes_are_consistent_and_json_ready(search_55):
    res = search_55
    met_rates = [p.rate_per_s for p in res.probes if p.met]
    failed_rates = [p.rate_per_s for p in res.probes if not p.met]
    # every failing rate lies above every meeting rate (TPOT grows with load here)
    assert max(met_rates) < min(failed_rates)
    for p in res.probes:
        assert p.met == (p.why == "") == (p.fails == [])
        # offered load = rate x mean output tokens, so offered / rate is the same for all
        assert p.offered_tok_s / p.rate_per_s == pytest.approx(
            res.probes[0].offered_tok_s / res.probes[0].rate_per_s
        )
    d = json.loads(json.dumps(res.to_dict()))
    assert d["best_rate_per_s"] == res.best_rate_per_s
    assert [p["met"] for p in d["probes"]] == [p.met for p in res.probes]
    assert all(0 <= p["drain_fraction"] <= 1 for p in d["probes"])


def test_tighter_slo_never_gives_a_higher_rate(search_55):
    rates = []
    for slo in (5.0, 5.25):
        r = slo_search(SYS, MODEL, WL, slo, n_requests=N, batch=BATCH)
        assert r.met
        rates.append(r.best_rate_per_s)
    rates.append(search_55.best_rate_per_s)
    assert rates == sorted(rates), rates
    assert rates[0] < rates[-1]  # the SLO binds: a looser one really buys rate


def test_loose_slo_is_bound_by_queueing_not_tpot():
    """At 100 ms TPOT (30x the ~3 ms this model decodes at) the SLO never binds: the peak is
    where the queue starts to grow, near the service capacity measured with every request at
    t = 0 (batch 16 caps it)."""
    res = slo_search(SYS, MODEL, WL, 100, n_requests=N, batch=16)
    assert res.met and res.capacity_req_s is not None
    failed = [p for p in res.probes if not p.met]
    assert failed and all(p.fails == ["queue"] for p in failed)
    assert 0.5 * res.capacity_req_s < res.best_rate_per_s < 1.5 * res.capacity_req_s


def test_impossible_slo_says_no_rate_meets():
    res = slo_search(SYS, MODEL, WL, 0.001, n_requests=100)
    assert not res.met
    assert res.best_rate_per_s is None and res.throughput_tok_s is None and res.tpot_ms is None
    assert res.probes and not any(p.met for p in res.probes)
    assert "no rate meets" in res.how
    # requests served one at a time still take ~3 ms per token, far above 0.001 ms
    assert res.tpot_alone_ms is not None and res.tpot_alone_ms > 1.0
    assert json.loads(json.dumps(res.to_dict()))["met"] is False


def test_explicit_bracket_is_used_and_rate_lo_failing_means_none():
    res = slo_search("a100-attacc", MODEL, WL, 4.4, n_requests=100, batch=64,
                     rate_lo=4.0, rate_hi=32.0, tol=0.1)
    assert res.capacity_req_s is None  # no bracketing run when the bracket is given
    assert [p.rate_per_s for p in res.probes[:2]] == [4.0, 32.0]
    assert res.met and 4.0 <= res.best_rate_per_s < 32.0
    none = slo_search("a100-attacc", MODEL, WL, 0.5, n_requests=100, batch=64, rate_lo=4.0)
    assert not none.met and len(none.probes) == 1 and "rate_lo already fails" in none.how


def test_context_rejections_are_reported_not_ignored():
    """llama2-70b has a 4096-token context; 15 of these 100 Azure conversation requests are
    longer, so every probe rejects them (long_context=reject) and the result says so."""
    res = slo_search(SYS, "llama2-70b", "azure-conv", 100, n_requests=100)
    assert res.met
    assert all(p.rejected_reasons == {"exceeds_context": 15} for p in res.probes)
    assert all(p.requests_rejected == 15 for p in res.probes)
    assert any("15 of 100 requests rejected" in w for w in res.warnings)


def test_judge_rule_on_rejections_and_queue():
    r = simulate(SYS, MODEL, WL, n_requests=50, rate_per_s=2.0, seed=0)
    window = 30.0
    assert judge(r, window, 100)[0]
    kv = dataclasses.replace(r, requests_rejected=3, rejected_reasons={"exceeds_kv_capacity": 3})
    met, why, codes = judge(kv, window, 100)
    assert not met and codes == ["rejected"] and "exceeds_kv_capacity: 3" in why
    assert judge(kv, window, 100, allow_capacity_rejections=True)[0]
    ctx = dataclasses.replace(r, requests_rejected=3, rejected_reasons={"exceeds_context": 3})
    assert judge(ctx, window, 100)[0]
    left = dataclasses.replace(r, requests_waiting=2)
    assert judge(left, window, 100)[2] == ["unfinished"]
    # p99 TTFT of 1 s over a 10 s window is 10 % > 2 %: the queue grows
    slow = dataclasses.replace(r, ttft_ms={**r.ttft_ms, "p99": 1000.0})
    assert judge(slow, 10.0, 100)[2] == ["queue"]
    assert judge(slow, 10.0, 100, max_wait_fraction=0.2)[0]
    assert judge(r, window, r.tpot_ms["p99"] * 0.99)[2] == ["tpot"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"tpot_slo_ms": 0}, "tpot_slo_ms"),
        ({"tpot_slo_ms": -5}, "tpot_slo_ms"),
        ({"tpot_slo_ms": math.nan}, "tpot_slo_ms"),
        ({"percentile": "p90"}, "percentile"),
        ({"tol": 0}, "tol"),
        ({"tol": 1.0}, "tol"),
        ({"max_probes": 1}, "max_probes"),
        ({"n_requests": 1}, "n_requests"),
        ({"rate_lo": -1.0}, "rate_lo"),
        ({"rate_lo": 8.0, "rate_hi": 4.0}, "rate_lo"),
        ({"seed": -1}, "seed"),
        ({"max_wait_fraction": 0}, "max_wait_fraction"),
        ({"rate_per_s": 3.0}, "rate_per_s"),
    ],
)
def test_bad_inputs_name_the_field(kwargs, field):
    args = {"tpot_slo_ms": 100.0, **kwargs}
    slo = args.pop("tpot_slo_ms")
    with pytest.raises(ConfigurationError, match=field):
        slo_search(SYS, MODEL, WL, slo, **args)


def test_bad_names_raise_pimserve_errors():
    with pytest.raises(PimserveError, match="unknown system 'no-such-system'"):
        slo_search("no-such-system", MODEL, WL, 100)
    with pytest.raises(PimserveError, match="unknown workload"):
        slo_search(SYS, MODEL, "no-such-workload", 100)


def test_cli_json_is_one_object_matching_the_api():
    r = CliRunner().invoke(main, ["slo-search", "--system", SYS, "--model", MODEL,
                                  "--workload", WL, "--tpot-slo-ms", "100",
                                  "--n-requests", "100", "--batch", "16", "--format", "json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)  # the whole output is one JSON object
    assert isinstance(data, dict) and data["met"] is True
    api = slo_search(SYS, MODEL, WL, 100, n_requests=100, batch=16)
    assert data["best_rate_per_s"] == pytest.approx(api.best_rate_per_s)
    assert len(data["probes"]) == len(api.probes)
    assert data["throughput_tok_s"] == pytest.approx(api.throughput_tok_s)


def test_cli_table_prints_probes_and_peak_line():
    r = CliRunner().invoke(main, ["slo-search", "--system", SYS, "--model", MODEL,
                                  "--tpot-slo-ms", "100", "--n-requests", "100",
                                  "--batch", "16", "--max-probes", "4"])
    assert r.exit_code == 0, r.output
    assert "peak throughput under SLO" in r.output and "rate (req/s)" in r.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--system", "no-such-system"], "unknown system 'no-such-system'"),
        (["--percentile", "p90"], "percentile must be one of p50, p99, mean"),
        (["--tol", "2"], "tol must be in (0, 1)"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(args, needle):
    r = CliRunner().invoke(main, ["slo-search", "--model", MODEL, "--tpot-slo-ms", "100",
                                  *args])
    assert r.exit_code == 2, r.output
    out = r.output.strip()
    assert needle in out and "Traceback" not in out
    assert len(out.splitlines()) == 1
