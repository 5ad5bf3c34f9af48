"""The vectorised FC tile search of ``gpu`` and ``gpu:attacc`` gives exactly what the original
per-tile loop gives (tests/_gpu_reference.py): same tiles, bytes, times and energies."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

import pimserve.hardware.gpu as gpu_module
from _gpu_reference import ReferenceGPUAttAccModel, ReferenceGPUModel
from pimserve.errors import ConfigurationError
from pimserve.hardware.gpu import GPUAttAccModel, GPUModel
from pimserve.ops.kernels import FCKernel
from pimserve.specs import load_device

DEVICES = ("a100-hbm3", "h100")
MODELS = {
    "gpu": (GPUModel, ReferenceGPUModel),
    "gpu:attacc": (GPUAttAccModel, ReferenceGPUAttAccModel),
}


def _log_uniform(rng: np.random.Generator, lo: int, hi: int, size: int) -> np.ndarray:
    return np.rint(np.exp(rng.uniform(np.log(lo), np.log(hi), size))).astype(int).clip(lo, hi)


def _random_shapes(seed: int, size: int) -> list[tuple[int, int, int]]:
    """m in 1..4096, k and n in 64..65536, log-uniform (every tile-size regime equally often)."""
    rng = np.random.default_rng(seed)
    m = _log_uniform(rng, 1, 4096, size)
    k = _log_uniform(rng, 64, 65536, size)
    n = _log_uniform(rng, 64, 65536, size)
    return list(zip(m.tolist(), k.tolist(), n.tolist(), strict=True))


SHAPES = _random_shapes(2024, 500)


def _large_shapes(seed: int, size: int) -> list[tuple[int, int, int]]:
    """Prefill-sized products whose output does not fit the L2 (the L2 tiling search runs),
    half with short k (off-chip bytes, not FLOPs, decide the time)."""
    rng = np.random.default_rng(seed)
    m = _log_uniform(rng, 256, 16384, size)
    k = np.where(np.arange(size) % 2 == 0, _log_uniform(rng, 16, 1024, size), 8192)
    n = _log_uniform(rng, 1024, 65536, size)
    return list(zip(m.tolist(), k.tolist(), n.tolist(), strict=True))


LARGE_SHAPES = _large_shapes(11, 60)
# edges: tiny and ragged shapes, tile-size boundaries, GEMV/GEMM extremes, L2 barely (not) fitting
EDGE_SHAPES = [
    (1, 1, 1), (1, 7, 3), (7, 3, 5), (8, 8, 8), (9, 64, 9), (511, 64, 513), (512, 64, 512),
    (513, 65536, 64), (4096, 65536, 65536), (1, 65536, 65536), (4096, 64, 64), (200, 8192, 4096),
    (8192, 8192, 8192), (16, 8192, 432), (3000, 8192, 3000), (2000, 8192, 6000), (65, 1, 4097),
    (30000, 8192, 28672), (100_000, 4096, 128), (65536, 262144, 262144),
]  # fmt: skip


def _pairs(device: str, which: str) -> tuple[GPUModel, GPUModel]:
    new, ref = MODELS[which]
    spec = load_device(device)
    return new(spec), ref(spec)


def _assert_same(new: GPUModel, ref: GPUModel, shape: tuple[int, int, int], db: int = 2) -> None:
    k = FCKernel("x", *shape, dtype_bytes=db)
    want_plan = ref.fc_plan(k)
    assert new.fc_plan(k) == want_plan, (shape, db)
    got, want = new.fc(k), ref.fc(k)
    for f in fields(got):
        a, b = getattr(got, f.name), getattr(want, f.name)
        assert a == pytest.approx(b, rel=1e-12, abs=0.0), (shape, db, f.name)
        assert a == b, (shape, db, f.name)  # in fact bit for bit


@pytest.mark.parametrize("which", sorted(MODELS))
@pytest.mark.parametrize("device", DEVICES)
def test_vectorised_search_equals_the_per_tile_loop(device: str, which: str):
    new, ref = _pairs(device, which)
    for shape in SHAPES:
        _assert_same(new, ref, shape)


@pytest.mark.parametrize("which", sorted(MODELS))
def test_large_shapes_search_the_l2_tilings_alike(which: str):
    new, ref = _pairs("a100-hbm3", which)
    for shape in LARGE_SHAPES:
        _assert_same(new, ref, shape)


@pytest.mark.parametrize("which", sorted(MODELS))
@pytest.mark.parametrize("device", DEVICES)
def test_edge_shapes_and_other_element_sizes(device: str, which: str):
    new, ref = _pairs(device, which)
    for db in (1, 2, 4):
        for shape in EDGE_SHAPES if db == 2 else EDGE_SHAPES[:-3]:  # the last three are slow
            _assert_same(new, ref, shape, db)
    for shape in _random_shapes(7, 20):
        _assert_same(new, ref, shape, 1)
        _assert_same(new, ref, shape, 4)


@pytest.mark.parametrize("which", sorted(MODELS))
def test_python_integer_path_equals_the_int64_path(which: str, monkeypatch: pytest.MonkeyPatch):
    """Shapes too large for int64 arithmetic take object arrays of Python ints; force that path."""
    new, ref = _pairs("a100-hbm3", which)
    monkeypatch.setattr(gpu_module, "_int_dtype", lambda *_: object)
    for shape in [*EDGE_SHAPES[:12], *SHAPES[:30], *LARGE_SHAPES[:10]]:
        _assert_same(new, ref, shape)


def test_small_l1_and_l2_still_agree():
    """Fewer tiles fit a small L1, and a small L2 makes the off-chip search bite."""
    spec = load_device("a100-hbm3").model_copy(update={"l1_kb_per_sm": 20, "l2_mb": 1})
    for new_cls, ref_cls in MODELS.values():
        new, ref = new_cls(spec), ref_cls(spec)
        for shape in [*EDGE_SHAPES, *SHAPES[:60], *LARGE_SHAPES[:10]]:
            _assert_same(new, ref, shape)


def test_huge_l2_with_byte_counts_past_float64_integers():
    """An L2 holding the output while the byte counts pass 2**53 (no shortcut may assume
    exact integers)."""
    spec = load_device("h100").model_copy(update={"l2_mb": 1e6})
    for new_cls, ref_cls in MODELS.values():
        new, ref = new_cls(spec), ref_cls(spec)
        for shape in [(1000, 4_500_000, 1_000_000), (700, 9_000_000, 600_000), (3, 5, 7)]:
            _assert_same(new, ref, shape)


def test_python_integers_past_int64():
    assert gpu_module._int_dtype(2**40, 2**40, 2**40, 2, 108) is object
    assert gpu_module._int_dtype(4096, 65536, 65536, 2, 108) is np.int64


@pytest.mark.parametrize("which", sorted(MODELS))
def test_errors_are_kept(which: str):
    new, _ = _pairs("a100-hbm3", which)
    with pytest.raises(ConfigurationError, match="fc_plan needs m, k, n > 0"):
        new.fc_plan(FCKernel("x", 0, 8, 8))
    tiny = MODELS[which][0](load_device("a100-hbm3").model_copy(update={"l1_kb_per_sm": 1}))
    with pytest.raises(ConfigurationError, match="holds no"):
        tiny.fc_plan(FCKernel("x", 64, 64, 64))
