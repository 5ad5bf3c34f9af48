"""GPU cost models: a tile-based xPU model after AttAcc (``gpu``), AttAcc's model exactly as its
simulator computes it (``gpu:attacc``, not monotone; for reproducing its numbers) and a plain
roofline (``gpu:roofline``).

All three price the same kernel kinds through :class:`~pimserve.hardware.cost.CostModel`:

**FC kernels** ``(m x k) @ (k x n)`` (``m`` tokens, ``k`` input features, ``n`` output features,
``db`` bytes per element; FLOP rate = peak x 2/db, so FP8/INT8 run at twice the FP16 rate as in
AttAcc and FP32 at half).

``gpu:roofline``: ``time = max(flops / (peak x compute_eff), min_bytes / (bw x memory_eff))
+ launch`` with ``min_bytes`` = weights + inputs + outputs read or written once.

``gpu`` (AttAcc ``src/devices.py`` ``xPU``, facts/papi.md section 6), for one L1 tile
``T = (tm, tn)`` (each from AttAcc's range {8, 16, 32, 64, 128, 192, ..., 512}, clamped to
``m`` and ``n``; ``tk = 32``; T must fit in ``l1_kb_per_sm`` with double-buffered A and B tiles
and the C tile: ``2 (tm + tn) tk db + tm tn db <= L1``):

- threadblocks ``tb = ceil(m/tm) ceil(n/tn)``, waves ``w = ceil(tb / S)`` (S = SMs),
  SM utilisation ``tb / (w S)`` (AttAcc's formula);
- ``compute_T = w S (2 tm tn k) / (peak x compute_eff)``. This is AttAcc's
  ``flops / (peak x eff x util)`` with ``flops`` counted over whole tiles; the two are equal when
  the tiles divide the shape. Counting partial tiles as whole keeps time monotone: AttAcc's form
  lets a shape one row past a tile boundary finish faster than the aligned shape below it;
- off-chip bytes, from AttAcc's L2 tiling: over L2 tiles ``(Lm, Ln)`` that are multiples of T
  (or all of ``m`` / ``n``) and fit the L2, ``(Lm + Ln)(k/64) db + Lm Ln db <= l2_mb MiB``
  (AttAcc's L2 tile-k is k/64), the least of
  ``offchip = [ceil(m/Lm) n k + ceil(n/Ln) m k + m n] db``: weights are read once per L2 row
  band (``ceil(m/Lm)`` times), inputs once per L2 column band (``ceil(n/Ln)`` times), outputs
  written once. (For a given ``Lm`` the widest fitting ``Ln`` is best, so the search is one loop.)
- ``memory_T = max(offchip, stream) / (bw x memory_eff)`` with
  ``stream = max(ceil(nb/S) S tn, ceil(mb/S) S tm) k db`` (``nb``, ``mb`` = tile columns and
  rows). AttAcc divides by the SM utilisation, i.e. an SM draws at most ``bw/S``; ``stream``
  says the same of the two operand streams: the weight matrix is read by ``nb`` column strips
  (``tn x k`` each) running at most ``S`` at a time, each at ``bw/S``; likewise the inputs by
  ``mb`` row strips. For a GEMV this equals AttAcc's ``offchip / util``; it differs from AttAcc
  where AttAcc lets extra row tiles that share the same weights through L2 each draw ``bw/S``
  (which makes AttAcc's time drop when ``m`` grows past a tile boundary);
- ``time_T = max(compute_T, memory_T)``.

``time = min over tiles of time_T + launch``: the library picks its fastest tiling. Each
``time_T`` is non-decreasing in ``m``, ``k`` and ``n`` and the set of tiles that fit only shrinks
as the shape grows, so the model's time never decreases with the shape (AttAcc instead picks the
tile by ``L2 traffic / util^2`` and is not monotone). AttAcc's metric still decides which tile's
traffic is charged for energy: the most L2-frugal tile whose time is within 1 % of the fastest
(a tiling that is 0.1 % faster by wave quantisation but moves 30x the L2 bytes is not what a
library runs). ``compute_s`` and ``memory_s`` are those of the fastest tile, so
``time_s = max(compute_s, memory_s) + launch`` exactly. Against AttAcc on a100-hbm3: GEMVs agree
within 0.1 %; for m of about 16 to 1024 this model is up to ~40 % faster, where AttAcc's metric
picks a tile that leaves SMs idle (``gpu:attacc`` reproduces AttAcc's own numbers).

The search is vectorised with numpy: every tile is priced at once (ties in time, and tiles in
the 1 % band, ranked by AttAcc's metric with the first in ``(tm, tn)`` order winning), and L2
tilings and tiles that provably cannot win or cannot change the choice are skipped (see
``GPUModel.fc_plan`` and ``GPUModel._offchip_tiles``), so the tiles, bytes and times are exactly
those of pricing every tile and every L2 tiling in turn.

Energy (AttAcc's table, ``GPUEnergy``): off-chip bytes x ``offchip_pj_per_byte``; L2 bytes =
the traffic between L2 and the SMs at the L1 tile, ``[ceil(n/tn) m k + ceil(m/tm) n k + m n] db``
x ``l2_pj_per_byte``; L1 bytes = the same formula at AttAcc's 16 x 16 register tile x
``l1_pj_per_byte``; register accesses ``3 m n k`` (AttAcc counts elements) x
``reg_pj_per_byte``; MACs (``flops / 2``) x ``mac_pj``; plus ``static_power_w x time``.
The roofline variant charges its ``min_bytes`` once at each of off-chip, L2 and L1, and
registers and MACs as above.

A calibration table (``calibration=`` or ``GPUSpec.calibration_csv``: CSV ``kernel,m,k,n,time_us``)
replaces the time of the shapes it lists (``kernel`` names an FC kernel or ``*`` for any);
energy still comes from the traffic model, its static part from the measured time.

**Attention**, as ``GPUSpec.attention_kernel`` says (``peak`` and ``bw`` below are the
achievable rates, peak x efficiency; FLOP rate x 2/db as for FC):

``split_kv`` (vLLM-style FlashDecoding, one fused kernel): per request, ``score`` reads K and the
queries, ``context`` reads V and writes the outputs; softmax is fused (scores never reach HBM),
so ``softmax`` costs only its FLOPs. ``time = max(flops / peak, bytes / bw)`` per request, as if
it ran alone; split-KV keeps every SM busy, so no SM-utilisation factor.

``head_per_sm`` (AttAcc's GPU attention, src/model.py + src/devices.py ``xPU``): the work unit
is one (request, KV head) pair (with its ``n_heads / n_kv_heads`` query heads), run by one SM at
``peak / S`` and ``bw / S`` (``S`` = ``n_sms``). Score, softmax and context are separate kernels
and the scores go through HBM; per pair, with ``q`` query tokens, ``L`` context tokens, ``g``
query heads, head dimension ``d`` and ``db`` bytes per element:
``score`` reads Q and K and writes S: ``(g q d + L d + g q L) db``;
``softmax`` reads S and writes P: ``2 g q L db``;
``context`` reads P and V and writes O: ``(g q L + L d + g q d) db``;
flops as the kernel counts them (``2 g q L d`` for score and context, ``5 g q L`` for softmax).
A pair takes ``t = S max(flops / peak, bytes / bw)``. The ``N`` pairs of the batch run in
``ceil(N / S)`` waves of ``S``, longest first (the packing with the least sum of wave maxima);
a wave lasts as long as its longest pair and the kernel as long as its waves together. With one
context length (AttAcc's case) this is AttAcc's ``X / (rate x util)`` with
``util = N / (ceil(N / S) S)``: ``time = ceil(N / S) t``. It applies to prefill kernels too, as
in AttAcc. The per-request arrays are the request's share of the batch's time, in proportion to
its pairs' own time, so they sum to the kernel's time; unlike ``split_kv`` they depend on the
other requests in the kernel (``GPUModel.attention_batch_coupled``); ``GPUModel.head_per_sm_pair``
prices one pair alone, for a caller that forms the waves itself.

Launch overhead is not in the per-request arrays (they are summed over requests); a caller that
wants it adds ``kernel_launch_s`` once per batched kernel. Energy (both kinds): bytes through HBM,
L2 and L1 once each, ``flops / 2`` MACs, static power x time.

**All-reduce** (AttAcc's fit to measured A100 NVLink all-reduce): ``CollectiveKernel.bytes`` is
the tensor each GPU holds (AttAcc's ``m n db``); with ``N`` participants and chunk
``c = bytes / N``: ``time = (N - 1) max(6060 ns + 0.009 ns/B x c x 600 / BW, c / (BW/2))``
with ``BW = nvlink_gbps`` (both directions, GB/s). ``N <= 1`` or no bytes costs nothing.
Energy, of all ``N`` GPUs together: a ring moves ``2 (N - 1) / N x bytes`` out of each GPU,
``2 (N - 1) x bytes`` in all, at ``comm_pj_per_byte``, plus each GPU's static power x time.
(AttAcc charges ``2 N x bytes``, 8/7 of this for 8 GPUs.)
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pimserve.errors import ConfigurationError, SpecError
from pimserve.fileio import MAX_SPEC_BYTES, read_bounded_text
from pimserve.hardware.cost import COST_MODELS, Cost, CostModel
from pimserve.ops.kernels import AttentionKernel, CollectiveKernel, FCKernel

#: L1 tile sizes AttAcc searches (src/devices.py ``trange``)
TILE_SIZES: tuple[int, ...] = (8, 16, 32, 64, 128, 192, 256, 320, 384, 448, 512)
#: L1 tile depth (AttAcc ``l1_tk``)
L1_TILE_K = 32
#: AttAcc's L2 tile depth is k / L2_TILE_K_DIVISOR ("experimentally found")
L2_TILE_K_DIVISOR = 64
#: register tile AttAcc uses to count L1 traffic
REG_TILE = 16
#: tiles within this fraction of the fastest time compete on AttAcc's traffic metric
NEAR_OPTIMAL = 0.01

# AttAcc's all-reduce fit (src/devices.py get_nvlink_time): 6060 ns + 0.009 ns/B at 600 GB/s
ALLREDUCE_BASE_NS = 6060.0
ALLREDUCE_NS_PER_BYTE = 0.009
ALLREDUCE_REF_GBPS = 600.0

CalibrationKey = tuple[str, int, int, int]
CalibrationInput = str | Path | Mapping[Any, float] | None


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _tile_traffic(m: int, k: int, n: int, tm: int, tn: int) -> int:
    """Elements moved for an ``m x k x n`` product tiled ``tm x tn`` (AttAcc
    ``_get_traffic_for_tile``): inputs once per tile column, weights once per tile row, outputs
    once."""
    return _ceil_div(n, tn) * m * k + _ceil_div(m, tm) * n * k + m * n


#: the vectorised metric (``x * x``) may differ from ``x ** 2`` in the last bit: tiles within
#: this fraction of the least are re-ranked with the scalar formula
_METRIC_SLACK = 1e-12
#: above this many tiles the L2 search first cuts the L2 tilings that cannot win
_FEW_TILES = 4
#: FC shapes each GPU model keeps priced (:meth:`GPUModel._fc_formula`), least recent out first
_FORMULA_MEMO = 1 << 16


def _int_dtype(m: int, k: int, n: int, db: int, n_sms: int) -> type:
    """int64 where every integer of the tile formulas fits in it and every quotient of two of
    them is exact in float64 (all real shapes); otherwise Python integers (object arrays)."""
    c = TILE_SIZES[-1] * (n_sms + 1)
    if (m + c) * (n + c) < 2**53 and 3 * (m + c) * (n + c) * k * db < 2**63:
        return np.int64
    return object


def _tile_grid(m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``min(a, m)`` (column) and ``min(b, n)`` (row) for ``a``, ``b`` in
    :data:`TILE_SIZES`, ascending: the tiles ``(min(a, m), min(b, n))`` are their pairs."""
    a = [t for t in TILE_SIZES if t < m] + ([m] if m <= TILE_SIZES[-1] else [])
    b = [t for t in TILE_SIZES if t < n] + ([n] if n <= TILE_SIZES[-1] else [])
    return np.array(a, dtype=np.int64)[:, None], np.array(b, dtype=np.int64)[None, :]


