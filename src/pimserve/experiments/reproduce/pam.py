"""PAM's evaluation (arXiv 2602.11521 section 7; facts/pam.md section 5).

- **Online** (PAM 7, "peak throughput under SLO"): the highest Poisson arrival rate whose p99
  time per output token meets 100, 150 and 200 ms (:func:`~pimserve.experiments.slo.slo_search`)
  for Qwen2.5-32B, LLaMA3-70B and OPT-175B on ShareGPT-, WildChat- and HumanEval-like requests,
  on ``pam``, ``vllm-offload``, ``ls-pim``, ``l-pim`` and ``attacc-h100``. The throughput
  compared is the steady-state one at that rate (rate x mean output length, ``offered_tok_s``).
- **Offline** (PAM 7, "max throughput at fixed batch"): LLaMA3-70B at batch 256/512/1024 and
  OPT-175B at 16/32/64 on arXiv summarization and Write_doc-like requests, continuous batching
  with the batch kept full and the run bounded to about one mean output length of iterations.
- **Energy** per output token of PAM against vLLM-offloading, L-PIM and LS-PIM at the largest
  offline batch of each model (PAM's energy configuration).
- **Ablation** (PAM 7.4): PAM without PAMattention, without KV mapping, without KV scheduling,
  and LS-PIM, at a small and a large LLaMA3-70B arXiv batch; compared by attention time per
  output token.
- **Tiers**: the share of KV bytes and of local attention time on each tier (L-PIM's SSD share).

``--quick`` keeps every experiment on a reduced grid (OPT-175B only online, two data sets,
100 and 200 ms, short probes; two batches per model offline, a few dozen iterations) and the
sensitivity table on the offline LLaMA3-70B arXiv points and the ablation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from pimserve.experiments.reproduce.common import (
    Headline,
    Parameter,
    Point,
    Reproduction,
    Variant,
    mean,
    ratios,
    scaled_system,
    select,
    with_device,
)
from pimserve.report import figures as fig
from pimserve.specs.catalog import load_model, load_system
from pimserve.specs.model import ModelSpec

MODELS = ("qwen2.5-32b", "llama3-70b", "opt-175b")
ONLINE_WORKLOADS = ("sharegpt", "wildchat", "humaneval")
SLOS_MS = (100, 150, 200)
SYSTEMS = ("pam", "vllm-offload", "ls-pim", "l-pim", "attacc-h100")
BASE = "vllm-offload"
OFFLINE_WORKLOADS = ("arxiv-sum", "write-doc")
#: What offline headlines compare: generation throughput at the running batch (iterations
#: without prefill), since PAM's offline results are throughput at a fixed batch and the
#: prompts' prefill runs on the GPUs alike in every system; the end-to-end throughput, prefill
#: included, stays in results.csv (``throughput_tok_s``).
OFFLINE_METRIC = "decode_throughput_tok_s"
#: PAM 7 offline batch sizes.
OFFLINE_BATCHES = {"llama3-70b": (256, 512, 1024), "opt-175b": (16, 32, 64)}
#: Iterations of an offline run: about one mean output length of the data set (arxiv-sum 291,
#: write-doc 4450 tokens), so that the KV reaches the data set's typical context [INF].
OFFLINE_ITERATIONS = {"arxiv-sum": 300, "write-doc": 4500}
#: Max running requests online: PAM 7's energy runs use online batch 8192 (LLaMA3) and 512
#: (OPT); Qwen2.5-32B is not stated and takes LLaMA3's [INF].
ONLINE_CAP = {"qwen2.5-32b": 8192, "llama3-70b": 8192, "opt-175b": 512}
#: Requests per SLO probe: enough for the running set to reach its steady state at the
#: rates found (see the report notes) [INF].
ONLINE_REQUESTS = {"qwen2.5-32b": 2048, "llama3-70b": 2048, "opt-175b": 2048}
ONLINE_PROBES, ONLINE_TOL = 7, 0.1
ABLATION_MODEL, ABLATION_WORKLOAD, ABLATION_BATCHES = "llama3-70b", "arxiv-sum", (256, 1024)
#: Ablation variants: label -> (system, run options).
ABLATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "PAM": ("pam", {}),
    "w/o PAMattention": ("pam", {"pamattention": False}),
    "w/o KV mapping": ("pam", {"kv_mapping": "round-robin"}),
    "w/o KV scheduling": ("pam", {"kv_scheduling": False}),
    "LS-PIM": ("ls-pim", {}),
}
LABEL = {"pam": "PAM", "vllm-offload": "vLLM-offloading", "ls-pim": "LS-PIM", "l-pim": "L-PIM",
         "attacc-h100": "AttAcc"}
SHORT = {"qwen2.5-32b": "Qwen2.5-32B", "llama3-70b": "LLaMA3-70B", "opt-175b": "OPT-175B",
         "sharegpt": "ShareGPT", "wildchat": "WildChat", "humaneval": "HumanEval",
         "arxiv-sum": "Arxiv_sum", "write-doc": "Write_doc"}
TIERS = ("hbm", "ddr", "ssd")
#: The issue's tolerance for PAM's headlines.
TOL = 0.25

# Quick grid.
QUICK_MODELS_ONLINE = ("opt-175b",)
QUICK_ONLINE_WORKLOADS = ("sharegpt", "wildchat")
QUICK_SLOS_MS = (100, 200)
QUICK_OFFLINE_BATCHES = {"llama3-70b": (256, 1024), "opt-175b": (64,)}
QUICK_ITERATIONS = 40
QUICK_REQUESTS, QUICK_PROBES, QUICK_TOL = 384, 4, 0.25

# ------------------------------------------------------------------------------------------
# causes of the known gaps (shown only for headlines outside their tolerance)

_GQA = (
    "PAM's Table 1 caps an HBM3-PIM stack at 1.6 TFLOPS, which is ~1 FLOP per byte of its "
    "internal bandwidth only for multi-head attention; with grouped-query attention every KV "
    "byte meets 8 query heads (LLaMA3-70B; 5 for Qwen2.5-32B), so pimserve's bank-level model "
    "is compute-bound at ~200 GB/s of KV per stack (~315 for Qwen2.5-32B; OPT-175B, no GQA, "
    "~1.6 TB/s): 40 stacks read LLaMA3-70B KV at ~7.9 TB/s, a third of the 8 H100s' ~23 TB/s "
    "(DDR-PIM ~23 GB/s per DIMM, SSD-PIM ~2.2 GB/s per SSD likewise)."
)
_CAUSE_ONLINE = (
    "Conversation contexts are short (ShareGPT 431, WildChat 738, HumanEval 174 tokens), so "
    "under the SLOs the KV of Qwen2.5-32B and LLaMA3-70B stays in the GPUs' HBM and "
    "vLLM-offloading fetches nothing over PCIe: both systems run into the same FC ceiling of "
    "the 8 H100s (the same rate at 100, 150 and 200 ms), and PAM only moves attention from "
    "the GPUs to HBM-PIM, which is no faster: " + _GQA + " PAM's 8x sparse reads plus Double "
    "Sparsity's label-cache pass make its attention about as fast as the GPUs' (PAM 0.87-0.89x "
    "on these models); the speed-up comes from OPT-175B alone. The paper's ~7x on Qwen2.5-32B "
    "and LLaMA3-70B needs GQA attention at the stacks' full bandwidth, which its own compute "
    "figure does not give, or a much weaker GPU baseline."
)
_CAUSE_OPT_ONLINE = (
    "pimserve's vLLM-offloading keeps as much KV in the GPUs' HBM as fits (~290 GB next to "
    "OPT-175B's 350 GB of weights) and prefetches only the rest over 8 PCIe 5.0 x16 links, "
    "overlapped with compute; at the ~45-95 requests it holds under the SLOs the fetch is "
    "modest, so PAM leads by 3-5x on ShareGPT/WildChat and ~1x on HumanEval (174-token "
    "contexts fit in HBM). The paper's 24.5x implies an offloading baseline that moves far "
    "more KV per step (e.g. all of it, DeepSpeed-style) or over fewer host links."
)
_CAUSE_LS_ONLINE = (
    "LS-PIM has PAM's devices and 8x sparsity but maps blocks round-robin and sends every "
    "block's partial result to the GPUs (no PAMattention). In pimserve its sparse reads make "
    "it faster than dense L-PIM at conversation contexts, as in the paper, and PAM's greedy "
    "bank-group mapping and on-PIM reduction gain less over it than the paper reports: a "
    "device waits on its busiest bank group, and at these contexts a request reads 1-2 "
    "blocks while its selection pass scans all of them, so the scan (whose bank groups both "
    "mappings spread evenly) weighs on both systems alike. The paper's larger factor implies "
    "a costlier LS-PIM than these device models give (the paper does not break it down)."
)
_CAUSE_DATASET = (
    "The order matches the paper (WildChat > ShareGPT), but only OPT-175B's WildChat KV "
    "(738-token contexts at 4.7 MB per token) spills beyond HBM; the Qwen2.5-32B and "
    "LLaMA3-70B terms of the mean are ~0.9x (see the per-model headlines)."
)
_CAUSE_OFFLINE = (
    "Offline throughput here is the generation (decode) throughput at the running batch "
    "(`decode_throughput_tok_s`; the prompts' prefill runs on the GPUs identically in every "
    "system and is excluded, as a throughput 'at fixed batch' is). In pimserve only the KV "
    "beyond the 8 GPUs' HBM is slow for vLLM-offloading (fetched over 8 x PCIe 5.0 x16, "
    "overlapped with compute), so batches whose KV fits in HBM (LLaMA3-70B at 256/512, "
    "OPT-175B at 16) gain little and the largest batches gain most; the paper's gains at every "
    "batch imply an offloading baseline that moves more KV per step. The KV never reaches SSD "
    "(at most ~1.6 TB). " + _GQA
)
_CAUSE_OFFLINE_OPT_WD = (
    "pimserve is above the paper here because OPT-175B (no GQA, 4.7 MB of KV per token) on "
    "the synthetic Write_doc "
    "(uniform 1,500-8,000-token sequences [INF]) puts ~380 GB in host DRAM at batch 64, which "
    "vLLM-offloading fetches every step (~0.7 s) while PAM's DDR-PIM reads it in place; a "
    "real Write_doc with shorter sequences would spill less."
)
_CAUSE_ENERGY = (
    "pimserve charges dynamic energy only (no static power, as in the PIM simulators PAM "
    "builds on); the GPUs' FC energy is the same in every system and dominates, and "
    "vLLM-offloading's fetched KV is charged its PCIe transfer (5 pJ/bit) and the GPUs' "
    "attention over it, not the host-DRAM reads, so the reduction is bounded by the attention "
    "share of the energy, which is small where the KV stays in HBM."
)
_CAUSE_ABLATION = (
    "In pimserve each ablation changes one mechanism of the cost model: PAMattention the "
    "partial results leaving each tier (without it every block read sends its (O, m, l) of "
    "all query heads to the GPUs, over the HBM stacks' I/O at 670 GB/s each: for LLaMA3-70B "
    "16.6 KB per block and layer, a quarter of the block's KV, but moved ~3x faster than "
    "compute-bound GQA local attention reads it, and next to Double Sparsity's selection pass "
    "over every token: factor ~1.01), KV mapping the bank-group "
    "imbalance of the sparse reads (and of the resident blocks the selection pass scans), KV "
    "scheduling which blocks sit on the slower tiers (nothing "
    "to move while the batch's KV fits in HBM, as at batch 256). LS-PIM differs from PAM by "
    "the mapping and the scheduling together. The paper's factors imply that the DDR and SSD "
    "tiers dominate LS-PIM's attention far more than in pimserve, where the KV never reaches "
    "SSD. " + _GQA
)
_CAUSE_LPIM = (
    "With PAM's Table 1 capacities (640 GB of HBM-PIM less 140-350 GB of weights, 1280 GB of "
    "DDR-PIM) the offline batches' KV (at most ~1.6 TB, LLaMA3-70B Write_doc at batch 1024) "
    "fits above the SSD, so L-PIM, which fills the fastest tier first, puts nothing on "
    "SSD-PIM. The paper's >65% needs several TB of KV, more than its stated batches and "
    "sequence lengths give (or far less DDR capacity than Table 1 lists)."
)


# ------------------------------------------------------------------------------------------
# helpers


def _model(name: str) -> str | ModelSpec:
    """The model to simulate: OPT-175B with its context limit raised to 8192 tokens.

    OPT has 2048 learned positions, but PAM runs it on Arxiv_sum and Write_doc sequences of
    1,500-8,000 tokens (and reports 2,304 GB of KV for its Arxiv_sum batch), so its simulator
    does not enforce the limit [INF]; neither does this reproduction, to keep PAM's KV sizes.
    """
    if name != "opt-175b":
        return name
    spec = load_model(name)
    return spec.model_copy(update={"max_context": 8192})


def _online_metric(row: dict[str, Any]) -> float:
    """Peak throughput under the SLO (output tokens/s): the steady-state rate x mean output
    (``offered_tok_s``), or the run's own throughput for rows that lack it (0 = no rate met)."""
    v = row.get("offered_tok_s", row.get("throughput_tok_s"))
    return float(v) if v is not None else math.nan


