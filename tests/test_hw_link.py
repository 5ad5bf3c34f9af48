"""Link model: latency + bytes / bandwidth, bytes x 8 x pJ/bit, vectorised over requests."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pimserve.errors import ConfigurationError
from pimserve.hardware.link import LinkModel
from pimserve.specs.base import read_yaml
from pimserve.specs.catalog import PRESETS
from pimserve.specs.devices import LinkSpec


def link(name: str) -> LinkSpec:
    for item in read_yaml(PRESETS / "links" / "links.yaml"):
        if item["name"] == name:
            return LinkSpec(**item)
    raise KeyError(name)


def test_presets_are_per_direction_halves_of_the_quoted_bidirectional_figures():
    # AttAcc INTERFACE_BW (both directions) / 2, as AttAcc divides for a one-way transfer
    bw = {n: link(n).bw_gbps for n in ("nvlink3", "nvlink4", "pcie4", "pcie5", "cxl")}
    assert bw == {"nvlink3": 300, "nvlink4": 450, "pcie4": 32, "pcie5": 64, "cxl": 64}
    assert link("ddr4-bus").bw_gbps == pytest.approx(3200e6 * 8 / 1e9)  # 25.6 GB/s
    assert link("nvlink3").energy_pj_per_bit == 1.3  # AttAcc 'comm'


def test_transfer_of_a_numpy_array_over_pcie5():
    lm = LinkModel(link("pcie5"))  # 64 GB/s per direction, 2 us, 5 pJ/bit
    c = lm.transfer(np.array([0.0, 64e3, 64e9]))
    # 0 B: nothing; 64 kB: 2 us + 64e3/64e9 = 2 us + 1 us; 64 GB: 2 us + 1 s
    np.testing.assert_allclose(c.time_s, [0.0, 3e-6, 1.0 + 2e-6], rtol=1e-12)
    np.testing.assert_allclose(c.transfer_s, c.time_s)
    # energy = bytes x 8 x 5 pJ: 64e3 B -> 2.56e-6 J; 64e9 B -> 2.56 J
    np.testing.assert_allclose(c.energy_j, [0.0, 2.56e-6, 2.56], rtol=1e-12)
    tot = c.total()
    assert tot.time_s == pytest.approx(1.0 + 5e-6) and tot.energy_j == pytest.approx(2.56 + 2.56e-6)


def test_scalar_transfer_returns_floats_and_bad_bytes_are_refused():
    c = LinkModel(link("nvlink3")).transfer(300e9)  # 300 GB at 300 GB/s + 1 us
    assert isinstance(c.time_s, float) and c.time_s == pytest.approx(1.0 + 1e-6)
    assert c.energy_j == pytest.approx(300e9 * 8 * 1.3e-12)  # 3.12 J
    with pytest.raises(ConfigurationError, match="'nvlink3'"):
        LinkModel(link("nvlink3")).transfer(np.array([1.0, -2.0]))


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(0, 1e12), min_size=1, max_size=20),
    st.sampled_from(["nvlink3", "nvlink4", "pcie4", "pcie5", "cxl", "ddr4-bus", "nvme-pcie4x4"]),
)
def test_vectorised_equals_elementwise_and_energy_adds(sizes, name):
    lm = LinkModel(link(name))
    arr = lm.transfer(np.array(sizes))
    for i, b in enumerate(sizes):
        one = lm.transfer(b)
        assert arr.time_s[i] == pytest.approx(one.time_s, rel=1e-12)
        assert arr.energy_j[i] == pytest.approx(one.energy_j, rel=1e-12, abs=1e-30)
    # energy is linear in bytes: one transfer of the sum costs the sum of the energies
    assert lm.transfer(float(sum(sizes))).energy_j == pytest.approx(
        float(np.sum(arr.energy_j)), rel=1e-9, abs=1e-30
    )