def _f64(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float64, copy=False)


@dataclass(frozen=True, slots=True)
class _TileSet:
    """Candidate L1 tiles in search order: ``tm``, ``tn`` (int64), the distinct ``tm``
    ascending (``tms``), per tile the index of its ``tm`` there (``group``) and the least
    ``tn`` (``tn_min``)."""

    tm: np.ndarray
    tn: np.ndarray
    tms: np.ndarray
    group: np.ndarray
    tn_min: int

    @classmethod
    def of(cls, tm: np.ndarray, tn: np.ndarray) -> _TileSet:
        """Tiles ``(tm[i], tn[i])``, ``tm`` ascending."""
        first = np.ones(len(tm), dtype=bool)  # (np.unique would import numpy.ma on first use)
        first[1:] = tm[1:] != tm[:-1]
        return cls(tm, tn, tm[first], np.cumsum(first) - 1, int(tn.min()))

    @classmethod
    def single(cls, tm: int, tn: int) -> _TileSet:
        one = np.array([tm], dtype=np.int64)
        return cls(one, np.array([tn], dtype=np.int64), one, np.zeros(1, dtype=np.intp), tn)


@dataclass(frozen=True, slots=True)
class TileCost:
    """One L1 tiling of an FC kernel and what it costs (one instance, seconds and bytes)."""

    tm: int
    tn: int
    l2_tm: int
    l2_tn: int
    threadblocks: int
    waves: int
    compute_s: float
    memory_s: float
    offchip_bytes: float
    l2_bytes: float

    @property
    def time_s(self) -> float:
        """max(compute, memory), seconds (no launch overhead)."""
        return max(self.compute_s, self.memory_s)

    def sm_util(self, n_sms: int) -> float:
        """AttAcc's SM utilisation: threadblocks / (waves x SMs)."""
        return self.threadblocks / (self.waves * n_sms)

    def attacc_metric(self, n_sms: int) -> float:
        """AttAcc's tile-selection metric: L2 traffic x (1 / SM utilisation)^2."""
        return self.l2_bytes / self.sm_util(n_sms) ** 2


