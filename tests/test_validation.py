"""Kernel models against the AttAcc/Ramulator cycle-level reference, and the dataflow's
placement arithmetic by hand (which also holds for models the reference does not include)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pimserve.cli.main import main
from pimserve.errors import ConfigurationError
from pimserve.experiments.validation import (
    batch_for_pairs_per_stack,
    layer_kernels,
    validate_attacc,
)
from pimserve.hardware.cost import cost_model_for
from pimserve.hardware.group import GroupModel
from pimserve.specs.catalog import load_device, load_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "validation" / "attacc"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="AttAcc reference data not present")


@pytest.fixture(scope="module")
def validation():
    return validate_attacc(DATA)


@needs_data
def test_pim_attention_within_5_percent_no_point_beyond_12(validation):
    s = validation.sections()
    assert s["PIM attention (all)"]["points"] >= 390  # every row of the reference
    assert s["PIM attention (all)"]["gmean_error"] <= 0.05
    for kind in ("BA", "BG", "BUFFER"):
        assert s[f"PIM attention ({kind})"]["max_error"] <= 0.12


@needs_data
def test_gpu_attention_within_5_percent(validation):
    s = validation.sections()["GPU attention"]
    assert s["points"] == 9 and s["gmean_error"] <= 0.05


@needs_data
def test_cli_validate_json_has_every_section():
    r = CliRunner().invoke(main, ["validate", "attacc", "--data", str(DATA), "--format", "json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert {"PIM attention (BA)", "PIM attention (BG)", "PIM attention (BUFFER)",
            "GPU attention"} <= set(out["sections"])
    assert all(p["ratio"] > 0 for p in out["points"])


def test_cli_validate_without_data_says_which_folder(tmp_path):
    r = CliRunner().invoke(main, ["validate", "attacc", "--data", str(tmp_path / "nope")])
    assert r.exit_code != 0
    assert "not a folder" in r.output and "--data" in r.output
    (tmp_path / "d").mkdir()
    r = CliRunner().invoke(main, ["validate", "attacc", "--data", str(tmp_path / "d")])
    assert r.exit_code != 0 and "pim_attention_per_layer_per_stack.csv" in r.output


def test_batch_for_pairs_per_stack_inverts_attacc_spread():
    assert [batch_for_pairs_per_stack(n, 64, 40) for n in (7, 26, 103)] == [4, 16, 64]
    with pytest.raises(ConfigurationError):
        batch_for_pairs_per_stack(3, 64, 40)  # 1 request: 2 pairs a stack, 2 requests: 4


def _layer_s(dev: str, model: str, batch: int, ctx: int, stacks: int) -> float:
    g = GroupModel("attn", cost_model_for(load_device(dev)), stacks)
    return float(g.layer_attention(layer_kernels(load_model(model), batch, ctx)).time_s)


def test_head_per_channel_rounds_by_hand_on_gpt3():
    """GPT-3 175B (96 heads of 128), bank-level AttAcc, 10 stacks x 16 channels = 160 slots.

    One pair at context 4096 on a channel: score and context each read ceil(4096 / 16) x
    ceil(128 / 64) = 512 bursts per bank = 16 full rows of 170 tCK = 2720 tCK; the softmax's
    broadcasts (8 query + 8 x 16 probability bursts at 2 tCK) are paid once: 272 tCK.
    Batch 1: 96 pairs, 1 round: 5440 + 272 = 5712 tCK, which holds one refresh (494 tCK).
    Batch 4: 384 pairs, 3 rounds: 16320 + 272 = 16592 tCK, 3 refreshes.
    """
    tck = 0.769e-9
    one = _layer_s("hbm3-attacc-1p1b", "gpt3-175b", 1, 4096, 10)
    softmax_s = 1 * 4096 * 96 / 96 * 2 / 670.4e9  # one head's scores over the I/O
    assert one == pytest.approx((5712 + 494) * tck + softmax_s, rel=1e-9)
    four = _layer_s("hbm3-attacc-1p1b", "gpt3-175b", 4, 4096, 10)
    assert four == pytest.approx((16592 + 3 * 494) * tck + softmax_s, rel=1e-9)
    # idle channels: batch 1 fills 96 of 160 channels, so batch 1 and 1.6 cost the same
    assert math.ceil(96 / 160) == math.ceil(160 / 160)


def test_head_per_channel_longest_first_over_unequal_contexts():
    """Pairs are dealt longest first over the channels: with 2 requests (64 pairs each) on 8
    stacks x 16 channels, every pair has its own channel: the layer is the longest request's."""
    m = load_model("llama-65b")
    g = GroupModel("attn", cost_model_for(load_device("hbm3-attacc-1p1b")), 8)
    ks = [type(k)(k.op, np.ones(2, dtype=np.int64), np.array([1000, 3000]), k.n_heads,
                  k.n_kv_heads, k.head_dim) for k in layer_kernels(m, 2, 1)]
    both = float(g.layer_attention(ks).time_s)
    alone = _layer_s("hbm3-attacc-1p1b", "llama-65b", 1, 3000, 8)
    assert both == pytest.approx(alone, rel=1e-12)
