"""Paper reproductions (`pimserve reproduce ...`): grids, headlines from hand-made rows, the
quick runs' output folders and the CLI's errors. PAPI's framework tests are in
test_reproduce_papi.py; golden values of the quick headlines are in test_golden.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from pimserve.cli.main import main
from pimserve.experiments.reproduce import REPRODUCTIONS, Headline
from pimserve.experiments.reproduce.common import Point
from pimserve.experiments.reproduce.pam import (
    ABLATION_BATCHES,
    MODELS,
    OFFLINE_BATCHES,
    OFFLINE_ITERATIONS,
    ONLINE_WORKLOADS,
    SLOS_MS,
    SYSTEMS,
    PAMReproduction,
    online_pairs,
)
from pimserve.specs.model import ModelSpec
from pimserve.specs.system import SystemSpec
from pimserve.workload.presets import WORKLOADS, make_workload

PNG = b"\x89PNG\r\n\x1a\n"


# ==========================================================================================
# PAM
# ==========================================================================================


def _online(system: str, model: str, workload: str, tput: float, slo: int = 100) -> dict:
    return {"experiment": "online", "system": system, "model": model, "workload": workload,
            "slo_ms": slo, "batch": 512, "offered_tok_s": tput, "throughput_tok_s": tput / 2,
            "slo_met": tput > 0}


def _offline(system: str, model: str, workload: str, batch: int, tput: float, **m: float
             ) -> dict:
    return {"experiment": "offline", "system": system, "model": model, "workload": workload,
            "batch": batch, "throughput_tok_s": tput / 3, "decode_throughput_tok_s": tput,
            "output_tokens": 100, **m}


def _hand_made_rows() -> list[dict]:
    """PAM 10x vLLM-offloading and 2x LS-PIM online, except: OPT-175B ShareGPT where
    vLLM-offloading meets no rate (left out) and Qwen2.5-32B WildChat where PAM meets none
    (counts as 0). Offline PAM is 40x/20x (LLaMA3 arxiv/write-doc) and 30x/10x (OPT)."""
    rows = []
    for m in MODELS:
        for w in ("sharegpt", "wildchat"):
            pam = 0.0 if (m, w) == ("qwen2.5-32b", "wildchat") else 1000.0
            vllm = 0.0 if (m, w) == ("opt-175b", "sharegpt") else 100.0
            rows += [_online("pam", m, w, pam), _online("vllm-offload", m, w, vllm),
                     _online("ls-pim", m, w, pam / 2)]
    speed = {("llama3-70b", "arxiv-sum"): 40, ("llama3-70b", "write-doc"): 20,
             ("opt-175b", "arxiv-sum"): 30, ("opt-175b", "write-doc"): 10}
    for (m, w), s in speed.items():
        small, large = OFFLINE_BATCHES[m][0], OFFLINE_BATCHES[m][-1]
        for b in (small, large):
            top = b == large
            rows += [
                _offline("pam", m, w, b, s, energy_per_token_j=1.0, energy_attention_j=0.9,
                         kv_bytes_hbm=1.0, kv_bytes_ddr=1.0, kv_bytes_ssd=0.0),
                # the smaller batch's energies must not enter the energy headlines
                _offline("vllm-offload", m, w, b, 1.0, energy_per_token_j=4.0 if top else 1.01),
                _offline("l-pim", m, w, b, 1.0, energy_per_token_j=2.0 if top else 1.01,
                         kv_bytes_hbm=1.0, kv_bytes_ddr=1.0, kv_bytes_ssd=1.0,
                         attention_time_hbm_s=0.5, attention_time_ddr_s=0.5,
                         attention_time_ssd_s=9.0),
                _offline("ls-pim", m, w, b, 1.0, energy_attention_j=1.0 if top else 0.91),
            ]
    factors = {ABLATION_BATCHES[0]: {"PAM": 1, "LS-PIM": 18, "w/o PAMattention": 2,
                                     "w/o KV mapping": 3, "w/o KV scheduling": 4},
               ABLATION_BATCHES[-1]: {"PAM": 2, "LS-PIM": 100, "w/o PAMattention": 5,
                                      "w/o KV mapping": 8, "w/o KV scheduling": 9}}
    for b, f in factors.items():
        for label, t in f.items():
            rows.append({"experiment": "ablation", "ablation": label, "batch": b,
                         "system": "ls-pim" if label == "LS-PIM" else "pam",
                         "model": "llama3-70b", "workload": "arxiv-sum",
                         "time_attention_s": float(t), "output_tokens": 1000})
    return rows


class TestPAMReproduction:
    """`pimserve reproduce pam`: its grid, headline arithmetic, parameters and quick run."""

    # ---------------------------------------------------------------- grid and settings
    def test_full_grid_covers_the_papers_evaluation(self) -> None:
        pts = PAMReproduction().points(quick=False)
        on = [p for p in pts if p.labels["experiment"] == "online"]
        off = [p for p in pts if p.labels["experiment"] == "offline"]
        ab = [p for p in pts if p.labels["experiment"] == "ablation"]
        assert len(on) == len(MODELS) * len(ONLINE_WORKLOADS) * len(SLOS_MS) * len(SYSTEMS)
        assert {p.labels["slo_ms"] for p in on} == {100, 150, 200}
        assert all(p.slo is not None and p.slo["percentile"] == "p99"
                   and p.slo["tpot_slo_ms"] == p.labels["slo_ms"] for p in on)
        assert all(p.options["batching"] == "continuous" for p in on)
        assert {(p.labels["model"], p.labels["batch"]) for p in off} == {
            (m, b) for m, bs in OFFLINE_BATCHES.items() for b in bs}
        assert len(off) == 6 * 2 * len(SYSTEMS)
        for p in off:  # the batch stays full, the run is bounded
            assert p.n_requests == 2 * p.options["batch"]
            assert p.options["max_iterations"] == OFFLINE_ITERATIONS[p.labels["workload"]]
        assert len(ab) == 2 * 5
        assert {p.labels["ablation"] for p in ab} == {
            "PAM", "LS-PIM", "w/o PAMattention", "w/o KV mapping", "w/o KV scheduling"}
        opt = next(p for p in off if p.labels["model"] == "opt-175b")
        assert isinstance(opt.model, ModelSpec) and opt.model.max_context == 8192

    def test_quick_grid_is_smaller_and_keeps_every_experiment(self) -> None:
        r = PAMReproduction()
        quick, full = r.points(quick=True), r.points(quick=False)
        assert len(quick) < len(full) / 2
        assert {p.labels["experiment"] for p in quick} == {"online", "offline", "ablation"}
        sens = r.sensitivity_points(quick=True)
        assert sens and all(p.slo is None for p in sens)  # no SLO searches in sensitivity

    # ------------------------------------------------------------------------ headlines
    def test_headlines_from_hand_made_rows(self) -> None:
        h = {x.name: x for x in PAMReproduction().headlines(_hand_made_rows())}
        v = {k: x.value for k, x in h.items()}
        # per model: Qwen (10 + 0) / 2, LLaMA3 10, OPT 10 (ShareGPT left out)
        assert v["online speed-up over vLLM-offloading, Qwen2.5-32B"] == pytest.approx(5)
        assert v["online speed-up over vLLM-offloading, LLaMA3-70B"] == pytest.approx(10)
        assert v["online speed-up over vLLM-offloading, OPT-175B"] == pytest.approx(10)
        assert v["online speed-up over vLLM-offloading, mean (conversation)"] == \
            pytest.approx(25 / 3)
        assert v["online speed-up over vLLM-offloading, WildChat"] == pytest.approx(20 / 3)
        assert v["online speed-up over vLLM-offloading, ShareGPT"] == pytest.approx(10)
        assert v["online speed-up over LS-PIM, mean"] == pytest.approx(2)
        note = h["online speed-up over vLLM-offloading, mean (conversation)"].note
        assert "1 configuration(s) left out" in note and "count as 0" in note
        assert "left out" in h["online speed-up over vLLM-offloading, OPT-175B"].note
        assert v["offline speed-up over vLLM-offloading, LLaMA3-70B Arxiv_sum"] == 40
        assert v["offline speed-up over vLLM-offloading, OPT-175B Write_doc"] == 10
        assert v["offline speed-up over vLLM-offloading, mean (long context)"] == 25
        for end in ("lowest", "highest"):  # only the largest batches count
            assert v[f"energy per token reduction vs vLLM-offloading, {end}"] == \
                pytest.approx(75)
            assert v[f"energy per token reduction vs L-PIM, {end}"] == pytest.approx(50)
            assert v[f"attention energy reduction vs LS-PIM, {end}"] == pytest.approx(10)
        for size, ls, att, mp, sch in (("small", 18, 2, 3, 4), ("large", 50, 2.5, 4, 4.5)):
            assert v[f"attention speed-up over LS-PIM, {size} batch"] == pytest.approx(ls)
            assert v[f"attention speed-up over w/o PAMattention, {size} batch"] == \
                pytest.approx(att)
            assert v[f"attention speed-up over w/o KV mapping, {size} batch"] == \
                pytest.approx(mp)
            assert v[f"attention speed-up over w/o KV scheduling, {size} batch"] == \
                pytest.approx(sch)
        assert v["L-PIM: SSD share of KV bytes"] == pytest.approx(100 / 3)
        assert v["L-PIM: SSD share of attention time"] == pytest.approx(90)
        ssd = h["L-PIM: SSD share of attention time"]
        assert ssd.bound == ">=" and ssd.within  # 90 % against "more than 93 %" within 25 %
        assert not h["L-PIM: SSD share of KV bytes"].within  # 33 % is well below "> 65 %"
        for x in h.values():
            assert x.source.startswith("PAM") and x.tolerance == 0.25
            assert x.within or x.cause, f"{x.name}: a gap needs a cause"

    def test_headlines_without_rows_are_nan_not_errors(self) -> None:
        hs = PAMReproduction().headlines([])
        assert hs and all(math.isnan(h.value) for h in hs)
        assert len({h.name for h in hs}) == len(hs)

    def test_online_pairs_never_divide_by_zero(self) -> None:
        rows = [_online("pam", "llama3-70b", "sharegpt", 50.0),
                _online("vllm-offload", "llama3-70b", "sharegpt", 0.0),
                _online("pam", "llama3-70b", "wildchat", 0.0),
                _online("vllm-offload", "llama3-70b", "wildchat", 0.0),
                {**_online("pam", "opt-175b", "wildchat", 9.0), "error": "does not fit"},
                _online("vllm-offload", "opt-175b", "wildchat", 3.0)]
        pairs, skipped, zeros = online_pairs(rows, "pam", "vllm-offload")
        assert pairs == [] and skipped == 2 and zeros == 0

    def test_headline_bounds(self) -> None:
        lo = Headline("x", 65.0, 50.0, "PAM", 0.25, bound=">=")
        assert lo.within  # 50 >= 0.75 x 65
        assert not Headline("x", 65.0, 40.0, "PAM", 0.25, bound=">=").within
        assert Headline("x", 65.0, 400.0, "PAM", 0.25, bound=">=").within
        assert not Headline("x", 65.0, 400.0, "PAM", 0.25).within
        assert Headline("x", 10.0, 1.0, "PAM", 0.25, bound="<=").within
        assert lo.to_dict()["bound"] == ">="

    # ----------------------------------------------------------------------- parameters
    def test_parameters_change_only_the_points_they_concern(self) -> None:
        params = {p.name: p for p in PAMReproduction().parameters()}
        assert len(params) >= 8 and all(p.value and p.why for p in params.values())

        def pt(system: str) -> Point:
            return Point({"experiment": "offline", "system": system}, system, "llama3-70b",
                         "arxiv-sum", 8, {"batch": 4})

        x = params["PAM x (HBM:SSD importance)"]
        assert x.apply(pt("vllm-offload"), 1.25) is not None
        vllm = pt("vllm-offload")
        assert x.apply(vllm, 1.25) is vllm
        assert x.apply(pt("pam"), 1.25).options["kv_x"] == pytest.approx(64 * 1.25)
        sig = params["locality: salience sigma"]
        lpim = pt("l-pim")
        assert sig.apply(lpim, 0.75) is lpim  # dense reads: the locality model changes nothing
        spec = sig.apply(pt("pam"), 0.75).system
        assert isinstance(spec, SystemSpec)
        assert spec.policies.kv.locality.salience_sigma == pytest.approx(1.5 * 0.75)
        ssd = params["SSD link (NVMe PCIe 4.0 x4)"]
        att = pt("attacc-h100")
        assert ssd.apply(att, 0.75) is att  # AttAcc has no SSD
        assert isinstance(ssd.apply(pt("pam"), 0.75).system, SystemSpec)

    # ------------------------------------------------------------------------- quick run
    def test_quick_run_writes_its_folder(self, pam_quick) -> None:
        out = pam_quick.out
        for name in ("results.csv", "results.json", "report.md"):
            assert (out / name).is_file()
        assert pam_quick.figures and len(pam_quick.figures) >= 5
        for f in pam_quick.figures:
            assert f.read_bytes()[:8] == PNG
        data = json.loads((out / "results.json").read_text())
        assert data["meta"]["quick"] is True
        assert len(data["rows"]) == len(pam_quick.rows)
        report = (out / "report.md").read_text()
        assert "reduced grid" in report
        for h in pam_quick.headlines:
            assert h.name in report
        assert "## Sensitivity" in report and pam_quick.sensitivity

    def test_quick_run_computes_the_reduced_grids_headlines(self, pam_quick) -> None:
        v = {h.name: h.value for h in pam_quick.headlines}
        names = {h.name for h in PAMReproduction().headlines([])}
        assert set(v) == names  # same headlines as the full run (golden values rely on it)
        for k in ("online speed-up over vLLM-offloading, OPT-175B",
                  "online speed-up over vLLM-offloading, WildChat",
                  "offline speed-up over vLLM-offloading, mean (long context)",
                  "attention speed-up over LS-PIM, large batch",
                  "energy per token reduction vs L-PIM, highest"):
            assert math.isfinite(v[k]), k
        # not on the quick grid: Qwen2.5-32B and LLaMA3-70B online
        assert math.isnan(v["online speed-up over vLLM-offloading, Qwen2.5-32B"])
        online = [r for r in pam_quick.rows if r["experiment"] == "online"]
        assert online and all("offered_tok_s" in r or "error" in r for r in online)
        assert not [r for r in pam_quick.rows if "error" in r]

    def test_cli_rejects_an_unknown_reproduction(self) -> None:
        r = CliRunner().invoke(main, ["reproduce", "papam"])
        assert r.exit_code == 2
        assert "papam" in r.output and "pam" in r.output and "papi" in r.output

    def test_registry_knows_pam(self) -> None:
        assert isinstance(REPRODUCTIONS.get("pam")(), PAMReproduction)


# ------------------------------------------------------------------------------------------
# PAM's synthetic workloads


class TestPAMWorkloads:
    """The `wildchat`, `humaneval` and `write-doc` presets have PAM's stated lengths."""

    @pytest.mark.parametrize(("name", "prompt", "output"), [
        ("wildchat", 243, 495), ("humaneval", 130, 44), ("write-doc", 300, 4450)])
    def test_means(self, name: str, prompt: float, output: float) -> None:
        s = make_workload(name, 20_000, 0).stats()
        assert s["input_mean"] == pytest.approx(prompt, rel=0.05)
        assert s["output_mean"] == pytest.approx(output, rel=0.05)
        assert "SYNTHETIC" in WORKLOADS.help(name)

    def test_paper_contexts(self) -> None:
        """WildChat's mean context is PAM's 738; the online mix (with the paper's ShareGPT
        context 534) averages 183 + 299 tokens; Write_doc spans 1,500-8,000 tokens."""
        ctx = {n: make_workload(n, 20_000, 1) for n in ("wildchat", "humaneval", "write-doc")}
        wc = ctx["wildchat"].prompt_tokens + ctx["wildchat"].output_tokens
        assert wc.mean() == pytest.approx(738, rel=0.03)
        assert wc.max() <= 2048 and ctx["wildchat"].prompt_tokens.max() <= 1024
        he = ctx["humaneval"].prompt_tokens + ctx["humaneval"].output_tokens
        assert (wc.mean() + he.mean() + 534) / 3 == pytest.approx(183 + 299, rel=0.03)
        wd = ctx["write-doc"].prompt_tokens + ctx["write-doc"].output_tokens
        assert wd.min() >= 1500 and wd.max() <= 8000
        out, prompt = ctx["write-doc"].output_tokens, ctx["write-doc"].prompt_tokens
        assert out.min() >= 1500 - 1024 and np.mean(out > prompt) > 0.99  # short prompt


