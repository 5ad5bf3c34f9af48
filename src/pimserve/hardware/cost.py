"""Cost: what one kernel costs on one device (seconds and joules), and the cost-model interface.

Every device kind implements :class:`CostModel` and registers it in ``COST_MODELS`` under its
spec's ``kind`` (``gpu``, ``pim``, ``ssd_pim``). The engine only ever calls ``cost(kernel)``.
For attention kernels the fields are per-request numpy arrays (one entry per request); for FC
and collective kernels they are floats. ``time_s`` and ``energy_j`` cover one instance of the
kernel; multiply by ``kernel.count`` for all instances.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from pimserve.ops.kernels import AttentionKernel, CollectiveKernel, FCKernel, Kernel
from pimserve.registry import Registry

Num = Any  # float or np.ndarray

if TYPE_CHECKING:
    from pimserve.hardware.dataflow import AttentionDataflow


@dataclass(frozen=True, slots=True)
class Cost:
    """Time and energy of one kernel instance on one device.

    ``compute_s``, ``memory_s`` and ``transfer_s`` are the parts; ``time_s`` is what the kernel
    takes (for a roofline, max(compute, memory) + transfer). Energy is in joules.
    """

    time_s: Num
    energy_j: Num
    compute_s: Num = 0.0
    memory_s: Num = 0.0
    transfer_s: Num = 0.0

    def __add__(self, other: Cost) -> Cost:
        """Sequential composition: times and energies add."""
        return Cost(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def scale(self, factor: float) -> Cost:
        """``factor`` sequential repetitions (for example ``kernel.count``)."""
        return Cost(*(getattr(self, f.name) * factor for f in fields(self)))

    def total(self) -> Cost:
        """Sum per-request arrays into scalars (all requests on this device, one after another)."""
        return Cost(*(float(np.sum(getattr(self, f.name))) for f in fields(self)))

    def as_dict(self) -> dict[str, Num]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


ZERO = Cost(0.0, 0.0)


class CostModel(ABC):
    """Prices kernels on one device. Subclasses implement the kernel kinds the device runs."""

    #: "roofline" or "detailed": which formula family this model uses
    method: str = "detailed"

    def __init__(self, spec: Any):
        self.spec = spec
        self._fc_cached = functools.lru_cache(maxsize=65536)(self.fc)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def capacity_bytes(self) -> float:
        return float(self.spec.capacity_bytes)

    def cost(self, kernel: Kernel) -> Cost:
        """Time and energy of one instance of ``kernel`` on this device (FC costs memoised)."""
        if isinstance(kernel, FCKernel):
            return self._fc_cached(kernel)
        if isinstance(kernel, AttentionKernel):
            return self.attention(kernel)
        if isinstance(kernel, CollectiveKernel):
            return self.collective(kernel)
        raise TypeError(f"unknown kernel type {type(kernel).__name__}")

    @abstractmethod
    def fc(self, k: FCKernel) -> Cost:
        """One FC kernel instance on one device."""

    @abstractmethod
    def attention(self, k: AttentionKernel) -> Cost:
        """One attention kernel instance, per request (arrays), as if run alone on this device."""

    def attention_unit(self, k: AttentionKernel) -> Cost:
        """Per-request cost of one placement unit of ``k`` under this device's dataflow
        (:mod:`pimserve.hardware.dataflow`), without the per-kernel refresh that
        :meth:`AttentionDataflow.group_time_s` adds. Devices without refresh: :meth:`attention`."""
        return self.attention(k)

    @functools.cached_property
    def dataflow(self) -> AttentionDataflow:
        """How attention is laid out over a group of these devices."""
        from pimserve.hardware.dataflow import dataflow_for

        return dataflow_for(self)

    def collective(self, k: CollectiveKernel) -> Cost:
        raise NotImplementedError(f"{type(self).__name__} does not run collectives")


COST_MODELS: Registry[type[CostModel]] = Registry("cost model")


def cost_model_for(spec: Any, method: str | None = None) -> CostModel:
    """Instantiate the registered cost model for ``spec.kind`` (``method`` picks a variant)."""
    key = spec.kind if method in (None, "detailed") else f"{spec.kind}:{method}"
    return _cached_model(key, spec)


@functools.lru_cache(maxsize=256)
def _cached_model(key: str, spec: Any) -> CostModel:
    return COST_MODELS.get(key)(spec)
