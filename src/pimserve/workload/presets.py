"""Named synthetic workloads that stand in for the real traces (which the repo does not ship).

Each preset in :data:`WORKLOADS` is called as ``preset(n, seed, rate_per_s=None) -> Requests``.
Lengths come from quantiles of the shared traces stored in ``data/length_quantiles.json``
(written by ``scripts/fit_workloads.py``; statistics only, no trace rows), or, for ``sharegpt``,
from lognormals fitted to published statistics.

Joint sampling: prompt and output lengths are drawn *independently* from their marginal
distributions. The measured Spearman rank correlations are weak (Azure conv +0.07, code -0.02,
arXiv -0.11, Dolly creative +0.23, open_qa -0.18; stored in the JSON), so independence keeps
the marginals exact and loses little; :func:`~pimserve.workload.synthetic.sample_lengths` with
``rank_correlation=stored_lengths(key)[2]`` gives the Gaussian-copula alternative.

Arrivals: each preset has a default arrival process (a static batch at t = 0 for the
offline/PAPI data sets, the trace's own rate for the Azure ones). ``rate_per_s`` overrides the
rate: Poisson for the static and Poisson presets, gamma with the trace's CV for ``azure-code``;
``rate_per_s=math.inf`` makes any preset a static batch.

Draw order from ``np.random.default_rng(seed)``: prompt lengths, output lengths, arrivals; so a
seed gives the same lengths whatever the arrival process.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from pimserve.errors import ConfigurationError
from pimserve.registry import Registry
from pimserve.workload import synthetic
from pimserve.workload.request import Requests
from pimserve.workload.synthetic import EmpiricalLengths, LognormalLengths

__all__ = [
    "WORKLOADS",
    "WorkloadPreset",
    "describe_workloads",
    "make_workload",
    "stored_lengths",
    "stored_stats",
]

QUANTILES_FILE = "data/length_quantiles.json"


@functools.lru_cache(maxsize=1)
def _quantile_data() -> dict[str, Any]:
    """The stored quantiles (``data/length_quantiles.json``), read once."""
    text = resources.files("pimserve.workload").joinpath(QUANTILES_FILE).read_text()
    data: dict[str, Any] = json.loads(text)
    return data


def stored_lengths(key: str) -> tuple[EmpiricalLengths, EmpiricalLengths, float]:
    """(prompt, output, Spearman rank correlation) stored for data set ``key``.

    Keys: ``azure-conv``, ``azure-code``, ``dolly-creative``, ``dolly-open-qa``, ``arxiv-sum``.
    """
    data = _quantile_data()
    sets = data["datasets"]
    if key not in sets:
        raise ConfigurationError(
            f"no stored lengths for '{key}' (known: {', '.join(sorted(sets))})"
        )
    e = sets[key]
    src = f"{e['file']} ({e['source']}) via {QUANTILES_FILE}"
    pct = data["percentiles"]
    prompt = EmpiricalLengths.from_dict({"percentiles": pct, "values": e["prompt"]["values"]}, src)
    output = EmpiricalLengths.from_dict({"percentiles": pct, "values": e["output"]["values"]}, src)
    return prompt, output, float(e["rank_correlation"])


def stored_stats(key: str) -> dict[str, Any]:
    """The data set's stored summary: n, prompt/output mean/p50/p90/p99/max, rate, CV."""
    e = _quantile_data()["datasets"][key]
    out = {"n": e["n"], "rank_correlation": e["rank_correlation"]}
    for side in ("prompt", "output"):
        for k in ("mean", "p50", "p90", "p99", "max"):
            out[f"{side}_{k}"] = e[side][k]
    for k in ("duration_s", "rate_per_s", "interarrival_cv"):
        if k in e:
            out[k] = e[k]
    return out


# -- presets ---------------------------------------------------------------------------------

