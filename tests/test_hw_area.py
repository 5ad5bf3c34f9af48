"""Hardware cost of a design (``pimserve.hardware.area``) against hand arithmetic.

Unit areas (mm²): A_FPU 0.1025, A_bank 0.83, HBM die 121 (PAPI §4.2); PAM HBM PU 0.13,
RU 0.18; DDR PU 0.46, RU 0.68, chip 100; SSD 8.16 for 64 PUs + 8 RUs = 7.59% of the
controller (PAM §7 area).

Structures: an AttAcc-organised HBM3 stack has 16 ch x 2 pch x 2 ranks x 4 BG x 4 banks =
1024 banks on 4 dies per rank x 2 ranks = 8 dies, so 128 banks (32 bank groups) per die.
PAPI's FC-PIM keeps 3 bank groups: 768 banks, 96 per die. PAM's DDR4 DIMM: 2 ranks x 8 chips
= 16 chips of 2 BG x 4 banks = 8 banks each.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from pimserve.errors import ConfigurationError, PimserveError
from pimserve.hardware.area import (
    PAPI_HBM_POWER_W_UNVERIFIED,
    AreaBudget,
    DesignCost,
    DeviceArea,
    _pim_power_parts_w,
    design_cost,
)
from pimserve.specs.catalog import list_systems, load_device
from pimserve.specs.devices import PIMSpec
from pimserve.specs.system import SystemSpec


def _by_device(cost: DesignCost) -> dict[str, DeviceArea]:
    return {d.device: d for d in cost.devices}


def _pim(name: str) -> PIMSpec:
    s = load_device(name)
    assert isinstance(s, PIMSpec)
    return s


def _variant(tmp: Path, base: str, count: int = 1, **changes: Any) -> SystemSpec:
    """A one-group system whose device is preset ``base`` with ``changes`` (``dram__x`` for a
    DRAM field), written as a device YAML file, as a sweep would."""
    data = load_device(base).model_dump(mode="json")
    for key, value in changes.items():
        if key.startswith("dram__"):
            data["dram"][key[6:]] = value
        else:
            data[key] = value
    tag = "-".join(f"{k}{v}" for k, v in changes.items()) or "same"
    data["name"] = f"{base}-{tag}"
    path = tmp / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return SystemSpec(
        name="sweep",
        groups=[{"role": "attn", "device": str(path), "count": count,
                 "holds": ["weights", "kv"]}],
    )


# --------------------------------------------------------------------------------------------
# PAM's area figures from the device structure
# --------------------------------------------------------------------------------------------
def test_pam_hbm_die_reproduces_pams_area_line(tmp_path):
    """PAM §7: 64 PUs x 0.13 + 16 RUs x 0.18 = 8.32 + 2.88 = 11.2 mm² = 9.256% of 121 mm².

    From the structure: 128 banks per die / 2 banks per PU = 64 PUs; 32 bank groups per die x
    0.5 RU per bank group (the count PAM's area line implies) = 16 RUs."""
    d = design_cost(_variant(tmp_path, "pam-hbm3-pim", reduction_units_per_bank_group=0.5))
    (hbm,) = d.devices
    assert hbm.kind == "hbm"
    assert hbm.pim_logic_mm2_per_die == pytest.approx(11.2)
    assert hbm.die_area_mm2 == 121.0
    assert hbm.area_fraction == pytest.approx(11.2 / 121)  # 0.09256
    assert round(100 * hbm.area_fraction, 2) == 9.26
    assert hbm.pim_logic_mm2_total == pytest.approx(11.2 * 8)  # 8 dies, one stack


def test_pam_hbm_preset_counts_one_ru_per_bank_group():
    """The shipped preset reads PAM §5.2's "1 RU per bank group": 32 RUs per die.

    64 x 0.13 + 32 x 0.18 = 8.32 + 5.76 = 14.08 mm² = 11.64% (not PAM's 9.25%);
    40 stacks x 8 dies x 14.08 = 4505.6 mm²."""
    hbm = _by_device(design_cost("pam"))["pam-hbm3-pim"]
    assert hbm.pim_logic_mm2_per_die == pytest.approx(14.08)
    assert hbm.area_fraction == pytest.approx(14.08 / 121)
    assert hbm.pim_logic_mm2_total == pytest.approx(4505.6)


def test_pam_ddr_chip_and_ssd_controller():
    """DDR: 8 PUs x 0.46 + 2 RUs x 0.68 = 3.68 + 1.36 = 5.04 mm² = 5.04% of 100 mm²;
    40 DIMMs x 16 chips x 5.04 = 3225.6 mm².
    SSD: 64 PUs + 8 RUs = 8.16 mm² = 7.59% of the controller; 8 SSDs x 8.16 = 65.28 mm²."""
    c = _by_device(design_cost("pam"))
    ddr, ssd = c["pam-ddr4-pim"], c["pam-ssd-pim"]
    assert (ddr.kind, ddr.count) == ("ddr", 40)
    assert ddr.pim_logic_mm2_per_die == pytest.approx(5.04)
    assert ddr.area_fraction == pytest.approx(0.0504)
    assert ddr.pim_logic_mm2_total == pytest.approx(3225.6)
    assert (ssd.kind, ssd.count) == ("ssd", 8)
    assert ssd.pim_logic_mm2_per_die == pytest.approx(8.16)
    assert ssd.area_fraction == pytest.approx(0.0759)
    assert ssd.pim_logic_mm2_total == pytest.approx(65.28)
    # the system total adds the tiers (the H100s add nothing): 4505.6 + 3225.6 + 65.28
    assert design_cost("pam").pim_logic_mm2 == pytest.approx(7796.48)


# --------------------------------------------------------------------------------------------
# PAPI's area argument
# --------------------------------------------------------------------------------------------
def test_papi_4p1b_and_1p2b_area_fractions():
    """FC-PIM 4P1B: 96 banks x 4 FPUs = 384 FPUs x 0.1025 = 39.36 mm² = 32.53% of 121;
    Attn-PIM 1P2B: 128 banks / 2 = 64 FPUs x 0.1025 = 6.56 mm² = 5.42%. Ratio 384/64 = 6.
    Totals: 30 x 8 x 39.36 + 60 x 8 x 6.56 = 9446.4 + 3148.8 = 12595.2 mm²."""
    c = design_cost("papi")
    d = _by_device(c)
    fc, attn = d["papi-fc-pim-4p1b"], d["papi-attn-pim-1p2b"]
    assert fc.pim_logic_mm2_per_die == pytest.approx(39.36)
    assert fc.area_fraction == pytest.approx(39.36 / 121)  # 0.3253
    assert attn.pim_logic_mm2_per_die == pytest.approx(6.56)
    assert attn.area_fraction == pytest.approx(6.56 / 121)  # 0.0542
    assert fc.area_fraction / attn.area_fraction == pytest.approx(6.0)
    assert c.pim_logic_mm2 == pytest.approx(12595.2)
    assert d["a100-hbm3"].pim_logic_mm2_total == 0.0  # GPUs add no PIM area


def test_papi_die_fit_needs_three_bank_groups_for_4p1b(tmp_path):
    """PAPI §4.2: m x (n x A_FPU + A_bank) <= 121. 4P1B: 96 x (0.41 + 0.83) = 119.04 fits;
    with 4 bank groups 128 x 1.24 = 158.72 does not. 1P1B: 128 x 0.9325 = 119.36 fits."""
    assert design_cost("papi").over_budget == ()
    four = design_cost(_variant(tmp_path, "papi-fc-pim-4p1b", dram__bank_groups=4))
    (reason,) = four.over_budget
    assert "HBM die 158.7 mm²" in reason and "PAPI §4.2" in reason
    assert reason.startswith("papi-fc-pim-4p1b-dram__bank_groups4: ")
    assert design_cost("a100-attacc").over_budget == ()
    # turning the check off lifts the flag
    no_fit = AreaBudget(hbm_die_max_mm2=None)
    assert design_cost(_variant(tmp_path, "papi-fc-pim-4p1b", dram__bank_groups=4),
                       no_fit).over_budget == ()


def test_area_grows_with_pus_per_bank_and_banks(tmp_path):
    """Logic per die is linear in FPUs per die: 128 banks x n x 0.1025 = 13.12 n mm² for
    nP1B; 1P2B/1P4B divide by 2/4; 1..4 bank groups give 32..128 banks x 0.1025."""
    areas = [design_cost(_variant(tmp_path, "hbm3-attacc-1p1b", fpus_per_bank=n))
             .devices[0].pim_logic_mm2_per_die for n in (1, 2, 4, 8)]
    assert areas == pytest.approx([13.12 * n for n in (1, 2, 4, 8)])
    assert all(a < b for a, b in itertools.pairwise(areas))
    shared = [design_cost(_variant(tmp_path, "hbm3-attacc-1p1b", banks_per_fpu=k))
              .devices[0].pim_logic_mm2_per_die for k in (1, 2, 4)]
    assert shared == pytest.approx([13.12, 6.56, 3.28])
    by_bg = [design_cost(_variant(tmp_path, "hbm3-attacc-1p1b", dram__bank_groups=g))
             .devices[0].pim_logic_mm2_per_die for g in (1, 2, 3, 4)]
    assert by_bg == pytest.approx([32 * g * 0.1025 for g in (1, 2, 3, 4)])
    # more stacks: the total scales with the count, the per-die figure does not
    ten = design_cost(_variant(tmp_path, "papi-attn-pim-1p2b", count=10)).devices[0]
    assert ten.pim_logic_mm2_total == pytest.approx(6.56 * 8 * 10)


# --------------------------------------------------------------------------------------------
# Budgets
# --------------------------------------------------------------------------------------------
def test_over_budget_flags_name_the_device_and_the_limit():
    """A 25% HBM area budget flags FC-PIM (32.5%) and not Attn-PIM (5.4%); a 45 W power
    budget flags AttAcc 1P1B (48.6 W) and neither PAPI device (40.3 W, 24.3 W)."""
    c = design_cost("papi", AreaBudget(max_area_fraction={"hbm": 0.25}))
    assert c.over_budget == (
        "papi-fc-pim-4p1b: area 32.5% of the HBM die (39.36 of 121.0 mm²) > 25% budget",
    )
    assert _by_device(c)["papi-attn-pim-1p2b"].over_budget == ()
    watts = AreaBudget(max_power_w_per_device={"hbm": 45})
    (reason,) = design_cost("a100-attacc", watts).over_budget
    assert reason == "hbm3-attacc-1p1b: PIM power 48.6 W per device > 45 W budget"
    assert design_cost("papi", watts).over_budget == ()
    # a DDR budget does not touch HBM devices
    assert design_cost("papi", AreaBudget(max_area_fraction={"ddr": 0.01})).over_budget == ()
    assert len(design_cost("pam", AreaBudget(max_area_fraction={"ddr": 0.05})).over_budget) == 1


def test_unverified_papi_power_is_only_an_option():
    assert AreaBudget().max_power_w_per_device == {}
    b = AreaBudget.papi_hbm_power_unverified()
    assert b.max_power_w_per_device == {"hbm": PAPI_HBM_POWER_W_UNVERIFIED} == {"hbm": 116.0}
    assert b.hbm_die_max_mm2 == 121.0
    # budgets are values: equal budgets hash alike (usable as sweep cache keys)
    assert hash(AreaBudget(max_area_fraction={"hbm": 0.2})) == hash(
        AreaBudget(max_area_fraction={"hbm": 0.2}))


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"max_area_fraction": {"lpddr": 0.1}}, "unknown die kind 'lpddr'"),
    ({"max_area_fraction": {"hbm": 1.5}}, r"max_area_fraction\['hbm'\] must be in \(0, 1\]"),
    ({"max_power_w_per_device": {"hbm": -3}}, "must be a finite number > 0"),
    ({"max_power_w_per_device": {"hbm": math.nan}}, "must be a finite number > 0"),
    ({"hbm_die_max_mm2": 0}, "hbm_die_max_mm2 must be"),
    ({"max_area_fraction": 0.2}, "must be a mapping"),
])
def test_bad_budgets_are_refused(kwargs, field):
    with pytest.raises(ConfigurationError, match=field):
        AreaBudget(**kwargs)


