"""Timelines: the engine's per-iteration schedule and its Perfetto / Chrome trace-event JSON."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

import pimserve
from pimserve.cli.main import main
from pimserve.errors import ConfigurationError, SpecError
from pimserve.report.timeline import trace_events, write_timeline
from pimserve.specs import load_system
from pimserve.specs.base import validate
from pimserve.specs.system import SystemSpec

NAMING = {"process_name", "thread_name", "process_sort_index", "thread_sort_index"}


def validate_trace(doc: Any) -> dict[str, Any]:
    """Check ``doc`` against the trace-event JSON Object format as pimserve writes it; return
    {"tracks": {tid: name}, "slices": [X events], "iterations": {index: (ts, end)}}."""
    assert isinstance(doc, dict) and isinstance(doc.get("traceEvents"), list)
    assert doc.get("displayTimeUnit") in ("ms", "ns")
    names: dict[tuple[int, int], str] = {}
    process_named = set()
    xs = []
    for e in doc["traceEvents"]:
        assert isinstance(e, dict) and e.get("ph") in ("X", "M"), e
        if e["ph"] == "M":
            assert e["name"] in NAMING, e
            assert isinstance(e["pid"], int) and isinstance(e["tid"], int)
            if e["name"] == "thread_name":
                assert isinstance(e["args"]["name"], str) and e["args"]["name"], e
                names[(e["pid"], e["tid"])] = e["args"]["name"]
            elif e["name"] == "process_name":
                assert e["args"]["name"]
                process_named.add(e["pid"])
            continue
        for key in ("ph", "name", "ts", "dur", "pid", "tid"):
            assert key in e, (key, e)
        assert isinstance(e["name"], str) and e["name"]
        for key in ("ts", "dur"):
            v = e[key]
            assert isinstance(v, int | float) and not isinstance(v, bool), e
            assert math.isfinite(v) and v >= 0, e
        assert (e["pid"], e["tid"]) in names, f"slice on an unnamed track: {e}"
        assert e["pid"] in process_named
        xs.append(e)
    tracks = {tid: n for (_, tid), n in names.items()}
    its = {e["args"]["iteration"]: (e["ts"], e["ts"] + e["dur"])
           for e in xs if e.get("cat") == "iteration"}
    eps = 1e-6  # us: times are written to the ns; ts + dur may round one ulp past the end
    for e in xs:
        lo, hi = its[e["args"]["iteration"]]
        assert lo <= e["ts"] and e["ts"] + e["dur"] <= hi + eps, (e, lo, hi)
    # slices on one track never overlap (serial work); the trace needs no nesting
    by_track: dict[int, list[tuple[float, float]]] = {}
    for e in xs:
        by_track.setdefault(e["tid"], []).append((e["ts"], e["ts"] + e["dur"]))
    for spans in by_track.values():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end - eps, (end, start)
    return {"tracks": tracks, "slices": xs, "iterations": its}


def track_names(v: dict[str, Any]) -> dict[str, set[str]]:
    """track name -> slice names on it."""
    out: dict[str, set[str]] = {n: set() for n in v["tracks"].values()}
    for e in v["slices"]:
        out[v["tracks"][e["tid"]]].add(e["name"])
    return out


def small_tiers() -> SystemSpec:
    """PAM's tiers, small enough that LLaMA3-8B's KV on arxiv-sum fills HBM, DDR and SSD."""
    d = load_system("pam").model_dump()
    d["name"] = "small-tiers"
    d["tensor_parallel"], d["pipeline_parallel"] = 1, 1
    d["groups"][0]["count"] = 1
    d["groups"][1]["count"] = 2
    d["groups"][2]["count"] = 1
    d["groups"][3]["count"] = 1
    return validate(SystemSpec, d, "system")


def pam_run(**kw: Any) -> pimserve.RunResult:
    return pimserve.simulate(small_tiers(), "llama3-8b", "arxiv-sum", n_requests=256, batch=256,
                             batching="continuous", max_iterations=12, **kw)


@pytest.fixture(scope="module")
def papi_run() -> pimserve.RunResult:
    return pimserve.simulate("papi", "llama-65b", "dolly-creative", n_requests=16, batch=16,
                             timeline_steps=(0, 6), record_steps=True)


def test_papi_trace_is_valid_with_gpu_fc_pim_attention_and_link_tracks(papi_run) -> None:
    doc = json.loads(json.dumps(trace_events(papi_run)))  # survives a JSON round trip
    v = validate_trace(doc)
    tracks = track_names(v)
    gpu = next(n for n in tracks if n.startswith("GPU"))
    fc_pim = next(n for n in tracks if n.startswith("FC-PIM"))
    attn = next(n for n in tracks if n.startswith("Attn-PIM"))
    link = next(n for n in tracks if "attention" in n and n.startswith("Link"))
    ar = next(n for n in tracks if "all-reduce" in n)
    # iteration 0 is the batch's prefill (on the GPUs, KV written to Attn-PIM); then decode at
    # RLP 16 (below alpha 48): FC on FC-PIM, attention on Attn-PIM
    assert {"qkv", "o_proj", "ffn", "lm_head", "prefill-attention"} <= tracks[gpu]
    assert {"qkv", "o_proj", "ffn", "lm_head"} <= tracks[fc_pim]
    assert tracks[attn] == {"attention"}
    assert {"qkv-transfer", "out-transfer", "prefill-kv-write"} <= tracks[link]
    assert tracks[ar] == {"allreduce"}
    assert sorted(v["iterations"]) == list(range(6))
    for e in v["slices"]:
        assert {"iteration", "rlp", "tlp"} <= set(e["args"])
    att = next(e for e in v["slices"] if e["name"] == "attention")
    assert att["args"]["rlp"] == 16 and att["args"]["layers"] == 80


def test_slices_add_up_to_the_iteration_time_as_priced(papi_run) -> None:
    """Serial layout: the last slice of an iteration ends where the iteration does, and the
    FC slices on each side add up to the step's FC time (record_steps)."""
    steps = papi_run.extra["steps"]
    v = validate_trace(trace_events(papi_run))
    for i, (lo, hi) in v["iterations"].items():
        mine = [e for e in v["slices"] if e["args"]["iteration"] == i and e["cat"] != "iteration"]
        assert max(e["ts"] + e["dur"] for e in mine) == pytest.approx(hi, abs=2e-3)
        assert hi - lo == pytest.approx(steps["time_s"][i] * 1e6, abs=2e-3)
        for track, key in (("GPU", "fc_gpu_s"), ("FC-PIM", "fc_pim_s")):
            fc = sum(e["dur"] for e in mine
                     if v["tracks"][e["tid"]].startswith(track) and e["cat"] == "fc")
            assert fc == pytest.approx(steps[key][i] * 1e6, rel=1e-6, abs=1e-2)


