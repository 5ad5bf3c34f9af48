"""Every kernel of one iteration priced on every device group of a system (`pimserve kernels`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pimserve.hardware.cost import Cost
from pimserve.hardware.group import GroupModel
from pimserve.ops import BatchShape, iteration
from pimserve.specs.model import ModelSpec


@dataclass
class KernelRow:
    """One kernel's work and its cost (one instance) on each device group."""

    name: str
    kind: str  # "fc" or "attention"
    shape: str
    count: int
    flops: float
    bytes: float
    intensity: float
    time_s: dict[str, float] = field(default_factory=dict)
    energy_j: dict[str, float] = field(default_factory=dict)
    eligible: list[str] = field(default_factory=list)

    @property
    def fastest(self) -> str:
        """The fastest group among those that run this kind of kernel in the system."""
        names = self.eligible or list(self.time_s)
        return min(names, key=lambda g: self.time_s[g])


FC_ROLES = ("gpu", "fc_pim")
ATTENTION_ROLES = ("attn", "kv_tier", "gpu")


def _eligible(groups: list[GroupModel], roles: tuple[str, ...]) -> list[str]:
    names = [g.name for g in groups if g.role in roles]
    return names or [g.name for g in groups]


def kernel_table(
    model: ModelSpec, groups: list[GroupModel], rlp: int, tlp: int, context: int
) -> list[KernelRow]:
    """Price each distinct kernel of a decode iteration (RLP requests x TLP tokens) per group."""
    batch = BatchShape.from_uniform(rlp, tlp, context)
    it = iteration(model, batch, tp=1)
    rows: list[KernelRow] = []
    fc_ok, attn_ok = _eligible(groups, FC_ROLES), _eligible(groups, ATTENTION_ROLES)
    seen: set[tuple[str, int, int, int]] = set()
    for k in it.fc:
        key = (k.name, k.m, k.k, k.n)
        if key in seen:
            continue
        seen.add(key)
        row = KernelRow(
            k.name, "fc", f"{k.m}x{k.k}x{k.n}", k.count, k.flops, k.bytes_total, k.intensity,
            eligible=fc_ok,
        )
        for g in groups:
            c = g.fc(k)
            row.time_s[g.name], row.energy_j[g.name] = float(c.time_s), float(c.energy_j)
        rows.append(row)
    for a in it.attention:
        flops = float(np.sum(a.flops))
        byts = float(np.sum(a.kv_bytes + a.q_bytes))
        row = KernelRow(
            a.name,
            "attention",
            f"{rlp}x({tlp}x{context})",
            a.count,
            flops,
            byts,
            flops / byts if byts else float("nan"),
            eligible=attn_ok,
        )
        for g in groups:
            c: Cost = g.attention(a)
            row.time_s[g.name], row.energy_j[g.name] = float(c.time_s), float(c.energy_j)
        rows.append(row)
    return rows


def iteration_totals(rows: list[KernelRow]) -> dict[str, dict[str, float]]:
    """Per group: the iteration's FC and attention time if every kernel ran on that group."""
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        for g, t in r.time_s.items():
            d = out.setdefault(g, {"fc_s": 0.0, "attention_s": 0.0})
            d["fc_s" if r.kind == "fc" else "attention_s"] += t * r.count
    return out


__all__ = ["KernelRow", "iteration_totals", "kernel_table"]
