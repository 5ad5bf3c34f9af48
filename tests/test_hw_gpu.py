"""GPU cost models: hand-computed FC, attention and all-reduce costs, calibration, properties."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pimserve.errors import ConfigurationError, SpecError
from pimserve.hardware.cost import COST_MODELS, cost_model_for
from pimserve.hardware.gpu import (
    L1_TILE_K,
    GPUAttAccModel,
    GPUModel,
    GPURooflineModel,
    allreduce_time_s,
)
from pimserve.ops.kernels import AttentionKernel, CollectiveKernel, FCKernel
from pimserve.specs.base import read_yaml
from pimserve.specs.catalog import PRESETS
from pimserve.specs.devices import GPUSpec

REL = 1e-9


def gpu(name: str, **update: object) -> GPUSpec:
    """A GPU preset read straight from gpu.yaml (independent of the other device files)."""
    for item in read_yaml(PRESETS / "devices" / "gpu.yaml"):
        if item["name"] == name:
            return GPUSpec(**{**item, **update})
    raise KeyError(name)


A100A = gpu("a100-hbm3", attention_kernel="split_kv")  # the FlashDecoding-style model
EFF_FLOPS = 312e12 * 0.8  # 249.6e12 FLOP/s
EFF_BW = 3352e9 * 0.85  # 2849.2e9 B/s


def fc(m: int, k: int, n: int, **kw: object) -> FCKernel:
    return FCKernel("qkv", m, k, n, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ presets
def test_presets_carry_the_datasheet_and_attacc_numbers():
    a, a3, h, h2 = gpu("a100"), A100A, gpu("h100"), gpu("h200")
    assert (a.peak_tflops, a.hbm_bw_gbps, a.hbm_capacity_gb, a.n_sms, a.l2_mb) == (
        312,
        2039,
        80,
        108,
        40,
    )
    assert (a3.peak_tflops, a3.hbm_bw_gbps, a3.nvlink_gbps) == (312, 3352, 600)
    assert (h.peak_tflops, h.hbm_bw_gbps, h.n_sms, h.l2_mb, h.nvlink_gbps) == (
        989.4,
        3350,
        132,
        50,
        900,
    )
    assert (h2.peak_tflops, h2.hbm_bw_gbps, h2.hbm_capacity_gb) == (989, 4800, 141)


def test_registered_under_gpu_and_gpu_roofline():
    assert COST_MODELS.get("gpu") is GPUModel
    assert COST_MODELS.get("gpu:roofline") is GPURooflineModel
    assert type(cost_model_for(A100A, "attacc")) is GPUAttAccModel
    assert isinstance(cost_model_for(A100A), GPUModel)
    assert type(cost_model_for(A100A, "roofline")) is GPURooflineModel


# ------------------------------------------------------------------------------------ FC, tiled
def test_gemv_is_memory_bound_at_hbm_bandwidth_times_sm_utilisation():
    g = GPUModel(A100A)
    c = g.cost(fc(1, 8192, 8192))
    # Weights 8192*8192*2 = 134,217,728 B. Best tiling: 1x16 tiles -> 8192/16 = 512 threadblocks
    # on 108 SMs = ceil(512/108) = 5 waves, SM utilisation 512/540 = 0.9481.
    # time = 134,217,728 / (3352e9 * 0.85 * 512/540) = 141,557,760 / 2849.2e9 = 49.6833 us
    expected = 134_217_728 / (EFF_BW * 512 / 540)
    assert c.time_s == pytest.approx(expected, rel=REL)
    assert c.time_s == pytest.approx(49.6833e-6, rel=1e-5)
    assert c.memory_s == c.time_s and c.compute_s < c.memory_s / 50
    plan = g.fc_plan(fc(1, 8192, 8192))
    assert (plan.charged.tm, plan.charged.tn) == (1, 16)
    assert plan.charged.sm_util(108) == pytest.approx(512 / 540)
    # off-chip: weights once (L2 tile 1 x 8192 fits 40 MiB) + input 16 KiB + output 16 KiB
    assert plan.charged.offchip_bytes == 134_217_728 + 16_384 + 16_384


def test_gemv_energy_counts_each_level_as_documented():
    c = GPUModel(A100A).cost(fc(1, 8192, 8192))
    off = 134_250_496  # bytes, previous test
    # L2<->SM traffic at the 1x16 tile: [ceil(8192/16)*1*8192 + 1*8192*8192 + 8192] * 2 B
    l2 = (512 * 8192 + 8192 * 8192 + 8192) * 2  # 142,622,720 B
    l1 = l2  # 16x16 register tile: ceil(8192/16)*8192 + ceil(1/16)*8192^2 + 8192, same numbers
    reg = 3 * 8192 * 8192  # AttAcc counts 3 m n k register accesses
    macs = 8192 * 8192
    pj = off * 28.72 + l2 * 2.4 + l1 * 1.28 + reg * 0.0675 + macs * 0.32  # 4.41559e9 pJ
    assert c.energy_j == pytest.approx(pj * 1e-12, rel=REL)
    assert c.energy_j == pytest.approx(4.41559e-3, rel=1e-5)


def test_big_gemm_is_compute_bound_at_80_percent_of_peak():
    c = GPUModel(A100A).cost(fc(8192, 8192, 8192))
    ideal = 2 * 8192**3 / EFF_FLOPS  # 1.0995e12 / 249.6e12 = 4.40509 ms
    # fastest tiling 8x16: 1024*512 = 524,288 threadblocks, ceil(/108) = 4855 waves,
    # 4855*108 = 524,340 slots -> ideal * 524340/524288 = 4.40553 ms
    assert c.time_s == pytest.approx(ideal * 524_340 / 524_288, rel=REL)
    assert c.time_s == pytest.approx(4.40553e-3, rel=1e-5)
    assert c.compute_s == c.time_s and c.memory_s < c.compute_s


def test_energy_is_charged_on_a_large_tile_for_a_big_gemm():
    plan = GPUModel(A100A).fc_plan(fc(8192, 8192, 8192))
    # the fastest tile is tiny (best wave quantisation) but within 1 % a 128x256-class tile
    # moves far fewer L2 bytes; AttAcc's metric picks it for energy
    assert plan.charged.tm * plan.charged.tn >= 128 * 256
    assert plan.charged.time_s <= plan.fastest.time_s * 1.01
    # the tile fits the 192 KiB L1 with double-buffered A and B tiles and a C tile
    tm, tn = plan.charged.tm, plan.charged.tn
    assert 2 * (tm + tn) * L1_TILE_K * 2 + tm * tn * 2 <= 192 * 1024


def test_attacc_replica_matches_its_formula_and_is_not_monotone():
    ga, g = GPUAttAccModel(A100A), GPUModel(A100A)
    # GEMV: AttAcc divides all off-chip bytes (weights + 16 KiB in + 16 KiB out) by util 512/540
    assert ga.cost(fc(1, 8192, 8192)).time_s == pytest.approx(
        134_250_496 / (EFF_BW * 512 / 540), rel=REL
    )  # 49.6955 us (ours: 49.6833 us, the in/out vectors hide under the weight stream)
    # m=8, n=432, k=8192: 8x8 tiles -> 54 threadblocks, util 54/108 = 0.5;
    # off-chip 432*8192*2 + 8*8192*2 + 8*432*2 = 7,215,872 B -> / (2849.2e9 * 0.5) = 5.0652 us
    t8 = ga.cost(fc(8, 8192, 432)).time_s
    assert t8 == pytest.approx(7_215_872 / (EFF_BW * 0.5), rel=REL)
    # m=16: 8x8 tiles -> 108 threadblocks, util 1; weights still read once (L2 tile 16 x 432):
    # 7,077,888 + 262,144 + 13,824 = 7,353,856 B / 2849.2e9 = 2.5810 us: faster than m=8
    t16 = ga.cost(fc(16, 8192, 432)).time_s
    assert t16 == pytest.approx(7_353_856 / EFF_BW, rel=REL)
    assert t16 < t8
    # the default model streams the weights through 54 column strips either way:
    # 108 SMs x 8 cols x 8192 x 2 B = 14,155,776 B / 2849.2e9 = 4.9683 us for both
    assert g.cost(fc(8, 8192, 432)).time_s == pytest.approx(14_155_776 / EFF_BW, rel=REL)
    assert g.cost(fc(16, 8192, 432)).time_s == pytest.approx(14_155_776 / EFF_BW, rel=REL)


def test_crossover_between_memory_and_compute_bound_near_the_ridge():
    g = GPUModel(A100A)
    # ridge = (312e12 * 0.8) / (3352e9 * 0.85) = 249.6e12 / 2849.2e9 = 87.60 FLOP/B
    assert g.ridge_flop_per_byte == pytest.approx(87.6035, rel=1e-5)
    c64, c128 = g.cost(fc(64, 8192, 8192)), g.cost(fc(128, 8192, 8192))
    assert c64.memory_s > c64.compute_s  # intensity 64*8192/(128+8192) = 63.0 FLOP/B
    assert c128.compute_s > c128.memory_s  # intensity 128*8192/(256+8192) = 124.1 FLOP/B


# ------------------------------------------------------------------------------------ FC, roofline
@pytest.mark.parametrize(
    "shape", [(1, 8192, 8192), (89, 8192, 8192), (8192, 8192, 8192), (7, 3, 5)]
)
def test_roofline_fc_is_max_of_compute_and_minimum_bytes(shape):
    k = fc(*shape)
    c = GPURooflineModel(A100A).cost(k)
    m, kk, n = shape
    flops = 2 * m * kk * n
    nbytes = (kk * n + m * kk + m * n) * 2
    assert c.time_s == pytest.approx(max(flops / EFF_FLOPS, nbytes / EFF_BW), rel=REL)


def test_roofline_crossover_is_at_the_ridge():
    g = GPURooflineModel(A100A)
    # intensity of m x 8192 x 8192 = m*8192/(2m + 8192): m=89 -> 87.11 < 87.60 < 88.07 <- m=90
    assert fc(89, 8192, 8192).intensity < g.ridge_flop_per_byte < fc(90, 8192, 8192).intensity
    c89, c90 = g.cost(fc(89, 8192, 8192)), g.cost(fc(90, 8192, 8192))
    assert c89.memory_s > c89.compute_s and c90.compute_s > c90.memory_s


def test_kernel_launch_adds_once_and_empty_kernels_cost_nothing():
    g0, g5 = GPUModel(A100A), GPUModel(gpu("a100-hbm3", kernel_launch_us=5.0))
    k = fc(1, 8192, 8192)
    assert g5.cost(k).time_s == pytest.approx(g0.cost(k).time_s + 5e-6, rel=REL)
    z = g5.cost(fc(0, 8192, 8192))  # an expert no token was routed to
    assert (z.time_s, z.energy_j) == (0.0, 0.0)
    with pytest.raises(ConfigurationError, match="m, k, n must be >= 0"):
        g0.cost(fc(-1, 8, 8))


# ------------------------------------------------------------------------------------ calibration
def test_calibration_replaces_covered_shapes_only(tmp_path: Path):
    p = tmp_path / "cal.csv"
    p.write_text("kernel,m,k,n,time_us\nqkv,1,8192,8192,100.0\n*,4,8192,8192,150\n")
    spec = gpu("a100-hbm3", static_power_w=100.0)
    plain, cal = GPUModel(spec), GPUModel(spec, calibration=p)
    k1 = fc(1, 8192, 8192)
    assert cal.cost(k1).time_s == pytest.approx(100e-6)
    # energy: same traffic energy; static part over the measured time: 100 W * (100 - 49.68) us
    d_e = cal.cost(k1).energy_j - plain.cost(k1).energy_j
    assert d_e == pytest.approx(100.0 * (100e-6 - plain.cost(k1).time_s), rel=1e-9)
    # the qkv entry does not cover another kernel of the same shape; '*' covers every name
    other = FCKernel("o_proj", 1, 8192, 8192)
    assert cal.cost(other).time_s == pytest.approx(plain.cost(other).time_s)
    assert cal.cost(FCKernel("o_proj", 4, 8192, 8192)).time_s == pytest.approx(150e-6)
    # an uncovered shape keeps the formula
    assert cal.cost(fc(2, 8192, 8192)).time_s == pytest.approx(plain.cost(fc(2, 8192, 8192)).time_s)


def test_calibration_from_spec_field_and_mapping_override(tmp_path: Path):
    p = tmp_path / "cal.csv"
    p.write_text("kernel,m,k,n,time_us\nqkv,1,8192,8192,100.0\n")
    spec = gpu("a100-hbm3", calibration_csv=str(p))
    assert GPUModel(spec).cost(fc(1, 8192, 8192)).time_s == pytest.approx(100e-6)
    g = GPUModel(spec, calibration={(1, 8192, 8192): 80.0, ("qkv", 1, 8192, 8192): 90.0})
    assert g.cost(fc(1, 8192, 8192)).time_s == pytest.approx(90e-6)  # exact name beats '*'


def test_bad_calibration_table_names_file_and_line(tmp_path: Path):
    p = tmp_path / "bad.csv"
    p.write_text("kernel,m,k,n,time_us\nqkv,1,8192,8192,100\nqkv,x,8192,8192,1\n")
    with pytest.raises(SpecError, match=r"bad\.csv:3: m, k, n must be integers"):
        GPUModel(A100A, calibration=p)
    p.write_text("kernel,m,k,time_us\n")
    with pytest.raises(SpecError, match=r"bad\.csv:1: not a calibration table"):
        GPUModel(A100A, calibration=p)
    secret = tmp_path / "unrelated.txt"
    secret.write_text("root:secret-hash:19000\n")
    with pytest.raises(SpecError) as e:
        GPUModel(A100A, calibration=secret)
    assert "secret" not in str(e.value).replace(str(tmp_path), "")  # the file is not echoed
    with pytest.raises(SpecError, match="cannot read"):
        GPUModel(A100A, calibration=tmp_path / "missing.csv")


# ------------------------------------------------------------------------------------ attention
def _attn(op: str) -> AttentionKernel:
    return AttentionKernel(
        op,  # type: ignore[arg-type]
        q_tokens=np.array([1, 4]),
        context=np.array([1000, 2000]),
        n_heads=64,
        n_kv_heads=8,
        head_dim=128,
    )


def test_attention_is_per_request_flashdecoding_roofline():
    g = GPUModel(A100A)
    s = g.cost(_attn("score"))
    # request 0: K = 1000*8*128*2 = 2,048,000 B + q = 1*64*128*2 = 16,384 B -> / 2849.2e9
    # request 1: K = 4,096,000 B + q = 65,536 B; flops 2*4*2000*64*128 = 131.07 MFLOP (0.53 us)
    mem = np.array([2_064_384, 4_161_536]) / EFF_BW
    np.testing.assert_allclose(s.time_s, mem, rtol=REL)
    np.testing.assert_allclose(s.compute_s, np.array([16_384_000, 131_072_000]) / EFF_FLOPS)
    c = g.cost(_attn("context"))  # V plus the outputs (same size as q)
    np.testing.assert_allclose(c.memory_s, mem, rtol=REL)
    sm = g.cost(_attn("softmax"))  # fused: flops only, 5 per score
    np.testing.assert_allclose(sm.memory_s, 0.0)
    np.testing.assert_allclose(sm.time_s, np.array([5 * 1000 * 64, 5 * 4 * 2000 * 64]) / EFF_FLOPS)
    # energy of request 0 (score): bytes through HBM, L2, L1 + MACs
    pj = 2_064_384 * (28.72 + 2.4 + 1.28) + 16_384_000 / 2 * 0.32
    assert s.energy_j[0] == pytest.approx(pj * 1e-12, rel=REL)


# ------------------------------------------------------------------------------------ all-reduce
def test_allreduce_follows_attacc_formula():
    g = GPUModel(A100A)
    # decode: 4 tokens x 12288 x 2 B = 98,304 B over 6 GPUs: chunk 16,384 B
    # step = 6060 + 0.009*16384*600/600 = 6207.456 ns; floor 16384/300 = 54.6 ns; x (6-1)
    c = g.cost(CollectiveKernel("ar", 98_304, 6))
    assert c.time_s == pytest.approx(5 * 6207.456e-9, rel=REL)
    # ring traffic of all 6 GPUs: 2 x (6 - 1) x 98,304 B at 1.3 pJ/bit (10.4 pJ/B)
    assert c.energy_j == pytest.approx(2 * 5 * 98_304 * 10.4e-12, rel=REL)
    # NVLink4 (900 GB/s): step = 6060 + 0.009*16384*600/900 = 6158.304 ns
    h = GPUModel(gpu("h100"))
    assert h.cost(CollectiveKernel("ar", 98_304, 6)).time_s == pytest.approx(5 * 6158.304e-9)
    # 1 GB over 8: chunk 1.25e8 B, step 6060 + 1.125e6 ns = 1,131,060 ns, x7 = 7.91742 ms
    assert allreduce_time_s(1e9, 8, 600) == pytest.approx(7.91742e-3, rel=REL)
    one = g.cost(CollectiveKernel("ar", 98_304, 1))
    assert (one.time_s, one.energy_j) == (0.0, 0.0)


# ------------------------------------------------------------------------------------ properties
shape = st.tuples(st.integers(1, 2048), st.integers(1, 16384), st.integers(1, 16384))
MODELS = {"tiled": GPUModel(A100A), "roofline": GPURooflineModel(A100A)}


@settings(max_examples=50, deadline=None)
@given(shape, st.integers(0, 2), st.integers(1, 600), st.sampled_from(sorted(MODELS)))
def test_time_never_decreases_as_the_shape_grows(s, axis, step, which):
    g = MODELS[which]
    m, k, n = s
    bigger = [m, k, n]
    bigger[axis] += step
    assert g.cost(fc(*bigger)).time_s >= g.cost(fc(m, k, n)).time_s * (1 - 1e-12)
    one = [m, k, n]
    one[axis] += 1  # the next shape up, where tile boundaries bite
    assert g.cost(fc(*one)).time_s >= g.cost(fc(m, k, n)).time_s * (1 - 1e-12)


@settings(max_examples=50, deadline=None)
@given(shape)
def test_tiled_time_is_symmetric_in_m_and_n(s):
    m, k, n = s
    g = MODELS["tiled"]
    assert g.cost(fc(n, k, m)).time_s == pytest.approx(g.cost(fc(m, k, n)).time_s, rel=1e-12)


@settings(max_examples=50, deadline=None)
@given(
    shape,
    st.floats(1.0, 4.0),
    st.sampled_from(["hbm_bw_gbps", "peak_tflops"]),
    st.sampled_from(sorted(MODELS)),
)
def test_time_never_increases_with_more_bandwidth_or_peak(s, factor, field, which):
    base = GPUModel(A100A) if which == "tiled" else GPURooflineModel(A100A)
    better_spec = A100A.model_copy(update={field: getattr(A100A, field) * factor})
    better = type(base)(better_spec)
    k = fc(*s)
    assert better.cost(k).time_s <= base.cost(k).time_s * (1 + 1e-12)


@settings(max_examples=50, deadline=None)
@given(shape, st.integers(1, 96), st.floats(0.0, 700.0), st.sampled_from(sorted(MODELS)))
def test_energy_positive_and_additive(s, count, static_w, which):
    spec = A100A.model_copy(update={"static_power_w": static_w})
    g = GPUModel(spec) if which == "tiled" else GPURooflineModel(spec)
    k = fc(*s)
    c = g.cost(k)
    assert c.energy_j > 0
    # count does not change one instance's cost; count instances cost count times as much
    assert g.cost(replace(k, count=count)) == c
    assert c.scale(count).energy_j == pytest.approx(count * c.energy_j, rel=1e-12)
    # energy = dynamic + static power x time (adds, no cross term)
    g0 = type(g)(A100A)
    assert c.energy_j == pytest.approx(g0.cost(k).energy_j + static_w * c.time_s, rel=1e-9)


@settings(max_examples=50, deadline=None)
@given(shape)
def test_tiled_model_never_beats_the_roofline(s):
    # the tiled model moves at least the minimum bytes and pays SM under-utilisation on top
    k = fc(*s)
    assert MODELS["tiled"].cost(k).time_s >= MODELS["roofline"].cost(k).time_s * (1 - 1e-12)
