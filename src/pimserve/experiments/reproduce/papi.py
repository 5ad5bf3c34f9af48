"""PAPI's evaluation (ASPLOS'25, arXiv 2502.15470 section 7; facts/papi.md section 3).

- Main grid (Fig. 8/9): LLaMA-65B, GPT-3 66B, GPT-3 175B x dolly-creative, dolly-qa x batch
  {4, 16, 64} x speculation length (TLP) {1, 2, 4}, static batching, for ``papi``,
  ``a100-attacc``, ``a100-hbmpim``, ``attacc-only`` and PIM-only PAPI (``papi-pim-only``).
- RLP sweep (batch 4..128 at TLP 1) and TLP sweep (TLP 1..8 at batch 4), LLaMA-65B, creative.
- Per-token time breakdown at batch 4, TLP 4 (LLaMA-65B, creative); energy efficiency.

``--quick`` keeps every experiment but with fewer requests per point and the sensitivity
table on LLaMA-65B only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from pimserve.experiments.reproduce.common import (
    Headline,
    Parameter,
    Point,
    Reproduction,
    mean,
    ratios,
    scaled_system,
    select,
)
from pimserve.report import figures as fig
from pimserve.specs.catalog import load_system

MODELS = ("llama-65b", "gpt3-66b", "gpt3-175b")
WORKLOADS = ("dolly-creative", "dolly-qa")
BATCHES = (4, 16, 64)
TLPS = (1, 2, 4)
BASELINES = ("a100-attacc", "a100-hbmpim", "attacc-only")
SYSTEMS = ("papi", *BASELINES, "papi-pim-only")
RLP_BATCHES = (4, 8, 16, 32, 64, 128)
TLP_SWEEP = (1, 2, 3, 4, 5, 6, 7, 8)
LABEL = {"papi": "PAPI", "a100-attacc": "A100+AttAcc", "a100-hbmpim": "A100+HBM-PIM",
         "attacc-only": "AttAcc-only", "papi-pim-only": "PIM-only PAPI"}

# Causes of the known gaps, from the maintainers' analyses and this report's
# own sensitivity table. Shown only for headlines outside their tolerance.
_CAUSE_ATTACC_ONLY = (
    "pimserve prices AttAcc-only's FC kernels on 30 AttAcc 1P1B stacks with the same bank-level "
    "model as FC-PIM: at 1 FLOP/B their compute matches their internal bandwidth, so FC on "
    "them is only ~4x (PU count) slower than on PAPI's 4P1B FC-PIM and, at the RLP x TLP of "
    "static Dolly batches (<= 256 tokens), within ~2-3x of six A100s. The paper's speed-ups "
    "over AttAcc-only (11.1x and 8.1x in section 7.1, 3.0x in the TLP sweep) need "
    "AttAcc-only's FC an order of magnitude slower than this; no published AttAcc parameter "
    "gives that (a power limit caps it at 9/16 of the bandwidth, still far from enough), so the "
    "gap is left, not fitted. It is widened by the layer norms and activation, which PAPI's "
    "GPUs run at their measured fixed time per kernel (about 1.8 ms a decode step on "
    "LLaMA-65B) while AttAcc-only, which has no GPUs, runs them near memory."
)
_CAUSE_ENERGY = (
    "A100+AttAcc's FC energy is the A100's: AttAcc's per-byte HBM and on-chip energies on the "
    "weights read once per step, plus the MAC energy; FC-PIM reads them inside the banks at a "
    "fraction of the per-bit energy. At small RLP x TLP (most of the grid) FC is all on FC-PIM "
    "and the ratio approaches the A100's off-chip-to-in-bank energy ratio; the paper's 3.4x "
    "implies a smaller ratio, i.e. GPU energy per byte lower than AttAcc's table or PIM energy "
    "higher, which the paper does not give."
)
_CAUSE_GPU = (
    "At the breakdown point FC-PIM runs FC {fc:.1f}x faster than the six A100s (paper 2.9x): "
    "static batches drain as requests finish (PAPI's mean RLP over the grid is {rlp:.1f}) and "
    "at <= 4 tokens 4P1B FC-PIM streams at its full internal bandwidth. The fixed all-reduce "
    "cost ({comm:.0f}% of PAPI's time at that point, paper 28.2%) is paid by both systems and "
    "dilutes the gain, so the two differences partly cancel. Larger models gain more "
    "(GPT-3 175B {g175:.2f}x, LLaMA-65B {g65:.2f}x): more FC work per all-reduce."
)
_CAUSE_QA = (
    " On general-qa pimserve's GPT-3 175B speed-up is about its creative one ({cw:.2f}x): "
    "with static batches the workload changes the mean RLP little, whereas the paper reports "
    "a lower gain on qa."
)
_CAUSE_TLP = (
    "PAPI's alpha ({alpha:g}) is above 4 requests x 8 tokens = 32, so pimserve keeps every FC "
    "kernel on FC-PIM over the whole sweep (largest GPU share {gpu:.2f}) and the gain does not "
    "shrink towards A100+AttAcc as the paper's does; the paper's crossover must lie below 32, "
    "which its FC-PIM being slower relative to the A100s (2.9x vs pimserve's) also implies."
)
_CAUSE_ENERGY_PIM = (
    "pimserve prices AttAcc-only's PIM FC with the same in-bank energy per bit as FC-PIM, so "
    "where PAPI keeps FC on FC-PIM the two are alike ({lo:.2f}x at batch 4, TLP 1), and "
    "where PAPI moves FC to the A100s it spends more energy than PIM does ({hi:.2f}x at "
    "batch 64, TLP 4). The paper's 1.15x needs AttAcc-only's FC to cost more energy per token "
    "than a GPU's at high RLP x TLP (e.g. weights re-read per token group, or static power "
    "over a much longer run), the same gap as its 11.1x speed-up."
)
_CAUSE_PIM_ONLY = (
    "Both PIM-only systems pay the same tensor-parallel all-reduce per layer; at batch 4, "
    "TLP 1 it is {comm:.0f}% of PIM-only PAPI's time in pimserve, so FC-PIM's faster FC "
    "(4 PUs per bank against AttAcc's 1) barely shows end to end."
)
_CAUSE_COMM = (
    "pimserve charges AttAcc's all-reduce fit (6,060 ns per ring step, (N-1) steps over 6 "
    "GPUs = 30 us) twice per layer on every decode step, also when FC runs on FC-PIM (the "
    "partial sums of the 30 FC-PIM stacks are reduced through the GPUs). At batch 4 the "
    "kernels themselves take only a few us per layer, so this fixed cost dominates; the "
    "paper's 28.2% implies a cheaper reduction path it does not describe."
)


def _papi_alpha() -> float:
    """The papi preset's alpha (RLP x TLP), from its calibration."""
    alpha = load_system("papi").policies.alpha
    if alpha is None:  # pragma: no cover - the preset stores its calibrated value
        raise ValueError("the papi preset has no alpha")
    return float(alpha)


