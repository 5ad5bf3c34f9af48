"""A system ready to price: device groups with cost models, capacities, placement policies."""

from __future__ import annotations

from dataclasses import dataclass

from pimserve.errors import ConfigurationError
from pimserve.hardware.group import GroupModel
from pimserve.hardware.link import LinkModel
from pimserve.specs.catalog import load_link
from pimserve.specs.model import ModelSpec
from pimserve.specs.system import SystemSpec


@dataclass
class BuiltSystem:
    """Cost models for every group of a SystemSpec, plus where weights and KV live."""

    spec: SystemSpec
    model: ModelSpec
    gpu: GroupModel | None
    fc_pim: GroupModel | None
    attn: GroupModel | None
    tiers: list[GroupModel]
    weight_capacity_bytes: float
    kv_capacity_bytes: float
    collective_link: LinkModel | None = None

    @classmethod
    def build(cls, spec: SystemSpec, model: ModelSpec) -> BuiltSystem:
        groups = {g.role: g for g in spec.groups if g.role != "kv_tier"}
        gm = {role: GroupModel.from_spec(g) for role, g in groups.items()}
        tiers = [GroupModel.from_spec(g) for g in spec.tiers()]
        all_models = [(g, gm.get(g.role)) for g in spec.groups if g.role != "kv_tier"]
        all_models += list(zip(spec.tiers(), tiers, strict=True))
        w_cap = sum(m.capacity_bytes for g, m in all_models if m and "weights" in g.holds)
        weights = float(model.weight_bytes)
        if weights > w_cap:
            raise ConfigurationError(
                f"model {model.name} needs {weights / 1e9:.1f} GB of weights but system "
                f"{spec.name}'s weight-holding groups have {w_cap / 1e9:.1f} GB"
            )
        kv_cap = 0.0
        for g, m in all_models:
            if m is None or "kv" not in g.holds:
                continue
            cap = m.capacity_bytes
            if "weights" in g.holds:  # weights take their share first
                cap -= weights * cap / w_cap
            kv_cap += cap
        if kv_cap <= 0:
            raise ConfigurationError(f"system {spec.name} has no memory left for the KV cache")
        if "attn" not in gm and not tiers and "gpu" not in gm:
            raise ConfigurationError(f"system {spec.name} has no device that runs attention")
        link = LinkModel(load_link(spec.collective_link)) if spec.collective_link else None
        pp = spec.pipeline_parallel
        for role in ("gpu", "fc_pim"):
            g = gm.get(role)
            if g is not None and pp > 1:
                # each pipeline stage's layers are split over its own devices (PP stages run
                # different micro-batches at once, so the iteration still costs every layer)
                g.fc_ways = max(1, g.count // pp)
        return cls(
            spec, model, gm.get("gpu"), gm.get("fc_pim"), gm.get("attn"), tiers, w_cap, kv_cap,
            link,
        )

    @property
    def attention_group(self) -> GroupModel:
        """Where decode attention runs: the attn group, else the GPUs."""
        g = self.attn or (self.tiers[0] if self.tiers else None) or self.gpu
        assert g is not None
        return g

    @property
    def fc_groups(self) -> dict[str, GroupModel]:
        out = {}
        if self.gpu:
            out["gpu"] = self.gpu
        if self.fc_pim:
            out["fc_pim"] = self.fc_pim
        if not out and self.attn:  # no GPU, no FC-PIM: the attention PIM runs FC too
            out["fc_pim"] = self.attn
        return out
