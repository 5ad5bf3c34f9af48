"""Peak throughput under a per-token latency SLO: bisection over the request arrival rate.

PAM-style online evaluation asks: at what arrival rate (requests/s) can a system still serve a
workload with its time per output token (TPOT) within a service-level objective, and what
throughput (output tokens/s) does it deliver there? :func:`slo_search` answers with a
bisection over the rate. Each *probe* is one seeded :func:`pimserve.simulate` run of
``n_requests`` requests of a workload preset with Poisson arrivals at that rate (gamma for
``azure-code``), served with continuous batching unless the run options say otherwise.

When a probe meets the SLO (:func:`judge`), all of these hold:

1. **TPOT**: the chosen TPOT statistic (``p50``, ``p99`` or ``mean`` over completed requests
   with more than one output token) is ``<= tpot_slo_ms``.
2. **No unrequested rejections**: no request was rejected because the system cannot hold it
   (``exceeds_kv_capacity``), unless ``allow_capacity_rejections=True``. Requests longer than
   the model's context are rejected (or truncated) by the run's ``long_context`` option, which
   is the user's own choice; they do not fail a probe but every probe counts them
   (``requests_rejected``, ``rejected_reasons``) and the result warns about them.
3. **Everything admitted finished**: no request is left running or waiting (only possible
   with ``max_iterations``).
4. **The system keeps up (no queue growth)**: the p99 time to first token is at most
   ``max_wait_fraction`` (default 2 %) of the arrival window (first to last arrival). A stable
   system's queueing delay is bounded whatever the run's length, so this fraction shrinks as
   the run grows; an overloaded one's backlog grows linearly over the window, so its p99 TTFT
   approaches ``(1 - capacity/rate)`` of the window. The test therefore rejects offered loads
   more than about ``max_wait_fraction`` above what the system can serve, however good the
   TPOT of the requests it has admitted (TPOT alone never sees a queue: waiting requests
   produce no tokens).
5. **TTFT** (optional): with ``ttft_slo_ms``, the same statistic of TTFT is ``<= ttft_slo_ms``.

Criteria 2 and 3 (and a TPOT that is undefined because no request produced two tokens) do
not improve at lower rates: rejections depend on request lengths only, which the seed fixes
whatever the rate. When one of them fails, the search does not try lower rates.

Criterion 4 in numbers: with this repo's gpu-only / llama3-8b / sharegpt / batch 16 and 150
requests, p99 TTFT / window is 0.1 % at 10 req/s, 2.0 % at 14 req/s and 4.5 % at 16 req/s
against a capacity of 14.4 req/s. In short runs the ramp-up (the batch filling before a queue
forms) hides part of the backlog, so the test is somewhat more lenient than in long ones.

Bracketing, when ``rate_lo``/``rate_hi`` are not given: one extra run with all requests at
t = 0 measures the system's service rate (completed requests / makespan, the ``capacity``);
the first probe is at half of it, then the rate doubles until a probe fails (or halves until
one meets). Before halving after a TPOT failure, one run with every request served alone
(batch 1) gives the TPOT floor no rate can beat; if even that misses the SLO, or a probe's
requests already run alone (mean decoding batch <= 1.05 requests), no lower rate is tried
and the result says that no rate meets (``met`` False, ``best_rate_per_s`` None) instead of
raising. Bisection then halves the bracket [meets, fails] until its width is at most
``tol`` times its lower end, or ``max_probes`` probes have run.

Finite runs: a probe's ``throughput_tok_s`` is the run's own (all output tokens / makespan),
which includes ramp-up and the drain after the last arrival; ``offered_tok_s`` (rate x mean
output length) is the steady-state load. When the drain is most of the run, the result warns
that ``n_requests`` is too small for steady-state numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pimserve.api import load_workload, simulate
from pimserve.engine.config import RunConfig
from pimserve.engine.result import RunResult
from pimserve.errors import ConfigurationError
from pimserve.specs.base import validate
from pimserve.specs.catalog import load_model, load_system
from pimserve.specs.model import ModelSpec
from pimserve.specs.system import SystemSpec
from pimserve.workload.presets import WORKLOADS

__all__ = [
    "CONTEXT_REJECTIONS",
    "PERCENTILES",
    "SLOProbe",
    "SLOSearchResult",
    "judge",
    "probe_rate",
    "slo_search",
]

#: TPOT / TTFT statistics the SLO can be stated on.
PERCENTILES = ("p50", "p99", "mean")
#: Rejection reasons decided by the user's ``long_context`` option, not by the system's capacity.
CONTEXT_REJECTIONS = frozenset({"exceeds_context", "output_exceeds_context"})
#: Mean decoding requests per iteration at or below which requests already run alone.
ALONE_RLP = 1.05
#: A probe whose drain (last arrival to last finish) is more than this fraction of the run.
DRAIN_WARN_FRACTION = 0.5
#: Run options the search sets itself.
_SEARCH_OWNS = ("rate_per_s", "n_requests", "trace", "trace_format", "progress")
#: Failure codes that do not depend on the rate (trying lower rates cannot help).
_RATE_INDEPENDENT = frozenset({"rejected", "unfinished", "no_tpot"})


@dataclass
class SLOProbe:
    """One simulated run at one arrival rate and whether it meets the SLO.

    Times in ms unless the name says s; rates in requests/s; throughputs in output tokens/s.

    Attributes:
        rate_per_s: offered arrival rate of the probe.
        met: whether every criterion of :func:`judge` holds.
        why: the failed criteria in words ("" when met).
        fails: failed criteria as codes: ``tpot``, ``ttft``, ``queue``, ``rejected``,
            ``unfinished``, ``no_tpot``.
        tpot_ms: the SLO's TPOT statistic (None when no request produced two tokens).
        ttft_ms: the same statistic of TTFT.
        ttft_p99_ms: p99 TTFT, used by the queue-growth test.
        wait_fraction: ``ttft_p99_ms`` / arrival window (the queue-growth test's number).
        throughput_tok_s: the run's output tokens / makespan (includes ramp-up and drain).
        offered_tok_s: rate x mean output tokens of the drawn requests.
        requests_total, requests_completed, requests_rejected: counts of the run.
        rejected_reasons: rejected requests per reason (see docs/metrics.md).
        preemptions: KV-cache preemptions of the run.
        mean_rlp: mean decoding requests per iteration.
        arrival_window_s: last arrival minus first arrival.
        simulated_time_s: the run's makespan.
    """

    rate_per_s: float
    met: bool
    why: str
    fails: list[str]
    tpot_ms: float | None
    ttft_ms: float | None
    ttft_p99_ms: float | None
    wait_fraction: float | None
    throughput_tok_s: float
    offered_tok_s: float
    requests_total: int
    requests_completed: int
    requests_rejected: int
    rejected_reasons: dict[str, int]
    preemptions: int
    mean_rlp: float
    arrival_window_s: float
    simulated_time_s: float

    @property
    def drain_fraction(self) -> float:
        """Share of the makespan after the last arrival (0 when the run has no length)."""
        t = self.simulated_time_s
        return max(0.0, t - self.arrival_window_s) / t if t > 0 else 0.0


@dataclass
class SLOSearchResult:
    """The outcome of :func:`slo_search`.

    Attributes:
        system, model, workload: what was searched (names).
        tpot_slo_ms: the TPOT SLO in ms; ``percentile`` the statistic it bounds.
        ttft_slo_ms: the optional TTFT SLO in ms (None: none).
        met: whether some probed rate meets the SLO.
        best_rate_per_s: the highest probed rate that meets it (None when none does).
        throughput_tok_s: that probe's run throughput, output tokens/s: the peak throughput
            under the SLO (None when no rate meets).
        offered_tok_s: that probe's offered load, rate x mean output tokens, tokens/s.
        tpot_ms: that probe's TPOT statistic, ms.
        bracket_lo_per_s, bracket_hi_per_s: the final bracket, requests/s: the highest rate
            that meets and the lowest above it that fails (None where not found).
        capacity_req_s: completed requests/s with every request at t = 0 (only when the
            search found its own bracket), used to place the first probe.
        tpot_alone_ms: the TPOT statistic with requests served one at a time (batch 1), a
            floor no rate beats; measured only when a probe failed on TPOT and lower rates
            were to be tried (None otherwise).
        probes: every probe in the order run.
        how: how the answer was found, one paragraph.
        warnings: what the user should know about the answer (rejections, short runs).
        settings: the search's inputs (n_requests, seed, tol, max_probes, run options, ...).
    """

    system: str
    model: str
    workload: str
    tpot_slo_ms: float
    percentile: str
    ttft_slo_ms: float | None
    met: bool
    best_rate_per_s: float | None
    throughput_tok_s: float | None
    offered_tok_s: float | None
    tpot_ms: float | None
    bracket_lo_per_s: float | None
    bracket_hi_per_s: float | None
    capacity_req_s: float | None
    tpot_alone_ms: float | None
    probes: list[SLOProbe]
    how: str
    warnings: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly data (non-finite floats become None)."""
        from pimserve.jsonutil import to_jsonable

        d = asdict(self)
        for p, obj in zip(d["probes"], self.probes, strict=True):
            p["drain_fraction"] = obj.drain_fraction
        out: dict[str, Any] = to_jsonable(d)
        return out


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------
def _number(name: str, value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigurationError(f"{name} must be a number ({what}); got {value!r}")
    return float(value)


def _positive(name: str, value: Any, what: str) -> float:
    v = _number(name, value, what)
    if not (v > 0 and math.isfinite(v)):
        raise ConfigurationError(f"{name} must be a finite number > 0 ({what}); got {value!r}")
    return v


def _integer(name: str, value: Any, lo: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < lo:
        raise ConfigurationError(f"{name} must be an integer >= {lo} ({what}); got {value!r}")
    return int(value)


def _check_percentile(percentile: Any) -> str:
    if percentile not in PERCENTILES:
        raise ConfigurationError(
            f"percentile must be one of {', '.join(PERCENTILES)}; got {percentile!r}"
        )
    return str(percentile)


def _check_fraction(name: str, value: Any, what: str, *, closed_hi: bool) -> float:
    v = _number(name, value, what)
    ok = 0 < v <= 1 if closed_hi else 0 < v < 1
    if not ok:
        rng = "(0, 1]" if closed_hi else "(0, 1)"
        raise ConfigurationError(f"{name} must be in {rng} ({what}); got {value!r}")
    return v


# ------------------------------------------------------------------------------------------
# one probe
# ------------------------------------------------------------------------------------------
def judge(
    result: RunResult,
    arrival_window_s: float,
    tpot_slo_ms: float,
    percentile: str = "p99",
    *,
    ttft_slo_ms: float | None = None,
    max_wait_fraction: float = 0.02,
    allow_capacity_rejections: bool = False,
) -> tuple[bool, str, list[str]]:
    """Whether one run meets the SLO: ``(met, why, fail codes)``; the rule is the module's.

    ``arrival_window_s`` is the run's last minus first arrival time (s); ``tpot_slo_ms`` and
    ``ttft_slo_ms`` are in ms; ``max_wait_fraction`` bounds p99 TTFT / arrival window.
    """
    why: list[str] = []
    codes: list[str] = []
    capacity = {
        k: v for k, v in result.rejected_reasons.items() if v and k not in CONTEXT_REJECTIONS
    }
    if capacity and not allow_capacity_rejections:
        n = sum(capacity.values())
        codes.append("rejected")
        why.append(
            f"{n} requests rejected ({', '.join(f'{k}: {v}' for k, v in capacity.items())})"
        )
    unfinished = result.requests_running + result.requests_waiting
    if unfinished:
        codes.append("unfinished")
        why.append(f"{unfinished} admitted requests unfinished")
    tpot = result.tpot_ms.get(percentile)
    if tpot is None:
        codes.append("no_tpot")
        why.append("no completed request produced two tokens, so TPOT is undefined")
    elif tpot > tpot_slo_ms:
        codes.append("tpot")
        why.append(f"TPOT {percentile} {tpot:.4g} ms > {tpot_slo_ms:g} ms")
    ttft = result.ttft_ms.get(percentile)
    if ttft_slo_ms is not None and ttft is not None and ttft > ttft_slo_ms:
        codes.append("ttft")
        why.append(f"TTFT {percentile} {ttft:.4g} ms > {ttft_slo_ms:g} ms")
    ttft99 = result.ttft_ms.get("p99")
    if ttft99 is not None:
        wait = ttft99 / 1e3 / arrival_window_s if arrival_window_s > 0 else math.inf
        if wait > max_wait_fraction:
            codes.append("queue")
            why.append(
                f"queue grows: TTFT p99 {ttft99 / 1e3:.3g} s is {wait:.1%} of the "
                f"{arrival_window_s:.3g} s arrival window (limit {max_wait_fraction:.0%})"
            )
    return not codes, "; ".join(why), codes


def probe_rate(
    system: str | SystemSpec,
    model: str | ModelSpec,
    workload: str,
    rate_per_s: float,
    tpot_slo_ms: float,
    *,
    percentile: str = "p99",
    n_requests: int = 256,
    seed: int = 0,
    ttft_slo_ms: float | None = None,
    max_wait_fraction: float = 0.02,
    allow_capacity_rejections: bool = False,
    **run_options: Any,
) -> SLOProbe:
    """One probe: ``simulate`` ``n_requests`` of preset ``workload`` arriving at ``rate_per_s``
    requests/s with ``seed``, then :func:`judge` it against the SLO (ms)."""
    reqs, _ = load_workload(workload, n_requests=n_requests, rate_per_s=rate_per_s, seed=seed)
    arrival = np.asarray(reqs.arrival_s, dtype=np.float64)
    window = float(arrival.max() - arrival.min())
    offered = rate_per_s * float(np.mean(reqs.output_tokens))
    r = simulate(system, model, workload, n_requests=n_requests, rate_per_s=rate_per_s,
                 seed=seed, **run_options)
    met, why, codes = judge(r, window, tpot_slo_ms, percentile, ttft_slo_ms=ttft_slo_ms,
                            max_wait_fraction=max_wait_fraction,
                            allow_capacity_rejections=allow_capacity_rejections)
    ttft99 = r.ttft_ms.get("p99")
    return SLOProbe(
        rate_per_s=float(rate_per_s),
        met=met,
        why=why,
        fails=codes,
        tpot_ms=r.tpot_ms.get(percentile),
        ttft_ms=r.ttft_ms.get(percentile),
        ttft_p99_ms=ttft99,
        wait_fraction=(ttft99 / 1e3 / window if ttft99 is not None and window > 0 else None),
        throughput_tok_s=r.throughput_tok_s,
        offered_tok_s=offered,
        requests_total=r.requests_total,
        requests_completed=r.requests_completed,
        requests_rejected=r.requests_rejected,
        rejected_reasons=dict(r.rejected_reasons),
        preemptions=r.preemptions,
        mean_rlp=r.mean_rlp,
        arrival_window_s=window,
        simulated_time_s=r.simulated_time_s,
    )


def _capacity(system: Any, model: Any, workload: str, n_requests: int, seed: int,
              run_options: dict[str, Any]) -> float | None:
    """Completed requests/s when every request arrives at t = 0 (None if none completes)."""
    opts = dict(run_options)
    if opts.get("batching", "auto") == "auto":
        opts["batching"] = "continuous"  # 'auto' would pick static batches for t = 0 arrivals
    r = simulate(system, model, workload, n_requests=n_requests, rate_per_s=math.inf,
                 seed=seed, **opts)
    if r.requests_completed == 0 or r.simulated_time_s <= 0:
        return None
    return r.requests_completed / r.simulated_time_s


def _tpot_alone(system: Any, model: Any, workload: str, n_requests: int, seed: int,
                percentile: str, run_options: dict[str, Any]) -> float | None:
    """The TPOT statistic (ms) with every request served alone (batch 1): no rate does better.

    A lower bound because a request's decode steps cost at least as much when others share
    them; None when no request produced two tokens.
    """
    opts = {**run_options, "batch": 1}
    if opts.get("batching", "auto") == "auto":
        opts["batching"] = "continuous"
    r = simulate(system, model, workload, n_requests=n_requests, rate_per_s=math.inf,
                 seed=seed, **opts)
    return r.tpot_ms.get(percentile)


# ------------------------------------------------------------------------------------------
# the search
# ------------------------------------------------------------------------------------------
def slo_search(
    system: str | SystemSpec,
    model: str | ModelSpec,
    workload: str,
    tpot_slo_ms: float,
    *,
    percentile: str = "p99",
    n_requests: int = 256,
    rate_lo: float | None = None,
    rate_hi: float | None = None,
    tol: float = 0.05,
    max_probes: int = 12,
    seed: int = 0,
    ttft_slo_ms: float | None = None,
    max_wait_fraction: float = 0.02,
    allow_capacity_rejections: bool = False,
    progress: Callable[[SLOProbe], None] | None = None,
    **run_options: Any,
) -> SLOSearchResult:
    """The highest Poisson arrival rate (requests/s) at which ``system`` serving ``model`` meets
    a TPOT SLO on workload preset ``workload``, and its throughput (output tokens/s).

    Args:
        system, model: names (or specs) as for :func:`pimserve.simulate`.
        workload: a workload preset name (the search sets its arrival rate).
        tpot_slo_ms: the SLO on time per output token, ms (> 0).
        percentile: the TPOT statistic bounded: ``p50``, ``p99`` or ``mean``.
        n_requests: requests per probe (>= 2); more gives steadier, slower probes.
        rate_lo, rate_hi: a bracket in requests/s; found automatically when not given. A
            ``rate_lo`` that fails means no rate meets; a ``rate_hi`` that meets is returned
            as the best with a note that the peak may be higher.
        tol: stop when the bracket's width is at most ``tol`` x its lower end, in (0, 1).
        max_probes: most simulated probes (>= 2); the capacity run is not counted.
        seed: seed of every probe (workload draw and run), >= 0.
        ttft_slo_ms: optional SLO on the same statistic of TTFT, ms.
        max_wait_fraction: queue-growth limit: p99 TTFT / arrival window, in (0, 1].
        allow_capacity_rejections: let probes pass with requests rejected for KV capacity
            (they are still counted and reported).
        progress: called with each :class:`SLOProbe` as it finishes.
        run_options: :class:`~pimserve.engine.config.RunConfig` fields (batch, tlp, ...).

    Returns:
        :class:`SLOSearchResult`; when no rate meets, ``met`` is False and the ``how`` says
        why, rather than an exception. Bad inputs raise ConfigurationError naming the field.
    """
    tpot_slo_ms = _positive("tpot_slo_ms", tpot_slo_ms, "ms per output token")
    percentile = _check_percentile(percentile)
    n_requests = _integer("n_requests", n_requests, 2, "requests per probe")
    tol = _check_fraction("tol", tol, "relative width of the final rate bracket",
                          closed_hi=False)
    max_probes = _integer("max_probes", max_probes, 2, "simulated probes")
    seed = _integer("seed", seed, 0, "seed of every probe")
    max_wait_fraction = _check_fraction(
        "max_wait_fraction", max_wait_fraction, "p99 TTFT / arrival window", closed_hi=True
    )
    if ttft_slo_ms is not None:
        ttft_slo_ms = _positive("ttft_slo_ms", ttft_slo_ms, "ms to first token")
    if rate_lo is not None:
        rate_lo = _positive("rate_lo", rate_lo, "requests/s")
    if rate_hi is not None:
        rate_hi = _positive("rate_hi", rate_hi, "requests/s")
    if rate_lo is not None and rate_hi is not None and not rate_lo < rate_hi:
        raise ConfigurationError(
            f"rate_lo must be below rate_hi (got rate_lo {rate_lo:g}, rate_hi {rate_hi:g})"
        )
    if not isinstance(workload, str):
        raise ConfigurationError(
            "workload must be a workload preset name (the search sets its arrival rate; "
            f"known: {', '.join(WORKLOADS.names())}); got {type(workload).__name__}"
        )
    WORKLOADS.get(workload)  # unknown names fail before any run
    owned = sorted(k for k in run_options if k in _SEARCH_OWNS)
    if owned:
        raise ConfigurationError(
            f"run option {owned[0]} is set by the SLO search itself; use slo_search's own "
            "arguments (n_requests, rate_lo, rate_hi) and a workload preset"
        )
    validate(RunConfig, {**run_options, "seed": seed}, "run options")
    sys_spec, model_spec = load_system(system), load_model(model)

    probes: list[SLOProbe] = []

    def probe(rate: float) -> SLOProbe:
        p = probe_rate(sys_spec, model_spec, workload, rate, tpot_slo_ms,
                       percentile=percentile, n_requests=n_requests, seed=seed,
                       ttft_slo_ms=ttft_slo_ms, max_wait_fraction=max_wait_fraction,
                       allow_capacity_rejections=allow_capacity_rejections, **run_options)
        probes.append(p)
        if progress is not None:
            progress(p)
        return p

    def budget() -> bool:
        return len(probes) < max_probes

    capacity: float | None = None
    tpot_alone: float | None = None
    notes: list[str] = []
    lo: SLOProbe | None = None  # highest rate that meets
    hi: SLOProbe | None = None  # lowest rate above ``lo`` that fails
    if rate_lo is None and rate_hi is None:
        capacity = _capacity(sys_spec, model_spec, workload, n_requests, seed, run_options)
        first = capacity / 2 if capacity else 1.0
        notes.append(
            f"capacity with every request at t=0: {capacity:.4g} req/s, first probe at half"
            if capacity else "no request completed with every request at t=0; first probe at "
            "1 req/s"
        )
    elif rate_lo is not None:
        first = rate_lo
    else:
        assert rate_hi is not None
        first = rate_hi
    p = probe(first)
    if p.met:
        lo = p
        if rate_lo is not None and rate_hi is not None:
            q = probe(rate_hi)
            if q.met:
                lo = q
                notes.append("rate_hi meets the SLO too: the peak may be higher")
            else:
                hi = q
        elif rate_hi is not None:
            notes.append("rate_hi meets the SLO: the peak may be higher")
        else:
            while budget():
                q = probe(lo.rate_per_s * 2)
                if q.met:
                    lo = q
                else:
                    hi = q
                    break
            if hi is None:
                notes.append(f"no failing rate found within {max_probes} probes: the peak may "
                             "be higher")
    elif rate_lo is not None:
        notes.append("rate_lo already fails")
    elif _RATE_INDEPENDENT.intersection(p.fails):
        notes.append("the failure does not depend on the rate, so lower rates were not tried")
    else:
        hi = p
        hopeless = False
        if "tpot" in p.fails:
            tpot_alone = _tpot_alone(sys_spec, model_spec, workload, n_requests, seed,
                                     percentile, run_options)
            hopeless = tpot_alone is not None and tpot_alone > tpot_slo_ms
            if hopeless:
                notes.append(f"even served one at a time (batch 1) the requests' TPOT "
                             f"{percentile} is {tpot_alone:.4g} ms, so no rate can meet "
                             f"{tpot_slo_ms:g} ms and lower rates were not tried")
        while not hopeless and lo is None:
            if hi.mean_rlp <= ALONE_RLP and "queue" not in hi.fails:
                notes.append(f"at {hi.rate_per_s:.4g} req/s requests already run alone "
                             f"(mean decoding batch {hi.mean_rlp:.3g}), so lower rates "
                             "cannot help")
                break
            if not budget():
                notes.append(f"no meeting rate found within {max_probes} probes")
                break
            q = probe(hi.rate_per_s / 2)
            if q.met:
                lo = q
            else:
                hi = q
                if _RATE_INDEPENDENT.intersection(q.fails):
                    notes.append("the failure does not depend on the rate")
                    break

    if lo is not None and hi is not None:
        while budget() and hi.rate_per_s - lo.rate_per_s > tol * lo.rate_per_s:
            q = probe((lo.rate_per_s + hi.rate_per_s) / 2)
            if q.met:
                lo = q
            else:
                hi = q
        if hi.rate_per_s - lo.rate_per_s > tol * lo.rate_per_s:
            notes.append(f"stopped after {max_probes} probes with the bracket wider than tol")

    rule = (
        f"TPOT {percentile} <= {tpot_slo_ms:g} ms"
        + (f", TTFT {percentile} <= {ttft_slo_ms:g} ms" if ttft_slo_ms is not None else "")
        + (", no request rejected for KV capacity" if not allow_capacity_rejections else "")
        + ", every admitted request finished, and p99 TTFT <= "
        f"{max_wait_fraction:.0%} of the arrival window (the queue does not grow)"
    )
    head = (
        f"bisection over the arrival rate, {n_requests} {workload} requests per probe "
        f"(seed {seed}); a probe meets when {rule}; "
        f"{len(probes)} probe{'s' if len(probes) != 1 else ''}"
    )
    if lo is not None:
        bracket = (f"bracket [{lo.rate_per_s:.4g}, {hi.rate_per_s:.4g}] req/s" if hi is not None
                   else f"best {lo.rate_per_s:.4g} req/s")
        outcome = f"{bracket}; peak throughput under SLO {lo.throughput_tok_s:.4g} tok/s"
    else:
        low = min(probes, key=lambda x: x.rate_per_s)
        outcome = (f"no rate meets the SLO: even {low.rate_per_s:.4g} req/s fails "
                   f"({low.why})")
    how = "; ".join([head, *notes, outcome])

    warnings: list[str] = []
    ref = lo or probes[0]
    ctx = sum(v for k, v in ref.rejected_reasons.items() if k in CONTEXT_REJECTIONS)
    if ctx:
        warnings.append(
            f"{ctx} of {ref.requests_total} requests rejected at every rate: prompt + output "
            "exceed the model's context (long_context option); TPOT and throughput cover "
            "the others"
        )
    cap = ref.requests_rejected - ctx
    if cap and allow_capacity_rejections:
        warnings.append(f"{cap} of {ref.requests_total} requests rejected for KV capacity "
                        "(allowed by allow_capacity_rejections)")
    if lo is not None and lo.drain_fraction > DRAIN_WARN_FRACTION:
        warnings.append(
            f"at {lo.rate_per_s:.4g} req/s {lo.drain_fraction:.0%} of the run comes after the "
            f"last arrival, so its throughput ({lo.throughput_tok_s:.4g} tok/s) is well below "
            f"the offered {lo.offered_tok_s:.4g} tok/s; use more requests (n_requests) for "
            "steady-state numbers"
        )

    return SLOSearchResult(
        system=sys_spec.name,
        model=model_spec.name,
        workload=workload,
        tpot_slo_ms=tpot_slo_ms,
        percentile=percentile,
        ttft_slo_ms=ttft_slo_ms,
        met=lo is not None,
        best_rate_per_s=lo.rate_per_s if lo else None,
        throughput_tok_s=lo.throughput_tok_s if lo else None,
        offered_tok_s=lo.offered_tok_s if lo else None,
        tpot_ms=lo.tpot_ms if lo else None,
        bracket_lo_per_s=lo.rate_per_s if lo else None,
        bracket_hi_per_s=(hi.rate_per_s if hi else None) if lo else min(
            x.rate_per_s for x in probes),
        capacity_req_s=capacity,
        tpot_alone_ms=tpot_alone,
        probes=probes,
        how=how,
        warnings=warnings,
        settings={
            "n_requests": n_requests, "seed": seed, "tol": tol, "max_probes": max_probes,
            "rate_lo": rate_lo, "rate_hi": rate_hi, "max_wait_fraction": max_wait_fraction,
            "allow_capacity_rejections": allow_capacity_rejections,
            "run_options": dict(run_options),
        },
    )
