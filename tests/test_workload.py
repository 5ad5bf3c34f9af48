"""The request table, synthetic generators, presets and the speculative acceptance model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pimserve.errors import ConfigurationError, UnknownNameError
from pimserve.workload import (
    WORKLOADS,
    EmpiricalLengths,
    LognormalLengths,
    Request,
    Requests,
    describe_workloads,
    expected_accepted,
    fixed_batch,
    gamma,
    lognormal,
    make_workload,
    poisson,
    sample_accepted,
    sample_lengths,
    stored_lengths,
    stored_stats,
)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation with average ranks for ties."""

    def ranks(a: np.ndarray) -> np.ndarray:
        order = np.argsort(a, kind="stable")
        r = np.empty(a.size)
        r[order] = np.arange(a.size)
        _, inv, cnt = np.unique(a, return_inverse=True, return_counts=True)
        return np.bincount(inv, weights=r)[inv] / cnt[inv]

    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def table() -> Requests:
    return Requests.from_arrays([0.0, 1.0, 3.0, 6.0], [1, 2, 3, 4], [10, 20, 30, 40], source="t")


# -- Requests ----------------------------------------------------------------------------------


def test_requests_access_slice_head() -> None:
    r = table()
    assert len(r) == 4
    assert r[1] == Request(id=1, arrival_s=1.0, prompt_tokens=2, output_tokens=20)
    assert r[-1].output_tokens == 40
    assert r.head(2).prompt_tokens.tolist() == [1, 2]
    assert len(r.head(10)) == 4 and len(r.head(0)) == 0
    assert r.slice(1, 3).id.tolist() == [1, 2]
    assert r[2:].arrival_s.tolist() == [3.0, 6.0]
    assert [q.id for q in r] == [0, 1, 2, 3]
    with pytest.raises(IndexError):
        r[4]
    with pytest.raises(ConfigurationError, match="head: n must be an integer >= 0"):
        r.head(-1)


def test_requests_are_immutable_copies() -> None:
    src = np.array([1, 2, 3, 4])
    r = Requests.from_arrays(np.zeros(4), src, src)
    src[0] = 99
    assert r.prompt_tokens[0] == 1
    with pytest.raises(ValueError):
        r.prompt_tokens[0] = 5
    assert r.prompt_tokens.dtype == np.int64 and r.arrival_s.dtype == np.float64


def test_stats_hand_computed() -> None:
    s = table().stats()
    # gaps 1, 2, 3: mean 2, population std sqrt(2/3) -> CV 0.40825
    assert s["interarrival_cv"] == pytest.approx(math.sqrt(2 / 3) / 2)
    assert s["duration_s"] == 6.0 and s["rate_per_s"] == pytest.approx(4 / 6)
    # prompt 1..4: mean 2.5, linear p90 = 1 + 0.9 * 3 = 3.7, p99 = 1 + 0.99 * 3 = 3.97
    assert (s["input_mean"], s["input_p50"], s["input_max"]) == (2.5, 2.5, 4.0)
    assert s["input_p90"] == pytest.approx(3.7) and s["input_p99"] == pytest.approx(3.97)
    assert s["output_mean"] == 25.0
    static = Requests.from_arrays(np.zeros(3), [1, 1, 1], [1, 1, 1]).stats()
    assert static["rate_per_s"] is None and static["interarrival_cv"] is None


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"prompt_tokens": [1, 0, 3]}, r"prompt_tokens\[1\] must be >= 1 \(got 0\)"),
        ({"prompt_tokens": [1, -2, 3]}, r"prompt_tokens\[1\]"),
        ({"output_tokens": [1, 2, 0]}, r"output_tokens\[2\] must be >= 1"),
        ({"arrival_s": [0.0, 2.0, 1.0]}, r"arrival_s must be non-decreasing: arrival_s\[2\]"),
        ({"arrival_s": [-1.0, 2.0, 3.0]}, r"arrival_s\[0\] must be a finite number >= 0"),
        ({"arrival_s": [0.0, np.nan, 3.0]}, r"arrival_s\[1\]"),
        ({"output_tokens": [1, 2]}, "output_tokens has 2 entries but Requests.id has 3"),
        ({"prompt_tokens": [1.5, 2, 3]}, r"prompt_tokens\[0\] must be an integer"),
    ],
)
def test_requests_validation_names_field(kwargs: dict, field: str) -> None:
    args = {"arrival_s": [0.0, 1.0, 2.0], "prompt_tokens": [1, 2, 3], "output_tokens": [1, 2, 3]}
    args.update(kwargs)
    with pytest.raises(ConfigurationError, match=field):
        Requests.from_arrays(**args)