def _n_requests(batch: int, quick: bool) -> int:
    """Requests per point: whole static batches, enough for stable means."""
    return max(batch, 32 if quick else 128)


class PAPIReproduction(Reproduction):
    """PAPI's evaluation; see the module docstring."""

    name = "papi"
    title = "PAPI (ASPLOS'25): dynamic GPU/FC-PIM placement of FC kernels"
    notes: ClassVar[list[str]] = [
        "Static batching of Dolly-like requests (synthetic lengths fitted to the Dolly "
        "categories, `pimserve workloads`); a batch's requests start together and the next "
        "batch starts when it empties, as PAPI evaluates.",
        "PAPI's alpha is the offline calibration `pimserve calibrate --system papi` (the papi "
        "preset's value, listed under the open parameters), "
        "not a value from the paper (it gives none).",
        "Energy covers DRAM access, transfer and computation of every device (AttAcc's energy "
        "table); static power is not charged, as in AttAcc's simulator.",
        "PIM-only PAPI against AttAcc-only compares generation throughput "
        "(`decode_throughput_tok_s`, iterations without prefill), as the paper's decode-only "
        "analysis does.",
        "Per-model bar values of the paper's figures are not in the text; only the means "
        "and the quoted points are compared.",
    ]

    def points(self, quick: bool) -> list[Point]:
        pts: list[Point] = []
        for m in MODELS:
            for w in WORKLOADS:
                for b in BATCHES:
                    for t in TLPS:
                        for s in SYSTEMS:
                            pts.append(self._pt("main", s, m, w, b, t, quick))
        for b in RLP_BATCHES:
            for s in SYSTEMS[:4]:
                pts.append(self._pt("rlp", s, "llama-65b", "dolly-creative", b, 1, quick))
        for t in TLP_SWEEP:
            for s in SYSTEMS[:4]:
                pts.append(self._pt("tlp", s, "llama-65b", "dolly-creative", 4, t, quick))
        return pts

    @staticmethod
    def _pt(exp: str, system: str, model: str, workload: str, batch: int, tlp: int,
            quick: bool) -> Point:
        return Point({"experiment": exp, "system": system, "model": model,
                      "workload": workload, "batch": batch, "tlp": tlp},
                     system, model, workload, _n_requests(batch, quick),
                     {"batching": "static", "batch": batch, "tlp": tlp, "seed": 0})

    def sensitivity_points(self, quick: bool) -> list[Point]:
        """The main grid (quick: LLaMA-65B only; full: the corners batch {4, 64} x TLP
        {1, 4} of every model), and the per-token breakdown point."""
        if quick:
            return [p for p in self.points(quick) if p.labels["experiment"] == "main"
                    and p.labels["model"] == "llama-65b"]
        return [p for p in self.points(quick) if p.labels["experiment"] == "main"
                and p.labels["batch"] in (4, 64) and p.labels["tlp"] in (1, 4)]

    def parameters(self) -> list[Parameter]:
        alpha0 = _papi_alpha()
        def alpha(p: Point, f: float) -> Point:
            if p.labels["system"] != "papi":
                return p
            return replace(p, options={**p.options, "alpha": alpha0 * f})

        def devices(names: dict[str, dict[str, float]]) -> Any:
            def apply(p: Point, f: float) -> Point:
                ch = {d: {k: f for k in fields} for d, fields in names.items()}
                return replace(p, system=scaled_system(p.system, devices=ch))
            return apply

        def link(p: Point, f: float) -> Point:
            return replace(p, system=scaled_system(p.system, links={"pcie5": {"bw_gbps": f}}))

        return [
            Parameter("PAPI alpha", f"{alpha0:g} (RLP x TLP)",
                      "the crossover of one layer's FC time on 30 FC-PIM stacks and on 6 "
                      "A100s (offline calibration, as the paper describes; value not given)",
                      alpha),
            Parameter("Attn-PIM link bandwidth", "64 GB/s per direction (PCIe 5.0 x16)",
                      "PAPI says PCIe or CXL without a bandwidth; PCIe 5.0 x16 is the "
                      "unofficial reproduction's choice and the PCIe generation of A100-class "
                      "hosts' successors", link),
            Parameter("GPU efficiency (compute 0.8, memory 0.85)", "0.8 / 0.85 of peak",
                      "AttAcc's xPU model, which PAPI's simulator inherits; typical of "
                      "cuBLAS GEMM at large shapes (memory clamps at 1.0 at +25%)",
                      devices({"a100-hbm3": {"compute_efficiency": 1, "memory_efficiency": 1}})),
            Parameter("All-reduce step time", "6,060 ns per ring step",
                      "AttAcc's fit of measured NVLink all-reduces (src/devices.py)",
                      devices({"a100-hbm3": {"allreduce_step_ns": 1}})),
            Parameter("PIM PU clock", "666 MHz (FC-PIM, Attn-PIM, AttAcc PIM)",
                      "PU clock of the HBM-PIM designs PAPI builds on (one MAC per tCCD_L "
                      "at the DRAM core clock)",
                      devices({"papi-fc-pim-4p1b": {"pu_clock_mhz": 1},
                               "papi-attn-pim-1p2b": {"pu_clock_mhz": 1},
                               "hbm3-attacc-1p1b": {"pu_clock_mhz": 1},
                               "hbm-pim-1p2b": {"pu_clock_mhz": 1}})),
        ]

    # -------------------------------------------------------------------------- headlines
    def headlines(self, rows: Sequence[dict[str, Any]]) -> list[Headline]:
        main = select(rows, experiment="main")
        cw, qa = select(main, workload="dolly-creative"), select(main, workload="dolly-qa")
        qa175 = select(qa, model="gpt3-175b")
        tlp = select(rows, experiment="tlp")
        h: list[Headline] = []
        bd = {x.name: x.value for x in self._breakdown(cw)}
        per_model = {m: mean(ratios(select(cw, model=m), "papi", "a100-attacc"))
                     for m in MODELS}
        cause_gpu = _CAUSE_GPU.format(
            fc=bd["FC time: A100 / PAPI (FC-PIM speed-up of FC)"],
            comm=bd["communication share of PAPI's decode time"],
            rlp=mean([r["mean_rlp"] for r in select(cw, system="papi") if "mean_rlp" in r]),
            g175=per_model["gpt3-175b"], g65=per_model["llama-65b"])
        cause_qa = cause_gpu + _CAUSE_QA.format(
            cw=mean(ratios(select(cw, model="gpt3-175b"), "papi", "a100-attacc")))
        fc_gpu_tlp = [r["fc_on_gpu_fraction"] for r in select(tlp, system="papi")
                      if "fc_on_gpu_fraction" in r]
        cause_tlp = _CAUSE_TLP.format(gpu=max(fc_gpu_tlp, default=float("nan")),
                                      alpha=_papi_alpha())
        en = {(b, t): mean(ratios(select(cw, batch=b, tlp=t), "papi", "attacc-only",
                                  "energy_per_token_j", invert=True))
              for b, t in ((4, 1), (64, 4))}
        cause_en_pim = _CAUSE_ENERGY_PIM.format(lo=en[(4, 1)], hi=en[(64, 4)])
        shares = [r["time_communication_s"] / r["simulated_time_s"]
                  for r in select(cw, system="papi-pim-only", batch=4, tlp=1)
                  if r.get("simulated_time_s") and "time_communication_s" in r]
        cause_pim = _CAUSE_PIM_ONLY.format(comm=100 * mean(shares)) + " " + _CAUSE_ATTACC_ONLY
        src8 = "PAPI 7.2 (Fig. 8), mean over models and configurations"
        for base, paper, cause in (("a100-attacc", 1.8, cause_gpu),
                                   ("a100-hbmpim", 1.9, cause_gpu),
                                   ("attacc-only", 11.1, _CAUSE_ATTACC_ONLY)):
            h.append(Headline(f"speedup over {LABEL[base]}, creative-writing", paper,
                              mean(ratios(cw, "papi", base)), src8, cause=cause))
        for base, paper, cause in (("a100-attacc", 1.7, cause_qa), ("a100-hbmpim", 1.7, cause_qa),
                                   ("attacc-only", 8.1, _CAUSE_ATTACC_ONLY)):
            h.append(Headline(f"speedup over {LABEL[base]}, general-qa (GPT-3 175B)", paper,
                              mean(ratios(qa175, "papi", base)), "PAPI 7.2 (Fig. 9)",
                              cause=cause))
        for data, name, p_gpu, p_pim in ((cw, "creative-writing", 3.4, 1.15),
                                         (qa, "general-qa", 3.1, 1.01)):
            h.append(Headline(f"energy efficiency over A100+AttAcc, {name}", p_gpu,
                              mean(ratios(data, "papi", "a100-attacc", "energy_per_token_j",
                                          invert=True)), "PAPI 7.3", cause=_CAUSE_ENERGY))
            h.append(Headline(f"energy efficiency over AttAcc-only, {name}", p_pim,
                              mean(ratios(data, "papi", "attacc-only", "energy_per_token_j",
                                          invert=True)), "PAPI 7.3", cause=cause_en_pim))
        h.append(Headline("TLP sweep: speedup over A100+AttAcc (batch 4, TLP 1-8)", 1.5,
                          mean(ratios(tlp, "papi", "a100-attacc")), "PAPI 7.2",
                          cause=cause_tlp))
        h.append(Headline("TLP sweep: speedup over AttAcc-only (batch 4, TLP 1-8)", 3.0,
                          mean(ratios(tlp, "papi", "attacc-only")), "PAPI 7.2",
                          cause=_CAUSE_ATTACC_ONLY))
        # PAPI 7.4 compares the PIM-only systems on decode only: generation throughput
        pim = ratios(cw, "papi-pim-only", "attacc-only", "decode_throughput_tok_s")
        h.append(Headline("PIM-only PAPI over AttAcc-only, creative, mean", 2.3, mean(pim),
                          "PAPI 7.4", cause=cause_pim))
        for b, t, paper in ((4, 1, 1.6), (64, 4, 2.7)):
            pts = ratios(select(cw, batch=b, tlp=t), "papi-pim-only", "attacc-only",
                         "decode_throughput_tok_s")
            h.append(Headline(f"PIM-only PAPI over AttAcc-only at batch {b}, TLP {t}", paper,
                              mean(pts), "PAPI 7.4", cause=cause_pim))
        h += self._breakdown(cw)
        return h

    @staticmethod
    def _breakdown(cw: Sequence[dict[str, Any]]) -> list[Headline]:
        pt = select(cw, model="llama-65b", batch=4, tlp=4)
        by = {r["system"]: r for r in pt if "error" not in r}
        nan = float("nan")

        def per_tok(s: str, *keys: str) -> float:
            r = by.get(s)
            if r is None or not r.get("output_tokens"):
                return nan
            return sum(r.get(k, 0.0) for k in keys) / r["output_tokens"]

        fc_gpu = per_tok("a100-attacc", "time_fc_gpu_s")
        fc_papi = per_tok("papi", "time_fc_gpu_s", "time_fc_pim_s")
        att_1p1b = per_tok("a100-attacc", "time_attention_s")
        att_1p2b = per_tok("a100-hbmpim", "time_attention_s")
        comm = per_tok("papi", "time_communication_s")
        total = per_tok("papi", "time_fc_gpu_s", "time_fc_pim_s", "time_attention_s",
                        "time_communication_s", "time_other_s")
        src = "PAPI 7.4 (LLaMA-65B, batch 4, TLP 4)"
        return [
            Headline("FC time: A100 / PAPI (FC-PIM speed-up of FC)", 2.9,
                     fc_gpu / fc_papi if fc_papi else nan, src,
                     cause="the static batch of 4 drains as requests finish, and at <= 4 "
                     "tokens (RLP x TLP <= 4) 4P1B FC-PIM needs one PU op per burst and "
                     "streams at its full internal bandwidth (768 banks x 32 B per tCCD_L), "
                     "about 14x the six A100s' effective 17 TB/s; at the full 16 tokens it "
                     "needs 4 ops per burst (~3.5x). The paper's 2.9x is close to the "
                     "full-batch value, i.e. it is likely measured at the initial RLP."),
            Headline("attention time: 1P2B Attn-PIM / 1P1B AttAcc", 1.7,
                     att_1p2b / att_1p1b if att_1p1b else nan, src,
                     cause="halving the PUs per bank halves attention throughput in the "
                     "bank-level model when the PUs are the bottleneck; the paper's 1.7x "
                     "includes effects (row-buffer locality, refresh) pimserve models "
                     "differently."),
            Headline("communication share of PAPI's decode time", 28.2,
                     100 * comm / total if total else nan, src, cause=_CAUSE_COMM, unit="%"),
        ]

    # ---------------------------------------------------------------------------- figures
    def figures(self, rows: Sequence[dict[str, Any]], out: Path) -> list[Path]:
        paths: list[Path] = []
        main = select(rows, experiment="main")
        cats = [f"b{b} t{t}" for b in BATCHES for t in TLPS]
        for w, tag in (("dolly-creative", "creative"), ("dolly-qa", "qa")):
            panels: dict[str, dict[str, list[float]]] = {}
            energy: dict[str, dict[str, list[float]]] = {}
            for m in MODELS:
                sub = select(main, workload=w, model=m)
                panels[m] = {LABEL[s]: self._norm(sub, s, "a100-attacc") for s in SYSTEMS}
                energy[m] = {LABEL[s]: self._norm(sub, s, "a100-attacc", energy=True)
                             for s in SYSTEMS}
            paths.append(fig.grouped_bars(
                out / f"papi_speedup_{tag}.png", panels, cats, log=True,
                ylabel="throughput / A100+AttAcc", title=f"PAPI speed-up, {w} (Fig. 8 style)"))
            paths.append(fig.grouped_bars(
                out / f"papi_energy_{tag}.png", energy, cats, log=True,
                ylabel="energy efficiency / A100+AttAcc",
                title=f"Energy efficiency (tokens/J), {w}"))
        rlp = select(rows, experiment="rlp")
        paths.append(fig.sweep(
            out / "papi_rlp_sweep.png", RLP_BATCHES,
            {LABEL[s]: [self._one(rlp, s, batch=b) for b in RLP_BATCHES] for s in SYSTEMS[:4]},
            xlabel="batch size (initial RLP), TLP 1", ylabel="throughput / A100+AttAcc",
            title="RLP sweep, LLaMA-65B creative", logx=True, log=True))
        tlp = select(rows, experiment="tlp")
        paths.append(fig.sweep(
            out / "papi_tlp_sweep.png", TLP_SWEEP,
            {LABEL[s]: [self._one(tlp, s, tlp=t) for t in TLP_SWEEP] for s in SYSTEMS[:4]},
            xlabel="speculation length (TLP), batch 4", ylabel="throughput / A100+AttAcc",
            title="TLP sweep, LLaMA-65B creative", log=True))
        bd = select(main, workload="dolly-creative", model="llama-65b", batch=4, tlp=4)
        bars = {}
        for r in bd:
            if "error" in r or not r.get("output_tokens"):
                continue
            n = r["output_tokens"]
            bars[LABEL[r["system"]]] = {
                k: 1e3 * r.get(f"time_{k}_s", 0.0) / n
                for k in ("fc_gpu", "fc_pim", "attention", "communication", "other")}
        paths.append(fig.stacked_bars(out / "papi_breakdown.png", bars,
                                      ylabel="ms per output token",
                                      title="Per-token time, LLaMA-65B batch 4 TLP 4"))
        return paths

    @staticmethod
    def _norm(rows: Sequence[dict[str, Any]], system: str, base: str,
              energy: bool = False) -> list[float]:
        out = []
        for b in BATCHES:
            for t in TLPS:
                r = select(rows, system=system, batch=b, tlp=t)
                d = select(rows, system=base, batch=b, tlp=t)
                if not r or not d or "error" in r[0] or "error" in d[0]:
                    out.append(float("nan"))
                elif energy:
                    out.append(d[0]["energy_per_token_j"] / r[0]["energy_per_token_j"])
                else:
                    out.append(r[0]["throughput_tok_s"] / d[0]["throughput_tok_s"])
        return out

    @staticmethod
    def _one(rows: Sequence[dict[str, Any]], system: str, **labels: Any) -> float:
        r = select(rows, system=system, **labels)
        d = select(rows, system="a100-attacc", **labels)
        if not r or not d or "error" in r[0] or "error" in d[0]:
            return float("nan")
        return float(r[0]["throughput_tok_s"] / d[0]["throughput_tok_s"])