@dataclass(frozen=True, slots=True)
class FCPlan:
    """How the ``gpu`` model runs one FC kernel.

    ``fastest`` gives the time (``time_s = max(compute, memory)`` of the fastest tiling, seconds,
    without launch overhead); ``charged`` is the tiling whose traffic is charged for energy (the
    most L2-frugal within :data:`NEAR_OPTIMAL` of the fastest). Bytes are per instance.
    """

    fastest: TileCost
    charged: TileCost
    l1_bytes: float
    reg_accesses: float

    @property
    def time_s(self) -> float:
        return self.fastest.time_s


def load_calibration(source: CalibrationInput) -> dict[CalibrationKey, float]:
    """Measured FC times, microseconds, keyed by ``(kernel, m, k, n)`` (``kernel`` may be ``*``).

    ``source`` is a CSV path with header ``kernel,m,k,n,time_us`` or a mapping whose keys are
    ``(kernel, m, k, n)`` or ``(m, k, n)`` (any kernel) and whose values are microseconds.
    """
    if source is None:
        return {}
    if isinstance(source, Mapping):
        out: dict[CalibrationKey, float] = {}
        for key, t in source.items():
            if not isinstance(key, tuple) or len(key) not in (3, 4):
                raise SpecError(f"calibration: key {key!r} must be (kernel, m, k, n) or (m, k, n)")
            name, *shape = ("*", *key) if len(key) == 3 else key
            out[_calibration_key(str(name), shape, t, "calibration")] = float(t)
        return out
    return _read_calibration_csv(Path(source))


def _calibration_key(name: str, shape: list[Any], t: Any, where: str) -> CalibrationKey:
    try:
        m, k, n = (int(v) for v in shape)
        tf = float(t)
    except (TypeError, ValueError):
        raise SpecError(
            f"{where}: m, k, n must be integers and time_us a number (got {shape}, {t!r})"
        ) from None
    if min(m, k, n) <= 0 or not tf > 0 or math.isinf(tf):
        raise SpecError(f"{where}: m, k, n and time_us must be positive (got {shape}, {t!r})")
    return (name.strip() or "*", m, k, n)


def _read_calibration_csv(path: Path) -> dict[CalibrationKey, float]:
    try:
        text = read_bounded_text(path, MAX_SPEC_BYTES, "calibration table")
    except OSError as err:
        raise SpecError(f"{path}: cannot read calibration table ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: calibration table is not UTF-8 text (byte {err.start})"
                        ) from None
    rows = list(csv.reader(text.splitlines()))
    want = ["kernel", "m", "k", "n", "time_us"]
    if not rows or [c.strip() for c in rows[0]] != want:
        # the line itself is not echoed: the path may name any file the user can read
        what = "is empty" if not rows else "does not start with the header"
        raise SpecError(f"{path}:1: not a calibration table: it {what} '{','.join(want)}'")
    out: dict[CalibrationKey, float] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 5:
            raise SpecError(f"{path}:{lineno}: expected 5 columns {','.join(want)}, got {len(row)}")
        key = _calibration_key(row[0], row[1:4], row[4], f"{path}:{lineno}")
        out[key] = float(row[4])
    return out