def test_gap_closer_solves_the_power_law_for_the_nearest_parameter():
    """A headline 2.0 against the paper's 4.0; parameter A moves it as factor^1 (needs 2x),
    B as factor^-2 (needs 2^-0.5 = 0.707x), C not at all: B is the one shown, at 0.707x."""
    from pimserve.experiments.reproduce.common import Headline, Parameter, gap_closers

    h = Headline("speed-up", paper=4.0, value=2.0, source="Fig. 1")
    sens = []
    for name, b in (("A", 1.0), ("B", -2.0), ("C", 0.0)):
        for f in (0.75, 1.25):
            sens.append({"param": name, "factor": f, "headline": "speed-up", "base": 2.0,
                         "value": 2.0 * f**b})
    params = [Parameter(n, f"{n} now", "", lambda p, f: p) for n in "ABC"]
    (c,) = gap_closers([h], sens, params)
    assert c["param"] == "B" and c["value"] == "B now"
    assert c["factor"] == pytest.approx(2 ** -0.5)
    assert c["interpolated"] is False  # 0.707 lies outside the +-25% runs: extrapolated
    ok = Headline("speed-up", paper=2.0, value=2.0, source="Fig. 1")
    assert gap_closers([ok], sens, params) == []  # within tolerance: nothing to close


