"""Specs: presets load, bad input gives one clear line naming the problem."""

from __future__ import annotations

import pytest

from pimserve.errors import SpecError, UnknownNameError
from pimserve.specs import (
    DRAMSpec,
    SystemSpec,
    list_devices,
    list_links,
    list_systems,
    load_device,
    load_model,
    load_system,
)
from pimserve.specs.base import load_yaml_spec, validate
from pimserve.specs.devices import GPUSpec


def test_every_preset_loads_and_every_system_resolves():
    assert {s.name for s in list_systems()} >= {
        "papi", "papi-pim-only", "a100-attacc", "a100-hbmpim", "attacc-only", "gpu-only",
    }
    for s in list_systems():
        load_system(s.name)  # checks that each group's device and link exist
    assert len(list_devices()) >= 10
    assert {lk.name for lk in list_links()} >= {"nvlink3", "nvlink4", "pcie4", "pcie5", "cxl"}


def test_papi_budget_is_90_hbm_devices():
    # PAPI 7.1: 30 FC-PIM + 60 Attn-PIM; baselines: 30 GPU HBM stacks (6 A100 x 5) + 60 PIM.
    for name in ("papi", "papi-pim-only", "attacc-only"):
        s = load_system(name)
        assert sum(g.count for g in s.groups if g.role != "gpu") == 90
    for name in ("a100-attacc", "a100-hbmpim"):
        s = load_system(name)
        assert s.group("gpu").count * 5 + s.group("attn").count == 90


def test_unknown_model_suggests_the_close_name():
    with pytest.raises(UnknownNameError) as e:
        load_model("llama-56b")
    msg = str(e.value)
    assert "unknown model 'llama-56b'" in msg and "llama-65b" in msg and "\n" not in msg


def test_unknown_device_and_system():
    with pytest.raises(UnknownNameError, match="unknown device 'a1000'; did you mean 'a100'"):
        load_device("a1000")
    with pytest.raises(UnknownNameError, match="unknown system 'papy'"):
        load_system("papy")


def test_wrong_unit_suffix_is_an_unknown_field_with_a_hint(tmp_path):
    p = tmp_path / "gpu.yaml"
    p.write_text(
        "kind: gpu\nname: mygpu\npeak_tflops: 100\nhbm_bw_tbps: 2\n"
        "hbm_capacity_gb: 80\nn_sms: 100\n"
    )
    with pytest.raises(SpecError) as e:
        load_device(str(p))
    msg = str(e.value)
    assert "unknown field 'hbm_bw_tbps'" in msg and "did you mean 'hbm_bw_gbps'" in msg
    assert str(p) in msg and "\n" not in msg


def test_wrong_value_names_field_and_value(tmp_path):
    p = tmp_path / "gpu.yaml"
    p.write_text(
        "kind: gpu\nname: g\npeak_tflops: -5\nhbm_bw_gbps: 2000\nhbm_capacity_gb: 80\nn_sms: 1\n"
    )
    with pytest.raises(SpecError, match=r"field 'peak_tflops'.*greater than 0.*-5"):
        load_yaml_spec(GPUSpec, p)


def test_malformed_yaml_names_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ngroups: [a, b\n")
    with pytest.raises(SpecError, match=r"bad.yaml: line \d+, column \d+: malformed YAML"):
        load_system(str(p))


def _dram(**over):
    base = dict(
        standard="HBM3", channels=16, pseudo_channels=2, ranks=2, bank_groups=4,
        banks_per_group=4, rows=16384, columns=32, burst_bytes=32, t_ck_ns=0.769,
        io_bw_gbps=670.4, t_rcd=19, t_rp=19, t_ras=45, t_ccd_s=2, t_ccd_l=4, t_rrd_s=2,
        t_rrd_l=4, t_faw=39, t_refi=5070, t_rfc=260, t_rtp=8,
    )
    base.update(over)
    return base


def test_dram_with_zero_banks_is_rejected():
    assert validate(DRAMSpec, _dram(), "x").banks == 1024
    with pytest.raises(SpecError) as e:
        validate(DRAMSpec, _dram(banks_per_group=0), "mydram.yaml")
    assert "field 'banks_per_group'" in str(e.value) and "greater than 0" in str(e.value)


def test_dram_timing_consistency():
    with pytest.raises(SpecError, match="t_ras"):
        validate(DRAMSpec, _dram(t_ras=10), "x")


def test_system_without_kv_holder_is_rejected():
    data = {"name": "s", "groups": [{"role": "gpu", "device": "a100", "count": 1,
                                     "holds": ["weights"]}]}
    with pytest.raises(SpecError, match="no group holds the KV cache"):
        validate(SystemSpec, data, "s.yaml")


def test_system_with_unknown_device(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(
        "name: s\ngroups:\n  - {role: gpu, device: b200, count: 2, holds: [weights, kv]}\n"
    )
    with pytest.raises(UnknownNameError, match="unknown device 'b200'"):
        load_system(str(p))
