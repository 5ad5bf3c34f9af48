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