def online_pairs(rows: Sequence[dict[str, Any]], num: str, den: str
                 ) -> tuple[list[tuple[dict[str, Any], float]], int, int]:
    """Per online configuration (model, workload, SLO): ``num``'s peak throughput under the SLO
    over ``den``'s.

    Returns ``(pairs, skipped, zeros)``: ``pairs`` holds ``(num's row, ratio)``; a
    configuration where ``den`` met no rate (throughput 0) is skipped (the ratio is unbounded)
    and counted in ``skipped``; one where only ``num`` met none enters as 0 and is counted in
    ``zeros``; failed rows (``error``) and missing partners are left out.
    """
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r.get("model"), r.get("workload"), r.get("slo_ms"))

    dens = {key(r): r for r in rows if r.get("system") == den and "error" not in r}
    pairs: list[tuple[dict[str, Any], float]] = []
    skipped = zeros = 0
    for r in rows:
        if r.get("system") != num or "error" in r or key(r) not in dens:
            continue
        a, b = _online_metric(r), _online_metric(dens[key(r)])
        if not (math.isfinite(a) and math.isfinite(b)):
            continue
        if b <= 0:
            skipped += 1
            continue
        if a <= 0:
            zeros += 1
        pairs.append((r, a / b))
    return pairs, skipped, zeros


