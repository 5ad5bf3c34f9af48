"""Device specs: GPUs, bank-level DRAM PIM, SSD-PIM, and the links between devices.

Units are in the field names: ``_gbps`` is GB/s (10^9 bytes per second), ``_gb`` is 10^9 bytes
unless the field says ``_gib``, ``_ns``/``_us`` are time, ``_pj`` energy, ``_mhz`` clocks. DRAM
timings are in cycles of ``t_ck_ns`` (the command clock), as JEDEC tables and Ramulator give them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from pimserve.specs.base import Spec

#: bound on any device, link or model number: beyond it a value is a typo or an overflow
#: (1e300 became NaN downstream), not a device
MAX_MAGNITUDE = 1e15
Pos = Annotated[float, Field(gt=0, le=MAX_MAGNITUDE, allow_inf_nan=False)]
NonNeg = Annotated[float, Field(ge=0, le=MAX_MAGNITUDE, allow_inf_nan=False)]
PosInt = Annotated[int, Field(gt=0, le=int(MAX_MAGNITUDE))]


class DeviceBase(Spec):
    """Fields every device has."""

    name: str = Field(description="registry name")
    display_name: str = ""
    source: str = Field("", description="datasheet or paper the numbers come from")
    notes: str = ""
    static_power_w: NonNeg = Field(
        0.0, description="background power drawn while the device is in the system, watts"
    )


# --------------------------------------------------------------------------------------------
# GPU
# --------------------------------------------------------------------------------------------
class GPUEnergy(Spec):
    """GPU access and compute energy (AttAcc src/config.py table, FGDRAM MICRO'17)."""

    offchip_pj_per_byte: NonNeg = Field(28.72, description="HBM read/write incl. interposer")
    l2_pj_per_byte: NonNeg = 2.4
    l1_pj_per_byte: NonNeg = 1.28
    reg_pj_per_byte: NonNeg = 0.0675
    mac_pj: NonNeg = Field(0.32, description="energy of one FP16 multiply-accumulate")
    comm_pj_per_byte: NonNeg = Field(
        10.4, description="GPU-to-GPU (NVLink) transfer, pJ/byte: 1.3 pJ/bit x 8 (AttAcc 'comm')"
    )


class GPUSpec(DeviceBase):
    """A compute-centric processor priced by a roofline with tile-derived memory traffic."""

    kind: Literal["gpu"] = "gpu"
    peak_tflops: Pos = Field(description="dense FP16/BF16 tensor TFLOP/s")
    hbm_bw_gbps: Pos = Field(description="memory bandwidth, GB/s")
    hbm_capacity_gb: Pos = Field(description="memory capacity, GB")
    n_sms: PosInt = Field(description="streaming multiprocessors")
    l1_kb_per_sm: Pos = Field(192, description="L1/shared memory per SM, KiB")
    l2_mb: Pos = Field(40, description="L2 cache, MiB")
    compute_efficiency: Annotated[float, Field(gt=0, le=1)] = Field(
        0.8, description="achievable fraction of peak FLOP/s (AttAcc xPU model)"
    )
    memory_efficiency: Annotated[float, Field(gt=0, le=1)] = Field(
        0.85, description="achievable fraction of peak bandwidth (AttAcc xPU model)"
    )
    kernel_launch_us: NonNeg = Field(0.0, description="fixed overhead per kernel, microseconds")
    norm_kernel_us: NonNeg = Field(
        0.0,
        description="fixed time of one layer-norm kernel (with its residual add), microseconds; "
        "its bytes stream at the effective bandwidth on top",
    )
    activation_kernel_us: NonNeg = Field(
        0.0,
        description="fixed time of one FFN activation kernel (SiLU/GELU and the gate product), "
        "microseconds; its bytes stream at the effective bandwidth on top",
    )
    attention_kernel: Literal["split_kv", "head_per_sm"] = Field(
        "split_kv",
        description="how attention kernels use the SMs. 'split_kv': FlashDecoding-style, each "
        "request's KV split over every SM, softmax fused (scores stay on chip); a request "
        "costs max(flops / compute, bytes / bandwidth) as if alone. 'head_per_sm': AttAcc's "
        "GPU attention (src/devices.py xPU, MATMUL/SOFTMAX layers with numOp = heads x batch "
        "threadblocks; src/model.py): one (request, KV head) pair per SM, in waves of n_sms, "
        "each SM at 1/n_sms of the bandwidth and FLOP rate; score, softmax and context are "
        "separate kernels whose scores go through HBM. Both apply to prefill too",
    )
    nvlink_gbps: Pos = Field(
        600,
        description="NVLink bandwidth per GPU, GB/s, both directions together (the datasheet "
        "figure; AttAcc src/config.py INTERFACE_BW = 600 for A100a, 900 for H100)",
    )
    allreduce_step_ns: NonNeg = Field(
        6060.0,
        description="fixed time of one ring all-reduce step, ns (AttAcc src/devices.py "
        "get_nvlink_time fit: 6060 ns + 0.009 ns/B at 600 GB/s)",
    )
    calibration_csv: str | None = Field(
        None,
        description="CSV 'kernel,m,k,n,time_us' of measured FC kernel times that replace the "
        "formula for the shapes it lists; a relative path is taken from the working directory",
    )
    energy: GPUEnergy = Field(default_factory=GPUEnergy)

    @property
    def capacity_bytes(self) -> float:
        return self.hbm_capacity_gb * 1e9


# --------------------------------------------------------------------------------------------
# DRAM and bank-level PIM
# --------------------------------------------------------------------------------------------
class DRAMSpec(Spec):
    """A DRAM device's organisation and timing (one HBM stack, or one DIMM).

    Banks that compute in parallel = channels x pseudo_channels x ranks x chips_per_rank x
    bank_groups x banks_per_group. ``burst_bytes`` is what one column access of one bank returns
    (HBM3 pseudo-channel: 32 bits x BL8 = 32 B; a x16 DDR4 chip: 16 bits x BL8 = 16 B).
    """

    standard: str = Field(description="HBM3, DDR4, ...")
    channels: PosInt
    pseudo_channels: PosInt = Field(1, description="pseudo-channels per channel (HBM)")
    ranks: PosInt = Field(description="ranks per (pseudo-)channel")
    chips_per_rank: PosInt = Field(1, description="DRAM chips per rank whose banks compute")
    bank_groups: PosInt = Field(description="bank groups per chip (per rank for HBM)")
    banks_per_group: PosInt
    rows: PosInt = Field(description="rows per bank")
    columns: PosInt = Field(description="column bursts per row")
    burst_bytes: PosInt = Field(description="bytes one column access of one bank returns")
    t_ck_ns: Pos = Field(description="command clock period, ns")
    io_bw_gbps: Pos = Field(description="external (pin) bandwidth of the device, GB/s")
    t_rcd: PosInt = Field(description="ACT to column command, cycles")
    t_rp: PosInt = Field(description="precharge, cycles")
    t_ras: PosInt = Field(description="ACT to PRE minimum, cycles")
    t_ccd_s: PosInt = Field(description="column to column, different bank group, cycles")
    t_ccd_l: PosInt = Field(description="column to column, same bank group, cycles")
    t_rrd_s: PosInt = Field(description="ACT to ACT, different bank group, cycles")
    t_rrd_l: PosInt = Field(description="ACT to ACT, same bank group, cycles")
    t_faw: PosInt = Field(description="four-activation window, cycles")
    t_refi: PosInt = Field(description="refresh interval, cycles")
    t_rfc: PosInt = Field(description="refresh cycle time, cycles")
    t_rtp: PosInt = Field(description="last read (MAC) of a row to its precharge, cycles")

    @model_validator(mode="after")
    def _check(self) -> DRAMSpec:
        if self.t_ras < self.t_rcd:
            raise ValueError(f"t_ras ({self.t_ras}) must be at least t_rcd ({self.t_rcd})")
        if self.t_rfc >= self.t_refi:
            raise ValueError(f"t_rfc ({self.t_rfc}) must be below t_refi ({self.t_refi})")
        return self

    @property
    def banks(self) -> int:
        """Banks in the device (all chips, ranks and channels)."""
        return (
            self.channels
            * self.pseudo_channels
            * self.ranks
            * self.chips_per_rank
            * self.bank_groups
            * self.banks_per_group
        )

    @property
    def banks_per_rank(self) -> int:
        return self.chips_per_rank * self.bank_groups * self.banks_per_group

    @property
    def row_bytes(self) -> int:
        """Bytes of one bank's row (its page)."""
        return self.columns * self.burst_bytes

    @property
    def capacity_bytes(self) -> int:
        return self.banks * self.rows * self.row_bytes


class PIMEnergy(Spec):
    """Energy per bit at each level of a DRAM access path, and per MAC.

    AttAcc src/config.py (from FGDRAM, MICRO'17): ACT/PRE 0.11, cell RD/WR 0.44, column decoder
    to bank-group mux 1.01, bank-group mux to global I/O 1.23, TSV 0.5, interposer 0.3 pJ/bit.
    A bank-level PU pays act_pre + cell; a GPU read pays every level.
    """

    act_pre_pj_per_bit: NonNeg = 0.11
    cell_pj_per_bit: NonNeg = 0.44
    bank_to_bg_pj_per_bit: NonNeg = 1.01
    bg_to_gio_pj_per_bit: NonNeg = 1.23
    tsv_pj_per_bit: NonNeg = 0.5
    interposer_pj_per_bit: NonNeg = 0.3
    mac_pj: NonNeg = Field(0.32, description="one FP16 MAC in a PU (AttAcc ALU)")


class PIMSpec(DeviceBase):
    """A DRAM device with processing units next to its banks (HBM-PIM, DIMM-PIM).

    FPU placement is ``fpus_per_bank`` (4 for PAPI's 4P1B) or ``banks_per_fpu`` (2 for 1P2B);
    exactly one of them exceeds 1, or both are 1 (1P1B). An FPU is a SIMD unit doing
    ``macs_per_fpu`` multiply-accumulates on one burst per MAC command; all-bank MAC commands
    are spaced ``t_ccd_mac`` cycles apart (stretched above t_ccd_l under a power limit).
    """

    kind: Literal["pim"] = "pim"
    dram: DRAMSpec
    fpus_per_bank: PosInt = Field(1, description="FPUs sharing one bank's column reads (xP1B)")
    banks_per_fpu: PosInt = Field(1, description="banks sharing one FPU (1PxB)")
    macs_per_fpu: PosInt = Field(16, description="FP16 MAC lanes of one FPU")
    pu_clock_mhz: Pos = Field(description="PU clock, MHz")
    buffer_bytes: PosInt = Field(description="PU input/output buffer, bytes")
    t_ccd_mac: PosInt = Field(description="cycles between all-bank MAC commands")
    power_limited: bool = Field(False, description="t_ccd_mac stretched to meet a power budget")
    peak_tflops_cap: NonNeg = Field(
        0.0, description="compute cap of the whole device under its power budget (0 = none)"
    )
    reduction_units_per_bank_group: NonNeg = Field(
        0.0, description="reduction units per bank group (PAM RU); 0: partial sums go out"
    )
    reduction_units_device: NonNeg = Field(
        0.0, description="reduction units on the logic die / DIMM buffer (PAM)"
    )
    reduction_unit_lanes: PosInt = Field(
        16, description="FP16 lanes of one reduction unit (PAM §5.2: 16-wide vector unit)"
    )
    activation: Literal["all_bank", "per_bank"] = Field(
        "all_bank",
        description="all_bank: one ACTAB opens a row in every bank (AttAcc); per_bank: each "
        "bank of a rank is activated separately, paced by t_rrd_s and t_faw",
    )
    attention_dataflow: Literal["head_per_channel", "heads_over_devices"] = Field(
        description="where each (request, KV head) pair's K and V live and who computes on "
        "them: head_per_channel = AttAcc's layout (pairs spread over the stacks, one pair per "
        "channel at a time, its tokens over the channel's PUs); heads_over_devices = KV heads "
        "over the stacks and each request's KV interleaved over every bank of a stack (PAM's "
        "block-to-bank-group mapping); see docs/models.md"
    )
    energy: PIMEnergy = Field(default_factory=PIMEnergy)
    pu_op_energy_factor: NonNeg = Field(
        0.0,
        description="if > 0, a PU op costs this many bank reads of its operands (PAM's rule: 3)",
    )

    @model_validator(mode="after")
    def _check(self) -> PIMSpec:
        if self.fpus_per_bank > 1 and self.banks_per_fpu > 1:
            raise ValueError("set fpus_per_bank or banks_per_fpu above 1, not both")
        if self.t_ccd_mac < self.dram.t_ccd_s:
            raise ValueError(
                f"t_ccd_mac ({self.t_ccd_mac}) is below the DRAM's t_ccd_s ({self.dram.t_ccd_s})"
            )
        return self

    @property
    def n_fpus(self) -> int:
        return self.dram.banks * self.fpus_per_bank // self.banks_per_fpu

    @property
    def capacity_bytes(self) -> float:
        return float(self.dram.capacity_bytes)


# --------------------------------------------------------------------------------------------
# SSD-PIM
# --------------------------------------------------------------------------------------------
class SSDEnergy(Spec):
    """SSD energy (per bit read from flash, over the channel, and per PU MAC)."""

    flash_read_pj_per_bit: NonNeg = Field(description="array read (sense) energy per bit")
    channel_pj_per_bit: NonNeg = Field(description="flash channel transfer energy per bit")
    mac_pj: NonNeg = Field(description="one FP16 MAC in a controller PU")


class SSDPIMSpec(DeviceBase):
    """An SSD whose controller has processing units (PAM's SSD-PIM tier)."""

    kind: Literal["ssd_pim"] = "ssd_pim"
    channels: PosInt
    dies_per_channel: PosInt
    planes_per_die: PosInt = 1
    page_kb: Pos = Field(description="flash page, KiB")
    t_r_us: Pos = Field(description="page read (array to register), microseconds")
    channel_mtps: Pos = Field(description="flash channel rate, MT/s (one byte per transfer)")
    channel_width_bytes: PosInt = 1
    capacity_gb: Pos
    controller_pus: PosInt = Field(description="PUs in the controller")
    macs_per_pu: PosInt = 16
    pu_clock_mhz: Pos
    peak_gflops_cap: NonNeg = Field(0.0, description="device compute cap (0 = none)")
    reduction_units: NonNeg = 0.0
    energy: SSDEnergy

    @property
    def capacity_bytes(self) -> float:
        return self.capacity_gb * 1e9


# --------------------------------------------------------------------------------------------
# Links
# --------------------------------------------------------------------------------------------
class LinkSpec(Spec):
    """A point-to-point link or bus: bandwidth per direction, latency, energy per bit."""

    name: str
    display_name: str = ""
    source: str = ""
    notes: str = ""
    kind: Literal["link"] = "link"
    bw_gbps: Pos = Field(description="bandwidth per direction, GB/s")
    latency_us: NonNeg = Field(description="one-way latency, microseconds")
    energy_pj_per_bit: NonNeg = Field(description="transfer energy per bit")


DeviceSpec = Annotated[GPUSpec | PIMSpec | SSDPIMSpec, Field(discriminator="kind")]