def test_per_layer_detail_repeats_the_layer() -> None:
    r = pimserve.simulate("papi", "llama-65b", "dolly-creative", n_requests=4, batch=4,
                          timeline_steps=(1, 2))
    phases = validate_trace(trace_events(r, "phases"))
    layers = validate_trace(trace_events(r, "layers"))
    qkv = [e for e in layers["slices"] if e["name"] == "qkv"]
    assert len(qkv) == 80 and [e["args"]["layer"] for e in qkv] == list(range(80))
    total = sum(e["dur"] for e in layers["slices"] if e["cat"] != "iteration")
    assert total == pytest.approx(sum(e["dur"] for e in phases["slices"]
                                      if e["cat"] != "iteration"), rel=1e-6)


def test_pam_trace_has_every_tier_in_parallel_and_kv_links(tmp_path: Path) -> None:
    r = pam_run(timeline_steps=(8, 12))
    assert all(r.kv_bytes_by_tier[t] > 0 for t in ("hbm", "ddr", "ssd"))
    path = tmp_path / "pam.json"
    n = write_timeline(r, path)
    v = validate_trace(json.loads(path.read_text()))
    assert n == len(v["slices"])
    tracks = track_names(v)
    tiers = {t: next(n for n in tracks if n.startswith(f"KV tier {t}")) for t in
             ("hbm", "ddr", "ssd")}
    for name in tiers.values():
        assert "attention" in tracks[name]
    assert "kv-migration" in tracks["Link KV migration (between tiers)"]
    assert "kv-write" in tracks["Link KV writes to lower tiers"]
    # the tiers' attention of one iteration starts together (PAMattention runs them at once)
    starts = {}
    for e in v["slices"]:
        if e["name"] == "attention" and e["args"]["iteration"] == 10:
            starts[e["args"]["tier"]] = e["ts"]
    assert set(starts) == {"hbm", "ddr", "ssd"} and len(set(starts.values())) == 1


