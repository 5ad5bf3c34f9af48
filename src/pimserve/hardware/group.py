"""Pricing a kernel on a group of identical devices working together.

A system deploys ``count`` devices per role. This module says how one kernel spreads over them:

- FC: the weight is split in ``count`` blocks along the output dimension (tensor-parallel
  column split for GPUs; PAPI's one 2D block per HBM device for FC-PIM). Every device computes
  its block at the same time, so the group's time is one shard's time; energy is ``count``
  shards' energy.
- Attention: laid out by the device's dataflow (:mod:`pimserve.hardware.dataflow`): AttAcc's
  (request, KV head) pairs one per channel (``head_per_channel``), or KV heads over the devices
  with requests balanced over replica sets (``heads_over_devices``: the group's time is
  ``max(total / sets, longest request)``, the bound that greedy longest-first assignment meets
  within 4/3 and that is exact when many similar requests share the sets).
- Transfers over the group's link (activations in, results out) are priced by the link model,
  with ``count`` links in parallel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pimserve.hardware.cost import Cost, CostModel, cost_model_for
from pimserve.hardware.dataflow import AttentionDataflow, HeadsOverDevices
from pimserve.hardware.link import LinkModel
from pimserve.ops.kernels import AttentionKernel, CollectiveKernel, FCKernel
from pimserve.specs.catalog import load_device, load_link
from pimserve.specs.system import DeviceGroup

#: FC kernels a tensor-parallel GPU group splits along ``k`` (Megatron-LM row-parallel layers)
ROW_PARALLEL = frozenset({"o_proj", "ffn_down", "expert_down"})


@dataclass
class GroupModel:
    """``count`` devices of one kind, with an optional link to the compute side."""

    role: str
    device: CostModel
    count: int
    link: LinkModel | None = None
    tier: str | None = None
    fc_ways: int = 0  # devices an FC kernel is split over (0 = count; pipeline stages use fewer)

    @classmethod
    def from_spec(cls, group: DeviceGroup, method: str | None = None) -> GroupModel:
        dev = cost_model_for(load_device(group.device), method)
        link = LinkModel(load_link(group.link)) if group.link else None
        return cls(group.role, dev, group.count, link, group.tier)

    @property
    def name(self) -> str:
        return f"{self.count}x {self.device.name}"

    @property
    def capacity_bytes(self) -> float:
        return self.count * self.device.capacity_bytes

    def fc(self, k: FCKernel) -> Cost:
        """One FC kernel instance split over the group's devices (time of one shard).

        GPUs split as Megatron-LM's tensor parallelism (Shoeybi et al. 2019, section 3): the
        output projection and the FFN down projection are row-parallel (split along the
        reduction dimension ``k``, their partial outputs summed by the all-reduce that follows),
        the other FC kernels column-parallel (along ``n``). PIM groups take one 2D block per
        device along ``n`` (PAPI section 4)."""
        ways = self.fc_ways or self.count
        axis = "k" if self.role == "gpu" and k.name in ROW_PARALLEL else "n"
        shard = self.device.cost(k.split(ways, axis=axis))
        return Cost(
            shard.time_s,
            shard.energy_j * ways,
            shard.compute_s,
            shard.memory_s,
            shard.transfer_s,
        )

    def attention_sets(self, n_kv_heads: int) -> tuple[int, int]:
        """(head ways, replica sets) of the heads_over_devices dataflow on this group."""
        return HeadsOverDevices.sets(n_kv_heads, self.count)

    balanced_time = staticmethod(HeadsOverDevices.balanced_time)

    @property
    def dataflow(self) -> AttentionDataflow:
        """The attention dataflow of the group's device (:mod:`pimserve.hardware.dataflow`)."""
        return self.device.dataflow

    def attention(self, k: AttentionKernel) -> Cost:
        """One attention kernel (all requests) on the group, laid out by the device's dataflow
        (placement units priced per request, combined into the busiest device's or channel's
        time, refresh over the kernel's duration)."""
        if k.n_requests == 0:
            return Cost(0.0, 0.0)
        df = self.dataflow
        ways = df.units_per_request(k.n_kv_heads, self.count)
        per = self.device.attention_unit(df.unit_kernel(k, self.count))
        t = np.asarray(per.time_s, dtype=np.float64)
        once = k.op in df.once_ops
        time_s = self.units_time_s(k.op, t, k.n_kv_heads)
        # the units' compute and transfer parts scaled to the group's time (memory: the rest)
        frac = (float(t.max()) if once else time_s) / t.sum() if t.sum() > 0 else 0.0
        compute = float(np.sum(per.compute_s)) * frac
        transfer = float(np.sum(per.transfer_s)) * frac
        return Cost(
            time_s,
            float(np.sum(per.energy_j)) * ways,
            compute,
            max(0.0, time_s - compute - transfer),
            transfer,
        )

    def units_time_s(self, op: str, unit_s: np.ndarray, n_kv_heads: int) -> float:
        """Seconds of one attention kernel ``op`` on the group from its requests' placement-unit
        times ``unit_s`` (s, float64, one per request; :meth:`attention`'s combination): the
        dataflow's ``once_ops`` pay the longest request's once, the others the busiest
        device's (channel's) units; refresh over the result."""
        df = self.dataflow
        if op in df.once_ops:  # paid once: the longest request's, not the busiest unit's
            return df.group_time_s(np.zeros(0), float(unit_s.max()), n_kv_heads, self.count)
        return df.group_time_s(unit_s, 0.0, n_kv_heads, self.count)

    def layer_attention(self, kernels: list[AttentionKernel]) -> Cost:
        """One layer's attention (score, softmax, context of the same requests) on the group as
        one kernel: per request the placement units' stream ops summed, the dataflow's
        ``once_ops`` paid once (their longest), refresh over the whole: what the engine's
        decode step prices (``Pricer.decode_attention``). Time in s, energy in J."""
        df = self.dataflow
        stream: np.ndarray | float = 0.0
        once, energy = 0.0, 0.0
        n_kv = kernels[0].n_kv_heads if kernels else 1
        for k in kernels:
            if k.n_requests == 0:
                continue
            c = self.device.attention_unit(df.unit_kernel(k, self.count))
            t = np.asarray(c.time_s, dtype=np.float64)
            energy += float(np.sum(c.energy_j)) * df.units_per_request(k.n_kv_heads, self.count)
            if k.op in df.once_ops:
                once = max(once, float(t.max()))
            else:
                stream = stream + t
        if np.ndim(stream) == 0:
            return Cost(0.0, energy)
        return Cost(df.group_time_s(stream, once, n_kv, self.count), energy)

    def collective(self, k: CollectiveKernel) -> Cost:
        return self.device.cost(k)

    def transfer(self, bytes_total: Any) -> Cost:
        """Move ``bytes_total`` between this group and the compute side over ``count`` links."""
        total = (float(bytes_total) if type(bytes_total) is float or type(bytes_total) is int
                 else float(np.sum(bytes_total)))
        if self.link is None or total == 0:
            return Cost(0.0, 0.0)
        per_link = total / self.count
        c = self.link.transfer(per_link)
        return Cost(c.time_s, c.energy_j * self.count, 0.0, 0.0, c.time_s)