def test_from_records_and_with_arrivals() -> None:
    r = Requests.from_records(
        [
            {"arrival_s": 0.0, "prompt_tokens": 5, "output_tokens": 6, "prefix_block_ids": [1, 2]},
            Request(id=7, arrival_s=0.5, prompt_tokens=8, output_tokens=9),
        ]
    )
    assert r.id.tolist() == [0, 7]
    assert r.prefix_block_ids == [(1, 2), ()]
    moved = r.with_arrivals([1.0, 2.0])
    assert moved.arrival_s.tolist() == [1.0, 2.0] and moved.prompt_tokens.tolist() == [5, 8]
    assert r.arrival_s.tolist() == [0.0, 0.5]  # original untouched
    with pytest.raises(ConfigurationError, match="one entry per request"):
        r.with_arrivals([1.0])
    with pytest.raises(ConfigurationError, match="non-decreasing"):
        r.with_arrivals([2.0, 1.0])
    with pytest.raises(ConfigurationError, match="record 0 has no 'output_tokens'"):
        Requests.from_records([{"arrival_s": 0, "prompt_tokens": 1}])


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 100), st.integers(1, 10**6), st.integers(1, 10**5)),
        min_size=1,
        max_size=50,
    ),
    st.integers(0, 60),
)
def test_requests_invariants(rows: list, k: int) -> None:
    arrival = np.cumsum([a for a, _, _ in rows])
    r = Requests.from_arrays(arrival, [p for _, p, _ in rows], [o for _, _, o in rows])
    s = r.stats()
    for side in ("input", "output"):
        assert s[f"{side}_p50"] <= s[f"{side}_p90"] <= s[f"{side}_p99"] <= s[f"{side}_max"]
    assert len(r.head(k)) + len(r.slice(k)) == len(r)
    assert r.duration_s == pytest.approx(arrival[-1] - arrival[0])


# -- arrival processes -------------------------------------------------------------------------


def test_poisson_rate_and_cv() -> None:
    a = poisson(5.53, 20_000, 0)
    assert a[0] == 0.0 and np.all(np.diff(a) >= 0)
    s = Requests.from_arrays(a, np.ones(a.size, int), np.ones(a.size, int)).stats()
    assert s["rate_per_s"] == pytest.approx(5.53, rel=0.03)
    assert s["interarrival_cv"] == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("cv, tol", [(0.5, 0.03), (2.0, 0.08), (13.2, 0.25)])
def test_gamma_cv(cv: float, tol: float) -> None:
    # the sample CV of very skewed gaps converges slowly (kurtosis 6 / shape = 6 cv^2), so the
    # bursty case uses more samples and a wider band
    n = 200_000 if cv > 10 else 50_000
    gaps = np.diff(gamma(2.0, cv, n, 1))
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=tol)
    assert 1 / gaps.mean() == pytest.approx(2.0, rel=0.03 if cv < 10 else 0.15)


def test_gamma_cv1_is_poisson_and_fixed_batch() -> None:
    assert np.array_equal(gamma(3.0, 1.0, 100, 7), poisson(3.0, 100, 7))
    assert fixed_batch(4).tolist() == [0.0, 0.0, 0.0, 0.0]


