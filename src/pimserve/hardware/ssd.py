"""SSD-PIM cost model: flash page reads pipelined against the channels, controller PUs compute.

Registered as ``"ssd_pim"`` (and ``"ssd_pim:roofline"``, the same model: it is already a
two-resource roofline over streaming and compute).

Streaming ``B`` bytes (a weight, or one request's K or V)
---------------------------------------------------------
Data is read page by page. Every die reads ``planes_per_die`` pages in ``t_r`` (planes in
parallel); pages then move over their channel at ``channel_mtps x channel_width_bytes`` bytes/s,
and the dies of a channel read their next pages while the channel transfers (a two-stage
pipeline)::

    pages        = ceil(B / page_bytes)
    rounds       = ceil(pages / (channels x dies_per_channel x planes_per_die))
    array_s      = rounds x t_r                                  (array-read bound)
    channel_s    = ceil(pages / channels) x page_bytes / channel_rate   (channel bound)
    last_xfer_s  = min(dies_per_channel x planes_per_die, ceil(pages / channels)) x page_xfer_s
    stream_s     = max(array_s + last_xfer_s, t_r + channel_s)

The second term is "channel bound plus one t_r of pipeline fill"; the first is "array bound plus
draining the last round's pages over the channel" (the brief's ``+ t_r`` fill would double count
the last read round when reads are the bottleneck).

Compute on the controller PUs runs at ``controller_pus x macs_per_pu x 2 x pu_clock`` FLOP/s,
capped by ``peak_gflops_cap``, overlapped with streaming: ``time_s = max(stream_s, compute_s)``.
Softmax runs on the controller's reduction units (``reduction_units x macs_per_pu`` lanes at the
PU clock; on the PUs if there are none), 5 ops per score element, under the same cap.
``transfer_s`` is 0: the host link (PCIe/NVMe) is priced by the link model.

A sparse attention reads scattered KV blocks (``AttentionKernel.read_run_tokens`` > 0): each
run of ``r`` tokens of ``b`` bytes per token costs whole pages, so a request reading ``c``
tokens streams ``ceil(c / r) x ceil(r x b / page_bytes) x page_bytes`` bytes. [INF] PAM does not
describe the SSD's KV layout; this takes a request's tokens as appended in order (a dense read
streams whole pages) and a selected block as its own read. For LLaMA3-70B on 8 SSDs (one KV
head each) a 16-token block is 4 KiB of K and 4 KiB of V against 16 KiB pages: 4x the bytes.

Energy (joules): every page read pays ``flash_read_pj_per_bit`` and ``channel_pj_per_bit`` for all
its bits (pages are the read granularity), each MAC ``mac_pj``, each softmax op ``mac_pj``, and
``static_power_w x time_s``. Attention is vectorised over requests with numpy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pimserve.hardware.cost import COST_MODELS, Cost, CostModel
from pimserve.hardware.pim import _PJ, SOFTMAX_OPS_PER_ELEMENT, _arr
from pimserve.ops.kernels import AttentionKernel, FCKernel
from pimserve.specs.devices import SSDPIMSpec


@COST_MODELS.register("ssd_pim")
class SSDPIMModel(CostModel):
    """SSD with processing units in its controller (PAM's SSD-PIM tier)."""

    method = "detailed"
    spec: SSDPIMSpec

    def __init__(self, spec: SSDPIMSpec):
        if not isinstance(spec, SSDPIMSpec):
            raise TypeError(f"SSDPIMModel needs an SSDPIMSpec, got {type(spec).__name__}")
        super().__init__(spec)
        s = spec
        self.page_bytes = s.page_kb * 1024
        self.t_r_s = s.t_r_us * 1e-6
        self.channel_bytes_per_s = s.channel_mtps * 1e6 * s.channel_width_bytes
        self.page_xfer_s = self.page_bytes / self.channel_bytes_per_s
        self.parallel_pages = s.channels * s.dies_per_channel * s.planes_per_die
        peak = s.controller_pus * s.macs_per_pu * 2 * s.pu_clock_mhz * 1e6
        cap = s.peak_gflops_cap * 1e9
        #: FLOP/s of the controller PUs under the power cap
        self.flops_per_s = min(peak, cap) if cap > 0 else peak
        lanes = (s.reduction_units or s.controller_pus) * s.macs_per_pu
        rate = lanes * s.pu_clock_mhz * 1e6
        #: softmax ops per second (reduction units, or PUs if none), under the cap
        self.softmax_ops_per_s = min(rate, cap) if cap > 0 else rate

    @property
    def internal_bw_bytes_per_s(self) -> float:
        """Steady-state streaming rate: min(array-read rate, channel rate), bytes/s."""
        array = self.parallel_pages * self.page_bytes / self.t_r_s
        return min(array, self.spec.channels * self.channel_bytes_per_s)

    def stream_s(self, nbytes: Any) -> np.ndarray:
        """Seconds to read ``nbytes`` (array over requests) from flash to the controller."""
        s = self.spec
        b = _arr(nbytes)
        pages = np.ceil(b / self.page_bytes)
        rounds = np.ceil(pages / self.parallel_pages)
        per_channel = np.ceil(pages / s.channels)
        array_s = rounds * self.t_r_s
        channel_s = per_channel * self.page_xfer_s
        last = np.minimum(s.dies_per_channel * s.planes_per_die, per_channel) * self.page_xfer_s
        t = np.maximum(array_s + last, self.t_r_s + channel_s)
        return np.where(pages > 0, t, 0.0)

    def _price(self, nbytes: Any, flops: Any, active: Any) -> Cost:
        s = self.spec
        b, f = _arr(nbytes), _arr(flops)
        memory_s = self.stream_s(b)
        compute_s = f / self.flops_per_s
        time_s = np.maximum(memory_s, compute_s)
        pages = np.ceil(b / self.page_bytes)
        bits = pages * self.page_bytes * 8
        e = s.energy
        energy = (
            bits * (e.flash_read_pj_per_bit + e.channel_pj_per_bit) * _PJ
            + f / 2 * e.mac_pj * _PJ
            + s.static_power_w * time_s
        )
        act = np.asarray(active, dtype=bool) & (b > 0)

        def gate(x: Any) -> np.ndarray:
            return np.where(act, x, 0.0)

        return Cost(
            time_s=gate(time_s),
            energy_j=gate(energy),
            compute_s=gate(compute_s),
            memory_s=gate(memory_s),
            transfer_s=gate(np.zeros_like(time_s)),
        )

    def fc(self, k: FCKernel) -> Cost:
        """One FC kernel instance: the weight streams from flash once, reused ``m`` times."""
        c = self._price(k.weight_bytes, k.flops, k.m > 0)
        return Cost(*(float(v) for v in c.as_dict().values()))

    def attention(self, k: AttentionKernel) -> Cost:
        """Per-request cost (arrays) of one attention kernel instance on this SSD."""
        if k.op == "softmax":
            ops = _arr(k.score_bytes) / k.dtype_bytes * SOFTMAX_OPS_PER_ELEMENT
            t = ops / self.softmax_ops_per_s
            j = ops * self.spec.energy.mac_pj * _PJ + self.spec.static_power_w * t
            z = np.zeros_like(t)
            return Cost(time_s=t, energy_j=j, compute_s=t, memory_s=z, transfer_s=z)
        return self._price(self.read_bytes(k), k.flops, _arr(k.q_tokens) > 0)

    def read_bytes(self, k: AttentionKernel) -> np.ndarray:
        """Per-request bytes the flash reads for ``k``'s K or V: whole pages per run of a
        scattered (sparse) read, else the bytes themselves (rounded to pages when priced)."""
        if k.read_run_tokens <= 0:
            return _arr(k.kv_bytes)
        run = k.read_run_tokens
        pages_per_run = math.ceil(run * k.kv_bytes_per_token / self.page_bytes)
        runs = np.ceil(_arr(k.context) / run)
        return runs * (pages_per_run * self.page_bytes)


@COST_MODELS.register("ssd_pim:roofline")
class SSDPIMRooflineModel(SSDPIMModel):
    """The same model under the ``roofline`` method name (it is a streaming/compute roofline)."""

    method = "roofline"