def test_bad_inputs_raise_pimserve_errors(tmp_path):
    with pytest.raises(PimserveError, match="unknown system 'papii'"):
        design_cost("papii")
    with pytest.raises(ConfigurationError, match="budget must be an AreaBudget"):
        design_cost("papi", {"hbm": 0.2})  # type: ignore[arg-type]
    lp = _variant(tmp_path, "pam-ddr4-pim", dram__standard="LPDDR5")
    with pytest.raises(ConfigurationError, match=r"field 'dram\.standard' is 'LPDDR5'"):
        design_cost(lp)


# --------------------------------------------------------------------------------------------
# Power at the peak PIM rate
# --------------------------------------------------------------------------------------------
def test_attacc_1p1b_power_by_hand():
    """t_op = max(4 x 0.769 ns, 1 / 666 MHz) = 3.076 ns; 1024 banks / 3.076 ns = 3.329e11
    bursts/s x 256 bit x 0.55 pJ = 46.87 W; x 16 MACs x 0.32 pJ = 1.705 W; 48.58 W."""
    bursts = 1024 / 3.076e-9
    expect = bursts * 256 * 0.55e-12 + bursts * 16 * 0.32e-12
    dev = _by_device(design_cost("a100-attacc"))["hbm3-attacc-1p1b"]
    assert dev.power_w_per_device == pytest.approx(expect)
    assert dev.power_w_per_device == pytest.approx(48.58, abs=0.01)
    assert design_cost("a100-attacc").pim_power_w == pytest.approx(60 * expect)