def test_same_seed_same_draws_generator_shared() -> None:
    assert np.array_equal(poisson(1.0, 50, 3), poisson(1.0, 50, 3))
    assert not np.array_equal(poisson(1.0, 50, 3), poisson(1.0, 50, 4))
    g = np.random.default_rng(3)
    first, second = poisson(1.0, 50, g), poisson(1.0, 50, g)  # one stream, two different draws
    assert np.array_equal(first, poisson(1.0, 50, 3)) and not np.array_equal(first, second)


@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda: poisson(0, 10, 0), "poisson: rate_per_s must be a finite number > 0"),
        (lambda: poisson(-1.0, 10, 0), "rate_per_s must be a finite number > 0"),
        (lambda: poisson(math.inf, 10, 0), "rate_per_s"),
        (lambda: poisson(1.0, 0, 0), "poisson: n must be an integer >= 1"),
        (lambda: gamma(1.0, 0.0, 10, 0), "gamma: cv must be a finite number > 0"),
        (lambda: gamma(1.0, -2, 10, 0), "cv must be"),
        (lambda: gamma(-1.0, 2, 10, 0), "rate_per_s"),
        (lambda: gamma(1.0, 2, -5, 0), "n must be an integer >= 1"),
        (lambda: fixed_batch(0), "fixed_batch: n must be an integer >= 1"),
        (lambda: poisson(1.0, 10, "x"), "rng must be a numpy Generator or an integer seed"),
        (lambda: lognormal(10, 20, 5, 0), "mean must be > median"),
        (lambda: lognormal(100, 5, 5, 0, lo=10), r"median must lie in \[lo, hi\]"),
        (lambda: sample_lengths(*stored_lengths("arxiv-sum")[:2], 5, 0, 1.5), "rank_correlation"),
    ],
)
def test_bad_parameters_name_the_parameter(call, needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        call()


# -- length distributions ----------------------------------------------------------------------


def test_empirical_lengths_interpolate_linearly() -> None:
    e = EmpiricalLengths(probs=(0.0, 0.5, 1.0), values=(10.0, 20.0, 40.0))
    # u=0.25 -> 10 + 0.5*10 = 15; u=0.6 -> 20 + 0.2*20 = 24; u=0.75 -> 20 + 0.5*20 = 30
    assert e.from_uniform([0.0, 0.25, 0.6, 0.75, 1.0]).tolist() == [10, 15, 24, 30, 40]
    x = e.sample(10_000, 0)
    assert x.min() >= 10 and x.max() <= 40
    # mean of the piecewise-uniform distribution: 0.5 * 15 + 0.5 * 30 = 22.5
    assert x.mean() == pytest.approx(22.5, rel=0.02)
    with pytest.raises(ConfigurationError, match="probs must increase strictly from 0 to 1"):
        EmpiricalLengths(probs=(0.0, 0.7, 0.5, 1.0), values=(1, 2, 3, 4))
    with pytest.raises(ConfigurationError, match="non-decreasing"):
        EmpiricalLengths(probs=(0.0, 1.0), values=(5, 4))


def test_lognormal_fit() -> None:
    plain = LognormalLengths.fit(mean=320, median=282)
    # unclipped: mu = ln(median), sigma^2 = 2 ln(mean / median)
    assert plain.mu == pytest.approx(math.log(282))
    assert plain.sigma == pytest.approx(math.sqrt(2 * math.log(320 / 282)))
    clipped = LognormalLengths.fit(mean=111, median=31, lo=4, hi=1024)
    assert clipped.mean() == pytest.approx(111, rel=1e-9)
    x = clipped.sample(200_000, 0)
    assert x.min() >= 4 and x.max() <= 1024
    assert x.mean() == pytest.approx(111, rel=0.02) and np.median(x) == 31
    assert lognormal(320, 282, 100, 5).tolist() == plain.sample(100, 5).tolist()


def test_copula_rank_correlation_and_marginals() -> None:
    prompt, output, rho = stored_lengths("azure-conv")
    assert rho == pytest.approx(0.073, abs=0.005)  # measured on the trace by fit_workloads.py
    a, b = sample_lengths(prompt, output, 20_000, 0, rank_correlation=0.5)
    assert spearman(a, b) == pytest.approx(0.5, abs=0.03)
    ia, ib = sample_lengths(prompt, output, 20_000, 0)
    assert abs(spearman(ia, ib)) < 0.03
    st_ = stored_stats("azure-conv")
    for x in (a, ia):
        assert x.mean() == pytest.approx(st_["prompt_mean"], rel=0.05)


# -- presets -----------------------------------------------------------------------------------

DATA_PRESETS = {
    "dolly-creative": "dolly-creative",
    "dolly-qa": "dolly-open-qa",
    "azure-conv": "azure-conv",
    "azure-code": "azure-code",
    "arxiv-sum": "arxiv-sum",
}


def test_preset_names_and_descriptions() -> None:
    assert set(WORKLOADS.names()) == {*DATA_PRESETS, "sharegpt", "wildchat", "humaneval",
                                      "write-doc", "long-context"}
    qa = WORKLOADS.help("dolly-qa")
    assert "general-qa" in qa and "open_qa" in qa and "not in the length file" in qa
    assert "published statistics, not data" in WORKLOADS.help("sharegpt")
    rows = {d["name"]: d for d in describe_workloads()}
    assert rows["azure-conv"]["arrivals"] == "Poisson, 5.53 req/s"
    assert rows["azure-code"]["arrivals"] == "gamma, 2.567 req/s, CV 13.2"
    assert rows["dolly-creative"]["arrivals"] == "static batch at t=0"
    assert "CC-BY 4.0" in rows["azure-conv"]["source"]
    assert all("\n" not in d["description"] for d in rows.values())
    with pytest.raises(UnknownNameError, match="unknown workload 'dolly'"):
        make_workload("dolly", 10, 0)


@pytest.mark.parametrize("name", sorted(DATA_PRESETS))
def test_presets_reproduce_stored_statistics(name: str) -> None:
    r = make_workload(name, 20_000, 0)
    s, ref = r.stats(), stored_stats(DATA_PRESETS[name])
    for side, pre in (("prompt", "input"), ("output", "output")):
        assert s[f"{pre}_mean"] == pytest.approx(ref[f"{side}_mean"], rel=0.05)
        assert s[f"{pre}_p50"] == pytest.approx(ref[f"{side}_p50"], rel=0.05)
        assert s[f"{pre}_max"] <= ref[f"{side}_max"]


def test_sharegpt_matches_published_statistics() -> None:
    s = make_workload("sharegpt", 20_000, 0).stats()
    # README: input mean 111 / median 31, output mean 320 / median 282
    assert s["input_mean"] == pytest.approx(111, rel=0.05)
    assert s["input_p50"] == pytest.approx(31, rel=0.05)
    assert s["output_mean"] == pytest.approx(320, rel=0.05)
    assert s["output_p50"] == pytest.approx(282, rel=0.05)
    r = make_workload("sharegpt", 20_000, 1)
    assert r.prompt_tokens.min() >= 4 and r.prompt_tokens.max() <= 1024
    assert r.output_tokens.min() >= 4
    assert np.all(r.prompt_tokens + r.output_tokens <= 2048)


def test_preset_arrivals() -> None:
    conv = make_workload("azure-conv", 20_000, 0).stats()
    assert conv["rate_per_s"] == pytest.approx(5.53, rel=0.03)
    assert conv["interarrival_cv"] == pytest.approx(1.0, abs=0.03)
    code = make_workload("azure-code", 20_000, 0)
    assert code.stats()["interarrival_cv"] > 5  # bursty, nothing like Poisson's 1
    static = make_workload("dolly-creative", 100, 0)
    assert np.all(static.arrival_s == 0)
    timed = make_workload("dolly-creative", 100, 0, rate_per_s=2.0)
    assert timed.arrival_s[-1] > 0
    # lengths are drawn before arrivals: the same seed gives the same lengths either way
    assert np.array_equal(static.prompt_tokens, timed.prompt_tokens)
    assert np.all(make_workload("azure-conv", 50, 0, rate_per_s=math.inf).arrival_s == 0)
    assert "seed=0" in static.source and "dolly-creative" in static.source


@pytest.mark.parametrize("name", sorted(WORKLOADS.names()))
def test_presets_are_deterministic(name: str) -> None:
    a, b, c = (make_workload(name, 500, s) for s in (11, 11, 12))
    assert a == b
    assert not np.array_equal(a.prompt_tokens, c.prompt_tokens)


@pytest.mark.parametrize(
    "args, needle",
    [
        ((0, 0), "n must be an integer >= 1"),
        ((10, -1), "seed must be an integer >= 0"),
        ((10, 0, 0.0), "rate_per_s must be > 0"),
        ((10, 0, -3.0), "rate_per_s must be > 0"),
        ((10, 0, math.nan), "rate_per_s must be > 0"),
    ],
)
def test_preset_bad_parameters(args: tuple, needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        make_workload("azure-conv", *args)


# -- speculative decoding ----------------------------------------------------------------------


def test_expected_accepted_formula() -> None:
    # p = 0.8, k = 2: 1 + 0.8 + 0.64 = 2.44 = (1 - 0.8**3) / (1 - 0.8)
    assert expected_accepted(0.8, 2) == pytest.approx(2.44)
    assert expected_accepted(1.0, 4) == 5.0
    assert expected_accepted(0.0, 4) == 1.0
    assert expected_accepted(0.999999, 3) == pytest.approx(4.0, abs=1e-5)


@pytest.mark.parametrize("p", [0.6, 0.8])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_sample_accepted_matches_formula(p: float, k: int) -> None:
    x = sample_accepted(np.random.default_rng(0), p, k, 200_000)
    assert x.dtype == np.int64 and x.min() >= 1 and x.max() <= k + 1
    assert x.mean() == pytest.approx(expected_accepted(p, k), rel=0.02)
    # first draft token rejected with probability 1 - p; all k accepted with p**k
    assert np.mean(x == 1) == pytest.approx(1 - p, abs=0.005)
    assert np.mean(x == k + 1) == pytest.approx(p**k, abs=0.005)


def test_sample_accepted_edges_and_per_request_p() -> None:
    g = np.random.default_rng(1)
    assert sample_accepted(g, 1.0, 3, 5).tolist() == [4] * 5
    assert sample_accepted(g, 0.0, 3, 5).tolist() == [1] * 5
    assert sample_accepted(g, np.array([0.0, 1.0]), 2, 2).tolist() == [1, 3]
    assert sample_accepted(g, 0.5, 2, 0).size == 0
    assert np.array_equal(sample_accepted(7, 0.7, 4, 100), sample_accepted(7, 0.7, 4, 100))


@pytest.mark.parametrize(
    "args, needle",
    [
        ((-0.1, 2, 5), r"p \(per-token acceptance probability\) must be in \[0, 1\]"),
        ((1.1, 2, 5), r"must be in \[0, 1\]"),
        ((math.nan, 2, 5), r"must be in \[0, 1\]"),
        ((0.5, 0, 5), r"k \(draft tokens per step\) must be an integer >= 1"),
        ((0.5, 1.5, 5), "k "),
        ((0.5, 2, -1), "n must be an integer >= 0"),
        ((np.array([0.5, 0.5]), 2, 3), r"shape \(3,\)"),
    ],
)
def test_speculative_bad_parameters(args: tuple, needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        sample_accepted(0, *args)
    if not isinstance(args[0], np.ndarray) and args[2] >= 0:
        with pytest.raises(ConfigurationError, match=needle):
            expected_accepted(args[0], args[1])
