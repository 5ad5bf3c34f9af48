"""Links between devices: time and energy of moving bytes one way over a :class:`LinkSpec`.

``time = latency + bytes / bw`` (``bw`` per direction, so a transfer each way at once takes the
same time), ``energy = bytes x 8 x pJ/bit``. Moving nothing costs nothing (no latency either).
Vectorised: ``bytes_`` may be a numpy array (one entry per request), and the Cost then holds
arrays of the same shape. Links are not kernels, so this is not a registered cost model.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pimserve.errors import ConfigurationError
from pimserve.hardware.cost import Cost
from pimserve.specs.devices import LinkSpec


class LinkModel:
    """Prices transfers over one link (one direction, one link)."""

    def __init__(self, spec: LinkSpec):
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def bytes_per_s(self) -> float:
        """Bandwidth in one direction, bytes/s."""
        return self.spec.bw_gbps * 1e9

    @property
    def latency_s(self) -> float:
        """One-way latency, seconds."""
        return self.spec.latency_us * 1e-6

    def transfer(self, bytes_: Any) -> Cost:
        """Move ``bytes_`` (a number or numpy array of byte counts) one way over the link.

        Returns time (``time_s`` and ``transfer_s``, seconds) and energy (joules) with the shape
        of ``bytes_``; floats for a scalar input.
        """
        if type(bytes_) is float or type(bytes_) is int:  # the engine's per-step path
            if not (0.0 <= bytes_ < math.inf):
                raise ConfigurationError(
                    f"link '{self.name}': bytes to transfer must be finite and >= 0"
                )
            t = self.latency_s + bytes_ / self.bytes_per_s if bytes_ > 0 else 0.0
            return Cost(t, bytes_ * 8.0 * self.spec.energy_pj_per_bit * 1e-12, 0.0, 0.0, t)
        b = np.asarray(bytes_, dtype=np.float64)
        if b.size and (not np.all(np.isfinite(b)) or np.any(b < 0)):
            raise ConfigurationError(
                f"link '{self.name}': bytes to transfer must be finite and >= 0"
            )
        time_s = np.where(b > 0, self.latency_s + b / self.bytes_per_s, 0.0)
        energy_j = b * 8.0 * self.spec.energy_pj_per_bit * 1e-12
        if b.ndim == 0:
            t, e = float(time_s), float(energy_j)
            return Cost(t, e, 0.0, 0.0, t)
        return Cost(time_s, energy_j, np.zeros_like(time_s), np.zeros_like(time_s), time_s)


__all__ = ["LinkModel"]
