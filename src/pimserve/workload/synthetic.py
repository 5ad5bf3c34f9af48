"""Seeded synthetic workloads: arrival processes and length distributions.

Every function draws from one ``numpy.random.Generator``: pass a Generator (to share one stream
across a run) or an integer seed (a fresh ``default_rng(seed)``). Nothing draws from global state.

Arrival processes return ``float64[n]`` arrival times in seconds, non-decreasing, with the first
request at 0 s (the same convention as the trace loaders: "seconds since the first request"), so
``n`` arrivals span ``n - 1`` inter-arrival gaps:

- :func:`poisson`: exponential gaps with mean ``1 / rate_per_s`` (CV 1).
- :func:`gamma`: gamma gaps with mean ``1 / rate_per_s`` and coefficient of variation ``cv``
  (``cv > 1`` is burstier than Poisson, ``cv < 1`` more regular, ``cv == 1`` *is* Poisson and
  draws exactly what :func:`poisson` draws).
- :func:`fixed_batch`: everything at 0 (PAPI's static batching).

Length distributions return ``int64[n]`` token counts:

- :class:`LognormalLengths` / :func:`lognormal`: a lognormal fitted to a published mean and
  median, optionally clipped to ``[lo, hi]`` (the fit then matches the mean *after* clipping).
- :class:`EmpiricalLengths`: inverse-CDF sampling from stored quantiles (linear interpolation
  between quantile points, rounded to the nearest integer, clipped to [min, max]).
- :func:`sample_lengths`: prompt and output lengths together, independent by default or coupled
  by a Gaussian copula with a given Spearman rank correlation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pimserve.errors import ConfigurationError

__all__ = [
    "EmpiricalLengths",
    "LognormalLengths",
    "RngLike",
    "as_generator",
    "fixed_batch",
    "gamma",
    "lognormal",
    "poisson",
    "sample_lengths",
]

#: A Generator to draw from, or an integer seed for a fresh ``np.random.default_rng(seed)``.
RngLike = np.random.Generator | int


def as_generator(rng: RngLike, where: str = "rng") -> np.random.Generator:
    """``rng`` if it is a Generator, else ``default_rng(rng)`` for an integer seed >= 0."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, bool) or not isinstance(rng, int | np.integer) or rng < 0:
        raise ConfigurationError(
            f"{where}: rng must be a numpy Generator or an integer seed >= 0 (got {rng!r})"
        )
    return np.random.default_rng(int(rng))


