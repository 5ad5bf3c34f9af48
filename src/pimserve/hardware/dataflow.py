"""Attention dataflows: where each (request, KV head) pair's K and V live and who computes on it.

A dataflow answers three questions for one layer's decode attention on a group of ``count``
identical devices, so that every device kind is priced by the same engine code:

1. **The placement unit** (:meth:`AttentionDataflow.unit_kernel`): the share of one request that
   one device (or one channel) computes, e.g. one KV head of it, or ``ceil(kv heads / devices)``.
   The device's cost model prices that unit per request (:meth:`CostModel.attention_unit`),
   without refresh, which depends on the whole kernel's duration.
2. **How many units a request has** (:meth:`AttentionDataflow.units_per_request`): what the
   unit's energy is multiplied by.
3. **How the units' times combine** (:meth:`AttentionDataflow.group_time_s`): the busiest
   device's (or channel's) time, plus work paid once per kernel rather than per unit
   (``once_ops``: for head_per_channel the softmax and the broadcasts around it, which AttAcc
   overlaps with the next head's MACs), plus refresh over the kernel's own duration.

Two dataflows exist (``PIMSpec.attention_dataflow`` names one per device preset):

- :class:`HeadsOverDevices` (``heads_over_devices``): KV heads are spread over the devices;
  with more devices than KV heads the rest form replica sets that hold different requests.
  Inside a device a request's KV is interleaved over every bank (PAM's block-to-bank-group
  mapping; the KV engine adds the bank-group imbalance of its actual block placement). Time:
  ``max(total / sets, longest request)``. GPUs and SSD-PIM use it too.
- :class:`HeadPerSM` (GPUs with ``attention_kernel: head_per_sm``): one pair per SM in waves.
- :class:`HeadPerChannel` (``head_per_channel``, AttAcc's trace generator): (request, KV head)
  pairs are spread evenly over the ``count x channels`` channels of the group; a channel works
  on one pair at a time with all its PUs (the pair's tokens over the channel's PUs) and idles
  when it has no pair. Time: the busiest channel's sum of its pairs, with pairs dealt
  longest-first round-robin (for equal contexts: ``ceil(pairs / channels)`` rounds).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from pimserve.ops.kernels import AttentionKernel
from pimserve.registry import Registry

if TYPE_CHECKING:
    from pimserve.hardware.cost import CostModel

DATAFLOWS: Registry[type[AttentionDataflow]] = Registry("attention dataflow")


class AttentionDataflow(ABC):
    """How one layer's attention is laid out over a group of ``count`` devices."""

    name: str = ""
    #: attention ops whose per-unit time is paid once per kernel, not once per unit
    once_ops: tuple[str, ...] = ()

    def __init__(self, device: CostModel):
        self.device = device

    @abstractmethod
    def unit_kernel(self, k: AttentionKernel, count: int) -> AttentionKernel:
        """The kernel one placement unit computes, per request."""

    @abstractmethod
    def units_per_request(self, n_kv_heads: int, count: int) -> int:
        """Placement units of one request (what a unit's energy is multiplied by)."""

    @abstractmethod
    def _busy_s(self, unit_s: np.ndarray, n_kv_heads: int, count: int) -> float:
        """The busiest device's (channel's) time from the per-request unit times."""

    def group_time_s(
        self, unit_s: Any, once_s: float, n_kv_heads: int, count: int
    ) -> float:
        """Seconds of one attention kernel on the group: the busiest device's (channel's)
        units, plus ``once_s`` paid once, plus refresh over that duration (PIM devices)."""
        t = np.asarray(unit_s, dtype=np.float64)
        busy = (self._busy_s(t, n_kv_heads, count) if t.size else 0.0) + float(once_s)
        if busy <= 0.0:
            return 0.0
        refresh = getattr(self.device, "refresh_s", None)
        return busy + (float(refresh(busy)) if refresh is not None else 0.0)

    def _busy_rows_s(self, unit_s: np.ndarray, n_kv_heads: int, count: int) -> np.ndarray:
        """:meth:`_busy_s` of every row of ``unit_s`` (rows: kernels; columns: requests)."""
        return np.array([self._busy_s(row, n_kv_heads, count) for row in unit_s])

    def group_time_rows_s(
        self, unit_s: np.ndarray, once_s: np.ndarray, n_kv_heads: int, count: int
    ) -> np.ndarray:
        """:meth:`group_time_s` of many kernels at once: row ``j`` of ``unit_s`` (the requests'
        unit times) with ``once_s[j]``; the same arithmetic, vectorised over rows."""
        t = np.asarray(unit_s, dtype=np.float64)
        busy = (self._busy_rows_s(t, n_kv_heads, count) if t.shape[1]
                else np.zeros(t.shape[0])) + np.asarray(once_s, dtype=np.float64)
        refresh = getattr(self.device, "refresh_s", None)
        if refresh is not None:
            busy = np.where(busy > 0.0, busy + refresh(np.maximum(busy, 0.0)), 0.0)
        return np.maximum(busy, 0.0)


