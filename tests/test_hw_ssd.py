"""SSD-PIM cost model against hand arithmetic (PAM's SSD-PIM tier, ``pam-ssd-pim``).

Constants: 8 channels x 4 dies x 1 plane = 32 pages per read round; page 16 KiB = 16384 B;
tR = 30 us; channel 2400 MT/s x 1 B = 2.4 GB/s, so one page crosses a channel in
16384 / 2.4e9 = 6.8267 us; PUs 64 x 16 x 2 x 1 GHz = 2.05 TFLOP/s capped at 18 GFLOP/s.
"""

from __future__ import annotations

import numpy as np
import pytest

from pimserve.hardware.cost import COST_MODELS, cost_model_for
from pimserve.hardware.ssd import SSDPIMModel
from pimserve.ops.kernels import AttentionKernel, FCKernel
from pimserve.specs.catalog import load_device
from pimserve.specs.devices import SSDPIMSpec

PAGE = 16384
XFER = PAGE / 2.4e9  # 6.8267 us
TR = 30e-6


def spec() -> SSDPIMSpec:
    s = load_device("pam-ssd-pim")
    assert isinstance(s, SSDPIMSpec)
    return s


def model() -> SSDPIMModel:
    return SSDPIMModel(spec())


def test_capacity_and_registration():
    """256 GB/channel x 8 channels = 2048 GB per SSD."""
    assert spec().capacity_bytes == 2048e9
    assert isinstance(cost_model_for(spec()), SSDPIMModel)
    assert COST_MODELS.get("ssd_pim") is SSDPIMModel
    # steady rate: min(32 pages x 16 KiB / 30 us = 17.48 GB/s, 8 x 2.4 = 19.2 GB/s)
    assert model().internal_bw_bytes_per_s == pytest.approx(32 * PAGE / TR)


def test_stream_4mib_array_bound():
    """4 MiB = 256 pages: 8 read rounds x 30 us = 240 us, then the last round's 4 pages per
    channel drain: 4 x 6.8267 = 27.31 us -> 267.31 us. The channel alone would need
    30 + 32 pages x 6.8267 = 248.45 us, so reads bind."""
    t = model().stream_s(4 * 2**20)
    assert t == pytest.approx(8 * TR + 4 * XFER)
    assert float(t) == pytest.approx(267.307e-6, rel=1e-5)


def test_stream_channel_bound_with_two_planes():
    """Two planes per die: 64 pages per round -> 4 x 30 + 8 x 6.83 = 174.6 us of reads, but the
    channel needs 30 + 32 x 6.8267 = 248.45 us: channel-bound plus one tR of fill."""
    m = SSDPIMModel(spec().model_copy(update={"planes_per_die": 2}))
    assert m.stream_s(4 * 2**20) == pytest.approx(TR + 32 * XFER)


def test_stream_tiny_read_is_one_page():
    """1 byte still reads one page: 30 us + 6.83 us."""
    assert model().stream_s(1) == pytest.approx(TR + XFER)
    assert model().stream_s(0) == 0.0


def test_fc_compute_bound_and_energy():
    """m = 8 over a 4096 x 512 FP16 weight (4 MiB): 2 x 8 x 4096 x 512 = 33.55 MFLOP at
    18 GFLOP/s = 1864 us > 267 us of streaming. Energy (pJ): 256 pages x 131072 bit x
    (18.9 + 4.0) + 8 x 4096 x 512 MACs x 0.32 = 768,396,492.8 + 5,368,709.12."""
    c = model().cost(FCKernel("w", 8, 4096, 512))
    assert c.compute_s == pytest.approx(2 * 8 * 4096 * 512 / 18e9)
    assert c.memory_s == pytest.approx(8 * TR + 4 * XFER)
    assert c.time_s == pytest.approx(c.compute_s)
    assert c.transfer_s == 0.0
    assert c.energy_j == pytest.approx((256 * 131072 * 22.9 + 8 * 4096 * 512 * 0.32) * 1e-12)


def test_fc_stream_bound_at_reuse_1():
    """m = 1: 4.19 MFLOP / 18 GFLOP/s = 233 us < 267.3 us of streaming."""
    c = model().cost(FCKernel("w", 1, 4096, 512))
    assert c.time_s == pytest.approx(8 * TR + 4 * XFER)
    assert c.compute_s == pytest.approx(2 * 4096 * 512 / 18e9)


def test_attention_vectorised_per_request():
    """Each request streams its own K: 2048 tokens x 8 KV heads x 128 x 2 B = 4 MiB -> 267.3 us;
    a 100-token request (200 KiB = 13 pages, one round) -> 30 us + 2 pages x 6.83 us."""
    q = np.array([1, 1, 0])
    ctx = np.array([2048, 100, 2048])
    c = model().cost(AttentionKernel("score", q, ctx, 8, 8, 128))
    assert c.time_s.shape == (3,)
    assert c.time_s[0] == pytest.approx(8 * TR + 4 * XFER)
    # 13 pages over 8 channels: ceil(13/8) = 2 pages on the busiest channel
    assert c.time_s[1] == pytest.approx(TR + 2 * XFER)
    assert c.time_s[2] == 0.0 and c.energy_j[2] == 0.0


def test_softmax_on_reduction_units_under_the_cap():
    """8 RUs x 16 lanes x 1 GHz = 128 Gops/s, capped at 18 GFLOP/s: 5 x 2048 x 64 / 18e9."""
    c = model().cost(AttentionKernel("softmax", np.array([1]), np.array([2048]), 64, 8, 128))
    assert c.time_s[0] == pytest.approx(5 * 2048 * 64 / 18e9)


def test_sparse_block_reads_cost_whole_pages():
    """A sparse read of 16-token blocks of one KV head (128 x 2 B = 256 B per token: 4 KiB of K
    per block) pays a 16 KiB page per block: 4x the bytes of a contiguous read, more read rounds
    and more flash energy; blocks of a whole page (64 tokens) cost what a contiguous read
    does."""
    m = model()
    ctx = np.array([64 * 16, 640])  # 64 blocks; 40 blocks
    q = np.ones(2, dtype=np.int64)

    def kern(run: int) -> AttentionKernel:
        return AttentionKernel("score", q, ctx, 1, 1, 128, 1, 2, read_run_tokens=run)

    dense, sparse, paged = kern(0), kern(16), kern(64)
    np.testing.assert_allclose(m.read_bytes(dense), ctx * 256)
    np.testing.assert_allclose(m.read_bytes(sparse), np.ceil(ctx / 16) * PAGE)
    np.testing.assert_allclose(m.read_bytes(sparse), 4 * ctx * 256)
    np.testing.assert_allclose(m.read_bytes(paged), ctx * 256)  # 64 tokens x 256 B = a page
    cd, cs = m.attention(dense), m.attention(sparse)
    # 64 contiguous blocks = 16 pages (one round); 64 scattered blocks = 64 pages (2 rounds)
    np.testing.assert_allclose(cd.memory_s[0], m.stream_s(np.array([16 * PAGE]))[0])
    np.testing.assert_allclose(cs.memory_s[0], m.stream_s(np.array([64 * PAGE]))[0])
    # 16 pages: 30 us + 2 x 6.83 us; 64 pages: 2 rounds of 30 us + 4 x 6.83 us = 2x
    assert cs.memory_s[0] == pytest.approx(2 * TR + 4 * XFER)
    assert cd.memory_s[0] == pytest.approx(TR + 2 * XFER)
    assert (cs.energy_j > cd.energy_j).all()
    np.testing.assert_allclose(m.attention(paged).time_s, cd.time_s)
