"""Calibrating PAPI's alpha offline, as the paper does (PAPI section 5.2.1).

PAPI sets the memory-boundedness threshold alpha by running FC kernels on both the PUs (GPU)
and FC-PIM across parallelism levels and picking the crossover from the measured times. Here
the "measurements" are the cost models: for RLP x TLP = 1 .. ``max_parallelism`` one decoder
layer's FC kernels are priced on the GPU group and on the FC-PIM group, and alpha is the largest
parallelism at which FC-PIM is still at least as fast (FC goes to the GPU above it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pimserve.engine.system import BuiltSystem
from pimserve.errors import ConfigurationError
from pimserve.ops import BatchShape, iteration
from pimserve.specs.catalog import load_model, load_system
from pimserve.specs.model import ModelSpec
from pimserve.specs.system import SystemSpec


@dataclass
class AlphaCalibration:
    """Result of an alpha sweep: the threshold and the times it was read from."""

    system: str
    model: str
    alpha: float
    parallelism: list[int]
    gpu_time_s: list[float]
    pim_time_s: list[float]

    @property
    def how(self) -> str:
        return (
            f"pimserve calibrate --system {self.system} --model {self.model}: largest RLP x TLP "
            f"in 1..{self.parallelism[-1]} at which one layer's FC kernels are no slower on "
            "FC-PIM than on the GPUs (cost models)"
        )


#: the largest RLP x TLP the alpha sweep prices (one FC layer per value)
MAX_CALIBRATION_PARALLELISM = 65536


def calibrate_alpha(
    system: str | SystemSpec, model: str | ModelSpec, max_parallelism: int = 512
) -> AlphaCalibration:
    """Sweep RLP x TLP and return the GPU/FC-PIM crossover of one layer's FC kernels."""
    if (isinstance(max_parallelism, bool) or not isinstance(max_parallelism, int)
            or not 1 <= max_parallelism <= MAX_CALIBRATION_PARALLELISM):
        raise ConfigurationError(
            f"max_parallelism (RLP x TLP swept) must be an integer from 1 to "
            f"{MAX_CALIBRATION_PARALLELISM:,} (got {max_parallelism!r})"
        )
    spec, mspec = load_system(system), load_model(model)
    built = BuiltSystem.build(spec, mspec)
    if built.gpu is None or built.fc_pim is None:
        raise ConfigurationError(
            f"calibrating alpha needs a gpu and an fc_pim group; system {spec.name} has "
            f"{', '.join(g.role for g in spec.groups)}"
        )
    ns = list(range(1, max_parallelism + 1))
    gpu_t, pim_t = [], []
    for n in ns:
        it = iteration(mspec, BatchShape(np.array([n]), np.array([n])), tp=1, lm_head=False)
        gpu_t.append(sum(float(built.gpu.fc(k).time_s) for k in it.fc))
        pim_t.append(sum(float(built.fc_pim.fc(k).time_s) for k in it.fc))
    pim_ok = [n for n, g, p in zip(ns, gpu_t, pim_t, strict=True) if p <= g]
    # GPU faster everywhere: alpha 0.5 sends every FC kernel to the GPU
    alpha = float(max(pim_ok)) if pim_ok else 0.5
    return AlphaCalibration(spec.name, mspec.name, alpha, ns, gpu_t, pim_t)
