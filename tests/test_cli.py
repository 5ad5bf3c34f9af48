"""The CLI: listings, `kernels`, and one-line errors for bad input (no tracebacks)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pimserve.cli.main import main


def run(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("cmd", ["models", "devices", "systems"])
def test_listings_json(cmd):
    r = run(cmd, "--format", "json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data


def test_models_lists_required_names():
    names = {m["name"] for m in json.loads(run("models", "--format", "json").output)}
    assert names >= {
        "llama-65b", "gpt3-66b", "gpt3-175b", "opt-66b", "opt-175b", "llama2-70b",
        "llama3-8b", "llama3-70b", "qwen2.5-32b", "mixtral-8x7b",
    }


def _kernels(rlp_tlp: int) -> dict:
    r = run("kernels", "--model", "llama-65b", "--rlp", str(rlp_tlp), "--tlp", "1",
            "--context", "1024", "--format", "json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_fc_moves_from_fc_pim_to_gpu_as_parallelism_grows():
    """Issue 2 must-show: FC faster on FC-PIM at RLPxTLP 1, on the GPU at 128."""
    for rt, winner in ((1, "papi-fc-pim-4p1b"), (128, "a100-hbm3")):
        data = _kernels(rt)
        for k in data["kernels"]:
            if k["kind"] == "fc" and k["name"] != "lm_head":
                assert winner in k["fastest"], (rt, k["name"], k["time_s"])


def test_attention_always_faster_on_attn_pim_than_gpu():
    for rt in (1, 16, 128):
        data = _kernels(rt)
        for k in data["kernels"]:
            if k["kind"] == "attention" and k["name"] != "attn_softmax":
                t = k["time_s"]
                gpu = next(v for g, v in t.items() if "a100" in g)
                attn = next(v for g, v in t.items() if "attn-pim" in g)
                assert attn < gpu, (rt, k["name"], t)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["kernels", "--model", "llama-56b"], "unknown model 'llama-56b'"),
        (["kernels", "--device", "a1000"], "unknown device 'a1000'"),
        (["kernels", "--system", "papy"], "unknown system 'papy'"),
        (["kernels", "--tlp", "0"], "--tlp must be a positive integer"),
    ],
)
def test_bad_input_is_one_line_no_traceback(args, needle):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2
    out = r.output.strip()
    assert needle in out and "Traceback" not in out
    assert len(out.splitlines()) == 1


def test_run_default_says_what_it_ran_and_json_has_every_metric():
    r = run("run", "--requests", "16", "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    for key in ("system", "model", "workload", "requests_total", "requests_completed",
                "requests_rejected", "preemptions", "output_tokens", "simulated_time_s",
                "throughput_tok_s", "ttft_ms", "tpot_ms", "latency_s", "energy_j",
                "energy_per_token_j", "time_breakdown_s", "fc_on_gpu_fraction", "wall_time_s"):
        assert key in d, key
    for key in ("ttft_ms", "tpot_ms", "latency_s"):
        assert set(d[key]) == {"mean", "p50", "p99"}
    assert set(d["time_breakdown_s"]) == {"fc_gpu", "fc_pim", "attention", "communication",
                                          "norms",
                                          "other"}
    assert (d["system"], d["model"], d["workload"]) == ("papi", "llama-65b", "dolly-creative")
    assert d["requests_completed"] == 16
    table = run("run", "--requests", "8")
    assert table.exit_code == 0 and "papi serving llama-65b on dolly-creative" in table.output


def test_run_with_a_trace_file(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 "2023-11-16 18:15:46.6805900,100,5\n2023-11-16 18:15:47.0000000,200,7\n")
    r = run("run", "--trace", str(p), "--trace-format", "azure", "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["output_tokens"] == 12 and d["config"]["batching"] == "continuous"


def test_compare_reports_speedups_over_the_baseline():
    r = run("compare", "--systems", "papi,a100-attacc", "--requests", "8", "--batch", "4",
            "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["baseline"] == "a100-attacc"
    sp = {x["system"]: x["speedup"] for x in d["runs"]}
    assert sp["a100-attacc"] == 1.0 and sp["papi"] > 1.0


def test_calibrate_json():
    r = run("calibrate", "--max-parallelism", "128", "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    a = d["alpha"]
    assert d["pim_time_s"][int(a) - 1] <= d["gpu_time_s"][int(a) - 1]
    assert d["pim_time_s"][int(a)] > d["gpu_time_s"][int(a)]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["run", "--tlp", "0", "--requests", "4"], "tlp"),
        (["run", "--rate", "-2", "--requests", "4"], "rate_per_s must be positive"),
        (["run", "--system", "nosuch"], "unknown system 'nosuch'"),
        (["run", "--trace", "/nonexistent.csv"], "nonexistent.csv"),
        (["compare", "--systems", "papi", "--baseline", "gpu-only"], "--baseline 'gpu-only'"),
    ],
)
def test_run_bad_input_is_one_line(args, needle):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    out = r.output.strip()
    assert needle in out and "Traceback" not in out and len(out.splitlines()) == 1