@DATAFLOWS.register("heads_over_devices")
class HeadsOverDevices(AttentionDataflow):
    """KV heads over devices, requests balanced over replica sets (see the module docstring)."""

    name = "heads_over_devices"

    @staticmethod
    def sets(n_kv_heads: int, count: int) -> tuple[int, int]:
        """(head ways, replica sets) for a model with ``n_kv_heads`` KV heads on ``count``."""
        ways = max(1, min(count, n_kv_heads))
        return ways, max(1, count // ways)

    def unit_kernel(self, k: AttentionKernel, count: int) -> AttentionKernel:
        return k.split_heads(self.sets(k.n_kv_heads, count)[0])

    def units_per_request(self, n_kv_heads: int, count: int) -> int:
        return self.sets(n_kv_heads, count)[0]

    @staticmethod
    def balanced_time(per_request_s: np.ndarray, sets: int) -> float:
        """Time of requests balanced over ``sets`` replica sets: max(total / sets, longest)."""
        return max(float(per_request_s.sum()) / sets, float(per_request_s.max()))

    def _busy_s(self, unit_s: np.ndarray, n_kv_heads: int, count: int) -> float:
        return self.balanced_time(unit_s, self.sets(n_kv_heads, count)[1])

    def _busy_rows_s(self, unit_s: np.ndarray, n_kv_heads: int, count: int) -> np.ndarray:
        sets = self.sets(n_kv_heads, count)[1]
        return np.maximum(unit_s.sum(axis=1) / sets, unit_s.max(axis=1))


@DATAFLOWS.register("head_per_channel")
class HeadPerChannel(AttentionDataflow):
    """AttAcc's layout: one (request, KV head) pair per channel at a time."""

    name = "head_per_channel"
    once_ops = ("softmax",)

    def __init__(self, device: CostModel):
        super().__init__(device)
        dram = getattr(device.spec, "dram", None)
        if dram is None:
            raise TypeError(f"{device.name}: head_per_channel needs a DRAM device (channels)")
        self.channels = int(dram.channels)

    def unit_kernel(self, k: AttentionKernel, count: int) -> AttentionKernel:
        return replace(k, n_kv_heads=1, n_heads=k.group_size)

    def units_per_request(self, n_kv_heads: int, count: int) -> int:
        return n_kv_heads

    def _busy_s(self, unit_s: np.ndarray, n_kv_heads: int, count: int) -> float:
        slots = count * self.channels
        pairs = unit_s.size * n_kv_heads
        rounds = math.ceil(pairs / slots)
        # pairs sorted longest first and dealt round-robin over the slots: slot 0 gets pairs
        # 0, slots, 2 slots, ...; pair p belongs to request p // n_kv_heads
        order = np.sort(unit_s)[::-1]
        idx = (np.arange(rounds, dtype=np.int64) * slots) // n_kv_heads
        return float(order[idx].sum())

    def _busy_rows_s(self, unit_s: np.ndarray, n_kv_heads: int, count: int) -> np.ndarray:
        slots = count * self.channels
        rounds = math.ceil(unit_s.shape[1] * n_kv_heads / slots)
        order = np.sort(unit_s, axis=1)[:, ::-1]
        idx = (np.arange(rounds, dtype=np.int64) * slots) // n_kv_heads
        return order[:, idx].sum(axis=1)


@DATAFLOWS.register("head_per_sm")
class HeadPerSM(AttentionDataflow):
    """GPUs with ``attention_kernel: head_per_sm`` (AttAcc's GPU model): KV heads split over
    the GPUs as heads_over_devices, and on each GPU one (request, KV head) pair per SM, in
    waves of ``n_sms`` pairs; a wave lasts as long as its longest pair."""

    name = "head_per_sm"

    def unit_kernel(self, k: AttentionKernel, count: int) -> AttentionKernel:
        return replace(k, n_kv_heads=1, n_heads=k.group_size)

    def units_per_request(self, n_kv_heads: int, count: int) -> int:
        return n_kv_heads

    def _busy_s(self, unit_s: np.ndarray, n_kv_heads: int, count: int) -> float:
        from pimserve.hardware.gpu import wave_time_s

        ways, sets = HeadsOverDevices.sets(n_kv_heads, count)
        per_set = np.sort(unit_s)[::-1][::sets]  # requests dealt longest first over the sets
        return wave_time_s(per_set, math.ceil(n_kv_heads / ways), self.device.spec.n_sms)


def dataflow_for(device: CostModel) -> AttentionDataflow:
    """The dataflow a device's spec names (``heads_over_devices`` for devices without one;
    GPUs pricing attention ``head_per_sm`` get that dataflow)."""
    if getattr(device.spec, "attention_kernel", None) == "head_per_sm":
        return HeadPerSM(device)
    name = getattr(device.spec, "attention_dataflow", "heads_over_devices")
    return DATAFLOWS.get(name)(device)
