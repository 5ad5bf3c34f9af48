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
    # RLP 16 (below alpha 52): FC on FC-PIM, attention on Attn-PIM
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