def _check_n(n: Any, where: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ConfigurationError(f"{where}: n must be an integer >= 1 (got {n!r})")
    return int(n)


def _check_positive(value: Any, name: str, where: str, unit: str = "") -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if isinstance(value, bool) or not math.isfinite(v) or v <= 0:
        u = f" {unit}" if unit else ""
        raise ConfigurationError(f"{where}: {name} must be a finite number > 0{u} (got {value!r})")
    return v


# -- arrival processes ----------------------------------------------------------------------


def _from_gaps(gaps: np.ndarray) -> np.ndarray:
    """Arrival times (s) from n - 1 gaps: 0, g0, g0 + g1, ..."""
    out = np.empty(gaps.size + 1)
    out[0] = 0.0
    np.cumsum(gaps, out=out[1:])
    return out


def poisson(rate_per_s: float, n: int, rng: RngLike) -> np.ndarray:
    """``n`` Poisson arrivals at ``rate_per_s`` requests per second: float64[n] seconds.

    The first request arrives at 0 s; the n - 1 gaps are exponential with mean
    ``1 / rate_per_s`` seconds.
    """
    rate = _check_positive(rate_per_s, "rate_per_s", "poisson", "requests/s")
    n = _check_n(n, "poisson")
    g = as_generator(rng, "poisson")
    return _from_gaps(g.exponential(1.0 / rate, size=n - 1))


def gamma(rate_per_s: float, cv: float, n: int, rng: RngLike) -> np.ndarray:
    """``n`` arrivals with gamma gaps: mean ``1 / rate_per_s`` s, coefficient of variation ``cv``.

    Gap shape ``k = 1 / cv**2`` and scale ``cv**2 / rate_per_s`` seconds. ``cv = 1`` is Poisson
    (and draws exactly the numbers :func:`poisson` draws). Returns float64[n] seconds, first 0.
    """
    rate = _check_positive(rate_per_s, "rate_per_s", "gamma", "requests/s")
    c = _check_positive(cv, "cv", "gamma")
    n = _check_n(n, "gamma")
    g = as_generator(rng, "gamma")
    if c == 1.0:
        return _from_gaps(g.exponential(1.0 / rate, size=n - 1))
    return _from_gaps(g.gamma(1.0 / c**2, c**2 / rate, size=n - 1))


def fixed_batch(n: int) -> np.ndarray:
    """``n`` requests all arriving at 0 s (a static batch, as PAPI evaluates): float64[n]."""
    return np.zeros(_check_n(n, "fixed_batch"))


# -- length distributions -------------------------------------------------------------------

_erf = np.frompyfunc(math.erf, 1, 1)


def _norm_cdf(z: npt.ArrayLike) -> np.ndarray:
    """Standard normal CDF, elementwise (float64)."""
    return 0.5 * (1.0 + _erf(np.asarray(z, dtype=np.float64) / math.sqrt(2.0)).astype(float))


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _clipped_lognormal_mean(mu: float, sigma: float, lo: float, hi: float) -> float:
    """E[min(max(X, lo), hi)] for X ~ Lognormal(mu, sigma) (``hi`` may be inf)."""
    if sigma == 0.0:
        return min(max(math.exp(mu), lo), hi)
    a = (math.log(lo) - mu) / sigma if lo > 0 else -math.inf
    b = (math.log(hi) - mu) / sigma if math.isfinite(hi) else math.inf
    body = math.exp(mu + sigma**2 / 2) * (_phi(b - sigma) - _phi(a - sigma))
    below = lo * _phi(a) if lo > 0 else 0.0
    above = hi * (1.0 - _phi(b)) if math.isfinite(hi) else 0.0
    return below + body + above


@dataclass(frozen=True)
class LognormalLengths:
    """Token lengths ``round(exp(mu + sigma * Z))`` clipped to ``[lo, hi]`` (tokens).

    Build it with :meth:`fit` from a published mean and median.
    """

    mu: float
    sigma: float
    lo: int = 1
    hi: int | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.mu) or not math.isfinite(self.sigma) or self.sigma < 0:
            raise ConfigurationError(
                f"LognormalLengths: mu must be finite and sigma >= 0 (got {self.mu}, {self.sigma})"
            )
        if self.lo < 1 or (self.hi is not None and self.hi < self.lo):
            raise ConfigurationError(
                f"LognormalLengths: need 1 <= lo <= hi tokens (got lo={self.lo}, hi={self.hi})"
            )

    @classmethod
    def fit(
        cls, mean: float, median: float, lo: int = 1, hi: int | None = None
    ) -> LognormalLengths:
        """Fit to a target ``mean`` and ``median`` (tokens) of the clipped distribution.

        ``mu = ln(median)`` (clipping keeps the median when lo <= median <= hi); ``sigma`` is
        solved by bisection so that ``E[clip(X, lo, hi)] == mean`` (without clipping that is
        ``sigma = sqrt(2 ln(mean / median))``). Needs ``lo <= median < mean < (lo + hi) / 2``.
        """
        mean = _check_positive(mean, "mean", "lognormal", "tokens")
        median = _check_positive(median, "median", "lognormal", "tokens")
        top = math.inf if hi is None else float(hi)
        if not lo <= median <= top:
            raise ConfigurationError(
                f"lognormal: median must lie in [lo, hi] = [{lo}, {hi}] tokens (got {median})"
            )
        ceiling = (lo + top) / 2 if math.isfinite(top) else math.inf
        if not median < mean < ceiling:
            raise ConfigurationError(
                f"lognormal: mean must be > median ({median}) and < {ceiling} tokens for a "
                f"lognormal clipped to [{lo}, {hi}] (got {mean})"
            )
        mu = math.log(median)
        if lo <= 1 and hi is None:
            return cls(mu, math.sqrt(2.0 * math.log(mean / median)), lo, hi)
        s_lo, s_hi = 0.0, 1.0
        while _clipped_lognormal_mean(mu, s_hi, lo, top) < mean:
            s_hi *= 2.0
            if s_hi > 64:  # pragma: no cover - excluded by the ceiling check
                raise ConfigurationError(f"lognormal: cannot reach mean {mean} tokens")
        for _ in range(100):
            mid = 0.5 * (s_lo + s_hi)
            if _clipped_lognormal_mean(mu, mid, lo, top) < mean:
                s_lo = mid
            else:
                s_hi = mid
        return cls(mu, 0.5 * (s_lo + s_hi), lo, hi)

    def mean(self) -> float:
        """Mean of the clipped continuous distribution (tokens), before rounding."""
        return _clipped_lognormal_mean(
            self.mu, self.sigma, self.lo, math.inf if self.hi is None else self.hi
        )

    def sample(self, n: int, rng: RngLike, hi: npt.ArrayLike | None = None) -> np.ndarray:
        """``n`` lengths (int64 tokens); ``hi`` (scalar or int64[n]) tightens the upper clip."""
        n = _check_n(n, "lognormal")
        g = as_generator(rng, "lognormal")
        return self.from_normal(g.standard_normal(n), hi)

    def from_normal(self, z: npt.ArrayLike, hi: npt.ArrayLike | None = None) -> np.ndarray:
        """Lengths for given standard-normal draws ``z`` (used by the copula)."""
        x = np.rint(np.exp(self.mu + self.sigma * np.asarray(z, dtype=np.float64)))
        top: Any = np.inf if self.hi is None else self.hi
        if hi is not None:
            top = np.minimum(top, np.asarray(hi))
        x = np.minimum(x, top)
        return np.maximum(x, self.lo).astype(np.int64)


