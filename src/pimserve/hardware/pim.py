"""Bank-level PIM cost model: FC and attention kernels priced from DRAM timing.

Two models share one interface (:class:`~pimserve.hardware.cost.CostModel`):

- ``"pim"`` (:class:`PIMModel`, detailed): the analytical bank-level model below.
- ``"pim:roofline"`` (:class:`PIMRooflineModel`): internal bandwidth
  ``banks x burst_bytes / (t_ccd_mac x tCK) / banks_per_fpu`` and compute
  ``n_fpus x macs_per_fpu x 2 x pu_clock`` (capped by ``peak_tflops_cap``), no row or refresh
  overheads; time = max(memory, compute) + transfer. Energy is priced exactly as in the detailed
  model, so the two differ only in time.

The detailed model (all times per device, one kernel instance)
------------------------------------------------------------------
**Mapping.** A weight of ``k x n`` elements is spread evenly over all banks of the device (AttAcc
mapping: the output dimension ``n`` over channels, pseudo-channels and bank groups; the reduction
dimension ``k`` over the banks of a bank group, ranks, chips and multiplier lanes). Per bank::

    bytes_b  = ceil(weight_bytes / banks)
    rows_b   = ceil(bytes_b / row_bytes)
    bursts_b = ceil(bytes_b / burst_bytes)

**Burst interval.** One all-bank MAC command delivers one burst from every bank to its FPU(s); an
FPU does ``macs_per_fpu`` MACs on one burst for one token per command, and a burst holds
``burst_elems = burst_bytes / dtype_bytes`` elements (16 FP16 on HBM3). One FPU operation takes
``t_op = max(t_ccd_mac x tCK, 1 / pu_clock)`` (the command spacing, unless the PU clock is
slower). The interval between two bursts of one bank is::

    t_burst = banks_per_fpu x ceil(m x burst_elems / (macs_per_fpu x fpus_per_bank)) x t_op

so 1P1B (AttAcc) reads one burst per ``t_ccd_mac`` at ``m = 1``; 1P2B (two banks take turns on
one FPU) doubles it; 4P1B (four FPUs share one burst) costs the same for reuse ``m = 1..4`` and
twice as much for ``m = 5..8``.

**Row cycle** (:meth:`PIMModel.row_period_s`). With one PU per bank, each row opened costs
ACT, ``t_rcd`` to the first read, the reads, ``t_rtp`` from the last read to PRE (not before
``t_ras`` after ACT) and ``t_rp``::

    t_row(b) = max(t_ras, t_act + (b - 1) x t_burst + t_rtp) + t_rp   (b = bursts read from it)

with ``b = columns`` for full rows and the remainder for the last one. When a PU takes turns
over several banks (``banks_per_fpu > 1``), the next bank's row opens while the current one
streams and a row costs ``b x t_burst``. Activations are all-bank (``activation: all_bank``,
AttAcc's ACTAB), so ``t_act = t_rcd`` and tRRD/tFAW do not bind. With ``activation:
per_bank`` every row round activates ``banks_per_rank`` banks one by one::

    t_act = max(t_rcd, (banks_per_rank - 1) x t_rrd_s + t_rcd,
                ceil(banks_per_rank / 4 - 1) x t_faw + t_rcd)

**Refresh** (:meth:`PIMModel.refresh_s`). A kernel that keeps the device busy ``T`` holds
``floor(T / t_refi)`` all-bank refreshes of ``t_rfc + t_rp + t_rcd`` each (solved as a fixed
point); shorter kernels pay none. Attention pays it over the whole layer through its dataflow
(:mod:`pimserve.hardware.dataflow`).

**Power cap.** If ``peak_tflops_cap > 0`` the MAC work takes at least ``flops / cap``.

**Parts of the time.** ``memory_s`` is the streaming time if every burst took only its read slot
(``t_ccd_mac x tCK``): what the DRAM alone needs, with ACT/PRE and refresh. ``compute_s`` is the
time the FPUs (slower or shared FPUs, reuse beyond one op per burst, or the power cap) add on top
of it. ``transfer_s`` is I/O and reduction. For this model ``time_s = memory_s + compute_s +
transfer_s``; the streaming part ``memory_s + compute_s`` already takes the per-burst maximum of
read and compute.

**Transfers.** Inputs (``m x k``) are broadcast into the PU buffers and outputs (``m x n``) read
back over the device I/O (``io_bw_gbps``). Partial sums: the reduction dimension of one output is
split over ``k_split = min(banks_per_group x chips_per_rank x ranks, ceil(k / burst_elems))``
banks (the banks under one bank-group controller chain, across ranks and chips: AttAcc splits
``d_head`` over the 4 banks of a bank group; ranks and DIMM chips share one command stream, so
their banks split ``k`` too). When ``k_split > 1`` there are ``m x n x k_split`` partial sums to
reduce. With reduction units (``reduction_units_per_bank_group`` or ``reduction_units_device``
> 0) they are reduced at ``n_ru x reduction_unit_lanes x pu_clock`` elements per second;
otherwise they leave over the device I/O like outputs. A device's reduction units are
``reduction_units_per_bank_group x bank groups + reduction_units_device``.

**Attention.** Score (``Q K^T``) and context (``P V``) stream each request's K or V like a weight
matrix (``kv_bytes`` per request) with reuse ``m = q_tokens x group_size`` (query heads sharing a
KV head). Score has ``k = head_dim``, ``n = context x n_kv_heads``; context has ``k = context``,
``n = head_dim x n_kv_heads``. Score's input is Q (over the I/O); context's output is the
attention output (over the I/O). Scores and probabilities stay in the device: moving them is
charged to the softmax kernel, which is a roofline on the device I/O over the score bytes (AttAcc:
softmax on the buffer die at 670.4 GB/s per HBM) or, when the device has logic-die/DIMM-buffer
reduction units (``reduction_units_device > 0``, PAM), 5 ops per score element on all reduction
units. Everything is vectorised over requests with numpy.

**Energy** (joules, additive over kernels): each row opened in each bank pays
``act_pre_pj_per_bit x row_bytes x 8``; each bit read pays ``cell_pj_per_bit``; each MAC pays
``mac_pj``, or, if ``pu_op_energy_factor > 0``, that many bank-level reads of its weight operand
(PAM: "PU op = 3x a read"); input/output bits pay ``bank_to_bg + bg_to_gio + tsv + interposer``;
partial sums pay ``bank_to_bg`` plus one ``mac_pj`` per element when reduced on reduction units,
or ``bank_to_bg + bg_to_gio + tsv`` when they go to the buffer/logic die; plus
``static_power_w x time_s``.

Not modelled: tRTP/tWR and read-to-precharge details, PU buffer refills when the inputs of ``m``
tokens exceed ``buffer_bytes``, overlap of I/O with MAC commands.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pimserve.hardware.cost import COST_MODELS, Cost, CostModel
from pimserve.ops.kernels import AttentionKernel, FCKernel
from pimserve.specs.devices import PIMSpec

SOFTMAX_OPS_PER_ELEMENT = 5.0
"""max, subtract, exp, sum, divide (as in :attr:`AttentionKernel.flops`)."""

_PJ = 1e-12


def _arr(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


@COST_MODELS.register("pim")
class PIMModel(CostModel):
    """Bank-level PIM priced from DRAM timing (see the module docstring for the model)."""

    method = "detailed"
    spec: PIMSpec

    def __init__(self, spec: PIMSpec):
        if not isinstance(spec, PIMSpec):
            raise TypeError(f"PIMModel needs a PIMSpec, got {type(spec).__name__}")
        super().__init__(spec)
        d = spec.dram
        self.t_ck_s = d.t_ck_ns * 1e-9
        self.banks = d.banks
        #: seconds of one all-bank MAC command slot (a burst read, no compute limit)
        self.t_read_s = spec.t_ccd_mac * self.t_ck_s
        #: seconds of one FPU operation: the command spacing unless the PU clock is slower
        self.t_op_s = max(self.t_read_s, 1.0 / (spec.pu_clock_mhz * 1e6))
        self.t_act_cycles = self._activation_cycles()
        self._refi_s = d.t_refi * self.t_ck_s
        self._refresh_each_s = (d.t_rfc + d.t_rp + d.t_rcd) * self.t_ck_s
        self.k_split_max = d.banks_per_group * d.chips_per_rank * d.ranks
        self.n_bank_groups = d.banks // d.banks_per_group
        #: reduction units in the whole device
        self.n_ru = (
            spec.reduction_units_per_bank_group * self.n_bank_groups + spec.reduction_units_device
        )
        #: partial-sum elements the reduction units reduce per second
        self.ru_elems_per_s = self.n_ru * spec.reduction_unit_lanes * spec.pu_clock_mhz * 1e6
        self.io_bytes_per_s = d.io_bw_gbps * 1e9
        e = spec.energy
        self.read_pj_per_bit = e.act_pre_pj_per_bit + e.cell_pj_per_bit
        self.io_pj_per_bit = (
            e.bank_to_bg_pj_per_bit
            + e.bg_to_gio_pj_per_bit
            + e.tsv_pj_per_bit
            + e.interposer_pj_per_bit
        )
        self.in_device_pj_per_bit = (
            e.bank_to_bg_pj_per_bit + e.bg_to_gio_pj_per_bit + e.tsv_pj_per_bit
        )

    # ----------------------------------------------------------------------------------------
    # building blocks (numpy arrays over requests; scalars for FC)
    # ----------------------------------------------------------------------------------------
    def _activation_cycles(self) -> float:
        """Cycles from the first ACT of a row round to the first MAC command."""
        d = self.spec.dram
        if self.spec.activation == "all_bank":
            return float(d.t_rcd)
        bpr = d.banks_per_rank
        return float(
            max(
                d.t_rcd,
                (bpr - 1) * d.t_rrd_s + d.t_rcd,
                math.ceil(bpr / 4 - 1) * d.t_faw + d.t_rcd,
            )
        )

    def burst_interval_s(self, m: Any, dtype_bytes: int = 2) -> np.ndarray:
        """Seconds between two bursts of one bank when each burst serves ``m`` tokens."""
        s = self.spec
        elems = max(1, s.dram.burst_bytes // dtype_bytes)
        ops = np.ceil(_arr(m) * elems / (s.macs_per_fpu * s.fpus_per_bank))
        return s.banks_per_fpu * ops * self.t_op_s

    def layout(self, weight_bytes: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per-bank (full rows, bursts in the last partial row, rows opened, bursts read)."""
        d = self.spec.dram
        bytes_b = np.ceil(_arr(weight_bytes) / self.banks)
        bursts_b = np.ceil(bytes_b / d.burst_bytes)
        full = np.floor(bursts_b / d.columns)
        rem = bursts_b - full * d.columns
        rows_b = full + (rem > 0)
        return full, rem, rows_b, bursts_b

    def row_period_s(self, bursts: Any, t_burst_s: Any) -> np.ndarray:
        """Seconds one bank spends on a row from which it reads ``bursts`` bursts.

        With one PU per bank (``banks_per_fpu == 1``) every row switch stalls the stream:
        ACT, ``t_rcd`` to the first read, ``bursts - 1`` intervals, ``t_rtp`` from the last read
        to PRE (not before ``t_ras`` after ACT) and ``t_rp``. When a PU takes turns over several
        banks, the next bank's row opens while the current bank streams, so a row costs only its
        bursts (the turn of a bank's row, ``columns x t_burst``, exceeds ``t_rp + t_rcd``).
        """
        d = self.spec.dram
        b = _arr(bursts)
        if self.spec.banks_per_fpu > 1:
            return b * t_burst_s
        t_ras = d.t_ras * self.t_ck_s
        t_act = self.t_act_cycles * self.t_ck_s
        last_read = t_act + np.maximum(b - 1, 0) * t_burst_s
        return np.maximum(t_ras, last_read + d.t_rtp * self.t_ck_s) + d.t_rp * self.t_ck_s

    def _rows_time_s(self, full: np.ndarray, rem: np.ndarray, t_burst_s: Any) -> np.ndarray:
        """Seconds to stream ``full`` whole rows and a last row of ``rem`` bursts of one bank
        (refresh excluded: see :meth:`refresh_s`)."""
        d = self.spec.dram
        return full * self.row_period_s(d.columns, t_burst_s) + np.where(
            rem > 0, self.row_period_s(rem, t_burst_s), 0.0
        )

    def refresh_s(self, busy_s: Any) -> np.ndarray:
        """Seconds that all-bank refresh adds to a kernel that keeps the device busy ``busy_s``.

        The controller can postpone or pull in refreshes into the idle time around a kernel, but
        not past ``t_refi``: a kernel lasting ``T`` (refresh included) holds ``floor(T / t_refi)``
        refreshes, each closing the open rows, blocking for ``t_rfc`` and reopening them
        (``t_rfc + t_rp + t_rcd``). Solved as a fixed point; kernels shorter than ``t_refi`` pay
        none (as in a cycle-level run that starts at a refresh boundary).
        """
        if isinstance(busy_s, float):
            return self.refresh_scalar_s(busy_s)  # type: ignore[return-value]
        t0 = _arr(busy_s)
        refi, each = self._refi_s, self._refresh_each_s
        n = np.floor(t0 / refi)
        for _ in range(4):  # converges in one or two rounds (each < t_refi)
            n = np.floor((t0 + n * each) / refi)
        return n * each

    def refresh_scalar_s(self, busy_s: float) -> float:
        """:meth:`refresh_s` of one duration, without numpy (the engine's per-step path)."""
        refi, each = self._refi_s, self._refresh_each_s
        if busy_s < refi:
            return 0.0
        n = math.floor(busy_s / refi)
        while True:  # each refresh may push the kernel over another t_refi boundary
            m = math.floor((busy_s + n * each) / refi)
            if m == n:
                return n * each
            n = m

    def _body(
        self, weight_bytes: np.ndarray, m: np.ndarray, flops: np.ndarray, dtype_bytes: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(streaming time, memory part, compute part) in seconds."""
        full, rem, _, _ = self.layout(weight_bytes)
        stream = self._rows_time_s(full, rem, self.burst_interval_s(m, dtype_bytes))
        read = self._rows_time_s(full, rem, self.t_read_s)
        if self.spec.peak_tflops_cap > 0:
            stream = np.maximum(stream, flops / (self.spec.peak_tflops_cap * 1e12))
        return stream, read, stream - read

    def k_split(self, k: Any, dtype_bytes: int = 2) -> np.ndarray:
        """Banks whose partial sums make up one output (1: no cross-bank reduction)."""
        elems = max(1, self.spec.dram.burst_bytes // dtype_bytes)
        return np.clip(np.ceil(_arr(k) / elems), 1, self.k_split_max)

    def _partials(self, m: Any, n: Any, k: Any, dtype_bytes: int) -> np.ndarray:
        ks = self.k_split(k, dtype_bytes)
        return np.where(ks > 1, _arr(m) * _arr(n) * ks, 0.0)

    def _reduction(self, partial_elems: np.ndarray, dtype_bytes: int) -> tuple[Any, Any]:
        """(seconds, joules) to reduce ``partial_elems`` partial sums."""
        e = self.spec.energy
        bits = partial_elems * dtype_bytes * 8
        if self.n_ru > 0:
            t = partial_elems / self.ru_elems_per_s
            j = (bits * e.bank_to_bg_pj_per_bit + partial_elems * e.mac_pj) * _PJ
        else:
            t = partial_elems * dtype_bytes / self.io_bytes_per_s
            j = bits * self.in_device_pj_per_bit * _PJ
        return t, j

    def mac_energy_pj(self, dtype_bytes: int = 2) -> float:
        """Energy of one MAC in pJ (PAM's rule when ``pu_op_energy_factor`` > 0)."""
        s = self.spec
        if s.pu_op_energy_factor > 0:
            return s.pu_op_energy_factor * self.read_pj_per_bit * dtype_bytes * 8
        return s.energy.mac_pj

    def _price(
        self,
        weight_bytes: Any,
        m: Any,
        flops: Any,
        in_bytes: Any,
        out_bytes: Any,
        partial_elems: Any,
        dtype_bytes: int,
        refresh: bool = True,
    ) -> Cost:
        """Streaming + transfer + energy of weight-like kernels (arrays over requests), with
        refresh over the kernel's own duration unless ``refresh`` is False."""
        w, m_, f = _arr(weight_bytes), _arr(m), _arr(flops)
        active = (m_ > 0) & (w > 0)
        body, memory_s, compute_s = self._body(w, np.maximum(m_, 1), f, dtype_bytes)
        io_s = (_arr(in_bytes) + _arr(out_bytes)) / self.io_bytes_per_s
        red_s, red_j = self._reduction(_arr(partial_elems), dtype_bytes)
        transfer_s = io_s + red_s
        time_s = body + transfer_s
        if refresh:
            ref = self.refresh_s(time_s)
            memory_s = memory_s + ref
            time_s = time_s + ref

        d, e = self.spec.dram, self.spec.energy
        _, _, rows_b, bursts_b = self.layout(w)
        act_j = self.banks * rows_b * d.row_bytes * 8 * e.act_pre_pj_per_bit * _PJ
        cell_j = self.banks * bursts_b * d.burst_bytes * 8 * e.cell_pj_per_bit * _PJ
        mac_j = f / 2 * self.mac_energy_pj(dtype_bytes) * _PJ
        io_j = (_arr(in_bytes) + _arr(out_bytes)) * 8 * self.io_pj_per_bit * _PJ
        energy = act_j + cell_j + mac_j + io_j + red_j + self.spec.static_power_w * time_s

        def gate(x: Any) -> np.ndarray:
            return np.where(active, x, 0.0)

        return Cost(
            time_s=gate(time_s),
            energy_j=gate(energy),
            compute_s=gate(compute_s),
            memory_s=gate(memory_s),
            transfer_s=gate(transfer_s),
        )

    # ----------------------------------------------------------------------------------------
    # kernels
    # ----------------------------------------------------------------------------------------
    def elementwise(self, kind: str, nbytes: float) -> Cost:
        """A memory-bound elementwise kernel (``kind`` "norm" or "activation") run by the
        device's buffer-die / DIMM-buffer logic on ``nbytes``: the bytes cross the device's
        internal path to that logic once, at its I/O bandwidth; no launch overhead."""
        if nbytes <= 0:
            return Cost(0.0, 0.0)
        t = nbytes / self.io_bytes_per_s
        j = nbytes * 8 * self.in_device_pj_per_bit * _PJ + self.spec.static_power_w * t
        return Cost(t, j, 0.0, 0.0, t)

    def fc(self, k: FCKernel) -> Cost:
        """One FC kernel instance (all banks of the device work on it)."""
        c = self._price(
            k.weight_bytes,
            k.m,
            k.flops,
            k.input_bytes,
            k.output_bytes,
            self._partials(k.m, k.n, k.k, k.dtype_bytes),
            k.dtype_bytes,
        )
        return Cost(*(float(v) for v in c.as_dict().values()))

    def attention(self, k: AttentionKernel) -> Cost:
        """One attention kernel instance, per request (arrays), as if each request ran alone on
        the device, laid out by the device's dataflow, refresh included."""
        if self.spec.attention_dataflow != "head_per_channel":
            return self._attention_banks(k, refresh=True)
        # one request's KV heads over the channels, ceil(heads / channels) rounds of one head
        unit = self.attention_unit(self.dataflow.unit_kernel(k, 1))
        rounds = math.ceil(k.n_kv_heads / self.spec.dram.channels)
        per = 1.0 if k.op == "softmax" else float(rounds)
        busy = unit.time_s * per
        ref = self.refresh_s(busy)
        return Cost(
            time_s=busy + ref,
            energy_j=unit.energy_j * k.n_kv_heads,
            compute_s=unit.compute_s * per,
            memory_s=unit.memory_s * per + ref,
            transfer_s=unit.transfer_s * per,
        )

    def attention_unit(self, k: AttentionKernel) -> Cost:
        """Per-request cost of one placement unit (see :mod:`pimserve.hardware.dataflow`),
        refresh excluded: for ``head_per_channel`` one KV head on one channel."""
        if self.spec.attention_dataflow != "head_per_channel":
            return self._attention_banks(k, refresh=False)
        if k.op == "softmax":
            return self._softmax_channel(k)
        return self._attention_channel(k)

    def _attention_banks(self, k: AttentionKernel, refresh: bool) -> Cost:
        """heads_over_devices: each request's KV interleaved over every bank of the device."""
        if k.op == "softmax":
            return self._softmax(k)
        q = _arr(k.q_tokens)
        ctx = _arr(k.context)
        m = q * k.group_size
        if k.op == "score":
            partials = self._partials(m, ctx, k.head_dim, k.dtype_bytes) * k.n_kv_heads
            in_b, out_b = k.q_bytes, np.zeros_like(q)
        else:  # context
            partials = self._partials(m, k.head_dim, ctx, k.dtype_bytes) * k.n_kv_heads
            in_b, out_b = np.zeros_like(q), k.out_bytes
        return self._price(k.kv_bytes, m, k.flops, in_b, out_b, partials, k.dtype_bytes, refresh)

    # ---- head_per_channel: one KV head of each request on one channel -------------------
    @property
    def channel_layout(self) -> tuple[int, int, int]:
        """(PU data streams per channel, streams splitting the head dimension, streams
        splitting the tokens) of the head_per_channel dataflow.

        A PU reads one burst per MAC command from one of its ``banks_per_fpu`` banks (its
        ``fpus_per_bank`` FPUs share that burst). The head dimension is split over the PUs of a
        bank group, whose adder tree reduces their partial sums (AttAcc: the 4 banks of a bank
        group); the tokens are split over the rest (AttAcc bank level: 2 pseudo-channels x 2
        ranks x 4 bank groups = 16; bank-group level: 16; buffer die: the 2 pseudo-channels).
        """
        d = self.spec.dram
        banks_ch = d.banks // d.channels
        streams = max(1, banks_ch // self.spec.banks_per_fpu)
        k_units = max(1, min(streams, d.banks_per_group // self.spec.banks_per_fpu))
        return streams, k_units, max(1, streams // k_units)

    def _channel_commands(self, k: AttentionKernel) -> tuple[np.ndarray, np.ndarray]:
        """(MAC commands per PU stream, bursts per bank) for score or context of one KV head.

        Score streams K (``k = head_dim`` over the bank group's PUs, the tokens over the rest);
        context streams V (``n = head_dim`` over the same PUs, ``k`` = tokens over the rest):
        both read ``ceil(context / token streams) x ceil(head_dim / (head streams x burst))``
        bursts per stream."""
        d = self.spec.dram
        elems = max(1, d.burst_bytes // k.dtype_bytes)
        _, k_units, tok_units = self.channel_layout
        ctx = _arr(k.context)
        cmds = np.ceil(ctx / tok_units) * math.ceil(k.head_dim / (k_units * elems))
        return cmds, np.ceil(cmds / self.spec.banks_per_fpu)

    def _attention_channel(self, k: AttentionKernel) -> Cost:
        """Score or context of one KV head of each request on one channel (no refresh).

        Time = the channel's MAC stream: per bank, rows of ``columns`` bursts, each row
        priced by :meth:`row_period_s` at the PU's command interval (``t_ccd_mac``, or the PU's
        ops when reuse ``m = q_tokens x group`` needs several per burst); the device's FLOP cap
        applies to the channel's share. The bank-group reduction of partial sums (AttAcc's
        MVSB) runs beside the MACs on its own data path: energy, no time.
        """
        s, d, e = self.spec, self.spec.dram, self.spec.energy
        q = _arr(k.q_tokens)
        m = np.maximum(q * k.group_size, 1)
        elems = max(1, d.burst_bytes // k.dtype_bytes)
        streams, k_units, _ = self.channel_layout
        cmds, bursts_b = self._channel_commands(k)
        ops = np.ceil(m * elems / (s.macs_per_fpu * s.fpus_per_bank))
        t_cmd = ops * self.t_op_s
        full = np.floor(bursts_b / d.columns)
        rem = bursts_b - full * d.columns
        bpf = s.banks_per_fpu
        stream = self._rows_time_s(full, rem, bpf * t_cmd)
        read = self._rows_time_s(full, rem, bpf * self.t_read_s)
        if s.peak_tflops_cap > 0:
            cap_ch = s.peak_tflops_cap * 1e12 / d.channels
            stream = np.maximum(stream, k.flops / cap_ch)
        active = (cmds > 0) & (q > 0)
        stream = np.where(active, stream, 0.0)
        read = np.minimum(read, stream)
        # energy: rows opened in every bank of the channel, bursts read, MACs, partial sums
        banks_ch = d.banks // d.channels
        rows_b = full + (rem > 0)
        act_j = banks_ch * rows_b * d.row_bytes * 8 * e.act_pre_pj_per_bit * _PJ
        cell_j = streams * cmds * d.burst_bytes * 8 * e.cell_pj_per_bit * _PJ
        mac_j = k.flops / 2 * self.mac_energy_pj(k.dtype_bytes) * _PJ
        n_out = _arr(k.context) if k.op == "score" else np.full_like(q, k.head_dim)
        partials = np.where(k_units > 1, m * n_out * k_units, 0.0)
        _, red_j = self._reduction(partials, k.dtype_bytes)
        energy = act_j + cell_j + mac_j + red_j + s.static_power_w * stream
        return Cost(
            time_s=stream,
            energy_j=np.where(active, energy, 0.0),
            compute_s=stream - read,
            memory_s=read,
            transfer_s=np.zeros_like(stream),
        )

    def _softmax_channel(self, k: AttentionKernel) -> Cost:
        """Softmax of one KV head and the broadcasts around it on one channel (no refresh).

        Besides the softmax itself (:meth:`_softmax`), the channel's data path carries the query
        into the PU buffers (AttAcc's WRGB: ``m x head_dim`` elements) and the probabilities
        back to the PUs that multiply them with V (MVGB: each token stream's slice, once per
        pseudo-channel pair of streams), one burst per ``t_ccd_s``. AttAcc overlaps these with
        another head's MACs except on the first and last head of a channel, so the dataflow
        pays them once per kernel (``once_ops``)."""
        d = self.spec.dram
        sm = self._softmax(k)
        q = _arr(k.q_tokens)
        m = np.maximum(q * k.group_size, 1)
        elems = max(1, d.burst_bytes // k.dtype_bytes)
        _, _, tok_units = self.channel_layout
        ctx = _arr(k.context)
        q_bursts = np.ceil(m * k.head_dim / elems)
        p_bursts = m * max(1, tok_units // d.pseudo_channels) * np.ceil(ctx / (tok_units * elems))
        bus_s = (q_bursts + p_bursts) * d.t_ccd_s * self.t_ck_s
        active = (ctx > 0) & (q > 0)
        bus_s = np.where(active, bus_s, 0.0)
        j = np.where(active, q_bursts + p_bursts, 0.0) * d.burst_bytes * 8
        j = j * self.in_device_pj_per_bit * _PJ
        return Cost(
            time_s=sm.time_s + bus_s,
            energy_j=sm.energy_j + j,
            compute_s=sm.compute_s,
            memory_s=sm.memory_s,
            transfer_s=sm.transfer_s + bus_s,
        )

    def _softmax(self, k: AttentionKernel) -> Cost:
        """Softmax over the score matrix on the buffer/logic die or on reduction units."""
        s, e = self.spec, self.spec.energy
        score_b = _arr(k.score_bytes)
        ops = score_b / k.dtype_bytes * SOFTMAX_OPS_PER_ELEMENT
        bits = score_b * 8
        if s.reduction_units_device > 0:
            t = ops / self.ru_elems_per_s
            j = (bits * e.bank_to_bg_pj_per_bit + ops * e.mac_pj) * _PJ
            compute_s, transfer_s = t, np.zeros_like(t)
        else:
            t = score_b / self.io_bytes_per_s
            j = (bits * self.in_device_pj_per_bit + ops * e.mac_pj) * _PJ
            compute_s, transfer_s = np.zeros_like(t), t
        if s.peak_tflops_cap > 0:
            t = np.maximum(t, ops / (s.peak_tflops_cap * 1e12))
        j = j + s.static_power_w * t
        return Cost(
            time_s=t,
            energy_j=j,
            compute_s=compute_s,
            memory_s=np.zeros_like(t),
            transfer_s=transfer_s,
        )


@COST_MODELS.register("pim:roofline")
class PIMRooflineModel(PIMModel):
    """Roofline variant: nominal internal bandwidth and PU compute, no row/refresh overheads."""

    method = "roofline"

    def __init__(self, spec: PIMSpec):
        super().__init__(spec)
        self._refresh_each_s = 0.0  # the roofline has no refresh overhead

    @property
    def internal_bw_bytes_per_s(self) -> float:
        """banks x burst / (t_ccd_mac x tCK), shared by ``banks_per_fpu`` banks per FPU."""
        d = self.spec.dram
        return self.banks * d.burst_bytes / self.t_read_s / self.spec.banks_per_fpu

    @property
    def compute_flops_per_s(self) -> float:
        """n_fpus x macs x 2 x PU clock, capped by ``peak_tflops_cap``."""
        s = self.spec
        peak = s.n_fpus * s.macs_per_fpu * 2 * s.pu_clock_mhz * 1e6
        return min(peak, s.peak_tflops_cap * 1e12) if s.peak_tflops_cap > 0 else peak

    def _body(
        self, weight_bytes: np.ndarray, m: np.ndarray, flops: np.ndarray, dtype_bytes: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        memory_s = weight_bytes / self.internal_bw_bytes_per_s
        compute_s = flops / self.compute_flops_per_s
        return np.maximum(memory_s, compute_s), memory_s, compute_s
