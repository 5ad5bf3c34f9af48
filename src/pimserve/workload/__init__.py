"""Requests for the engine: trace loaders, synthetic generators, presets, speculative acceptance.

- :class:`Requests` / :class:`Request`: the request table (struct-of-arrays, seconds, tokens).
- :func:`load_trace` and :data:`TRACE_LOADERS`: real traces (azure, mooncake, dolly, arxiv,
  generic) read by path.
- :mod:`~pimserve.workload.synthetic`: seeded arrival processes and length distributions.
- :data:`WORKLOADS`, :func:`make_workload`, :func:`describe_workloads`: named synthetic presets
  fitted to the shared traces.
- :func:`expected_accepted`, :func:`sample_accepted`: speculative-decoding acceptance model.
"""

from pimserve.workload.presets import (
    WORKLOADS,
    WorkloadPreset,
    describe_workloads,
    make_workload,
    stored_lengths,
    stored_stats,
)
from pimserve.workload.request import Request, Requests
from pimserve.workload.speculative import expected_accepted, sample_accepted
from pimserve.workload.synthetic import (
    EmpiricalLengths,
    LognormalLengths,
    as_generator,
    fixed_batch,
    gamma,
    lognormal,
    poisson,
    sample_lengths,
)
from pimserve.workload.traces import TRACE_LOADERS, load_trace

__all__ = [
    "TRACE_LOADERS",
    "WORKLOADS",
    "EmpiricalLengths",
    "LognormalLengths",
    "Request",
    "Requests",
    "WorkloadPreset",
    "as_generator",
    "describe_workloads",
    "expected_accepted",
    "fixed_batch",
    "gamma",
    "load_trace",
    "lognormal",
    "make_workload",
    "poisson",
    "sample_accepted",
    "sample_lengths",
    "stored_lengths",
    "stored_stats",
]
