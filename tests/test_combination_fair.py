"""The fair PAPI / PAM / PAPI+PAM systems (examples/systems/): one envelope, and what it shows.

The three files must keep the same GPUs, the same 90 HBM stacks, the same DDR-PIM and SSD-PIM
budget (PAPI's file leaves DDR/SSD unused, so its envelope is checked against the other two),
and they must show the trade-offs benchmarks/combination_fair.py measured: each property
below is a comparison that an edit to a device, a count or a policy could turn around.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import pimserve
from pimserve.engine.system import BuiltSystem
from pimserve.errors import ConfigurationError
from pimserve.specs.catalog import load_device
from pimserve.specs.system import SystemSpec
from pimserve.workload import Requests

ROOT = Path(__file__).resolve().parents[1]
FILES = {n: ROOT / "examples" / "systems" / f"fair-{n}.yaml" for n in ("papi", "pam", "papi-pam")}
MODEL = "llama3.1-70b"


def _system(name: str) -> SystemSpec:
    return pimserve.load_system(str(FILES[name]))


def _hbm_stacks(spec: SystemSpec) -> int:
    """HBM stacks outside the GPUs' own package: FC-PIM, Attn-PIM and HBM-tier groups."""
    n = 0
    for g in spec.groups:
        dev = load_device(g.device)
        if g.role != "gpu" and getattr(getattr(dev, "dram", None), "standard", "") == "HBM3":
            n += g.count
    return n


def _tier_count(spec: SystemSpec, tier: str) -> int:
    return sum(g.count for g in spec.groups if g.role == "kv_tier" and g.tier == tier)


def _batch(n: int, prompt: int, output: int) -> Requests:
    """``n`` identical requests at t = 0 (one static batch)."""
    return Requests.from_arrays(np.zeros(n), np.full(n, prompt), np.full(n, output))


def _decode_tok_s(name: str, reqs: Requests) -> float:
    r = pimserve.simulate(_system(name), MODEL, reqs, batch=len(reqs))
    assert r.requests_completed == len(reqs)
    return r.decode_throughput_tok_s


def test_the_three_systems_load_by_path_and_hold_the_model():
    for name, path in FILES.items():
        spec = pimserve.load_system(str(path))
        assert spec.name == f"fair-{name}"
        built = BuiltSystem.build(spec, pimserve.load_model(MODEL))
        assert built.weight_capacity_bytes >= pimserve.load_model(MODEL).weight_bytes


def test_the_envelope_is_shared():
    specs = {n: _system(n) for n in FILES}
    gpus = {n: (s.group("gpu").device, s.group("gpu").count, s.tensor_parallel,
                s.pipeline_parallel) for n, s in specs.items()}
    # 6x a100-hbm3 at TP 6 (PAPI 7.1) everywhere
    assert set(gpus.values()) == {("a100-hbm3", 6, 6, 1)}, gpus
    # PAPI 7.1's budget: 30 FC-PIM + 60 Attn-PIM = 90 = PAM's 90 HBM3-PIM = 30 FC-PIM + 60 PAM
    assert {n: _hbm_stacks(s) for n, s in specs.items()} == dict.fromkeys(FILES, 90)
    # PAM Table 1's DDR and SSD budget in both PAM-tiered designs; PAPI leaves it unused
    for n in ("pam", "papi-pam"):
        assert (_tier_count(specs[n], "ddr"), _tier_count(specs[n], "ssd")) == (40, 8), n
        ddr = next(g for g in specs[n].groups if g.tier == "ddr")
        ssd = next(g for g in specs[n].groups if g.tier == "ssd")
        assert (ddr.device, ddr.link, ddr.links, ssd.device, ssd.link) == (
            "pam-ddr4-pim", "pcie5", 6, "pam-ssd-pim", "nvme-pcie4x4")
    assert specs["papi"].tiers() == []
    # the combination takes PAPI's FC side unchanged and PAM's KV policy unchanged
    fc = {n: (s.group("fc_pim").device, s.group("fc_pim").count, s.policies.alpha)
          for n, s in specs.items() if s.group("fc_pim")}
    assert fc == {"papi": ("papi-fc-pim-4p1b", 30, 48.0),
                  "papi-pam": ("papi-fc-pim-4p1b", 30, 48.0)}
    assert specs["pam"].policies.kv == specs["papi-pam"].policies.kv


def _policies(spec: SystemSpec) -> dict:
    """The policy settings, without the free-text notes of where alpha, x and y come from."""
    d = spec.policies.model_dump()
    d.pop("alpha_source")
    d["kv"].pop("xy_source")
    return d


@pytest.mark.parametrize("preset", ["papi", "papi-pam"])
def test_papi_and_the_combination_are_their_presets_unchanged(preset):
    # their headers say the presets already sit on the envelope: only the names differ
    fair, ref = _system(preset), pimserve.load_system(preset)
    assert fair.groups == ref.groups
    assert (fair.tensor_parallel, fair.pipeline_parallel) == (ref.tensor_parallel,
                                                              ref.pipeline_parallel)
    assert _policies(fair) == _policies(ref)


def test_long_context_batch_beyond_attn_pim_is_refused_by_papi_and_served_by_the_others():
    # 64 requests of 60,000 + 8 tokens need 64 x 60,008 x 327,680 B = 1,258.5 GB of KV
    # (Llama-3.1-70B: 80 layers x 8 KV heads x 128 x 2 (K, V) x 2 B = 327,680 B per token);
    # PAPI's 60 Attn-PIM stacks hold 60 x 16 GiB = 1,030.8 GB: refused. papi-pam's 60 HBM-PIM
    # stacks hold the same 1,030.8 GB, so it spills the rest to DDR-PIM; PAM's 90 stacks hold
    # 1,546.2 GB minus 141.1 GB of weights = 1,405 GB: all of it in HBM-PIM
    reqs = _batch(64, 60_000, 8)
    with pytest.raises(ConfigurationError, match="KV"):
        pimserve.simulate(_system("papi"), MODEL, reqs, batch=64)
    peak = {}
    for name in ("pam", "papi-pam"):
        r = pimserve.simulate(_system(name), MODEL, reqs, batch=64)
        assert r.requests_completed == 64 and r.requests_rejected == 0
        peak[name] = r.extra["kv_peak_bytes_by_tier"]
    assert peak["pam"]["ddr"] == 0 and peak["pam"]["ssd"] == 0
    assert peak["papi-pam"]["ddr"] > 100e9 and peak["papi-pam"]["hbm"] > 1000e9


def test_where_the_combination_wins_and_loses():
    # measured by benchmarks/combination_fair.py; each ordering could turn around
    short, long_ = _batch(16, 256, 32), _batch(16, 32_768, 32)
    # short context, small batch: PAPI's dense Attn-PIM beats PAM's HBM-PIM (whose 8x sparse
    # reads of a few blocks leave most bank groups idle and whose 1.6 TFLOPS cap binds), and
    # FC-PIM beats the GPUs: papi > papi-pam > pam
    s = {n: _decode_tok_s(n, short) for n in FILES}
    assert s["papi"] > s["papi-pam"] > s["pam"], s
    # 32k context, small batch: sparse reads cut attention, FC-PIM cuts FC: papi-pam first
    lg = {n: _decode_tok_s(n, long_) for n in FILES}
    assert lg["papi-pam"] > lg["pam"] > lg["papi"], lg
    assert lg["papi-pam"] > 1.5 * lg["papi"], lg
