"""Property tests (hypothesis) for the PIM and SSD-PIM cost models.

Time never decreases with more work (m, k, n, bytes) and never increases with more hardware
(channels, shorter t_ccd_mac, more I/O bandwidth); energy is positive and additive.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pimserve.hardware.pim import PIMModel, PIMRooflineModel
from pimserve.hardware.ssd import SSDPIMModel
from pimserve.ops.kernels import AttentionKernel, FCKernel
from pimserve.specs.catalog import load_device
from pimserve.specs.devices import PIMSpec, SSDPIMSpec

PIM_PRESETS = [
    "hbm3-attacc-1p1b",
    "hbm3-attacc-1p1b-pl",
    "hbm-pim-1p2b",
    "papi-fc-pim-4p1b",
    "papi-attn-pim-1p2b",
    "pam-hbm3-pim",
    "pam-ddr4-pim",
]
FAST = settings(max_examples=50, deadline=None)

preset = st.sampled_from(PIM_PRESETS)
dim = st.integers(min_value=1, max_value=20000)
reuse = st.integers(min_value=1, max_value=64)
model_cls = st.sampled_from([PIMModel, PIMRooflineModel])


def pim(name: str) -> PIMSpec:
    s = load_device(name)
    assert isinstance(s, PIMSpec)
    return s


def ssd() -> SSDPIMSpec:
    s = load_device("pam-ssd-pim")
    assert isinstance(s, SSDPIMSpec)
    return s


def _le(a: float, b: float) -> bool:
    return a <= b * (1 + 1e-12) + 1e-18


# --------------------------------------------------------------------------------------------
# PIM: monotonicity
# --------------------------------------------------------------------------------------------
@FAST
@given(preset, model_cls, reuse, dim, dim, st.sampled_from(["m", "k", "n"]), st.integers(1, 5000))
def test_pim_time_grows_with_work(name, cls, m, k, n, axis, extra):
    model = cls(pim(name))
    a = FCKernel("w", m, k, n)
    grown = {
        "m": FCKernel("w", m + extra, k, n),
        "k": FCKernel("w", m, k + extra, n),
        "n": FCKernel("w", m, k, n + extra),
    }[axis]
    assert _le(model.cost(a).time_s, model.cost(grown).time_s)


@FAST
@given(preset, reuse, dim, dim, st.integers(1, 4))
def test_pim_more_channels_never_slower(name, m, k, n, factor):
    s = pim(name)
    dram = s.dram.model_copy(update={"channels": s.dram.channels * factor})
    more = s.model_copy(update={"dram": dram})
    k_ = FCKernel("w", m, k, n)
    assert _le(PIMModel(more).cost(k_).time_s, PIMModel(s).cost(k_).time_s)


@FAST
@given(preset, reuse, dim, dim, st.integers(0, 6))
def test_pim_shorter_t_ccd_mac_never_slower(name, m, k, n, shrink):
    s = pim(name)
    faster = max(s.dram.t_ccd_s, s.t_ccd_mac - shrink)
    k_ = FCKernel("w", m, k, n)
    slow = PIMModel(s).cost(k_).time_s
    fast = PIMModel(s.model_copy(update={"t_ccd_mac": faster})).cost(k_).time_s
    assert _le(fast, slow)


@FAST
@given(preset, reuse, dim, dim, st.floats(1.0, 16.0))
def test_pim_more_io_bandwidth_never_slower(name, m, k, n, factor):
    s = pim(name)
    wide = s.model_copy(
        update={"dram": s.dram.model_copy(update={"io_bw_gbps": s.dram.io_bw_gbps * factor})}
    )
    k_ = FCKernel("w", m, k, n)
    assert _le(PIMModel(wide).cost(k_).time_s, PIMModel(s).cost(k_).time_s)


# --------------------------------------------------------------------------------------------
# PIM: energy
# --------------------------------------------------------------------------------------------
@FAST
@given(preset, reuse, dim, dim)
def test_pim_energy_positive_and_parts_consistent(name, m, k, n):
    c = PIMModel(pim(name)).cost(FCKernel("w", m, k, n))
    assert c.energy_j > 0
    assert min(c.memory_s, c.compute_s, c.transfer_s) >= 0
    assert c.time_s == pytest.approx(c.memory_s + c.compute_s + c.transfer_s)


@FAST
@given(preset, reuse, st.sampled_from([128, 512, 4096]), st.integers(1, 8), st.integers(1, 8))
def test_pim_energy_additive_on_row_aligned_splits(name, m, k, a, b):
    """Splitting the output columns into whole rows per bank: energy adds exactly, except that
    two kernels broadcast the same m x k input twice."""
    s = pim(name)
    model = PIMModel(s)
    # columns that fill exactly one row in every bank: banks x row_bytes / (k x 2 B)
    unit = s.dram.banks * s.dram.row_bytes // (k * 2)
    e = lambda cols: model.cost(FCKernel("w", m, k, cols)).energy_j  # noqa: E731
    input_j = m * k * 2 * 8 * model.io_pj_per_bit * 1e-12
    assert e((a + b) * unit) + input_j == pytest.approx(e(a * unit) + e(b * unit), rel=1e-9)


@FAST
@given(preset, reuse, dim, dim, dim)
def test_pim_energy_additive_within_rounding(name, m, k, n1, n2):
    """Unaligned splits differ by the ceil rounding (at most 2 rows opened and 2 bursts per bank)
    and by the input broadcast that the split pays twice."""
    s = pim(name)
    model = PIMModel(s)
    e = lambda cols: model.cost(FCKernel("w", m, k, cols)).energy_j  # noqa: E731
    d, en = s.dram, s.energy
    slack = (
        d.banks
        * 2
        * (d.row_bytes * 8 * en.act_pre_pj_per_bit + d.burst_bytes * 8 * en.cell_pj_per_bit)
        * 1e-12
    )
    input_j = m * k * 2 * 8 * model.io_pj_per_bit * 1e-12
    gap = e(n1) + e(n2) - e(n1 + n2) - input_j  # what the split pays extra for rounding
    assert -1e-18 - 1e-9 * slack <= gap <= slack * (1 + 1e-9)


@FAST
@given(preset, reuse, dim, dim, st.integers(1, 100))
def test_pim_count_instances_scale_linearly(name, m, k, n, count):
    model = PIMModel(pim(name))
    one = model.cost(FCKernel("w", m, k, n))
    many = model.cost(FCKernel("w", m, k, n, count=count))
    assert many.energy_j == one.energy_j  # the model prices one instance
    assert many.scale(count).energy_j == pytest.approx(count * one.energy_j)


@FAST
@given(
    preset,
    st.lists(st.tuples(st.integers(0, 8), st.integers(1, 20000)), min_size=1, max_size=8),
    st.sampled_from([(8, 8), (64, 8), (32, 32)]),
    st.sampled_from(["score", "softmax", "context"]),
)
def test_pim_attention_batch_equals_requests_alone(name, reqs, heads, op):
    model = PIMModel(pim(name))
    q = np.array([r[0] for r in reqs])
    ctx = np.array([r[1] for r in reqs])
    batch = model.cost(AttentionKernel(op, q, ctx, heads[0], heads[1], 128))
    for i in range(len(reqs)):
        one = model.cost(AttentionKernel(op, q[i : i + 1], ctx[i : i + 1], heads[0], heads[1], 128))
        assert one.time_s[0] == pytest.approx(batch.time_s[i])
        assert one.energy_j[0] == pytest.approx(batch.energy_j[i])
    assert np.all(batch.energy_j >= 0)
    assert np.all((batch.energy_j > 0) | (q == 0))


@FAST
@given(preset, st.integers(1, 8), st.integers(1, 20000), st.integers(1, 5000))
def test_pim_attention_longer_context_never_faster(name, q, ctx, extra):
    model = PIMModel(pim(name))
    for op in ("score", "softmax", "context"):
        short = model.cost(AttentionKernel(op, np.array([q]), np.array([ctx]), 64, 8, 128))
        long = model.cost(AttentionKernel(op, np.array([q]), np.array([ctx + extra]), 64, 8, 128))
        assert _le(short.time_s[0], long.time_s[0])


# --------------------------------------------------------------------------------------------
# SSD-PIM
# --------------------------------------------------------------------------------------------
@FAST
@given(st.integers(0, 10**9), st.integers(1, 10**8))
def test_ssd_stream_monotone_in_bytes(b, extra):
    m = SSDPIMModel(ssd())
    assert _le(float(m.stream_s(b)), float(m.stream_s(b + extra)))


@FAST
@given(reuse, dim, dim, st.integers(1, 4), st.integers(1, 4), st.integers(1, 2))
def test_ssd_more_hardware_never_slower(m, k, n, ch, dies, planes):
    s = ssd()
    big = s.model_copy(
        update={
            "channels": s.channels * ch,
            "dies_per_channel": s.dies_per_channel * dies,
            "planes_per_die": s.planes_per_die * planes,
        }
    )
    k_ = FCKernel("w", m, k, n)
    assert _le(SSDPIMModel(big).cost(k_).time_s, SSDPIMModel(s).cost(k_).time_s)


@FAST
@given(reuse, st.integers(1, 64), st.integers(1, 64))
def test_ssd_energy_additive_on_page_aligned_splits(m, a, b):
    """k = 8192 FP16 rows of 16 KiB: n columns = n pages; energy adds exactly."""
    model = SSDPIMModel(ssd())
    e = lambda cols: model.cost(FCKernel("w", m, 8192, cols)).energy_j  # noqa: E731
    assert e(a) > 0
    assert e(a + b) == pytest.approx(e(a) + e(b), rel=1e-9)


@FAST
@given(st.lists(st.tuples(st.integers(0, 8), st.integers(1, 50000)), min_size=1, max_size=8))
def test_ssd_attention_batch_equals_requests_alone(reqs):
    model = SSDPIMModel(ssd())
    q = np.array([r[0] for r in reqs])
    ctx = np.array([r[1] for r in reqs])
    batch = model.cost(AttentionKernel("context", q, ctx, 64, 8, 128))
    for i in range(len(reqs)):
        one = model.cost(AttentionKernel("context", q[i : i + 1], ctx[i : i + 1], 64, 8, 128))
        assert one.time_s[0] == pytest.approx(batch.time_s[i])
        assert one.energy_j[0] == pytest.approx(batch.energy_j[i])
    assert np.all((batch.energy_j > 0) | (q == 0))