@COST_MODELS.register("gpu")
class GPUModel(CostModel):
    """AttAcc's xPU model: roofline with tile-derived traffic and SM utilisation (module doc).

    ``calibration``: a CSV path or mapping of measured FC times (see :func:`load_calibration`);
    entries here override those of ``spec.calibration_csv``.
    """

    method = "detailed"

    def __init__(self, spec: Any, calibration: CalibrationInput = None):
        super().__init__(spec)
        table = load_calibration(spec.calibration_csv) if spec.calibration_csv else {}
        table.update(load_calibration(calibration))
        self.calibration: dict[CalibrationKey, float] = table
        # candidate L1 tiles by (min(m, 512), min(n, 512), dtype bytes), built once per instance
        self._tile_lists: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._attacc_tile_lists: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}
        # _fc_formula by (m, k, n, dtype bytes): kernels of one shape (a layer's gate and up
        # projections) share it (as CostModel memoises whole FC costs by kernel)
        self._formula_of_shape = functools.lru_cache(maxsize=_FORMULA_MEMO)(self._shape_formula)

    # ---------------------------------------------------------------- device rates
    @property
    def flops_per_s(self) -> float:
        """Achievable FP16 FLOP/s: peak x compute efficiency."""
        return self.spec.peak_tflops * 1e12 * self.spec.compute_efficiency

    @property
    def bytes_per_s(self) -> float:
        """Achievable memory bandwidth, bytes/s: peak x memory efficiency."""
        return self.spec.hbm_bw_gbps * 1e9 * self.spec.memory_efficiency

    @property
    def ridge_flop_per_byte(self) -> float:
        """Arithmetic intensity (FLOP/byte) where achievable compute and bandwidth meet."""
        return self.flops_per_s / self.bytes_per_s

    @property
    def kernel_launch_s(self) -> float:
        return self.spec.kernel_launch_us * 1e-6

    @staticmethod
    def _rate_factor(dtype_bytes: int) -> float:
        """FLOP-rate multiplier for the element size (AttAcc: FP8 twice FP16)."""
        return 2.0 / dtype_bytes

    def _static_j(self, time_s: Any) -> Any:
        return self.spec.static_power_w * time_s

    # ---------------------------------------------------------------- elementwise
    def elementwise(self, kind: str, nbytes: float) -> Cost:
        """One memory-bound elementwise kernel moving ``nbytes``: ``kind`` "norm" (a layer
        norm with its residual add) or "activation" (the FFN activation and gate product).
        Time = the kernel's fixed time (``norm_kernel_us`` / ``activation_kernel_us``) + bytes at
        the effective bandwidth; energy = the bytes' off-chip energy + static power."""
        fixed_us = (self.spec.norm_kernel_us if kind == "norm"
                    else self.spec.activation_kernel_us)
        if nbytes <= 0:
            return Cost(0.0, 0.0)
        memory_s = nbytes / (self.spec.hbm_bw_gbps * 1e9 * self.spec.memory_efficiency)
        time_s = fixed_us * 1e-6 + memory_s
        dyn_j = nbytes * self.spec.energy.offchip_pj_per_byte * 1e-12
        return Cost(time_s, dyn_j + self._static_j(time_s), 0.0, time_s, 0.0)

    # ---------------------------------------------------------------- FC
    def fc(self, k: FCKernel) -> Cost:
        """One FC kernel instance: the tiled (or roofline) formula, or its calibrated time."""
        if min(k.m, k.k, k.n) < 0 or k.dtype_bytes <= 0:
            raise ConfigurationError(
                f"FC kernel '{k.name}': m, k, n must be >= 0 and dtype_bytes > 0 "
                f"(got m={k.m}, k={k.k}, n={k.n}, dtype_bytes={k.dtype_bytes})"
            )
        if min(k.m, k.k, k.n) == 0:
            return Cost(0.0, 0.0)
        compute_s, memory_s, dyn_j = self._fc_formula(k)
        time_s = max(compute_s, memory_s) + self.kernel_launch_s
        measured = self.calibration.get((k.name, k.m, k.k, k.n))
        if measured is None:
            measured = self.calibration.get(("*", k.m, k.k, k.n))
        if measured is not None:
            time_s = measured * 1e-6
        return Cost(time_s, dyn_j + self._static_j(time_s), compute_s, memory_s, 0.0)

    def _fc_formula(self, k: FCKernel) -> tuple[float, float, float]:
        """(compute_s, memory_s, dynamic energy J) of one instance, without launch overhead
        (memoised by shape: it depends on nothing else)."""
        return self._formula_of_shape(k.m, k.k, k.n, k.dtype_bytes)

    def _shape_formula(self, m: int, kk: int, n: int, db: int) -> tuple[float, float, float]:
        """:meth:`_fc_formula` of an ``m x kk x n`` kernel of ``db``-byte elements, computed
        (the kernel's name changes nothing: ``fc`` checks the shape before it gets here)."""
        k = FCKernel("fc", m, kk, n, dtype_bytes=db)
        plan = self.fc_plan(k)
        e = self.spec.energy
        c = plan.charged
        dyn_pj = (
            c.offchip_bytes * e.offchip_pj_per_byte
            + c.l2_bytes * e.l2_pj_per_byte
            + plan.l1_bytes * e.l1_pj_per_byte
            + plan.reg_accesses * e.reg_pj_per_byte
            + k.flops / 2.0 * e.mac_pj
        )
        return plan.fastest.compute_s, plan.fastest.memory_s, dyn_pj * 1e-12

    def fc_plan(self, k: FCKernel) -> FCPlan:
        """The tilings the model considers for ``k`` and the ones it uses (see :class:`FCPlan`).

        All candidate tiles are priced at once with numpy. A tile's off-chip bytes lie between
        those of one L2 tile holding everything (``[n k + m k + m n] db``, exactly its bytes when
        such a tile fits) and those of the L2 tiling ``Lm = m``; the L2 search
        (:meth:`_offchip_tiles`) runs only for tiles whose time these bounds leave open and that
        could still be within :data:`NEAR_OPTIMAL` of the fastest. Ties in time and near-ties
        in AttAcc's metric are re-ranked with the scalar formulas of :class:`TileCost`, so the
        tiles chosen are those a loop over the tiles in order chooses.
        """
        m, kk, n, db = k.m, k.k, k.n, k.dtype_bytes
        if min(m, kk, n) <= 0:
            raise ConfigurationError(f"FC kernel '{k.name}': fc_plan needs m, k, n > 0")
        s_ = self.spec.n_sms
        bw = self.bytes_per_s
        tm0, tn0 = self._tiles(m, n, db)
        ints = _int_dtype(m, kk, n, db, s_)
        tm, tn = tm0.astype(ints, copy=False), tn0.astype(ints, copy=False)
        mb, nb = -(-m // tm), -(-n // tn)
        tb = mb * nb
        waves = -(-tb // s_)
        rate = self.flops_per_s * self._rate_factor(db)
        compute = _f64(waves * s_ * 2.0 * tm * tn * kk / rate)
        # integers, exact: max(ceil(nb/S) S tn, ceil(mb/S) S tm) k db and _tile_traffic x db
        stream = _f64(np.maximum(-(-nb // s_) * tn, -(-mb // s_) * tm) * (s_ * kk * db))
        l2_bytes = _f64((nb * (m * kk) + mb * (n * kk) + m * n) * db)
        least = (1.0 * n * kk + 1.0 * m * kk + float(m) * n) * db  # off-chip bytes, lower bound
        known: dict[int, tuple[float, int, int]] = {}  # exact off-chip bytes, L2 tm, L2 tn
        whole = self._output_fits_l2(m, kk, n, db)
        time = np.maximum(compute, np.maximum(least, stream) / bw)  # exact if whole, else a bound
        if not whole:
            most = self._offchip_lm_m(m, kk, n, db, tm0, tn0)  # off-chip bytes, upper bound
            upper = np.maximum(compute, np.maximum(most, stream) / bw)
            todo = np.flatnonzero((time < upper) & (time <= upper.min() * (1.0 + NEAR_OPTIMAL)))
            if len(todo):
                off, l2_tm, l2_tn = self._offchip_tiles(
                    m, kk, n, db, _TileSet.of(tm0[todo], tn0[todo])
                )
                time[todo] = np.maximum(compute[todo], np.maximum(off, stream[todo]) / bw)
                exact = zip(off.tolist(), l2_tm.tolist(), l2_tn.tolist(), strict=True)
                known.update(zip(todo.tolist(), exact, strict=True))
            # tiles left are exact (time == upper) or slower than any near-optimal tile

        def metric(i: int) -> float:  # TileCost.attacc_metric
            return float(l2_bytes[i]) / (int(tb[i]) / (int(waves[i]) * s_)) ** 2

        # fastest: least time, ties broken by AttAcc's metric, then by tile order
        t_min = float(time.min())
        ties = np.flatnonzero(time == t_min).tolist()
        fast = min(ties, key=metric) if len(ties) > 1 else ties[0]
        # charged: least AttAcc metric within NEAR_OPTIMAL of the fastest, then least time
        near = time <= t_min * (1.0 + NEAR_OPTIMAL)
        approx = np.where(near, l2_bytes / np.square(_f64(tb / (waves * s_))), np.inf)
        close = np.flatnonzero(approx <= approx.min() * (1.0 + _METRIC_SLACK)).tolist()
        charged = min(close, key=lambda i: (metric(i), time[i])) if len(close) > 1 else close[0]

        if whole:
            known = dict.fromkeys((fast, charged), (least, m, n))
        elif missing := sorted({fast, charged} - known.keys()):
            off, l2_tm, l2_tn = self._offchip_tiles(
                m, kk, n, db, _TileSet.of(tm0[missing], tn0[missing])
            )
            exact = zip(off.tolist(), l2_tm.tolist(), l2_tn.tolist(), strict=True)
            known.update(zip(missing, exact, strict=True))

        def tile(i: int) -> TileCost:
            off, l2_tm, l2_tn = known[i]
            memory_s = max(off, float(stream[i])) / bw
            return TileCost(
                int(tm[i]), int(tn[i]), l2_tm, l2_tn, int(tb[i]), int(waves[i]),
                float(compute[i]), memory_s, off, float(l2_bytes[i]),
            )  # fmt: skip

        fastest = tile(fast)
        l1_bytes = float(_tile_traffic(m, kk, n, REG_TILE, REG_TILE) * db)
        return FCPlan(
            fastest, fastest if charged == fast else tile(charged), l1_bytes, 3.0 * m * n * kk
        )

    def _tiles(self, m: int, n: int, db: int) -> tuple[np.ndarray, np.ndarray]:
        """The L1 tiles ``(min(a, m), min(b, n))`` that fit ``l1_kb_per_sm``, each once,
        ascending as ``(tm, tn)`` (cached: they depend on the shape only through the clamp)."""
        key = (min(m, TILE_SIZES[-1]), min(n, TILE_SIZES[-1]), db)
        tiles = self._tile_lists.get(key)
        if tiles is None:
            s = self.spec
            a, b = _tile_grid(m, n)
            fits = 2 * (a + b) * L1_TILE_K * db + a * b * db <= s.l1_kb_per_sm * 1024
            if not fits.any():
                raise ConfigurationError(
                    f"GPU '{s.name}': l1_kb_per_sm={s.l1_kb_per_sm} holds no {TILE_SIZES[0]}x"
                    f"{TILE_SIZES[0]} tile (needs {(4 * TILE_SIZES[0] * L1_TILE_K + 64) * db} "
                    "bytes)"
                )
            rows, cols = np.nonzero(fits)
            tiles = (a[rows, 0], b[0, cols])
            self._tile_lists[key] = tiles
        return tiles

    def _output_fits_l2(self, m: int, k: int, n: int, db: int) -> bool:
        """Whether one L2 tile holds the whole ``m x n`` output (``Lm = m``, ``Ln = n``) and
        every byte count is an exact integer in float64; then that tiling moves the least
        off-chip bytes, ``[n k + m k + m n] db``, for every L1 tile, and no other ties it."""
        if (2 * m * n * k + m * n) * db >= 2**53:
            return False
        tk2 = k / L2_TILE_K_DIVISOR
        return float(n) <= (self.spec.l2_mb * 1024 * 1024 / db - m * tk2) / (tk2 + m)

    def _offchip(self, m: int, k: int, n: int, db: int, tm: int, tn: int) -> tuple[float, int, int]:
        """Least off-chip bytes over AttAcc's L2 tilings of an L1 tile (bytes, L2 tm, L2 tn)."""
        if self._output_fits_l2(m, k, n, db):
            return (1.0 * n * k + 1.0 * m * k + float(m) * n) * db, m, n
        off, l2_tm, l2_tn = self._offchip_tiles(m, k, n, db, _TileSet.single(tm, tn))
        return float(off[0]), int(l2_tm[0]), int(l2_tn[0])

    def _offchip_lm_m(
        self, m: int, k: int, n: int, db: int, tm: np.ndarray, tn: np.ndarray
    ) -> np.ndarray:
        """Off-chip bytes of the tiles ``(tm, tn)`` at the L2 tiling ``Lm = m`` (inf where no
        ``Ln`` fits): one of the tilings :meth:`_offchip` searches, so an upper bound."""
        cap = self.spec.l2_mb * 1024 * 1024 / db
        tk2 = k / L2_TILE_K_DIVISOR
        bound = (cap - m * tk2) / (tk2 + m)
        ln = np.where(float(n) <= bound, n, np.floor(max(bound, 0.0) / tn) * tn).astype(np.int64)
        ln = np.where(tm == m, np.maximum(ln, tn), ln)
        ok = ln >= tn
        traffic = (
            1.0 * n * k + (-(-n // np.where(ok, ln, 1))).astype(np.float64) * m * k + float(m) * n
        ) * db
        return np.where(ok, traffic, np.inf)

    def _offchip_tiles(
        self, m: int, k: int, n: int, db: int, ts: _TileSet
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_offchip` of every tile of ``ts`` at once (arrays of bytes, L2 tm, L2 tn).

        AttAcc's L2 tilings are ``Lm`` in ``tm, 2 tm, ..., m``, each with the widest ``Ln``
        that fits; the least bytes win, the smallest ``Lm`` on ties. The widest ``Ln`` never
        grows with ``Lm`` and the bytes never shrink as ``ceil(m/Lm)`` or ``ceil(n/Ln)`` grow,
        so of the ``Lm`` that share ``ceil(m/Lm)`` the smallest wins and only a superset of
        those is priced: ``Lm = j tm`` for ``j <= sqrt(m/tm)`` and ``ceil(m / (q tm)) tm`` for
        ``q <= sqrt(m/tm)``, one ascending row per distinct ``tm``. For many tiles the rows are
        cut to the ``Lm`` that can win before they are spread over the tiles: the first of each
        ``ceil(m/Lm)`` run, not those whose ``Ln`` is below the narrowest ``tn`` even before
        rounding and, when every byte count is an exact integer in float64 (all real shapes;
        no ties between different ``ceil`` pairs then), of the ``Lm`` whose ``Ln`` is all of
        ``n`` only the largest.
        """
        cap = self.spec.l2_mb * 1024 * 1024 / db  # L2 capacity in elements
        tk2 = k / L2_TILE_K_DIVISOR
        tms = ts.tms[:, None]
        jt = np.arange(1, math.isqrt(m // int(ts.tms[0])) + 2, dtype=np.int64) * tms
        lm = np.minimum(np.concatenate((jt, -(-m // jt) * tms), axis=1), m)
        lm.sort(axis=1)
        q = -(-m // lm)
        bound = (cap - lm * tk2) / (tk2 + lm)  # widest Ln that fits, for each Lm
        n_fits = n <= bound
        room = np.maximum(bound, 0.0)
        keep = None
        if len(ts.tm) > _FEW_TILES:
            keep = np.ones(lm.shape, dtype=bool)  # first of each ceil(m/Lm) run ...
            keep[:, 1:] = q[:, 1:] != q[:, :-1]
            keep[:, 1:] &= n_fits[:, 1:] | (np.floor(room[:, 1:] / ts.tn_min) >= 1)  # Ln >= tn
            if (2 * m * n * k + m * n) * db < 2**53:  # of the Lm with Ln = n only the last
                whole = n_fits & keep
                last = lm.shape[1] - 1 - np.argmax(whole[:, ::-1], axis=1)
                keep &= ~whole | (np.arange(lm.shape[1]) == last[:, None])
            # the kept Lm of each row first, in order (Lm = tm, first, is kept or loses)
            width = int(keep.sum(axis=1).max())
            at = (np.arange(len(lm))[:, None], np.argsort(~keep, axis=1, kind="stable")[:, :width])
            lm, q, n_fits, room, keep = lm[at], q[at], n_fits[at], room[at], keep[at]
        q_bytes = q.astype(np.float64) * n * k
        # the original formulas for every tile, on the row of its tm
        g = ts.group
        tn = ts.tn[:, None]
        ln = np.where(n_fits[g], n, np.floor(room[g] / tn) * tn).astype(np.int64)
        # AttAcc always allows the L1 tile itself (Lm = tm, the first; a repeat of it loses)
        own = lm[:, 0] == ts.tms if keep is None else keep[:, 0] & (lm[:, 0] == ts.tms)
        ln[:, 0] = np.where(own[g], np.maximum(ln[:, 0], ts.tn), ln[:, 0])
        ok = ln >= tn if keep is None else (ln >= tn) & keep[g]
        ln_safe = np.where(ok, ln, 1)
        traffic = (
            q_bytes[g] + (-(-n // ln_safe)).astype(np.float64) * m * k + float(m) * n
        ) * db
        traffic = np.where(ok, traffic, np.inf)
        i = traffic.argmin(axis=1)
        rows = np.arange(len(i))
        return traffic[rows, i], lm[g, i], ln[rows, i]

    # ---------------------------------------------------------------- attention
    @property
    def attention_batch_coupled(self) -> bool:
        """True when a request's attention time depends on the other requests of the kernel
        (``head_per_sm``: SM waves are shared), so per-request costs cannot be tabulated by
        context alone; price the real batch and sum the per-request arrays instead."""
        return self.spec.attention_kernel == "head_per_sm"

    def attention_unit(self, k: AttentionKernel) -> Cost:
        """One placement unit: with ``head_per_sm`` one (request, KV head) pair alone on an SM
        (the dataflow packs the pairs into waves); otherwise :meth:`attention`."""
        if self.spec.attention_kernel == "head_per_sm":
            return self.head_per_sm_pair(k)
        return self.attention(k)

    def attention(self, k: AttentionKernel) -> Cost:
        """One attention kernel, per request (arrays), by ``spec.attention_kernel``
        (module doc): FlashDecoding split-KV, or AttAcc's one (request, KV head) per SM."""
        if self.spec.attention_kernel == "head_per_sm":
            return self._head_per_sm(k)
        flops = np.asarray(k.flops, dtype=np.float64)
        if k.op == "score":
            nbytes = k.kv_bytes + k.q_bytes
        elif k.op == "context":
            nbytes = k.kv_bytes + k.out_bytes
        else:  # softmax: fused, its scores stay on chip
            nbytes = np.zeros_like(flops)
        compute_s = flops / (self.flops_per_s * self._rate_factor(k.dtype_bytes))
        memory_s = nbytes / self.bytes_per_s
        time_s = np.maximum(compute_s, memory_s)
        energy_j = self._attention_dynamic_j(flops, nbytes) + self._static_j(time_s)
        return Cost(time_s, energy_j, compute_s, memory_s, np.zeros_like(time_s))

    def _attention_dynamic_j(self, flops: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
        """Joules of moving ``nbytes`` through HBM, L2 and L1 once and ``flops / 2`` MACs."""
        e = self.spec.energy
        dyn_pj = (
            nbytes * (e.offchip_pj_per_byte + e.l2_pj_per_byte + e.l1_pj_per_byte)
            + flops / 2.0 * e.mac_pj
        )
        return dyn_pj * 1e-12

    def head_per_sm_pair(self, k: AttentionKernel) -> Cost:
        """Per request: ONE of its (request, KV head) pairs of ``k`` run alone on one SM at
        ``1 / n_sms`` of the FLOP rate and bandwidth, with ``head_per_sm``'s unfused traffic
        (module doc); energy is the pair's dynamic energy only (static power is charged on
        the kernel's time by whoever combines the pairs into waves, see :func:`wave_time_s`)."""
        n_sms, h = self.spec.n_sms, k.n_kv_heads
        if k.op == "score":  # reads Q and K, writes the scores
            nbytes = k.q_bytes + k.kv_bytes + k.score_bytes
        elif k.op == "softmax":  # reads the scores, writes the probabilities
            nbytes = 2.0 * k.score_bytes
        else:  # context: reads the probabilities and V, writes the outputs
            nbytes = k.score_bytes + k.kv_bytes + k.out_bytes
        flops = np.asarray(k.flops, dtype=np.float64) / h
        nbytes = np.asarray(nbytes, dtype=np.float64) / h
        rate = self.flops_per_s * self._rate_factor(k.dtype_bytes)
        compute_s = n_sms * flops / rate
        memory_s = n_sms * nbytes / self.bytes_per_s
        time_s = np.maximum(compute_s, memory_s)
        return Cost(time_s, self._attention_dynamic_j(flops, nbytes), compute_s, memory_s,
                    np.zeros_like(time_s))

    def _head_per_sm(self, k: AttentionKernel) -> Cost:
        """``head_per_sm``: the kernel's pairs in waves of ``n_sms`` (:func:`wave_time_s`);
        each request's share of the wave time is in proportion to its pairs' own time, so the
        shares sum to it; ``compute_s`` and ``memory_s`` are scaled alike (their larger equals
        ``time_s``). Energy: all pairs' dynamic energy plus static power x the share."""
        pair = self.head_per_sm_pair(k)
        h = k.n_kv_heads
        t = np.asarray(pair.time_s)
        work = float(t.sum())
        scale = wave_time_s(t, h, self.spec.n_sms) / work if work > 0 else 0.0
        time_s = t * scale
        energy_j = pair.energy_j * h + self._static_j(time_s)
        return Cost(time_s, energy_j, pair.compute_s * scale, pair.memory_s * scale,
                    np.zeros_like(time_s))

    # ---------------------------------------------------------------- all-reduce
    def collective(self, k: CollectiveKernel) -> Cost:
        """A ring all-reduce over NVLink with AttAcc's measured-fit formula (module doc)."""
        if k.bytes < 0 or k.participants < 1:
            raise ConfigurationError(
                f"collective '{k.name}': bytes must be >= 0 and participants >= 1 "
                f"(got bytes={k.bytes}, participants={k.participants})"
            )
        if k.participants == 1 or k.bytes == 0:
            return Cost(0.0, 0.0)
        time_s = allreduce_time_s(k.bytes, k.participants, self.spec.nvlink_gbps,
                                  self.spec.allreduce_step_ns)
        # a ring all-reduce moves 2 (N - 1) / N of the tensor out of each of the N GPUs:
        # 2 (N - 1) x bytes in all, each byte paying the link energy once
        n = k.participants
        traffic = 2.0 * (n - 1) * k.bytes
        energy_j = traffic * self.spec.energy.comm_pj_per_byte * 1e-12 + n * self._static_j(time_s)
        return Cost(time_s, energy_j, 0.0, 0.0, time_s)


def wave_time_s(pair_s: np.ndarray, pairs_per_request: int, n_sms: int) -> float:
    """Seconds to run every pair in waves of ``n_sms`` SMs, longest first.

    Request ``i`` has ``pairs_per_request`` pairs of ``pair_s[i]`` seconds each; a wave lasts
    as long as its longest pair, so the time is the sum of the wave maxima. Sorting longest
    first is the packing with the least such sum. Computed per request, never per pair: the
    first pair of wave ``j`` is sorted pair ``j n_sms``, of sorted request
    ``j n_sms // pairs_per_request``.
    """
    t = np.asarray(pair_s, dtype=np.float64)
    if t.size == 0:
        return 0.0
    h = int(pairs_per_request)
    ts = np.sort(t)[::-1]
    starts = np.arange(0, ts.size * h, int(n_sms), dtype=np.int64)
    return float(ts[starts // h].sum())


def allreduce_time_s(bytes_: float, participants: int, nvlink_gbps: float,
                     step_ns: float = ALLREDUCE_BASE_NS) -> float:
    """AttAcc's all-reduce time, seconds, of a ``bytes_`` tensor over ``participants`` GPUs.

    ``(N - 1) x max(step_ns + 0.009 ns/B x c x 600 / BW, c / (BW / 2))`` with chunk
    ``c = bytes_ / N``, ``BW`` = NVLink GB/s (both directions) and ``step_ns`` the fixed time
    of a ring step (AttAcc: 6060 ns; GPUSpec.allreduce_step_ns). The floor never binds for any
    BW (0.009 x 600 / BW = 5.4 / BW ns/B > 2 / BW ns/B); it is kept as AttAcc writes it.
    """
    if participants <= 1 or bytes_ <= 0:
        return 0.0
    chunk = bytes_ / participants
    step_ns = step_ns + ALLREDUCE_NS_PER_BYTE * chunk * ALLREDUCE_REF_GBPS / nvlink_gbps
    floor_ns = chunk / (nvlink_gbps / 2.0)  # bytes / (GB/s) = ns
    return (participants - 1) * max(step_ns, floor_ns) * 1e-9


@COST_MODELS.register("gpu:roofline")
class GPURooflineModel(GPUModel):
    """Plain roofline GPU: FC traffic is the minimum bytes (weights + inputs + outputs once)."""

    method = "roofline"

    def _fc_formula(self, k: FCKernel) -> tuple[float, float, float]:
        compute_s = k.flops / (self.flops_per_s * self._rate_factor(k.dtype_bytes))
        memory_s = k.bytes_total / self.bytes_per_s
        e = self.spec.energy
        dyn_pj = (
            k.bytes_total * (e.offchip_pj_per_byte + e.l2_pj_per_byte + e.l1_pj_per_byte)
            + 3.0 * k.m * k.n * k.k * e.reg_pj_per_byte
            + k.flops / 2.0 * e.mac_pj
        )
        return compute_s, memory_s, dyn_pj * 1e-12


@COST_MODELS.register("gpu:attacc")
class GPUAttAccModel(GPUModel):
    """AttAcc's xPU FC model exactly as its simulator computes it (for reproducing its numbers).

    Tile chosen by AttAcc's metric ``L2 traffic / util^2`` over its L1 rule
    ``(tm + tn) 32 db + tm tn db <= L1`` (no double buffering), first minimum in AttAcc's loop
    order; ``compute = flops / (peak x eff x util)``, ``memory = offchip / (bw x eff x util)``
    with the threadblock utilisation. Not monotone in the shape: e.g. on a100-hbm3,
    ``m = 16, k = 8192, n = 432`` takes about half the time of ``m = 8`` (two row tiles share
    the weights through L2 while each draws bw/S). Attention, all-reduce and energy as ``gpu``.
    """

    method = "attacc"

    def fc_plan(self, k: FCKernel) -> FCPlan:
        m, kk, n, db = k.m, k.k, k.n, k.dtype_bytes
        if min(m, kk, n) <= 0:
            raise ConfigurationError(f"FC kernel '{k.name}': fc_plan needs m, k, n > 0")
        s_ = self.spec.n_sms
        tm0, tn0 = self._attacc_tiles(m, n, db)
        if not len(tm0):
            raise ConfigurationError(
                f"GPU '{self.spec.name}': l1_kb_per_sm={self.spec.l1_kb_per_sm} holds no tile"
            )
        # AttAcc's metric for every tile in its loop order; the first least wins. The tiles
        # within _METRIC_SLACK of the least are re-ranked with the scalar formula (x ** 2).
        ints = _int_dtype(m, kk, n, db, s_)
        tm, tn = tm0.astype(ints, copy=False), tn0.astype(ints, copy=False)
        mb, nb = -(-m // tm), -(-n // tn)
        tb = mb * nb
        traffic = (nb * m * kk + mb * n * kk + m * n) * db  # _tile_traffic x db
        metric = _f64(traffic) / np.square(_f64(tb / (-(-tb // s_) * s_)))
        best: tuple[float, int, int] | None = None
        for i in np.flatnonzero(metric <= metric.min() * (1.0 + _METRIC_SLACK)):
            util = int(tb[i]) / (_ceil_div(int(tb[i]), s_) * s_)
            exact = int(traffic[i]) / util**2
            if best is None or exact < best[0]:
                best = (exact, int(tm[i]), int(tn[i]))
        assert best is not None
        _, tm_, tn_ = best
        tb_ = _ceil_div(m, tm_) * _ceil_div(n, tn_)
        waves = _ceil_div(tb_, s_)
        util = tb_ / (waves * s_)
        offchip, l2_tm, l2_tn = self._offchip(m, kk, n, db, tm_, tn_)
        compute_s = k.flops / (self.flops_per_s * self._rate_factor(db) * util)
        memory_s = offchip / (self.bytes_per_s * util)
        l2_bytes = float(_tile_traffic(m, kk, n, tm_, tn_) * db)
        tile = TileCost(tm_, tn_, l2_tm, l2_tn, tb_, waves, compute_s, memory_s, offchip, l2_bytes)
        l1_bytes = float(_tile_traffic(m, kk, n, REG_TILE, REG_TILE) * db)
        return FCPlan(tile, tile, l1_bytes, 3.0 * m * n * kk)

    def _attacc_tiles(self, m: int, n: int, db: int) -> tuple[np.ndarray, np.ndarray]:
        """AttAcc's L1 tiles ``(min(a, m), min(b, n))`` that fit, each once, in its loop order
        (a repeat comes after the tile's first appearance, so it never wins; cached)."""
        key = (min(m, TILE_SIZES[-1]), min(n, TILE_SIZES[-1]), db)
        tiles = self._attacc_tile_lists.get(key)
        if tiles is None:
            a, b = _tile_grid(m, n)
            fits = (a + b) * L1_TILE_K * db + a * b * db <= self.spec.l1_kb_per_sm * 1024
            rows, cols = np.nonzero(fits)
            tiles = (a[rows, 0], b[0, cols])
            self._attacc_tile_lists[key] = tiles
        return tiles


__all__ = [
    "FCPlan",
    "GPUAttAccModel",
    "GPUModel",
    "GPURooflineModel",
    "TileCost",
    "allreduce_time_s",
    "load_calibration",
    "wave_time_s",
]
