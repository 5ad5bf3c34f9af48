"""The built-in presets (YAML files shipped in ``specs/presets``) and loading by name or path.

One registry of models, one of devices, one of links, one of systems (GenZ keeps one model
registry; Vidur one per plug-in kind). ``load_*`` accepts a preset name, an alias, or a path to a
YAML file (and, for models, a HuggingFace ``config.json``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter

from pimserve.errors import SpecError, UnknownNameError
from pimserve.specs.base import Spec, read_yaml, validate
from pimserve.specs.devices import DeviceSpec, GPUSpec, LinkSpec, PIMSpec, SSDPIMSpec
from pimserve.specs.model import ModelSpec
from pimserve.specs.system import SystemSpec

PRESETS = Path(__file__).parent / "presets"
S = TypeVar("S", bound=Spec)
AnyDevice = GPUSpec | PIMSpec | SSDPIMSpec

_device_adapter: TypeAdapter[Any] = TypeAdapter(DeviceSpec)


def _validate_device(data: Any, where: str) -> AnyDevice:
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
    kind = data.get("kind")
    classes = {"gpu": GPUSpec, "pim": PIMSpec, "ssd_pim": SSDPIMSpec}
    if kind not in classes:
        raise SpecError(f"{where}: field 'kind' must be one of gpu, pim, ssd_pim (got {kind!r})")
    return validate(classes[kind], data, where)


def _read_dir(sub: str) -> list[tuple[Path, Any]]:
    return [(p, read_yaml(p)) for p in sorted((PRESETS / sub).glob("*.yaml"))]


@functools.cache
def _models() -> dict[str, ModelSpec]:
    out: dict[str, ModelSpec] = {}
    for path, data in _read_dir("models"):
        spec = validate(ModelSpec, data, str(path))
        for key in [spec.name, *spec.aliases]:
            out[key.lower()] = spec
    return out


@functools.cache
def _devices() -> dict[str, AnyDevice]:
    out: dict[str, AnyDevice] = {}
    for path, data in _read_dir("devices"):
        items = data if isinstance(data, list) else [data]
        for item in items:
            spec = _validate_device(item, str(path))
            out[spec.name] = spec
    return out


@functools.cache
def _links() -> dict[str, LinkSpec]:
    out: dict[str, LinkSpec] = {}
    for path, data in _read_dir("links"):
        items = data if isinstance(data, list) else [data]
        for item in items:
            spec = validate(LinkSpec, item, str(path))
            out[spec.name] = spec
    return out


@functools.cache
def _systems() -> dict[str, SystemSpec]:
    out: dict[str, SystemSpec] = {}
    for path, data in _read_dir("systems"):
        spec = validate(SystemSpec, data, str(path))
        out[spec.name] = spec
    return out


def _is_path(name: str) -> bool:
    return name.endswith((".yaml", ".yml", ".json")) or "/" in name


def model_names() -> list[str]:
    """Canonical names of the built-in models (aliases excluded)."""
    return sorted({m.name for m in _models().values()})


def list_models() -> list[ModelSpec]:
    return [_models()[n] for n in model_names()]


def load_model(name_or_path: str | ModelSpec) -> ModelSpec:
    """A built-in model by name or alias, a ModelSpec YAML, or a HuggingFace config.json."""
    if isinstance(name_or_path, ModelSpec):
        return name_or_path
    # A registered name or alias wins over the path reading, so that HuggingFace repo ids
    # such as "meta-llama/Meta-Llama-3-70B" (which contain "/") resolve to presets.
    if name_or_path.lower() in _models():
        return _models()[name_or_path.lower()]
    if _is_path(name_or_path):
        path = Path(name_or_path)
        if not path.exists():
            raise SpecError(f"model file '{path}' does not exist")
        if path.suffix == ".json":
            from pimserve.specs.hf import load_hf_config

            return load_hf_config(path)
        return validate(ModelSpec, read_yaml(path), str(path))
    try:
        return _models()[name_or_path.lower()]
    except KeyError:
        raise UnknownNameError("model", name_or_path, model_names()) from None


def list_devices() -> list[AnyDevice]:
    return [_devices()[n] for n in sorted(_devices())]


def load_device(name_or_path: str | AnyDevice) -> AnyDevice:
    """A built-in device by name, or a device YAML file (with its ``kind``)."""
    if isinstance(name_or_path, GPUSpec | PIMSpec | SSDPIMSpec):
        return name_or_path
    if _is_path(name_or_path):
        path = Path(name_or_path)
        return _validate_device(read_yaml(path), str(path))
    try:
        return _devices()[name_or_path]
    except KeyError:
        raise UnknownNameError("device", name_or_path, _devices()) from None


def list_links() -> list[LinkSpec]:
    return [_links()[n] for n in sorted(_links())]


def load_link(name_or_path: str | LinkSpec) -> LinkSpec:
    """A built-in link by name or a link YAML file."""
    if isinstance(name_or_path, LinkSpec):
        return name_or_path
    if _is_path(name_or_path):
        path = Path(name_or_path)
        return validate(LinkSpec, read_yaml(path), str(path))
    try:
        return _links()[name_or_path]
    except KeyError:
        raise UnknownNameError("link", name_or_path, _links()) from None


def list_systems() -> list[SystemSpec]:
    return [_systems()[n] for n in sorted(_systems())]


def _relative_to(spec: SystemSpec, folder: Path) -> SystemSpec:
    """``spec`` with the relative device and link file paths of its groups (and its
    collective link) resolved against ``folder``, the system file's own folder, as a user
    writing ``device: my-pim.yaml`` beside the system file means."""

    def fix(ref: str | None) -> str | None:
        if ref is None or not _is_path(ref) or Path(ref).is_absolute():
            return ref
        return str(folder / ref)

    groups = [g.model_copy(update={"device": fix(g.device), "link": fix(g.link)})
              for g in spec.groups]
    return spec.model_copy(update={"groups": groups,
                                   "collective_link": fix(spec.collective_link)})


def load_system(name_or_path: str | SystemSpec) -> SystemSpec:
    """A built-in system by name or a system YAML file; device and link names are checked."""
    if isinstance(name_or_path, SystemSpec):
        spec = name_or_path
    elif _is_path(name_or_path):
        path = Path(name_or_path)
        spec = _relative_to(validate(SystemSpec, read_yaml(path), str(path)), path.parent)
    else:
        try:
            spec = _systems()[name_or_path]
        except KeyError:
            raise UnknownNameError("system", name_or_path, _systems()) from None
    for g in spec.groups:
        load_device(g.device)
        if g.link is not None:
            load_link(g.link)
    return spec
