"""Validated data: models, devices, links, systems; presets shipped as YAML."""

from pimserve.specs.catalog import (
    list_devices,
    list_links,
    list_models,
    list_systems,
    load_device,
    load_link,
    load_model,
    load_system,
    model_names,
)
from pimserve.specs.devices import (
    DRAMSpec,
    GPUEnergy,
    GPUSpec,
    LinkSpec,
    PIMEnergy,
    PIMSpec,
    SSDEnergy,
    SSDPIMSpec,
)
from pimserve.specs.model import ModelSpec
from pimserve.specs.system import DeviceGroup, PolicySpec, SystemSpec

__all__ = [
    "DRAMSpec",
    "DeviceGroup",
    "GPUEnergy",
    "GPUSpec",
    "LinkSpec",
    "ModelSpec",
    "PIMEnergy",
    "PIMSpec",
    "PolicySpec",
    "SSDEnergy",
    "SSDPIMSpec",
    "SystemSpec",
    "list_devices",
    "list_links",
    "list_models",
    "list_systems",
    "load_device",
    "load_link",
    "load_model",
    "load_system",
    "model_names",
]