def test_with_device_swaps_only_that_device():
    from pimserve.experiments.reproduce.common import with_device
    from pimserve.specs.catalog import load_system

    s = with_device("pam", "pam-hbm3-pim", "pam-hbm3-pim-per-die")
    assert [g.device for g in s.groups if g.tier == "hbm"] == ["pam-hbm3-pim-per-die"]
    assert [g.device for g in s.groups if g.tier != "hbm"] == [
        g.device for g in load_system("pam").groups if g.tier != "hbm"]
    assert with_device("papi", "pam-hbm3-pim", "pam-hbm3-pim-per-die") == "papi"  # untouched


def test_pam_per_die_reading_is_a_variant_that_only_touches_hbm_pim_systems():
    from pimserve.experiments.reproduce.common import Point
    from pimserve.experiments.reproduce.pam import PAMReproduction

    (v,) = PAMReproduction().variants()
    on = Point({"system": "pam"}, "pam", "llama3-70b", "arxiv-sum")
    off = Point({"system": "vllm-offload"}, "vllm-offload", "llama3-70b", "arxiv-sum")
    assert v.apply(off) is off  # no HBM-PIM: not run again
    moved = v.apply(on)
    assert any(g.device == "pam-hbm3-pim-per-die" for g in moved.system.groups)


