"""SystemSpec: which devices a serving system has, how many, how they connect, which policies.

A system is data (a YAML preset or a user file). Roles say what a device group does:

- ``gpu``: compute-centric processors; run prefill and whichever FC kernels are placed on them.
- ``fc_pim``: PIM that holds the weights and can run FC kernels (PAPI's FC-PIM).
- ``attn``: PIM (or GPU memory) that holds KV and runs attention (AttAcc, PAPI's Attn-PIM).
- ``kv_tier``: one tier of a KV hierarchy (PAM: HBM-PIM, DDR-PIM, SSD-PIM), ordered fastest first.

``holds`` says what lives in a group's memory: weights, kv, or both; capacity checks use it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from pimserve.specs.base import Spec

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
    source: str = ""


class PolicySpec(Spec):
    """The policies a system runs; names are looked up in the policy registries."""

    fc_placement: str = Field("static-gpu", description="static-gpu | static-pim | papi | oracle")
    alpha: float | None = Field(
        None, gt=0, description="PAPI threshold on RLP x TLP; None = calibrate at load time"
    )
    alpha_source: str = Field("", description="how alpha was found")
    kv_placement: str = Field("single-tier", description="KV placement policy name")
    options: dict[str, Any] = Field(default_factory=dict, description="policy-specific options")


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