def _pair_note(skipped: int, zeros: int, den: str, paired: int | None = None) -> str:
    parts = [] if paired is None else [f"{paired} (model, data set, SLO) configurations paired"]
    if skipped:
        parts.append(f"{skipped} configuration(s) left out because {LABEL.get(den, den)} met "
                     "no rate (unbounded ratio)")
    if zeros:
        parts.append(f"{zeros} configuration(s) where PAM met no rate count as 0")
    return "; ".join(parts)


def offline_ratios(rows: Sequence[dict[str, Any]], num: str, den: str,
                   metric: str = "throughput_tok_s", invert: bool = False) -> list[float]:
    """Per offline configuration (model, workload, batch): ``metric`` of ``num`` over ``den``
    (``invert``: den over num); pairs with a failed or zero side are left out."""
    return ratios(rows, num, den, metric, by=("model", "workload", "batch"), invert=invert)


def attention_per_token(row: dict[str, Any] | None) -> float:
    """Attention time per output token, s (NaN for a missing or failed row)."""
    if row is None or "error" in row or not row.get("output_tokens"):
        return math.nan
    return float(row.get("time_attention_s", math.nan)) / float(row["output_tokens"])


def tier_shares(rows: Sequence[dict[str, Any]], prefix: str, suffix: str = ""
                ) -> dict[str, float]:
    """Each tier's share (%) of ``prefix<tier><suffix>`` summed over ``rows``."""
    tot = {t: sum(float(r.get(f"{prefix}{t}{suffix}", 0.0) or 0.0) for r in rows
                  if "error" not in r) for t in TIERS}
    s = sum(tot.values())
    return {t: (100 * v / s if s > 0 else math.nan) for t, v in tot.items()}