def test_gap_closer_skips_headlines_at_zero_or_out_of_reach():
    from pimserve.experiments.reproduce.common import Headline, Parameter, gap_closers

    sens = [{"param": "A", "factor": f, "headline": "h", "base": 1.0, "value": 1.0 * f**1e-5}
            for f in (0.75, 1.25)]
    params = [Parameter("A", "a", "", lambda p, f: p)]
    assert gap_closers([Headline("h", paper=3.0, value=0.0, source="")], sens, params) == []
    # a parameter that barely moves it would need a factor of e^100000: not reported
    assert gap_closers([Headline("h", paper=3.0, value=1.0, source="")], sens, params) == []


def test_report_shares_causes_and_marks_missing_headlines_na(tmp_path):
    from pimserve.experiments.reproduce.common import (
        Headline,
        Reproduction,
        ReproductionResult,
        render_report,
    )

    class R(Reproduction):
        name, title = "x", "X"

    hs = [Headline("a", paper=2.0, value=1.0, source="s", cause="shared cause"),
          Headline("b", paper=3.0, value=1.0, source="s", cause="shared cause"),
          Headline("c", paper=3.0, value=float("nan"), source="s", cause="unused")]
    res = ReproductionResult("x", True, [], hs, [], [], tmp_path, 1.0)
    text = render_report(R(), res, [])
    assert text.count("shared cause") == 1  # written once for both headlines
    assert "n/a (not run)" in text and "unused" not in text