def lognormal(
    mean: float, median: float, n: int, rng: RngLike, lo: int = 1, hi: int | None = None
) -> np.ndarray:
    """``n`` lognormal lengths (int64 tokens) fitted to ``mean``/``median``, clipped to [lo, hi]."""
    return LognormalLengths.fit(mean, median, lo, hi).sample(n, rng)


@dataclass(frozen=True)
class EmpiricalLengths:
    """A length distribution stored as quantiles; sampled by inverse CDF.

    Attributes:
        probs: cumulative probabilities, strictly increasing from 0 to 1.
        values: the quantile (token length) at each probability, non-decreasing; ``values[0]``
            is the minimum and ``values[-1]`` the maximum of the data.
        source: where the quantiles came from.

    :meth:`sample` draws ``u ~ U(0, 1)``, interpolates ``values`` linearly in ``probs``, rounds
    to the nearest integer and clips to ``[min, max]``.
    """

    probs: tuple[float, ...]
    values: tuple[float, ...]
    source: str = ""

    def __post_init__(self) -> None:
        p = np.asarray(self.probs, dtype=np.float64)
        v = np.asarray(self.values, dtype=np.float64)
        if p.ndim != 1 or p.shape != v.shape or p.size < 2:
            raise ConfigurationError(
                "EmpiricalLengths: probs and values must be 1-D, of equal length >= 2 "
                f"(got {p.shape} and {v.shape})"
            )
        if p[0] != 0.0 or p[-1] != 1.0 or np.any(np.diff(p) <= 0):
            raise ConfigurationError("EmpiricalLengths: probs must increase strictly from 0 to 1")
        if not np.all(np.isfinite(v)) or np.any(np.diff(v) < 0) or v[0] < 1:
            raise ConfigurationError(
                "EmpiricalLengths: values must be finite, non-decreasing and >= 1 token"
            )
        object.__setattr__(self, "probs", tuple(float(x) for x in p))
        object.__setattr__(self, "values", tuple(float(x) for x in v))

    @classmethod
    def from_data(
        cls, data: npt.ArrayLike, percentiles: Sequence[float], source: str = ""
    ) -> EmpiricalLengths:
        """Quantiles of ``data`` at ``percentiles`` (0..100, must include 0 and 100)."""
        x = np.asarray(data, dtype=np.float64)
        q = np.asarray(percentiles, dtype=np.float64)
        return cls(tuple(q / 100.0), tuple(np.percentile(x, q)), source)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "") -> EmpiricalLengths:
        """From ``{"percentiles": [...0..100], "values": [...]}`` as the fit script writes."""
        q = np.asarray(d["percentiles"], dtype=np.float64)
        return cls(tuple(q / 100.0), tuple(d["values"]), source)

    @property
    def min(self) -> int:
        return math.ceil(self.values[0])

    @property
    def max(self) -> int:
        return math.floor(self.values[-1])

    def ppf(self, u: npt.ArrayLike) -> np.ndarray:
        """Inverse CDF: token lengths (float, before rounding) at probabilities ``u``."""
        return np.interp(np.asarray(u, dtype=np.float64), self.probs, self.values)

    def from_uniform(self, u: npt.ArrayLike) -> np.ndarray:
        """Lengths (int64 tokens) for given uniform draws ``u`` in [0, 1]."""
        return np.clip(np.rint(self.ppf(u)), self.min, self.max).astype(np.int64)

    def sample(self, n: int, rng: RngLike) -> np.ndarray:
        """``n`` lengths (int64 tokens)."""
        n = _check_n(n, "EmpiricalLengths.sample")
        return self.from_uniform(as_generator(rng, "EmpiricalLengths.sample").random(n))


def sample_lengths(
    prompt: EmpiricalLengths,
    output: EmpiricalLengths,
    n: int,
    rng: RngLike,
    rank_correlation: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Prompt and output lengths (two int64[n], tokens) from their marginal distributions.

    With ``rank_correlation == 0`` (the default) the two are independent: ``n`` uniforms for
    the prompt, then ``n`` for the output. Otherwise a Gaussian copula couples them so that the
    Spearman rank correlation is ``rank_correlation`` (in [-1, 1]): normals with Pearson
    correlation ``r = 2 sin(pi * rho_s / 6)`` are mapped through the normal CDF to uniforms.
    The marginals are the same either way.
    """
    n = _check_n(n, "sample_lengths")
    rho_s = float(rank_correlation)
    if not -1.0 <= rho_s <= 1.0:
        raise ConfigurationError(
            f"sample_lengths: rank_correlation must be in [-1, 1] (got {rank_correlation!r})"
        )
    g = as_generator(rng, "sample_lengths")
    if rho_s == 0.0:
        return prompt.from_uniform(g.random(n)), output.from_uniform(g.random(n))
    r = 2.0 * math.sin(math.pi * rho_s / 6.0)
    z1 = g.standard_normal(n)
    z2 = r * z1 + math.sqrt(max(0.0, 1.0 - r * r)) * g.standard_normal(n)
    return prompt.from_uniform(_norm_cdf(z1)), output.from_uniform(_norm_cdf(z2))