def test_kv_layer_draws_partials_and_the_reduction_as_priced() -> None:
    """In a layer, each tier's partial results leave after its local attention, the
    reduction ends the layer's attention, and the attention lasts the slowest tier's
    attention and partials plus the reduction, as the KV step priced it."""
    r = pam_run(timeline_steps=(8, 10), record_steps=True)
    tl = r.extra["timeline"]
    for it in tl["iterations"]:
        layer = it["layer"]
        attn = {a["tier"]: (t0, d) for tr, name, t0, d, a in layer if name == "attention"}
        parts = {a["tier"]: (t0, d) for tr, name, t0, d, a in layer if name == "partials"}
        red = [(t0, d) for tr, name, t0, d, a in layer if name == "attention-reduction"]
        assert {"ddr", "ssd"} <= set(parts), "lower tiers send partial results to HBM-PIM"
        start = min(t0 for t0, _ in attn.values())
        for tier, (t0, _d) in parts.items():
            assert t0 == pytest.approx(attn[tier][0] + attn[tier][1])
        slowest = max(t0 + d for t0, d in list(attn.values()) + list(parts.values()))
        (r0, rd), = red
        assert r0 == pytest.approx(slowest) and rd > 0
        end_of_attention = next(t0 for tr, name, t0, d, a in layer
                                if t0 >= r0 + rd - 1e-15 and name not in ("attention",
                                                                          "partials"))
        assert end_of_attention == pytest.approx(r0 + rd)
        assert r0 + rd - start > 0


def test_fixed_tiling_partials_leave_hbm_pim_on_a_named_track() -> None:
    """LS-PIM (sparse reads, no PAMattention) with HBM-PIM as its only tier, which has no
    link: each read block's partial crosses HBM-PIM's own I/O after the tier's attention, on
    the named partial-results track."""
    d = load_system("ls-pim").model_dump()
    d["name"] = "ls-pim-hbm-only"
    d["groups"] = d["groups"][:2]  # the GPUs and the HBM-PIM tier
    spec = validate(SystemSpec, d, "system")
    r = pimserve.simulate(spec, "llama3-70b", "arxiv-sum", n_requests=16, batch=16,
                          batching="static", max_iterations=4, timeline_steps=(2, 3))
    names = track_names(validate_trace(trace_events(r)))
    assert "partials" in names["Link attention partial results (tiers -> merge)"]
    layer = r.extra["timeline"]["iterations"][0]["layer"]
    (_, _, a0, ad, _), = [s for s in layer if s[1] == "attention" and s[0] == "tier:hbm"]
    (_, _, p0, pd, _), = [s for s in layer if s[1] == "partials"]
    assert p0 == pytest.approx(a0 + ad) and pd > 0


def test_offloaded_fetch_is_drawn_beside_the_gpu_attention() -> None:
    r = pimserve.simulate("vllm-offload", "llama3-70b", "arxiv-sum", n_requests=1024,
                          batch=1024, batching="static", max_iterations=2, timeline_steps=(1, 2))
    layer = r.extra["timeline"]["iterations"][0]["layer"]
    fetch = [s for s in layer if s[1] == "kv-fetch"]
    gpu_attn = [s for s in layer if s[1] == "attention"]
    assert fetch and gpu_attn, "the KV beyond the GPUs' memory is fetched each step"
    assert fetch[0][2] == pytest.approx(gpu_attn[0][2])  # they start together
    assert fetch[0][4]["fetch_us"] > 0


def test_nothing_recorded_without_a_window() -> None:
    r = pimserve.simulate("papi", "llama-65b", "dolly-creative", n_requests=4, batch=4)
    assert "timeline" not in r.extra
    with pytest.raises(ConfigurationError, match="no timeline"):
        trace_events(r)


