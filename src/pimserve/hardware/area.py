"""Hardware cost of a design: the PIM logic area it adds and its PIM power at peak rate.

A design-space sweep (how many FC-PIM or Attn-PIM stacks, PUs per bank, PAM tier sizes) needs
the *added* hardware of each design as an objective, and a flag when a design breaks a budget.
:func:`design_cost` gives both for a :class:`~pimserve.specs.system.SystemSpec` (or a preset
name). Area is in mm², power in watts.

What is counted
---------------
Only the processing logic PIM adds next to the DRAM banks (HBM dies, DDR chips) or in an SSD
controller, counted from the device's structure, so a sweep that changes PUs per bank, bank
groups or PU width changes the result:

- **HBM, AttAcc/PAPI-style FPUs** (no logic-die reduction units): ``FPUs per die x A_FPU``
  with ``A_FPU = 0.1025 mm²`` per 16-lane FPU (PAPI §4.2, from AttAcc). FPUs per die =
  banks per die x ``fpus_per_bank`` / ``banks_per_fpu``. Bank-group adder trees are not
  counted (PAPI's area argument counts FPUs only).
- **HBM, PAM-style PUs and RUs** (the device has logic-die reduction units,
  ``reduction_units_device > 0``, PAM §5.2): ``PUs per die x 0.13 + RUs per die x 0.18 mm²``
  (PAM §7 area), RUs per die = ``reduction_units_per_bank_group`` x bank groups per die.
- **DDR** (PAM's DDR-PIM is the only sourced DDR design): ``PUs per chip x 0.46 + RUs per chip x
  0.68 mm²`` (PAM §7 area).
- **SSD** (PAM's SSD-PIM): ``controller PUs x a_PU + RUs x a_RU`` with a_PU, a_RU inferred from
  PAM's 8.16 mm² for 64 PUs + 8 RUs per controller (see the constants).
- GPUs, and tier groups whose PUs are off (``compute: false``, a plain DIMM or SSD), add nothing.

PU and RU areas scale linearly with their FP16 lanes (``macs_per_fpu``, ``macs_per_pu``,
``reduction_unit_lanes``) against the lanes of the unit each figure was given for [INF].

Dies per device: an HBM stack is 4 dies per rank (AttAcc's HBM3_8Gb_2R organisation, 2 ranks,
is the 8-high 16 GB stack of 16 Gb dies of Ryu et al., JSSC'23, that PAPI §4.2 and PAM §7 size
their dies from) [INF]; a DDR device has ``channels x pseudo_channels x ranks x chips_per_rank``
chips; an SSD has one controller.

Budgets (:class:`AreaBudget`)
-----------------------------
- **HBM die fit** (PAPI §4.2): ``m x (n x A_FPU + A_bank) <= A_max``, here in its general form
  ``banks per die x A_bank + PIM logic per die <= A_max`` with ``A_bank = 0.83 mm²`` (CACTI-3DD,
  22 nm) and ``A_max = 121 mm²`` (the JSSC'23 16 GB HBM3 die). This is the argument by which
  PAPI's 4P1B FC-PIM keeps 3 of 4 bank groups. On by default; it applies to every HBM die.
- **Area fraction per die kind** and **power per device**: no paper gives one, so none is set by
  default. :meth:`AreaBudget.papi_hbm_power_unverified` sets the "116 W" HBM power budget that
  secondary notes attribute to PAPI's Fig. 7(c) footnote; it could not be confirmed in the paper.

Power
-----
PIM power at the device's peak PIM rate: every PU busy every operation slot, and the banks (or
flash dies) streaming the bursts that keep them busy, at the energies of the device spec::

    HBM/DDR:  bank reads x (act_pre + cell) pJ/bit + MACs x MAC energy, + static_power_w
    SSD:      flash reads x (array + channel) pJ/bit + MACs x mac_pj, + static_power_w

Rates come from the same formulas as the cost models (:mod:`pimserve.hardware.pim`,
:mod:`pimserve.hardware.ssd`): the per-bank burst interval at the reuse that fills every FPU,
scaled down to ``peak_tflops_cap`` (``peak_gflops_cap``) when the device has one; the MAC energy
is ``mac_pj`` or, with ``pu_op_energy_factor > 0``, PAM's "PU op = 3 x a read" rule. I/O,
partial-sum reduction and refresh energy depend on the workload and are left out.

Not counted: PAM's logic-die / DIMM-buffer reduction units and its PAM interface (0.85 mm² per
memory controller, PAM §6.2), which sit on a logic die, buffer chip or controller rather than
on the DRAM dies; the FPUs of a buffer-die PIM (``hbm3-attacc-buffer``) are charged to the DRAM
dies pro rata; ``A_bank`` does not scale with the bank's capacity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pimserve.errors import ConfigurationError
from pimserve.hardware.pim import _PJ, PIMModel
from pimserve.hardware.ssd import SSDPIMModel
from pimserve.jsonutil import to_jsonable
from pimserve.specs.catalog import load_device, load_system
from pimserve.specs.devices import GPUSpec, PIMSpec, SSDPIMSpec
from pimserve.specs.system import DeviceGroup, SystemSpec

# --------------------------------------------------------------------------------------------
# Sourced unit areas (mm²) and die areas
# --------------------------------------------------------------------------------------------
#: one AttAcc FP16 FPU (16 multipliers) next to an HBM bank: PAPI §4.2 area argument, A_FPU
#: "from AttAcc" (CACTI-3DD, 22 nm)
A_FPU_MM2 = 0.1025
#: FP16 lanes of the AttAcc FPU that A_FPU is given for (AttAcc n_mac = 16 multipliers)
A_FPU_LANES = 16
#: one HBM DRAM bank: PAPI §4.2, A_bank (CACTI-3DD, 22 nm)
A_BANK_MM2 = 0.83
#: one HBM3 DRAM die: PAPI §4.2 A_max and PAM §7 area, both from Ryu et al., JSSC'23
#: (16 GB HBM3)
HBM_DIE_MM2 = 121.0
#: PAM HBM-PIM PU (256-bit, 16 FP16 lanes): PAM §7 area (Synopsys DC, DRAM process)
PAM_HBM_PU_MM2 = 0.13
PAM_HBM_PU_LANES = 16  # PAM §5.2: 256-bit vector unit, 16 FP16 mul+add
#: PAM reduction unit on an HBM die: PAM §7 area
PAM_HBM_RU_MM2 = 0.18
#: PAM DDR-PIM PU (64-bit, 4 FP16 lanes): PAM §7 area
PAM_DDR_PU_MM2 = 0.46
PAM_DDR_PU_LANES = 4  # PAM §5.2: 64-bit vector unit, 4 FP16
#: PAM reduction unit on a DDR chip: PAM §7 area
PAM_DDR_RU_MM2 = 0.68
#: one DDR4 chip (die): PAM §7 area, "5.04 mm² per chip = 5.04% of a 100 mm² die"
DDR_CHIP_MM2 = 100.0
#: PAM RU width, the lanes the RU areas are given for (PAM §5.2: 16-wide FP16 vector unit)
PAM_RU_LANES = 16
#: PAM SSD-PIM logic per controller (64 PUs + 8 RUs, TSMC 14 nm): PAM §7 area
PAM_SSD_LOGIC_MM2 = 8.16
PAM_SSD_PUS = 64  # PAM §5.2: 64 PUs per controller
PAM_SSD_RUS = 8  # PAM §5.2: 8 RUs per controller
PAM_SSD_PU_LANES = 16  # PAM §5.2: 256-bit PU, 16 FP16 lanes
#: [INF] PAM gives only the 8.16 mm² total; split between PU and RU in the ratio of PAM's HBM
#: units (a 16-lane PU 0.13 : a 16-wide RU 0.18, the same two designs in another process):
#: a_PU = 8.16 / (64 + 8 x 0.18 / 0.13) = 0.10869 mm², a_RU = a_PU x 0.18 / 0.13 = 0.15049 mm²
PAM_SSD_PU_MM2 = PAM_SSD_LOGIC_MM2 / (PAM_SSD_PUS + PAM_SSD_RUS * PAM_HBM_RU_MM2 / PAM_HBM_PU_MM2)
PAM_SSD_RU_MM2 = PAM_SSD_PU_MM2 * PAM_HBM_RU_MM2 / PAM_HBM_PU_MM2
#: [INF] the SSD controller (TenaFe TC2200): PAM §7 says 8.16 mm² is 7.59% of it, so
#: 8.16 / 0.0759 = 107.5 mm². (PAM's interface line, 0.85 mm² = 0.578% of the controller,
#: would make it 147 mm²; the PU/RU sentence's own figure is used.)
SSD_CONTROLLER_MM2 = PAM_SSD_LOGIC_MM2 / 0.0759
#: [INF] DRAM dies per HBM rank: AttAcc's HBM3_8Gb_2R (2 ranks) is the 8-high 16 GB stack of
#: 16 Gb dies (JSSC'23) on which PAPI §4.2 ("an 8-high HBM stack") and PAM §7 base their dies
HBM_DIES_PER_RANK = 4
#: the HBM power budget secondary notes attribute to PAPI's Fig. 7(c) footnote. UNVERIFIED: the
#: footnote was not readable in the paper; never a default, only by
#: :meth:`AreaBudget.papi_hbm_power_unverified`
PAPI_HBM_POWER_W_UNVERIFIED = 116.0

DIE_KINDS = ("hbm", "ddr", "ssd")
_DIE_LABEL = {"hbm": "HBM die", "ddr": "DDR chip", "ssd": "SSD controller", "gpu": "GPU"}


# --------------------------------------------------------------------------------------------
# Budget
# --------------------------------------------------------------------------------------------
def _check_limits(name: str, limits: Mapping[str, float], upper: float | None) -> None:
    if not isinstance(limits, Mapping):
        raise ConfigurationError(
            f"AreaBudget.{name} must be a mapping of die kind to a number "
            f"(kinds: {', '.join(DIE_KINDS)}), got {type(limits).__name__}"
        )
    for kind, value in limits.items():
        if kind not in DIE_KINDS:
            raise ConfigurationError(
                f"AreaBudget.{name}: unknown die kind {kind!r} (accepted: {', '.join(DIE_KINDS)})"
            )
        ok = (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value > 0
            and (upper is None or value <= upper)
        )
        if not ok:
            bound = f"in (0, {upper:g}]" if upper is not None else "a finite number > 0"
            raise ConfigurationError(
                f"AreaBudget.{name}[{kind!r}] must be {bound}, got {value!r}"
            )


@dataclass(frozen=True)
class AreaBudget:
    """Limits a design must meet; a design over one is flagged, not refused.

    ``hbm_die_max_mm2``: PAPI §4.2's floorplan limit ``banks per die x A_bank + PIM logic per
    die <= A_max`` on every HBM die (121 mm², JSSC'23); None turns the check off.
    ``max_area_fraction``: die kind (``hbm``, ``ddr``, ``ssd``) -> largest PIM logic area as a
    fraction of the die (or controller); kinds left out are unlimited (no paper sets one).
    ``max_power_w_per_device``: die kind -> largest PIM power of one device at its peak PIM
    rate, watts; kinds left out are unlimited (no verified figure exists).
    """

    hbm_die_max_mm2: float | None = HBM_DIE_MM2
    max_area_fraction: Mapping[str, float] = field(default_factory=dict)
    max_power_w_per_device: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        amax = self.hbm_die_max_mm2
        if amax is not None and not (
            isinstance(amax, int | float)
            and not isinstance(amax, bool)
            and math.isfinite(amax)
            and amax > 0
        ):
            raise ConfigurationError(
                f"AreaBudget.hbm_die_max_mm2 must be a finite number > 0 or None, got {amax!r}"
            )
        _check_limits("max_area_fraction", self.max_area_fraction, 1.0)
        _check_limits("max_power_w_per_device", self.max_power_w_per_device, None)
        # freeze the mappings so that a budget cannot change under a sweep
        object.__setattr__(
            self, "max_area_fraction", MappingProxyType(dict(self.max_area_fraction))
        )
        object.__setattr__(
            self, "max_power_w_per_device", MappingProxyType(dict(self.max_power_w_per_device))
        )

    def __hash__(self) -> int:  # the mappings are read-only views: hash their items
        return hash((
            self.hbm_die_max_mm2,
            tuple(sorted(self.max_area_fraction.items())),
            tuple(sorted(self.max_power_w_per_device.items())),
        ))

    @classmethod
    def papi_hbm_power_unverified(cls, **kwargs: Any) -> AreaBudget:
        """The default budget plus a 116 W PIM power limit per HBM device.

        UNVERIFIED: PAPI's Fig. 7(c) compares PIM power with an HBM power budget whose value
        sits in a footnote that could not be read; "116 W" comes only from secondary notes.
        Use it to explore, not as PAPI's figure. ``kwargs`` set the other fields.
        """
        power = dict(kwargs.pop("max_power_w_per_device", {}))
        power.setdefault("hbm", PAPI_HBM_POWER_W_UNVERIFIED)
        return cls(max_power_w_per_device=power, **kwargs)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceArea:
    """Added PIM hardware of one device group of a design (an HBM stack, a DDR DIMM, an SSD).

    ``kind`` is the die kind: ``hbm``, ``ddr``, ``ssd`` or ``gpu``. Areas in mm², power in W.
    ``die_area_mm2`` is the DRAM die, DDR chip or SSD controller the logic is added to (0 for a
    GPU: not modelled). ``pim_logic_mm2_total`` = per die x dies per device x ``count``.
    ``power_w_per_device`` is the PIM power of one device at its peak PIM rate (0 for devices
    without PIM logic), or None when the spec's energy figures cannot give it.
    """

    device: str
    kind: str
    count: int
    pim_logic_mm2_per_die: float
    die_area_mm2: float
    area_fraction: float
    pim_logic_mm2_total: float
    power_w_per_device: float | None
    over_budget: tuple[str, ...]


@dataclass(frozen=True)
class DesignCost:
    """Added PIM hardware of a whole design: per device group, and totals.

    ``pim_logic_mm2`` is the sum of the groups' ``pim_logic_mm2_total``; ``pim_power_w`` the
    sum of ``count x power_w_per_device`` (all PIM devices at peak at once), None if any group's
    power is unknown. ``over_budget`` lists every group's reasons, prefixed by its device name.
    """

    devices: tuple[DeviceArea, ...]
    pim_logic_mm2: float
    pim_power_w: float | None
    over_budget: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (lists for tuples)."""
        out: dict[str, Any] = to_jsonable(self)
        return out


# --------------------------------------------------------------------------------------------
# Per-device structure
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _DieLogic:
    kind: str
    dies: int
    logic_mm2: float  # per die
    die_mm2: float
    banks_per_die: float  # HBM only (die-fit check); 0 otherwise


def _die_kind(spec: PIMSpec) -> str:
    std = spec.dram.standard.strip().upper()
    if std.startswith("HBM"):
        return "hbm"
    if std.startswith("DDR"):
        return "ddr"
    raise ConfigurationError(
        f"device '{spec.name}': field 'dram.standard' is {spec.dram.standard!r}, for which no "
        "die and PU areas are published; the area model knows HBM* (PAPI §4.2, PAM §7) and "
        "DDR* (PAM §7)"
    )


def _pim_die_logic(spec: PIMSpec) -> _DieLogic:
    """PIM logic per DRAM die (HBM) or chip (DDR), from the device's organisation."""
    d = spec.dram
    kind = _die_kind(spec)
    if kind == "hbm":
        dies = HBM_DIES_PER_RANK * d.ranks
        die_mm2 = HBM_DIE_MM2
    else:
        dies = d.channels * d.pseudo_channels * d.ranks * d.chips_per_rank
        die_mm2 = DDR_CHIP_MM2
    banks_per_die = d.banks / dies
    pus_per_die = banks_per_die * spec.fpus_per_bank / spec.banks_per_fpu
    rus_per_die = spec.reduction_units_per_bank_group * banks_per_die / d.banks_per_group
    ru_scale = spec.reduction_unit_lanes / PAM_RU_LANES
    if kind == "ddr":
        logic = (
            pus_per_die * PAM_DDR_PU_MM2 * spec.macs_per_fpu / PAM_DDR_PU_LANES
            + rus_per_die * PAM_DDR_RU_MM2 * ru_scale
        )
    elif spec.reduction_units_device > 0:  # PAM's PU + RU hierarchy (PAM §5.2)
        logic = (
            pus_per_die * PAM_HBM_PU_MM2 * spec.macs_per_fpu / PAM_HBM_PU_LANES
            + rus_per_die * PAM_HBM_RU_MM2 * ru_scale
        )
    else:  # AttAcc / PAPI FPUs: PAPI §4.2 counts FPUs only
        logic = pus_per_die * A_FPU_MM2 * spec.macs_per_fpu / A_FPU_LANES
    return _DieLogic(kind, dies, logic, die_mm2, banks_per_die if kind == "hbm" else 0.0)


def _ssd_logic(spec: SSDPIMSpec) -> _DieLogic:
    """PIM logic in one SSD controller."""
    logic = (
        spec.controller_pus * PAM_SSD_PU_MM2 * spec.macs_per_pu / PAM_SSD_PU_LANES
        + spec.reduction_units * PAM_SSD_RU_MM2
    )
    return _DieLogic("ssd", 1, logic, SSD_CONTROLLER_MM2, 0.0)


# --------------------------------------------------------------------------------------------
# Power at the peak PIM rate
# --------------------------------------------------------------------------------------------
def _pim_power_parts_w(spec: PIMSpec, reuse: float | None = None) -> tuple[float, float]:
    """(DRAM access W, compute W) of one device with every FPU busy.

    Each burst serves ``reuse`` tokens (default: the reuse that fills every FPU,
    ``macs_per_fpu x fpus_per_bank / burst elements``, at least 1); the bank's burst interval
    is the cost model's (:meth:`PIMModel.burst_interval_s`). DRAM access = bursts x bits x
    (act_pre + cell); compute = MACs x MAC energy. Both scale down to ``peak_tflops_cap``.
    """
    model = PIMModel(spec)
    d = spec.dram
    elems = max(1, d.burst_bytes // 2)  # FP16
    if reuse is None:
        reuse = max(1.0, spec.macs_per_fpu * spec.fpus_per_bank / elems)
    t_burst = float(model.burst_interval_s(reuse))
    bursts_per_s = d.banks / t_burst
    macs_per_s = bursts_per_s * elems * reuse
    scale = 1.0
    if spec.peak_tflops_cap > 0:
        scale = min(1.0, spec.peak_tflops_cap * 1e12 / (2 * macs_per_s))
    dram_w = scale * bursts_per_s * d.burst_bytes * 8 * model.read_pj_per_bit * _PJ
    mac_w = scale * macs_per_s * model.mac_energy_pj(2) * _PJ
    return dram_w, mac_w


def _ssd_power_w(spec: SSDPIMSpec) -> float:
    """Flash streaming at the device's read rate and every PU at its (capped) rate."""
    model = SSDPIMModel(spec)
    e = spec.energy
    read_w = model.internal_bw_bytes_per_s * 8 * (
        e.flash_read_pj_per_bit + e.channel_pj_per_bit
    ) * _PJ
    mac_w = model.flops_per_s / 2 * e.mac_pj * _PJ
    return read_w + mac_w


def _power_w(spec: PIMSpec | SSDPIMSpec) -> float | None:
    if isinstance(spec, PIMSpec):
        dram_w, mac_w = _pim_power_parts_w(spec)
        power = dram_w + mac_w
    else:
        power = _ssd_power_w(spec)
    power += spec.static_power_w
    return power if math.isfinite(power) else None


# --------------------------------------------------------------------------------------------
# Design cost
# --------------------------------------------------------------------------------------------
def _budget_reasons(
    logic: _DieLogic, fraction: float, power: float | None, budget: AreaBudget
) -> tuple[str, ...]:
    reasons: list[str] = []
    label = _DIE_LABEL[logic.kind]
    if logic.kind == "hbm" and budget.hbm_die_max_mm2 is not None:
        die = logic.banks_per_die * A_BANK_MM2 + logic.logic_mm2
        if die > budget.hbm_die_max_mm2:
            reasons.append(
                f"HBM die {die:.1f} mm² ({logic.banks_per_die:g} banks x {A_BANK_MM2} mm² + "
                f"{logic.logic_mm2:.2f} mm² PIM logic) > {budget.hbm_die_max_mm2:g} mm² "
                "(PAPI §4.2 A_max)"
            )
    limit = budget.max_area_fraction.get(logic.kind)
    if limit is not None and fraction > limit:
        reasons.append(
            f"area {fraction:.1%} of the {label} ({logic.logic_mm2:.2f} of "
            f"{logic.die_mm2:.1f} mm²) > {limit:.0%} budget"
        )
    plimit = budget.max_power_w_per_device.get(logic.kind)
    if plimit is not None and power is not None and power > plimit:
        reasons.append(f"PIM power {power:.1f} W per device > {plimit:g} W budget")
    return tuple(reasons)


def _device_area(group: DeviceGroup, budget: AreaBudget) -> DeviceArea:
    spec = load_device(group.device)
    name = spec.name
    if isinstance(spec, GPUSpec):
        return DeviceArea(name, "gpu", group.count, 0.0, 0.0, 0.0, 0.0, 0.0, ())
    logic = _pim_die_logic(spec) if isinstance(spec, PIMSpec) else _ssd_logic(spec)
    if group.role == "kv_tier" and not group.compute:
        # a plain DIMM / SSD (its PUs are off): no PIM logic is added, none draws power
        return DeviceArea(name, logic.kind, group.count, 0.0, logic.die_mm2, 0.0, 0.0, 0.0, ())
    fraction = logic.logic_mm2 / logic.die_mm2
    power = _power_w(spec)
    return DeviceArea(
        device=name,
        kind=logic.kind,
        count=group.count,
        pim_logic_mm2_per_die=logic.logic_mm2,
        die_area_mm2=logic.die_mm2,
        area_fraction=fraction,
        pim_logic_mm2_total=logic.logic_mm2 * logic.dies * group.count,
        power_w_per_device=power,
        over_budget=_budget_reasons(logic, fraction, power, budget),
    )


def design_cost(system: SystemSpec | str, budget: AreaBudget | None = None) -> DesignCost:
    """Added PIM logic area (mm²) and PIM power at peak (W) of a design, with budget flags.

    ``system`` is a SystemSpec, a preset name or a system YAML path; ``budget`` defaults to
    :class:`AreaBudget` () (PAPI §4.2's HBM die fit only). One :class:`DeviceArea` per device
    group, in the system's order.
    """
    if budget is None:
        budget = AreaBudget()
    elif not isinstance(budget, AreaBudget):
        raise ConfigurationError(
            f"budget must be an AreaBudget or None, got {type(budget).__name__}"
        )
    spec = load_system(system)
    devices = tuple(_device_area(g, budget) for g in spec.groups)
    powers = [d.power_w_per_device for d in devices]
    total_power = (
        None if any(p is None for p in powers)
        else sum(d.count * (d.power_w_per_device or 0.0) for d in devices)
    )
    return DesignCost(
        devices=devices,
        pim_logic_mm2=sum(d.pim_logic_mm2_total for d in devices),
        pim_power_w=total_power,
        over_budget=tuple(f"{d.device}: {r}" for d in devices for r in d.over_budget),
    )