def test_capped_pam_devices_power_by_hand():
    """PAM HBM at its 1.6 TFLOPS cap: 0.8e12 MAC/s = 5e10 bursts/s (16 MACs each);
    DRAM 5e10 x 256 x 0.55 pJ = 7.04 W; PU ops 3 reads each: 0.8e12 x 3 x 16 x 0.55 pJ =
    21.12 W; 28.16 W. SSD: 32 pages x 16 KiB / 30 us = 17.476 GB/s x 8 x (18.9 + 4.0) pJ =
    3.2016 W, plus 9e9 MAC/s x 0.32 pJ = 2.9 mW."""
    c = _by_device(design_cost("pam"))
    assert c["pam-hbm3-pim"].power_w_per_device == pytest.approx(28.16)
    ssd = 32 * 16384 / 30e-6 * 8 * 22.9e-12 + 9e9 * 0.32e-12
    assert c["pam-ssd-pim"].power_w_per_device == pytest.approx(ssd)
    # DDR: t_op = 8 x 0.625 = 5 ns; a 16 B burst feeds a 4-lane PU in 2 ops, so 128 banks
    # / 10 ns x 128 bit x 1.153 pJ = 1.889 W; 128 PUs x 4 / 5 ns = 1.024e11 MAC/s, under the
    # 0.204 TFLOPS cap by 0.204 / 0.2048; MAC = 3 x 16 x 1.153 pJ = 55.34 pJ
    scale = 0.204e12 / 0.2048e12
    ddr = scale * (128 / 10e-9 * 128 * 1.153e-12 + 1.024e11 * 55.344e-12)
    assert c["pam-ddr4-pim"].power_w_per_device == pytest.approx(ddr)