def test_window_past_the_run_is_empty_and_warned() -> None:
    r = pimserve.simulate("papi", "llama-65b", "dolly-creative", n_requests=4, batch=4,
                          timeline_steps=(10_000, 10_010))
    assert r.extra["timeline"]["iterations"] == []
    assert any("timeline window" in w for w in r.warnings)
    v = validate_trace(trace_events(r))
    assert v["slices"] == [] and v["tracks"]


@pytest.mark.parametrize("steps", ["5:2", "3:3", "-1:4", "a:b", "7", (1, 2, 3)])
def test_bad_windows_from_python(steps: Any) -> None:
    with pytest.raises(SpecError, match="timeline_steps must be A:B"):
        pimserve.simulate("papi", "llama-65b", "dolly-creative", n_requests=4,
                          timeline_steps=steps)


def test_cli_writes_a_valid_timeline_for_a_pam_system_file(tmp_path: Path) -> None:
    sys_file = tmp_path / "small-tiers.yaml"
    sys_file.write_text(yaml.safe_dump(small_tiers().model_dump()))
    out = tmp_path / "run.json"
    res = CliRunner().invoke(main, [
        "run", "--system", str(sys_file), "--model", "llama3-8b", "--workload", "arxiv-sum",
        "--requests", "256", "--batch", "256", "--batching", "continuous",
        "--max-iterations", "12", "--timeline", str(out), "--timeline-steps", "9:12",
        "--format", "json",
    ])
    assert res.exit_code == 0, res.output
    assert "timeline" not in json.loads(res.output)["extra"]  # it went to its own file
    v = validate_trace(json.loads(out.read_text()))
    assert sorted(v["iterations"]) == [9, 10, 11]
    assert {"KV tier hbm", "KV tier ddr", "KV tier ssd"} <= {
        " ".join(n.split()[:3]) for n in v["tracks"].values()}


def test_cli_compare_draws_every_system_as_its_own_process(tmp_path: Path) -> None:
    """compare --timeline: one trace, one process per system (named by it, in --systems
    order), each a valid timeline of the same iterations; the results keep no timeline."""
    out = tmp_path / "cmp.json"
    res = CliRunner().invoke(main, [
        "compare", "--systems", "papi,a100-attacc", "--requests", "8", "--batch", "8",
        "--timeline", str(out), "--timeline-steps", "2:5", "--format", "json",
    ])
    assert res.exit_code == 0, res.output
    assert all("timeline" not in run["result"]["extra"] for run in json.loads(res.output)["runs"])
    doc = json.loads(out.read_text())
    names = {e["pid"]: e["args"]["name"] for e in doc["traceEvents"]
             if e["ph"] == "M" and e["name"] == "process_name"}
    assert [names[p].split(":")[0] for p in sorted(names)] == ["papi", "a100-attacc"]
    tracks = {}
    for pid in names:
        one = {**doc, "traceEvents": [e for e in doc["traceEvents"] if e["pid"] == pid]}
        v = validate_trace(one)
        assert sorted(v["iterations"]) == [2, 3, 4]
        tracks[names[pid].split(":")[0]] = set(v["tracks"].values())
    assert any(t.startswith("FC-PIM") for t in tracks["papi"])
    assert not any(t.startswith("FC-PIM") for t in tracks["a100-attacc"])


def test_cli_default_window_is_the_first_50_iterations(tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    res = CliRunner().invoke(main, ["run", "--requests", "16", "--timeline", str(out)])
    assert res.exit_code == 0, res.output
    assert "timeline: " in res.output and "iterations 0..49" in res.output
    v = validate_trace(json.loads(out.read_text()))
    assert sorted(v["iterations"]) == list(range(50))


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--timeline-steps", "5:2"], "--timeline-steps must be A:B"),
        (["--timeline-steps", "x:10"], "--timeline-steps must be A:B"),
        (["--timeline-steps", "10"], "--timeline-steps must be A:B"),
        ([], "--timeline-steps needs --timeline PATH"),
    ],
)
def test_cli_bad_timeline_steps_is_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    extra = ["--timeline", str(tmp_path / "t.json")] if args else ["--timeline-steps", "0:5"]
    res = CliRunner().invoke(main, ["run", "--requests", "4", *extra, *args])
    assert res.exit_code == 2
    out = res.output.strip()
    assert needle in out and "Traceback" not in out and len(out.splitlines()) == 1
    assert not (tmp_path / "t.json").exists()
