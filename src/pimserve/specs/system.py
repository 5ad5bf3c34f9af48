"""SystemSpec: which devices a serving system has, how many, how they connect, which policies.

A system is data (a YAML preset or a user file). Roles say what a device group does:

- ``gpu``: compute-centric processors; run prefill and whichever FC kernels are placed on them.
- ``fc_pim``: PIM that holds the weights and can run FC kernels (PAPI's FC-PIM).
- ``attn``: PIM (or GPU memory) that holds KV and runs attention (AttAcc, PAPI's Attn-PIM).
- ``kv_tier``: one tier of a KV hierarchy (PAM: HBM-PIM, DDR-PIM, SSD-PIM), ordered fastest first.

``holds`` says what lives in a group's memory: weights, kv, or both; capacity checks use it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pimserve.specs.base import Spec
from pimserve.specs.kv import KVPolicySpec

Role = Literal["gpu", "fc_pim", "attn", "kv_tier"]
Holds = Literal["weights", "kv"]


class DeviceGroup(Spec):
    """``count`` identical devices playing one role, reached over ``link``."""

    role: Role
    device: str = Field(description="device preset name (see `pimserve devices`)")
    count: int = Field(gt=0, description="number of devices in the group")
    link: str | None = Field(None, description="link preset to the compute side (None = local)")
    holds: list[Holds] = Field(default_factory=list, description="what lives in its memory")
    tier: str | None = Field(None, description="tier label for kv_tier groups (hbm, ddr, ssd)")
    compute: bool = Field(
        True,
        description="kv_tier only: its PUs compute attention on the KV they hold; false = a "
        "plain memory whose KV is fetched to the GPU for attention (offloading)",
    )
    links: int | None = Field(
        None, gt=0, description="parallel links to the compute side (None = one per device)"
    )
    source: str = ""


class OverlapSpec(Spec):
    """AttAcc's overlap of GPU FC work with PIM attention in decode (its ``--pipeopt`` and
    ``--ffopt``; AttAcc ASPLOS'24 section 5.3). Off unless a system's source says it overlaps."""

    subbatches: int = Field(
        1,
        ge=1,
        description="sub-batches the decode batch is pipelined in: the GPUs' QKV and output "
        "projections of one overlap the PIM attention of another, so a layer pays max(FC, "
        "attention) + min(FC, attention) / subbatches (1 = no pipelining; AttAcc: heads per GPU)",
    )
    ffn_on_attention_pim: bool = Field(
        False,
        description="the FFN runs on the GPUs and the attention PIM devices at once, split in "
        "proportion to their speed at this batch: 1 / (1 / t_gpu + 1 / t_pim), each priced by "
        "its own FC model (AttAcc's feed-forward parallelism; weights assumed in both)",
    )


class PolicySpec(Spec):
    """The policies a system runs; names are looked up in the policy registries."""

    fc_placement: str = Field("static-gpu", description="static-gpu | static-pim | papi | oracle")
    alpha: float | None = Field(
        None, gt=0, description="PAPI threshold on RLP x TLP; None = calibrate at load time"
    )
    alpha_source: str = Field("", description="how alpha was found")
    alpha_calibrated_for: list[str] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="[system, model] the alpha was calibrated for; a run of another system "
        "or model calibrates its own (cached) and says so. None: alpha applies as given",
    )
    kv: KVPolicySpec = Field(
        default_factory=KVPolicySpec, description="KV placement across tiers (PAM)"
    )
    overlap: OverlapSpec | None = Field(
        None, description="overlap of GPU FC with PIM attention in decode (AttAcc); None = none"
    )


class SystemSpec(Spec):
    """A serving system: device groups, links and policies."""

    name: str
    display_name: str = ""
    description: str = ""
    source: str = ""
    groups: list[DeviceGroup] = Field(min_length=1)
    tensor_parallel: int = Field(1, gt=0, description="TP degree over the gpu group")
    pipeline_parallel: int = Field(1, gt=0, description="PP stages")
    collective_link: str | None = Field(
        None,
        description="link for the tensor-parallel all-reduce when the system has no GPU "
        "(with GPUs, their NVLink is used)",
    )
    policies: PolicySpec = Field(default_factory=PolicySpec)

    @model_validator(mode="after")
    def _check(self) -> SystemSpec:
        roles = [g.role for g in self.groups]
        for single in ("gpu", "fc_pim", "attn"):
            if roles.count(single) > 1:
                raise ValueError(f"at most one '{single}' group, found {roles.count(single)}")
        if not any("weights" in g.holds for g in self.groups):
            raise ValueError("no group holds the weights (add 'weights' to some group's holds)")
        if not any("kv" in g.holds for g in self.groups):
            raise ValueError("no group holds the KV cache (add 'kv' to some group's holds)")
        if "attn" in roles and "kv_tier" in roles:
            raise ValueError("use either an 'attn' group or 'kv_tier' groups, not both")
        gpus = [g for g in self.groups if g.role == "gpu"]
        if gpus and self.tensor_parallel > gpus[0].count:
            raise ValueError(
                f"tensor_parallel ({self.tensor_parallel}) exceeds the gpu group's count "
                f"({gpus[0].count}): the all-reduce would span GPUs the system does not have"
            )
        tiers = [g for g in self.groups if g.role == "kv_tier"]
        if tiers:
            if not all("kv" in g.holds for g in tiers):
                raise ValueError("every kv_tier group must hold kv (add 'kv' to its holds)")
            labels = [g.tier or "" for g in tiers]
            if "" in labels or len(set(labels)) != len(labels):
                raise ValueError(f"kv_tier groups need distinct tier labels, got {labels}")
        elif self.policies.kv.placement not in ("single-tier",):
            raise ValueError(
                f"kv placement '{self.policies.kv.placement}' needs kv_tier groups; systems "
                "with an 'attn' group use 'single-tier'"
            )
        if self.pipeline_parallel > 1:
            gpu = self.group("gpu")
            if gpu is None or gpu.count != self.tensor_parallel * self.pipeline_parallel:
                raise ValueError(
                    "pipeline_parallel needs a gpu group of tensor_parallel x pipeline_parallel "
                    f"devices ({self.tensor_parallel} x {self.pipeline_parallel})"
                )
        return self

    def group(self, role: Role) -> DeviceGroup | None:
        """The (single) group with this role, or None."""
        for g in self.groups:
            if g.role == role:
                return g
        return None

    def tiers(self) -> list[DeviceGroup]:
        """KV tiers in the order given (fastest first)."""
        return [g for g in self.groups if g.role == "kv_tier"]