def test_power_agrees_with_papis_power_argument():
    """PAPI §4.2 (Fig. 7): with 1P1B and no reuse DRAM access is 96.7% of PIM energy, 33.1%
    at reuse 64. Here (bank access + MACs only; PAPI also counts transfer): per burst
    256 x 0.55 = 140.8 pJ against 16 x 0.32 = 5.12 pJ -> 96.5%; at reuse 64,
    140.8 / (140.8 + 64 x 5.12) = 30.1%. And 1P1B attention is the design over the power
    budget, 1P2B and 4P1B (reuse >= 4) within it: so 1P2B < 4P1B at peak < 1P1B."""
    one = _pim("hbm3-attacc-1p1b")
    dram, mac = _pim_power_parts_w(one, reuse=1)
    assert dram / (dram + mac) == pytest.approx(140.8 / 145.92)
    assert abs(dram / (dram + mac) - 0.967) < 0.005
    dram, mac = _pim_power_parts_w(one, reuse=64)
    assert dram / (dram + mac) == pytest.approx(140.8 / (140.8 + 327.68))
    assert abs(dram / (dram + mac) - 0.331) < 0.035
    p = {n: sum(_pim_power_parts_w(_pim(n)))
         for n in ("papi-attn-pim-1p2b", "papi-fc-pim-4p1b", "hbm3-attacc-1p1b")}
    assert p["papi-attn-pim-1p2b"] < p["papi-fc-pim-4p1b"] < p["hbm3-attacc-1p1b"]


# --------------------------------------------------------------------------------------------
# Every shipped system
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("system", list_systems(), ids=lambda s: s.name)
def test_every_shipped_system_gets_a_cost(system):
    """Totals add up; a design has PIM area exactly when it has a computing PIM group; every
    evaluated design fits its dies (PAPI §4.2) and adds at most a third of a die."""
    c = design_cost(system)
    assert [d.count for d in c.devices] == [g.count for g in system.groups]
    assert c.pim_logic_mm2 == pytest.approx(sum(d.pim_logic_mm2_total for d in c.devices))
    computing_pim = [g for g in system.groups
                     if load_device(g.device).kind != "gpu" and g.compute]
    assert (c.pim_logic_mm2 > 0) == bool(computing_pim)
    assert c.over_budget == ()
    for d in c.devices:
        if d.kind == "gpu" or d.pim_logic_mm2_total == 0:
            assert d.area_fraction == 0 and d.power_w_per_device == 0
            continue
        assert 0.04 < d.area_fraction < 0.34, d
        assert d.power_w_per_device is not None and 1 < d.power_w_per_device < 60
    assert c.pim_power_w == pytest.approx(
        sum(d.count * (d.power_w_per_device or 0) for d in c.devices))
    out = c.to_dict()
    assert json.loads(json.dumps(out)) == out
    assert set(out) == {"devices", "pim_logic_mm2", "pim_power_w", "over_budget"}
    assert len(out["devices"]) == len(system.groups)


def test_plain_tiers_and_gpus_add_nothing():
    """vLLM-offloading's DIMMs and SSDs have their PUs off: a plain memory adds no logic."""
    c = design_cost("vllm-offload")
    assert c.pim_logic_mm2 == 0 and c.pim_power_w == 0
    assert {d.kind for d in c.devices} == {"gpu", "ddr", "ssd"}
    assert design_cost("gpu-only").pim_logic_mm2 == 0