def _covered(rows: Sequence[dict[str, Any]], *keys: str) -> str:
    parts = []
    for k in keys:
        raw = sorted({r.get(k) for r in rows if r.get(k) is not None},
                     key=lambda x: (isinstance(x, str), x))
        if raw:
            parts.append(f"{k} {', '.join(str(SHORT.get(x, x)) for x in raw)}")
    return "computed over " + "; ".join(parts) if parts else ""


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


# ------------------------------------------------------------------------------------------


class PAMReproduction(Reproduction):
    """PAM's evaluation; see the module docstring."""

    name = "pam"
    title = "PAM (arXiv 2602.11521): KV-centric serving across HBM-, DDR- and SSD-PIM"
    notes: ClassVar[list[str]] = [
        "Offline speed-ups compare generation throughput at the running batch "
        "(`decode_throughput_tok_s`: tokens of the iterations that ran no prefill over their "
        "time): the prompts' prefill runs on the GPUs alike in every system and PAM changes "
        "only the generation phase. The end-to-end throughput, prefill included, is "
        "`throughput_tok_s` in results.csv; where the KV spills out of the GPUs' HBM, PAM's "
        "gain in generation is several times its end-to-end gain, which the long prompts' "
        "prefill dilutes.",
        "Workloads are synthetic (the repo ships none of PAM's data sets): `sharegpt` "
        "(published ShareGPT statistics, context 431 tokens against PAM's 534), `wildchat` "
        "(PAM's context 738), `humaneval` (174, inferred from PAM's online means), "
        "`arxiv-sum` (the arXiv summarization length quantiles) and `write-doc` (uniform "
        "1,500-8,000-token sequences, short prompts); `pimserve workloads` lists their sources "
        "and every inferred number is marked [INF] in `pimserve/workload/presets.py`.",
        "Online: peak throughput under a p99 TPOT SLO of 100/150/200 ms is the highest Poisson "
        "rate found by `slo_search` (2,048 requests per probe, at most 7 probes, bracket "
        "within 10%; `--quick`: 384 requests, 4 probes, 25%), with continuous batching "
        "capped at 8,192 running requests (512 for OPT-175B: PAM's online energy batches; "
        "Qwen2.5-32B [INF] as LLaMA3-70B). The throughput compared is the steady-state one at "
        "that rate (rate x mean output tokens, `offered_tok_s`); the run's own, which includes "
        "ramp-up and drain, is `throughput_tok_s` in results.csv. 2,048-request probes do not "
        "reach the steady-state running set at LLaMA3-70B's rates, so absolute rates are "
        "optimistic: on LLaMA3-70B ShareGPT at 100 ms, 8,192-request probes find half the rate "
        "(PAM 62 vs 124 req/s, vLLM-offloading 73 vs 141) but the same ratio (0.85 vs 0.88).",
        "Online means: a configuration where vLLM-offloading (or LS-PIM) met no rate at all "
        "is left out of the mean of PAM's ratios (its ratio is unbounded) and counted in the "
        "headline's note; one where only PAM met none counts as 0. Per-model and overall "
        "means follow the paper's arithmetic: the conversation headline (12.88x) is the mean "
        "of the three per-model means, the long-context one (26.41x) the mean of the four "
        "per-(model, data set) offline means.",
        "Offline: continuous batching with `batch` running requests, 2 x batch requests at "
        "t = 0 (the batch stays full), and the run bounded to about one mean output length "
        "(300 iterations on Arxiv_sum, 4,500 on Write_doc) so that the KV reaches the data "
        "set's typical context; the paper's runs may be longer.",
        "OPT-175B is simulated with its 2,048-token context limit lifted to 8,192: PAM runs it "
        "on 1,500-8,000-token offline sequences (and quotes 2,304 GB of KV for its Arxiv_sum "
        "batch), so its simulator cannot enforce the limit [INF].",
        "Ablation: the paper does not name the model, data set or batches of its ablation; "
        "this uses LLaMA3-70B on Arxiv_sum at batch 256 (small) and 1,024 (large), 300 "
        "iterations, and compares attention time per output token (`time_attention_s` / "
        "output tokens, prefill attention included).",
        "Energy: dynamic energy per output token at the largest offline batch of each model "
        "(1,024 LLaMA3-70B, 64 OPT-175B), both offline data sets; the paper's online energy "
        "points (batch 8,192 / 512) are not run. The LS-PIM comparison uses attention energy "
        "only, as the paper does.",
        "L-PIM tier shares are summed over L-PIM's offline points (KV bytes averaged over "
        "iterations; local attention time of each tier, summed over iterations).",
        "PAM's x and y are the pam preset's (`pimserve calibrate --system pam`), not the "
        "paper's (it gives none); the locality model's parameters are the system spec's "
        "(docs/metrics.md).",
    ]

    # ---------------------------------------------------------------------------- grid
    def points(self, quick: bool) -> list[Point]:
        return [*self.online_points(quick), *self.offline_points(quick),
                *self.ablation_points(quick)]

    @staticmethod
    def online_points(quick: bool) -> list[Point]:
        """Every SLO search of the online experiment."""
        models = QUICK_MODELS_ONLINE if quick else MODELS
        workloads = QUICK_ONLINE_WORKLOADS if quick else ONLINE_WORKLOADS
        slos = QUICK_SLOS_MS if quick else SLOS_MS
        pts = []
        for m in models:
            n = QUICK_REQUESTS if quick else ONLINE_REQUESTS[m]
            for w in workloads:
                for slo in slos:
                    for s in SYSTEMS:
                        pts.append(Point(
                            {"experiment": "online", "system": s, "model": m, "workload": w,
                             "slo_ms": slo, "batch": ONLINE_CAP[m]},
                            s, _model(m), w, n,
                            {"batching": "continuous", "batch": ONLINE_CAP[m]},
                            slo={"tpot_slo_ms": float(slo), "percentile": "p99",
                                 "n_requests": n,
                                 "max_probes": QUICK_PROBES if quick else ONLINE_PROBES,
                                 "tol": QUICK_TOL if quick else ONLINE_TOL}))
        return pts

    @staticmethod
    def _offline(exp: str, system: str, model: str, workload: str, batch: int, quick: bool,
                 **options: Any) -> Point:
        iters = QUICK_ITERATIONS if quick else OFFLINE_ITERATIONS[workload]
        return Point({"experiment": exp, "system": system, "model": model,
                      "workload": workload, "batch": batch},
                     system, _model(model), workload, 2 * batch,
                     {"batching": "continuous", "batch": batch, "max_iterations": iters,
                      "seed": 0, **options})

    def offline_points(self, quick: bool) -> list[Point]:
        """Every offline point (also the energy and tier experiments' rows)."""
        batches = QUICK_OFFLINE_BATCHES if quick else OFFLINE_BATCHES
        return [self._offline("offline", s, m, w, b, quick)
                for m, bs in batches.items() for w in OFFLINE_WORKLOADS for b in bs
                for s in SYSTEMS]

    def ablation_points(self, quick: bool) -> list[Point]:
        """PAM's ablation variants and LS-PIM at the small and the large batch."""
        pts = []
        for b in ABLATION_BATCHES:
            for label, (system, opts) in ABLATIONS.items():
                p = self._offline("ablation", system, ABLATION_MODEL, ABLATION_WORKLOAD, b,
                                  quick, **opts)
                pts.append(p.with_labels(ablation=label))
        return pts

    def sensitivity_points(self, quick: bool) -> list[Point]:
        return [p for p in self.points(quick)
                if p.labels["experiment"] == "ablation"
                or (p.labels["experiment"] == "offline" and p.labels["model"] == "llama3-70b"
                    and p.labels["workload"] == "arxiv-sum")]

    def variants(self) -> list[Variant]:
        def per_die(p: Point) -> Point:
            sys_ = with_device(p.system, "pam-hbm3-pim", "pam-hbm3-pim-per-die")
            return p if sys_ is p.system else replace(p, system=sys_)

        return [Variant(
            "Table 1 compute per DRAM die", "1.6 TFLOPS per die: 12.8 TFLOPS per 8-die stack",
            "Table 1 gives 1.6 TFLOPS per HBM3-PIM 'device'; the default reads it per stack "
            "(as the DIMM's and SSD's figures read per DIMM and per SSD); per die is the other "
            "reading of the same words (device preset pam-hbm3-pim-per-die)", per_die)]

    # ---------------------------------------------------------------------- parameters
    def parameters(self) -> list[Parameter]:
        pam = load_system("pam")
        kv = pam.policies.kv
        loc = kv.locality
        sparse = kv.sparse_ratio or 8.0

        def option(key: str, base: float, systems: tuple[str, ...]) -> Callable[
                [Point, float], Point]:
            def apply(p: Point, f: float) -> Point:
                if p.labels.get("system") not in systems:
                    return p
                return replace(p, options={**p.options, key: base * f})
            return apply

        def locality(field: str) -> Callable[[Point, float], Point]:
            def apply(p: Point, f: float) -> Point:
                spec = load_system(p.system)
                if spec.policies.kv.placement not in ("pam", "layered-sparse"):
                    return p  # dense reads, nothing moves: the scores change nothing
                k = spec.policies.kv
                new_loc = k.locality.model_copy(
                    update={field: getattr(k.locality, field) * f})
                pol = spec.policies.model_copy(
                    update={"kv": k.model_copy(update={"locality": new_loc})})
                return replace(p, system=spec.model_copy(update={"policies": pol}))
            return apply

        def link(name: str) -> Callable[[Point, float], Point]:
            def apply(p: Point, f: float) -> Point:
                spec = load_system(p.system)
                if not any(g.link == name for g in spec.groups):
                    return p
                return replace(p, system=scaled_system(spec, links={name: {"bw_gbps": f}}))
            return apply

        def gpu(p: Point, f: float) -> Point:
            ch = {"h100": {"compute_efficiency": f, "memory_efficiency": f}}
            return replace(p, system=scaled_system(p.system, devices=ch))

        return [
            Parameter("PAM x (HBM:SSD importance)", f"{kv.x:g}",
                      "PAM fixes x:y:1 by offline profiling without giving the values; the "
                      "pam preset's are pimserve's documented grid search (`pimserve calibrate "
                      f"--system pam`): {kv.xy_source.strip()}",
                      option("kv_x", kv.x, ("pam",))),
            Parameter("PAM y (DDR:SSD importance)", f"{kv.y:g}",
                      "as x: the calibrated target of DDR-PIM's mean importance over "
                      "SSD-PIM's; y < x keeps the fastest tier the most important",
                      option("kv_y", kv.y, ("pam",))),
            Parameter("locality: salience sigma", f"{loc.salience_sigma:g}",
                      "log-normal spread of per-block importance: a few blocks hold most of "
                      "the attention mass, as in PAM 3.2 and Double Sparsity",
                      locality("salience_sigma")),
            Parameter("locality: recency boost", f"{loc.recency_boost:g}",
                      "critical tokens cluster near the current one (PAM 3.2); score x "
                      "(1 + boost) for the current block, decaying over 4 blocks",
                      locality("recency_boost")),
            Parameter("locality: sink boost", f"{loc.sink_boost:g}",
                      "the first block (attention sink) is always important (StreamingLLM)",
                      locality("sink_boost")),
            Parameter("locality: drift per step", f"{loc.drift_per_step:g}",
                      "importance persists but drifts (PAM 3.3, C2); 1% of blocks redraw "
                      "their salience per step, of the order of PAM's ~0.7% of tokens "
                      "rescheduled per step", locality("drift_per_step")),
            Parameter("sparse ratio (paper-stated)", f"{sparse:g}x",
                      "PAM 7.1: Double Sparsity at 8x compression; stated, shown for scale",
                      option("sparse_ratio", sparse, ("pam", "ls-pim"))),
            Parameter("DDR-tier link (PCIe 5.0 x16 per GPU)", "64 GB/s per direction, 8 links",
                      "PAM 4.1 routes DDR through the host to the GPUs without a bandwidth; "
                      "one PCIe 5.0 x16 per H100 is the DGX-H100 host link",
                      link("pcie5")),
            Parameter("SSD link (NVMe PCIe 4.0 x4)", "7 GB/s per SSD",
                      "PAM 1: SSD offload paths < 5 GB/s; a PCIe 4.0 x4 NVMe drive reads "
                      "~7 GB/s", link("nvme-pcie4x4")),
            Parameter("GPU efficiency (compute 0.8, memory 0.85)", "0.8 / 0.85 of peak",
                      "AttAcc's xPU model (PAM cross-verifies against AttAcc's simulator); "
                      "typical of cuBLAS GEMMs at large shapes (clamped at 1.0 at +25%)", gpu),
        ]

    # ----------------------------------------------------------------------- headlines
    def headlines(self, rows: Sequence[dict[str, Any]]) -> list[Headline]:
        h: list[Headline] = []
        h += self._online_headlines(select(rows, experiment="online"))
        off = select(rows, experiment="offline")
        h += self._offline_headlines(off)
        h += self._energy_headlines(off)
        h += self._ablation_headlines(select(rows, experiment="ablation"))
        h += self._tier_headlines(off)
        return h

    @staticmethod
    def _online_headlines(on: Sequence[dict[str, Any]]) -> list[Headline]:
        src = "PAM 7 (online results, text)"
        pairs, skipped, zeros = online_pairs(on, "pam", BASE)
        cover = _covered([r for r, _ in pairs], "model", "workload", "slo_ms")
        per_model = {m: [v for r, v in pairs if r["model"] == m] for m in MODELS}
        model_means = [mean(v) for v in per_model.values() if v]
        h = [Headline("online speed-up over vLLM-offloading, mean (conversation)", 12.88,
                      mean(model_means), "PAM 1 and 7 (online)", TOL, _CAUSE_ONLINE,
                      note=_join("mean of the per-model means", cover,
                                 _pair_note(skipped, zeros, BASE, len(pairs))))]
        for m, paper in (("qwen2.5-32b", 7.20), ("llama3-70b", 6.93), ("opt-175b", 24.53)):
            vals = per_model[m]
            sk = sum(1 for r in on if r.get("model") == m and r.get("system") == BASE
                     and _online_metric(r) <= 0)
            h.append(Headline(f"online speed-up over vLLM-offloading, {SHORT[m]}", paper,
                              mean(vals), src, TOL,
                              _CAUSE_OPT_ONLINE if m == "opt-175b" else _CAUSE_ONLINE,
                              note=_pair_note(sk, 0, BASE)))
        ls, sk_ls, z_ls = online_pairs(on, "pam", "ls-pim")
        h.append(Headline("online speed-up over LS-PIM, mean", 4.54,
                          mean([v for _, v in ls]), src, TOL, _CAUSE_LS_ONLINE,
                          note=_join(_covered([r for r, _ in ls], "model", "workload",
                                              "slo_ms"),
                                     _pair_note(sk_ls, z_ls, "ls-pim", len(ls)))))
        for w, paper in (("wildchat", 13.76), ("sharegpt", 6.12)):
            vals = [v for r, v in pairs if r["workload"] == w]
            h.append(Headline(f"online speed-up over vLLM-offloading, {SHORT[w]}", paper,
                              mean(vals), src, TOL, _CAUSE_DATASET,
                              note=_covered([r for r, _ in pairs if r["workload"] == w],
                                            "model", "slo_ms")))
        return h

    @staticmethod
    def _offline_headlines(off: Sequence[dict[str, Any]]) -> list[Headline]:
        src = "PAM 7 (offline results, text)"
        h = []
        means = []
        for m, w, paper in (("llama3-70b", "arxiv-sum", 39.2), ("llama3-70b", "write-doc", 25.2),
                            ("opt-175b", "arxiv-sum", 33.0), ("opt-175b", "write-doc", 8.26)):
            sub = select(off, model=m, workload=w)
            v = mean(offline_ratios(sub, "pam", BASE, OFFLINE_METRIC))
            if math.isfinite(v):
                means.append(v)
            cause = (_CAUSE_OFFLINE_OPT_WD if (m, w) == ("opt-175b", "write-doc")
                     else _CAUSE_OFFLINE)
            h.append(Headline(f"offline speed-up over vLLM-offloading, {SHORT[m]} {SHORT[w]}",
                              paper, v, src, TOL, cause,
                              note=_covered(select(sub, system="pam"), "batch")))
        h.insert(0, Headline("offline speed-up over vLLM-offloading, mean (long context)",
                             26.41, mean(means), "PAM 1 and 7 (offline)", TOL, _CAUSE_OFFLINE,
                             note=_join("mean of the per-(model, data set) means",
                                        _covered(select(off, system="pam"), "model",
                                                 "workload", "batch"))))
        return h

    @staticmethod
    def _energy_headlines(off: Sequence[dict[str, Any]]) -> list[Headline]:
        src = "PAM 7 (energy, text)"
        top = [r for r in off if r.get("batch") == max(
            (x.get("batch", 0) for x in off if x.get("model") == r.get("model")), default=0)]
        h = []
        for base, lo, hi, metric in (
                (BASE, 53.1, 92.7, "energy_per_token_j"),
                ("l-pim", 7.8, 66.9, "energy_per_token_j"),
                ("ls-pim", 4.0, 18.7, "energy_attention_j")):
            red = [100 * (1 - 1 / x) for x in offline_ratios(top, base, "pam", metric)]
            what = "attention energy" if metric == "energy_attention_j" else "energy per token"
            note = _covered(select(top, system="pam"), "model", "workload", "batch")
            h.append(Headline(f"{what} reduction vs {LABEL[base]}, lowest", lo,
                              min(red) if red else math.nan, src, TOL, _CAUSE_ENERGY, "%",
                              note=note))
            h.append(Headline(f"{what} reduction vs {LABEL[base]}, highest", hi,
                              max(red) if red else math.nan, src, TOL, _CAUSE_ENERGY, "%"))
        return h

    @staticmethod
    def _ablation_headlines(ab: Sequence[dict[str, Any]]) -> list[Headline]:
        src = "PAM 7.4 (ablation, attention speed-up)"
        papers = {ABLATION_BATCHES[0]: ("small", 18.7, 1.93, 2.06, 2.74),
                  ABLATION_BATCHES[-1]: ("large", 48.56, 2.35, 4.15, 4.62)}
        h = []
        for b, (size, p_ls, p_att, p_map, p_sch) in papers.items():
            sub = select(ab, batch=b)

            def t(label: str, sub: Sequence[dict[str, Any]] = sub) -> float:
                r = select(sub, ablation=label)
                return attention_per_token(r[0] if r else None)

            pam = t("PAM")
            for label, paper in (("LS-PIM", p_ls), ("w/o PAMattention", p_att),
                                 ("w/o KV mapping", p_map), ("w/o KV scheduling", p_sch)):
                what = "over LS-PIM" if label == "LS-PIM" else f"over {label}"
                h.append(Headline(f"attention speed-up {what}, {size} batch", paper,
                                  t(label) / pam if pam > 0 else math.nan, src, TOL,
                                  _CAUSE_ABLATION,
                                  note=f"LLaMA3-70B Arxiv_sum, batch {b}" if label == "LS-PIM"
                                  else ""))
        return h

    @staticmethod
    def _tier_headlines(off: Sequence[dict[str, Any]]) -> list[Headline]:
        lp = select(off, system="l-pim")
        kv = tier_shares(lp, "kv_bytes_")
        att = tier_shares(lp, "attention_time_", "_s")
        src = "PAM 7 (offline results, text)"
        note = _covered(lp, "model", "workload", "batch")
        return [Headline("L-PIM: SSD share of KV bytes", 65.0, kv["ssd"], src, TOL, _CAUSE_LPIM,
                         "%", bound=">=", note=note),
                Headline("L-PIM: SSD share of attention time", 93.0, att["ssd"], src, TOL,
                         _CAUSE_LPIM, "%", bound=">=")]

    # ------------------------------------------------------------------------- figures
    def figures(self, rows: Sequence[dict[str, Any]], out: Path) -> list[Path]:
        paths: list[Path] = []
        on = select(rows, experiment="online")
        if on:
            paths.append(self._online_figure(on, out))
        off = select(rows, experiment="offline")
        if off:
            paths += self._offline_figures(off, out)
        ab = select(rows, experiment="ablation")
        if ab:
            paths.append(self._ablation_figure(ab, out))
        if off:
            paths += self._tier_figures(off, out)
        return paths

    @staticmethod
    def _norm(rows: Sequence[dict[str, Any]], system: str, metric: Callable[
            [dict[str, Any]], float], **labels: Any) -> float:
        r = select(rows, system=system, **labels)
        d = select(rows, system=BASE, **labels)
        if not r or not d or "error" in r[0] or "error" in d[0]:
            return math.nan
        a, b = metric(r[0]), metric(d[0])
        return a / b if a > 0 and b > 0 else math.nan

    def _online_figure(self, on: Sequence[dict[str, Any]], out: Path) -> Path:
        models = [m for m in MODELS if select(on, model=m)]
        workloads = [w for w in ONLINE_WORKLOADS if select(on, workload=w)]
        slos = [s for s in SLOS_MS if select(on, slo_ms=s)]
        cats = [f"{SHORT[w]} {s}ms" for w in workloads for s in slos]
        panels = {SHORT[m]: {LABEL[s]: [self._norm(on, s, _online_metric, model=m, workload=w,
                                                   slo_ms=slo)
                                        for w in workloads for slo in slos]
                             for s in SYSTEMS}
                  for m in models}
        return fig.grouped_bars(
            out / "pam_online_slo.png", panels, cats, log=True, legend_outside=True,
            ylabel="throughput under SLO / vLLM-offloading",
            title="Peak throughput under a p99 TPOT SLO (no bar: no rate met)")

    def _offline_figures(self, off: Sequence[dict[str, Any]], out: Path) -> list[Path]:
        """Throughput and energy per token at every offline point, over vLLM-offloading."""
        thr: dict[str, dict[str, list[float]]] = {}
        energy: dict[str, dict[str, list[float]]] = {}
        cats: dict[str, list[str]] = {}
        for m in OFFLINE_BATCHES:
            sub = select(off, model=m)
            if not sub:
                continue
            cs = sorted({(r["workload"], r["batch"]) for r in sub},
                        key=lambda c: (OFFLINE_WORKLOADS.index(c[0]), c[1]))
            cats[SHORT[m]] = [f"{SHORT[w]} b{b}" for w, b in cs]
            thr[SHORT[m]] = {LABEL[s]: [self._norm(sub, s, lambda r: r[OFFLINE_METRIC],
                                                   workload=w, batch=b) for w, b in cs]
                             for s in SYSTEMS}
            energy[SHORT[m]] = {LABEL[s]: [self._norm(sub, s, lambda r: r["energy_per_token_j"],
                                                      workload=w, batch=b) for w, b in cs]
                                for s in ("pam", BASE, "ls-pim", "l-pim")}
        return [
            fig.grouped_bars(out / "pam_offline_throughput.png", thr, cats, log=True,
                             ylabel="throughput / vLLM-offloading", legend_outside=True,
                             title="Offline generation throughput at fixed batch "
                             "(b = running requests; prefill excluded)"),
            fig.grouped_bars(out / "pam_energy.png", energy, cats, log=True,
                             ylabel="energy per token / vLLM-offloading", legend_outside=True,
                             title="Energy per output token (lower is better)"),
        ]

    @staticmethod
    def _ablation_figure(ab: Sequence[dict[str, Any]], out: Path) -> Path:
        papers = {ABLATION_BATCHES[0]: {"LS-PIM": 1 / 18.7, "w/o PAMattention": 1 / 1.93,
                                        "w/o KV mapping": 1 / 2.06,
                                        "w/o KV scheduling": 1 / 2.74, "PAM": 1.0},
                  ABLATION_BATCHES[-1]: {"LS-PIM": 1 / 48.56, "w/o PAMattention": 1 / 2.35,
                                         "w/o KV mapping": 1 / 4.15,
                                         "w/o KV scheduling": 1 / 4.62, "PAM": 1.0}}
        panels: dict[str, dict[str, float]] = {}
        paper: dict[str, dict[str, float]] = {}
        for b, ref in papers.items():
            sub = select(ab, batch=b)
            ls = select(sub, ablation="LS-PIM")
            t_ls = attention_per_token(ls[0] if ls else None)
            name = f"batch {b} ({'small' if b == ABLATION_BATCHES[0] else 'large'})"
            panels[name] = {}
            for label in ("LS-PIM", "w/o PAMattention", "w/o KV mapping", "w/o KV scheduling",
                          "PAM"):
                r = select(sub, ablation=label)
                t = attention_per_token(r[0] if r else None)
                panels[name][label] = t_ls / t if t > 0 else math.nan
            # the paper normalises to LS-PIM: its PAM bar is 18.7 / 48.56 and each ablation's
            # is PAM's over its own factor
            top = 1 / ref["LS-PIM"]
            paper[name] = {k: top * v for k, v in ref.items()}
        return fig.bars_with_reference(
            out / "pam_ablation.png", panels, paper=paper, log=True,
            ylabel="attention speed-up over LS-PIM",
            title="Ablation: attention time per token, LLaMA3-70B Arxiv_sum")

    @staticmethod
    def _tier_figures(off: Sequence[dict[str, Any]], out: Path) -> list[Path]:
        """KV bytes and local attention time by tier for L-PIM, LS-PIM and PAM at the largest
        offline batch of each model and data set."""
        kv: dict[str, dict[str, dict[str, float]]] = {}
        att: dict[str, dict[str, dict[str, float]]] = {}
        for m in OFFLINE_BATCHES:
            sub = select(off, model=m)
            if not sub:
                continue
            b = max(r["batch"] for r in sub)
            for w in OFFLINE_WORKLOADS:
                panel = f"{SHORT[m]} {SHORT[w]}\nbatch {b}"
                for s in ("l-pim", "ls-pim", "pam"):
                    r = [x for x in select(sub, system=s, workload=w, batch=b)
                         if "error" not in x]
                    if not r:
                        continue
                    kv.setdefault(panel, {})[LABEL[s]] = {
                        t.upper(): float(r[0].get(f"kv_bytes_{t}", 0.0) or 0.0) for t in TIERS}
                    att.setdefault(panel, {})[LABEL[s]] = {
                        t.upper(): float(r[0].get(f"attention_time_{t}_s", 0.0) or 0.0)
                        for t in TIERS}
        return [fig.stacked_grid(out / "pam_tiers.png",
                                 {"% of resident KV bytes": kv,
                                  "% of local attention time": att},
                                 title="KV and attention time by tier (largest offline batch)")]


__all__ = ["PAMReproduction", "attention_per_token", "offline_ratios", "online_pairs",
           "tier_shares"]
