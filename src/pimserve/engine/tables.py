"""Attention cost by context length, tabulated once per device set and looked up per step.

Per-request attention costs depend only on the request's context (for a given number of query
tokens), so the engine prices each context length once on a device set and then indexes the
table with numpy. Tables grow by doubling when a longer context appears.
"""

from __future__ import annotations

import numpy as np

from pimserve.hardware.group import GroupModel
from pimserve.ops.iteration import ATTENTION_OPS
from pimserve.ops.kernels import AttentionKernel, AttnOp
from pimserve.specs.model import ModelSpec


def layer_attention_kernels(
    model: ModelSpec,
    q_tokens: np.ndarray,
    context: np.ndarray,
    head_dim: int | None = None,
    ops: tuple[AttnOp, ...] = ATTENTION_OPS,
    read_run_tokens: int = 0,
) -> list[AttentionKernel]:
    """One layer's attention kernels for these requests (``head_dim`` overrides the model's,
    e.g. for an approximate-score pass over a subset of channels; ``read_run_tokens`` > 0: a
    sparse read of blocks of that many tokens)."""
    m = model
    d = m.head_dim if head_dim is None else head_dim
    return [AttentionKernel(op, q_tokens, context, m.n_heads, m.n_kv_heads, d, 1, m.dtype_bytes,
                            read_run_tokens=read_run_tokens)
            for op in ops]


PREFILL_TABLE_MAX = 1 << 17
"""Longest prompt (tokens) whose prefill attention :meth:`AttentionTables.prefill_units`
tabulates (its table then holds about 6 MB); longer prompts are priced from their kernels."""


class AttentionTables:
    """Per-request (time s, energy J) of one layer's attention, indexed by context tokens: the
    time of one placement unit of the group's dataflow (refresh excluded: the dataflow adds it
    over the whole kernel), the energy of all of a request's units."""

    def __init__(self, model: ModelSpec):
        self.model = model
        self._tables: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def get(
        self,
        group: GroupModel,
        q_tokens: int,
        cmax: int,
        head_dim: int | None = None,
        ops: tuple[AttnOp, ...] = ATTENTION_OPS,
        read_run_tokens: int = 0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The table for contexts ``0 .. >= cmax`` (context 0 costs nothing); with
        ``read_run_tokens`` > 0 the context is read as scattered blocks of that many tokens."""
        key = (id(group), q_tokens, head_dim, ops, read_run_tokens)
        tab = self._tables.get(key)
        if tab is None or tab[0].shape[0] <= cmax:
            size = max(cmax + 1, 2 * (tab[0].shape[0] if tab else 1024))
            ctx = np.maximum(np.arange(size, dtype=np.int64), 1)
            q = np.full(size, q_tokens, dtype=np.int64)
            t = np.zeros(size)
            e = np.zeros(size)
            df = group.dataflow
            units = df.units_per_request(self.model.n_kv_heads, group.count)
            for k in layer_attention_kernels(self.model, q, ctx, head_dim, ops, read_run_tokens):
                c = group.device.attention_unit(df.unit_kernel(k, group.count))
                t += np.asarray(c.time_s, dtype=np.float64)
                e += np.asarray(c.energy_j, dtype=np.float64) * units
            t[0] = e[0] = 0.0
            tab = (t, e)
            self._tables[key] = tab
        return tab

    def prefill_units(
        self, group: GroupModel, lmax: int, ops: tuple[AttnOp, ...] = ATTENTION_OPS
    ) -> list[tuple[AttnOp, np.ndarray, np.ndarray]]:
        """Per op, the placement-unit time (s) and energy (J, one unit) of a whole prompt of
        ``L`` tokens attending to itself (``q = context = L``), indexed by ``L`` for
        ``0 .. >= lmax`` (0 unused): what :meth:`GroupModel.attention` computes per request
        before it combines them (each request's unit cost depends on its own lengths only,
        as for :meth:`get`). Grows by doubling, up to ``PREFILL_TABLE_MAX + 1`` entries."""
        if not 0 <= lmax <= PREFILL_TABLE_MAX:
            raise ValueError(f"prefill tables stop at {PREFILL_TABLE_MAX} tokens (got {lmax})")
        key = (id(group), "prefill", ops)
        tab = self._tables.get(key)
        if tab is None or tab[0][1].shape[0] <= lmax:
            size = max(lmax + 1, 2 * (tab[0][1].shape[0] if tab else 1024))
            size = min(size, PREFILL_TABLE_MAX + 1)
            lens = np.maximum(np.arange(size, dtype=np.int64), 1)
            df = group.dataflow
            tab = []
            for k in layer_attention_kernels(self.model, lens, lens, None, ops):
                c = group.device.attention_unit(df.unit_kernel(k, group.count))
                tab.append((k.op, np.asarray(c.time_s, dtype=np.float64),
                            np.asarray(c.energy_j, dtype=np.float64)))
            self._tables[key] = tab
        return tab