Builder = Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class WorkloadPreset:
    """A named synthetic workload: ``preset(n, seed, rate_per_s=None) -> Requests``.

    Attributes:
        name: registry name.
        description: one line for listings.
        source: where the numbers come from (data file and licence, or publication).
        arrivals: ``"static"``, ``"poisson"`` or ``"gamma"`` when ``rate_per_s`` is None.
        default_rate_per_s: the default rate (requests/s) for poisson/gamma, else None.
        cv: inter-arrival coefficient of variation for ``"gamma"``.
        data_key: the stored data set the lengths come from (see :func:`stored_lengths`).
        expected_means: (prompt, output) mean tokens of a synthetic preset's distributions,
            for listings (None: from ``data_key``'s statistics).
        lengths: ``(n, rng) -> (prompt int64[n], output int64[n])`` in tokens.
    """

    name: str
    description: str
    source: str
    arrivals: str
    lengths: Builder
    default_rate_per_s: float | None = None
    cv: float | None = None
    data_key: str | None = None
    expected_means: tuple[float, float] | None = None

    def arrival_description(self, rate_per_s: float | None = None) -> str:
        """How requests arrive, in words (for sources and listings)."""
        rate = self.default_rate_per_s if rate_per_s is None else rate_per_s
        if rate is None or math.isinf(rate):
            return "static batch at t=0"
        if self.arrivals == "gamma":
            return f"gamma, {rate:.4g} req/s, CV {self.cv:.3g}"
        return f"Poisson, {rate:.4g} req/s"

    def __call__(self, n: int, seed: int, rate_per_s: float | None = None) -> Requests:
        """``n`` requests drawn with ``seed``; ``rate_per_s`` overrides the arrival rate."""
        where = f"workload {self.name}"
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ConfigurationError(f"{where}: n must be an integer >= 1 (got {n!r})")
        if n > MAX_REQUESTS:
            raise ConfigurationError(
                f"{where}: n = {n:,} requests is over the bound of {MAX_REQUESTS:,} (about "
                f"{MAX_REQUESTS * 100 / 2**30:.0f} GiB of request state); simulate a sample"
            )
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ConfigurationError(f"{where}: seed must be an integer >= 0 (got {seed!r})")
        if rate_per_s is not None:
            bad = isinstance(rate_per_s, bool)
            try:
                r = float(rate_per_s)
            except (TypeError, ValueError):
                bad = True
            if bad or not r > 0:  # NaN fails too
                raise ConfigurationError(
                    f"{where}: rate_per_s must be > 0 requests/s, or inf for a static batch "
                    f"(got {rate_per_s!r})"
                )
        n, seed = int(n), int(seed)
        g = np.random.default_rng(seed)
        prompt, output = self.lengths(n, g)
        rate = self.default_rate_per_s if rate_per_s is None else float(rate_per_s)
        if rate is None or math.isinf(rate):
            arrival = synthetic.fixed_batch(n)
        elif self.arrivals == "gamma":
            assert self.cv is not None
            arrival = synthetic.gamma(rate, self.cv, n, g)
        else:
            arrival = synthetic.poisson(rate, n, g)
        src = (
            f"workload {self.name} (n={n}, seed={seed}, "
            f"arrivals: {self.arrival_description(rate_per_s)})"
        )
        return Requests.from_arrays(arrival, prompt, output, source=src)


#: most requests one workload draws (about 100 bytes of engine state each)
MAX_REQUESTS = 20_000_000

#: Named synthetic workloads.
WORKLOADS: Registry[WorkloadPreset] = Registry("workload")


def _register(preset: WorkloadPreset) -> WorkloadPreset:
    return WORKLOADS.register(preset.name, help=preset.description)(preset)


