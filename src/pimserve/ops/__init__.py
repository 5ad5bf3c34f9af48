"""The model's work: one iteration's kernels with FLOPs, bytes and reuse, vectorised over
requests."""

from pimserve.ops.iteration import BatchShape, Iteration, fc_intensity_eq1, iteration
from pimserve.ops.kernels import AttentionKernel, CollectiveKernel, FCKernel, Kernel

__all__ = [
    "AttentionKernel",
    "BatchShape",
    "CollectiveKernel",
    "FCKernel",
    "Iteration",
    "Kernel",
    "fc_intensity_eq1",
    "iteration",
]