def _empirical(key: str) -> Builder:
    """Independent prompt/output sampling from the stored quantiles of ``key``."""

    def build(n: int, g: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        prompt, output, _ = stored_lengths(key)
        return prompt.sample(n, g), output.sample(n, g)

    return build


def _source(key: str) -> str:
    e = _quantile_data()["datasets"][key]
    return (
        f"{e['source']}; file {e['file']} ({e['n']} rows); quantiles in "
        f"pimserve/workload/{QUANTILES_FILE} written by scripts/fit_workloads.py"
    )


def _rate(key: str, field: str) -> float:
    return float(_quantile_data()["datasets"][key][field])


_register(WorkloadPreset(
    name="dolly-creative",
    description="Dolly creative_writing lengths (GPT-2 tokens), PAPI's creative-writing "
    "workload; static batch",
    source=_source("dolly-creative"),
    arrivals="static",
    lengths=_empirical("dolly-creative"),
    data_key="dolly-creative",
))  # fmt: skip

_register(WorkloadPreset(
    name="dolly-qa",
    description="Dolly open_qa lengths (GPT-2 tokens); PAPI's general-qa is approximated by "
    "open_qa because general-qa is not in the length file; static batch",
    source=_source("dolly-open-qa"),
    arrivals="static",
    lengths=_empirical("dolly-open-qa"),
    data_key="dolly-open-qa",
))  # fmt: skip

_register(WorkloadPreset(
    name="azure-conv",
    description="Azure LLM 2023 conversation lengths; Poisson arrivals at the trace's mean "
    f"rate {_rate('azure-conv', 'rate_per_s'):.2f} req/s",
    source=_source("azure-conv"),
    arrivals="poisson",
    lengths=_empirical("azure-conv"),
    data_key="azure-conv",
    default_rate_per_s=_rate("azure-conv", "rate_per_s"),
))  # fmt: skip

_register(WorkloadPreset(
    name="azure-code",
    description="Azure LLM 2023 code lengths; gamma arrivals at the trace's mean rate "
    f"{_rate('azure-code', 'rate_per_s'):.2f} req/s with its inter-arrival CV "
    f"{_rate('azure-code', 'interarrival_cv'):.1f} (bursty)",
    source=_source("azure-code"),
    arrivals="gamma",
    lengths=_empirical("azure-code"),
    data_key="azure-code",
    default_rate_per_s=_rate("azure-code", "rate_per_s"),
    cv=_rate("azure-code", "interarrival_cv"),
))  # fmt: skip

_register(WorkloadPreset(
    name="arxiv-sum",
    description="arXiv summarization lengths (LLaMA-2 tokens, long prompts); static batch",
    source=_source("arxiv-sum"),
    arrivals="static",
    lengths=_empirical("arxiv-sum"),
    data_key="arxiv-sum",
))  # fmt: skip

#: ShareGPT first turns, vLLM benchmark filter (shared/traces/README.md "Other published
#: length statistics"): input mean 111 / median 31, in [4, 1024]; output mean 320 / median 282,
#: input + output <= 2048. Lognormals fitted so that the *clipped* mean and median match;
#: a lognormal cannot also match the published p99s (input 904, output 986): it gives about
#: 1024 (2.4 % of inputs sit at the clip) and 905.
SHAREGPT_PROMPT = LognormalLengths.fit(mean=111, median=31, lo=4, hi=1024)
SHAREGPT_OUTPUT = LognormalLengths.fit(mean=320, median=282, lo=4)
SHAREGPT_MAX_TOTAL = 2048


def _sharegpt(n: int, g: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    prompt = SHAREGPT_PROMPT.sample(n, g)
    output = SHAREGPT_OUTPUT.sample(n, g, hi=SHAREGPT_MAX_TOTAL - prompt)
    return prompt, output


_register(WorkloadPreset(
    name="sharegpt",
    description="ShareGPT-like lengths: lognormals fitted to published statistics, not data "
    "(input mean 111/median 31 in [4, 1024], output mean 320/median 282 in [4, 2048-input]); "
    "static batch",
    source="published ShareGPT first-turn statistics (the vLLM serving benchmark's filter: "
    "input <= 1024, input + output <= 2048 tokens); lognormal fit, no data file",
    arrivals="static",
    lengths=_sharegpt,
))  # fmt: skip


# -- PAM's data sets (arXiv 2602.11521 section 7.1), synthetic ----------------------------------
# PAM names its data sets but the repo ships none of them; these presets draw lengths with the
# paper's stated means. What the paper states [R] (facts/pam.md section 5):
#   online (ShareGPT, WildChat, HumanEval): mean input/output 183/299 tokens; mean context
#   (input + output) 738 for WildChat and 534 for ShareGPT;
#   offline (Arxiv_sum, Write_doc = HF lancexiao/write_doc_sft_v1): sequences of 1,500-8,000.
# Everything else is inferred [INF]:
#   - 183/299 is taken as the unweighted mean of the three data sets' means, so HumanEval's
#     mean context is 3 x (183 + 299) - 738 - 534 = 174 tokens;
#   - a HumanEval prompt is a Python signature plus docstring (~130 tokens), so its output,
#     a short function body, is 174 - 130 = 44 tokens;
#   - the rest, input 3 x 183 - 130 = 419 and output 3 x 299 - 44 = 853, is shared by ShareGPT
#     (534) and WildChat (738) with the same output share 853 / 1272 = 0.671: WildChat input
#     243, output 495 (ShareGPT would be 176 / 358; the `sharegpt` preset keeps its own
#     published vLLM-filter statistics, 111 / 320, context 431);
#   - shapes: lognormals with the `sharegpt` preset's mean/median ratios (input 111/31, output
#     320/282) for the chat sets, milder skew for code prompts; WildChat is filtered like
#     ShareGPT (input <= 1024, input + output <= 2048) so that OPT-175B (2048 positions) can
#     serve every request.
PAM_ONLINE_INPUT_MEAN = 183       # PAM 7.1 [R]: mean input tokens over the online data sets
PAM_ONLINE_OUTPUT_MEAN = 299      # PAM 7.1 [R]: mean output tokens over the online data sets
WILDCHAT_CONTEXT_MEAN = 738       # PAM 7.1 [R]: mean context of WildChat
PAM_SHAREGPT_CONTEXT_MEAN = 534   # PAM 7.1 [R]: mean context of ShareGPT
HUMANEVAL_CONTEXT_MEAN = (3 * (PAM_ONLINE_INPUT_MEAN + PAM_ONLINE_OUTPUT_MEAN)
                          - WILDCHAT_CONTEXT_MEAN - PAM_SHAREGPT_CONTEXT_MEAN)  # [INF] = 174
HUMANEVAL_INPUT_MEAN = 130        # [INF] signature + docstring of a HumanEval task, ~130 tokens
HUMANEVAL_INPUT_MEDIAN = 115      # [INF] mildly right-skewed (a few long docstrings)
HUMANEVAL_OUTPUT_MEAN = HUMANEVAL_CONTEXT_MEAN - HUMANEVAL_INPUT_MEAN  # [INF] = 44 tokens
HUMANEVAL_OUTPUT_MEDIAN = 35      # [INF] short function bodies, right-skewed
_CHAT_INPUT = 3 * PAM_ONLINE_INPUT_MEAN - HUMANEVAL_INPUT_MEAN     # [INF] 419: ShareGPT + WildChat
_CHAT_OUTPUT = 3 * PAM_ONLINE_OUTPUT_MEAN - HUMANEVAL_OUTPUT_MEAN  # [INF] 853: ShareGPT + WildChat
_CHAT_OUTPUT_SHARE = _CHAT_OUTPUT / (_CHAT_INPUT + _CHAT_OUTPUT)   # [INF] 0.671, both chat sets
WILDCHAT_OUTPUT_MEAN = round(WILDCHAT_CONTEXT_MEAN * _CHAT_OUTPUT_SHARE)    # [INF] 495 tokens
WILDCHAT_INPUT_MEAN = WILDCHAT_CONTEXT_MEAN - WILDCHAT_OUTPUT_MEAN          # [INF] 243 tokens
WILDCHAT_INPUT_MEDIAN = round(WILDCHAT_INPUT_MEAN * 31 / 111)   # [INF] sharegpt's skew: 68
WILDCHAT_OUTPUT_MEDIAN = round(WILDCHAT_OUTPUT_MEAN * 282 / 320)  # [INF] sharegpt's skew: 436
WILDCHAT_PROMPT = LognormalLengths.fit(mean=WILDCHAT_INPUT_MEAN, median=WILDCHAT_INPUT_MEDIAN,
                                       lo=4, hi=1024)  # [INF] ShareGPT's vLLM filter
WILDCHAT_OUTPUT = LognormalLengths.fit(mean=WILDCHAT_OUTPUT_MEAN, median=WILDCHAT_OUTPUT_MEDIAN,
                                       lo=4)
WILDCHAT_MAX_TOTAL = 2048         # [INF] as SHAREGPT_MAX_TOTAL (OPT-175B's 2048 positions)
HUMANEVAL_PROMPT = LognormalLengths.fit(mean=HUMANEVAL_INPUT_MEAN, median=HUMANEVAL_INPUT_MEDIAN,
                                        lo=16, hi=1024)  # [INF] no prompt under 16 tokens
HUMANEVAL_OUTPUT = LognormalLengths.fit(mean=HUMANEVAL_OUTPUT_MEAN,
                                        median=HUMANEVAL_OUTPUT_MEDIAN, lo=4, hi=1024)
WRITE_DOC_MIN_TOTAL = 1500        # PAM 7.1 [R]: offline sequences of 1,500 to 8,000 tokens
WRITE_DOC_MAX_TOTAL = 8000        # PAM 7.1 [R]
WRITE_DOC_PROMPT = LognormalLengths.fit(mean=300, median=200, lo=16, hi=1024)
"""[INF] a document-writing instruction (topic, requirements, maybe an outline): mean 300,
median 200 tokens. The data set's own statistics are not in the paper."""


def _wildchat(n: int, g: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    prompt = WILDCHAT_PROMPT.sample(n, g)
    output = WILDCHAT_OUTPUT.sample(n, g, hi=WILDCHAT_MAX_TOTAL - prompt)
    return prompt, output


def _humaneval(n: int, g: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return HUMANEVAL_PROMPT.sample(n, g), HUMANEVAL_OUTPUT.sample(n, g)


def _write_doc(n: int, g: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Prompt from :data:`WRITE_DOC_PROMPT`; the whole sequence uniform in [1500, 8000]
    tokens [INF: PAM gives only the range; uniform is the least-informed choice over it];
    the output is the rest (short prompt, long output)."""
    prompt = WRITE_DOC_PROMPT.sample(n, g)
    total = g.integers(WRITE_DOC_MIN_TOTAL, WRITE_DOC_MAX_TOTAL + 1, size=n)
    return prompt, (total - prompt).astype(np.int64)


def _write_doc_means() -> tuple[float, float]:
    total = (WRITE_DOC_MIN_TOTAL + WRITE_DOC_MAX_TOTAL) / 2
    return WRITE_DOC_PROMPT.mean(), total - WRITE_DOC_PROMPT.mean()


_register(WorkloadPreset(
    name="wildchat",
    description=f"SYNTHETIC WildChat-like lengths, not data: lognormals with PAM's mean context "
    f"{WILDCHAT_CONTEXT_MEAN} split [INF] into input {WILDCHAT_INPUT_MEAN}/output "
    f"{WILDCHAT_OUTPUT_MEAN} (input <= 1024, total <= 2048); static batch",
    source="PAM (arXiv 2602.11521) 7.1: online mean input/output 183/299, WildChat mean context "
    "738; the input/output split and the shapes are inferred (see pimserve/workload/presets.py); "
    "no data file",
    arrivals="static",
    lengths=_wildchat,
    expected_means=(WILDCHAT_PROMPT.mean(), WILDCHAT_OUTPUT.mean()),
))  # fmt: skip

_register(WorkloadPreset(
    name="humaneval",
    description=f"SYNTHETIC HumanEval-like lengths, not data: short code prompts, input "
    f"{HUMANEVAL_INPUT_MEAN}/output {HUMANEVAL_OUTPUT_MEAN} tokens [INF from PAM's online "
    "means]; static batch",
    source="PAM (arXiv 2602.11521) 7.1 online means (183/299 over ShareGPT, WildChat, HumanEval; "
    "contexts 738 and 534), HumanEval's share inferred (see pimserve/workload/presets.py); "
    "no data file",
    arrivals="static",
    lengths=_humaneval,
    expected_means=(HUMANEVAL_PROMPT.mean(), HUMANEVAL_OUTPUT.mean()),
))  # fmt: skip

_register(WorkloadPreset(
    name="write-doc",
    description="SYNTHETIC Write_doc-like lengths (PAM's long-form writing set, HF "
    "lancexiao/write_doc_sft_v1), not data: whole sequence uniform in [1500, 8000] (PAM), "
    "short prompt (mean 300 [INF]), the rest output; static batch",
    source="PAM (arXiv 2602.11521) 7.1: offline sequences of 1,500-8,000 tokens; the uniform "
    "shape and the prompt/output split are inferred (see pimserve/workload/presets.py); "
    "no data file",
    arrivals="static",
    lengths=_write_doc,
    expected_means=_write_doc_means(),
))  # fmt: skip


# Long-context conversations, Mooncake-style (Qin et al., "Mooncake: A KVCache-centric
# Architecture for Serving LLM Chatbot", FAST'25, Table 2: conversation trace, mean input
# 12,035 and mean output 343 tokens). Shapes are inferred: lognormal, median about half the
# mean (a long right tail of pasted documents), cut at a 128k-token context (Llama-3.1).
LONG_CONTEXT_INPUT_MEAN = 12035   # Mooncake FAST'25 Table 2 [R]: conversation, mean input tokens
LONG_CONTEXT_OUTPUT_MEAN = 343    # Mooncake FAST'25 Table 2 [R]: conversation, mean output tokens
LONG_CONTEXT_INPUT_MEDIAN = 6000  # [INF] heavy right tail: median about half the mean
LONG_CONTEXT_OUTPUT_MEDIAN = 250  # [INF] mildly right-skewed answers
LONG_CONTEXT_MAX_TOTAL = 131072   # Llama-3.1's context (HF max_position_embeddings)
LONG_CONTEXT_RATE_PER_S = 1.0     # [INF] default Poisson rate, requests/s (override: rate_per_s)
LONG_CONTEXT_PROMPT = LognormalLengths.fit(mean=LONG_CONTEXT_INPUT_MEAN,
                                           median=LONG_CONTEXT_INPUT_MEDIAN, lo=16,
                                           hi=LONG_CONTEXT_MAX_TOTAL - 1024)
LONG_CONTEXT_OUTPUT = LognormalLengths.fit(mean=LONG_CONTEXT_OUTPUT_MEAN,
                                           median=LONG_CONTEXT_OUTPUT_MEDIAN, lo=4, hi=1024)


def _long_context(n: int, g: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    prompt = LONG_CONTEXT_PROMPT.sample(n, g)
    return prompt, LONG_CONTEXT_OUTPUT.sample(n, g, hi=LONG_CONTEXT_MAX_TOTAL - prompt)


_register(WorkloadPreset(
    name="long-context",
    description="SYNTHETIC long-context conversations (Mooncake-style), not data: lognormal "
    f"input mean {LONG_CONTEXT_INPUT_MEAN} (median {LONG_CONTEXT_INPUT_MEDIAN} [INF], up to "
    f"~128k), output mean {LONG_CONTEXT_OUTPUT_MEAN}; Poisson arrivals",
    source="Mooncake (Qin et al., FAST'25) Table 2, conversation trace: mean input 12,035 and "
    "output 343 tokens; lognormal shapes, medians, the 128k cap (Llama-3.1) and the default "
    "rate are inferred (see pimserve/workload/presets.py); no data file",
    arrivals="poisson",
    default_rate_per_s=LONG_CONTEXT_RATE_PER_S,
    lengths=_long_context,
    expected_means=(LONG_CONTEXT_PROMPT.mean(), LONG_CONTEXT_OUTPUT.mean()),
))  # fmt: skip


def make_workload(name: str, n: int, seed: int, rate_per_s: float | None = None) -> Requests:
    """``WORKLOADS.get(name)(n, seed, rate_per_s)``: ``n`` requests of preset ``name``."""
    return WORKLOADS.get(name)(n, seed, rate_per_s)


def describe_workloads() -> list[dict[str, Any]]:
    """One dict per preset for the CLI: name, description, arrivals, source, expected means.

    ``prompt_mean``/``output_mean`` (tokens) are the stored data means, or the fitted
    distributions' means for the synthetic presets (``sharegpt``, ``wildchat``, ``humaneval``,
    ``write-doc``; before the per-request total clip).
    """
    out: list[dict[str, Any]] = []
    for name in WORKLOADS.names():
        p = WORKLOADS.get(name)
        row: dict[str, Any] = {
            "name": name,
            "description": p.description,
            "arrivals": p.arrival_description(),
            "source": p.source,
        }
        if p.data_key is not None:
            st = stored_stats(p.data_key)
            row["prompt_mean"], row["output_mean"] = st["prompt_mean"], st["output_mean"]
        elif name == "sharegpt":
            row["prompt_mean"] = SHAREGPT_PROMPT.mean()
            row["output_mean"] = SHAREGPT_OUTPUT.mean()
        elif p.expected_means is not None:
            row["prompt_mean"], row["output_mean"] = p.expected_means
        out.append(row)
    return out
