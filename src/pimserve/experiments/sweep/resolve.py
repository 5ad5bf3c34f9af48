"""From a parameter assignment to a fully resolved, hashed, checked point, and back to the
objects the engine runs.

A point's *configuration* is plain JSON data: the system spec (every group's device and link
named), the device and link specs it names (all fields, after overrides), the model spec,
the workload and every run option (defaults included). Its *key* is the SHA-256 of that
configuration and the pimserve version (the release number and a fingerprint of the code,
:func:`version`), in canonical JSON (sorted keys, no spaces), so the same configuration has
the same key in any process, on any machine, and a result of older code is never reused.

A device or link whose fields a parameter changes gets a derived name,
``<preset>~<8 hex digits of its content>``; a system or model that parameters change gets
one too, so that PAPI's alpha, which belongs to the system and model it was calibrated for
(``policies.alpha_calibrated_for``), is recalibrated for a changed GPU or FC-PIM group, as
`pimserve run` does for a changed system file. To run, :func:`materialize` writes changed
devices and links as YAML files (named by content) in a scratch folder and points the
system's groups at them, so they load and validate exactly like a user's own files.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pimserve.engine.config import RunConfig
from pimserve.errors import ConfigurationError, PimserveError, SpecError
from pimserve.experiments.sweep.space import Value
from pimserve.experiments.sweep.spec import ORDER, SweepSpec, group_index
from pimserve.specs.base import validate
from pimserve.specs.catalog import load_device, load_link, load_model, load_system
from pimserve.specs.devices import GPUSpec, LinkSpec, PIMSpec, SSDPIMSpec
from pimserve.specs.model import ModelSpec
from pimserve.specs.system import SystemSpec


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no spaces: one text per value (NaN and inf refused)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def digest(obj: Any, n: int = 64) -> str:
    """The first ``n`` hex digits of the SHA-256 of ``obj``'s canonical JSON."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:n]


_CODE_SUFFIXES = frozenset({".py", ".yaml", ".yml", ".json", ".csv"})


@functools.cache
def code_fingerprint() -> str:
    """12 hex digits of the SHA-256 of pimserve's own files (its modules and the preset and
    data files it ships, by path and content): any edit of the code that makes a result
    changes it, where the release number alone does not (a development checkout, an editable
    install)."""
    import pimserve

    return tree_fingerprint(Path(pimserve.__file__).resolve().parent)


def tree_fingerprint(root: Path) -> str:
    """12 hex digits of the SHA-256 of the code and data files under ``root`` (``.py``,
    ``.yaml``, ``.yml``, ``.json``, ``.csv``; by relative path and content, compiled files
    ignored)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.suffix in _CODE_SUFFIXES and "__pycache__" not in p.parts and p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + b"\0")
            h.update(_sha256_hex(p).encode())
    return h.hexdigest()[:12]


def _sha256_hex(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, in hex (read in chunks, never whole)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def version() -> str:
    """The pimserve version that keys are made with: the release number and the code's
    fingerprint (:func:`code_fingerprint`), ``0.1.0+<12 hex digits>``, so that a store or
    a reproduction folder never hands back a result that older code made."""
    from pimserve import __version__

    return f"{__version__}+{code_fingerprint()}"


def point_key(config: Mapping[str, Any]) -> str:
    """The store key of a resolved configuration: 32 hex digits (128 bits) of the SHA-256 of
    ``{"config": config, "pimserve": version}``. A trace counts by its content (its SHA-256
    is in the configuration), not by where the file lies."""
    wl = config.get("workload")
    if isinstance(wl, dict) and "trace" in wl:
        config = {**config, "workload": {k: v for k, v in wl.items() if k != "trace"}}
    return digest({"config": config, "pimserve": version()}, 32)


@dataclass
class Point:
    """One point of a sweep.

    ``params`` are the parameter values (free, derived and constant) by path; ``config`` the
    resolved configuration (None when it could not be resolved); ``reason`` says in one line
    why the point cannot run (None: it can). ``key`` identifies it in the store.
    """

    key: str
    params: dict[str, Value]
    config: dict[str, Any] | None = None
    reason: str | None = None

    @property
    def valid(self) -> bool:
        return self.reason is None


def _set(d: dict[str, Any], fields: tuple[str, ...], value: Any) -> None:
    for k in fields[:-1]:
        if d.get(k) is None:
            d[k] = {}
        d = d[k]
    d[fields[-1]] = value


_DEVICE_CLASSES = {"gpu": GPUSpec, "pim": PIMSpec, "ssd_pim": SSDPIMSpec}


@functools.lru_cache(maxsize=256)
def _dump_device_cached(ref: str) -> str:
    return json.dumps(load_device(ref).model_dump(mode="json"))


def _dump_device(ref: str) -> dict[str, Any]:
    return json.loads(_dump_device_cached(ref))


@functools.lru_cache(maxsize=256)
def _dump_link_cached(ref: str) -> str:
    return json.dumps(load_link(ref).model_dump(mode="json"))


def _dump_link(ref: str) -> dict[str, Any]:
    return json.loads(_dump_link_cached(ref))


@functools.lru_cache(maxsize=64)
def _system_cached(ref: str) -> SystemSpec:
    return load_system(ref)


@functools.lru_cache(maxsize=64)
def _dump_model_cached(ref: str) -> str:
    return json.dumps(load_model(ref).model_dump(mode="json"))


def _renamed(d: dict[str, Any], original: dict[str, Any]) -> dict[str, Any]:
    """``d`` unchanged if it equals ``original``, else with ``name`` = original name plus
    ``~`` and 8 hex digits of its content."""
    if d == original:
        return d
    out = dict(d)
    out["name"] = f"{original['name']}~{digest(d, 8)}"
    return out


def _where(path: str) -> str:
    return f"parameter '{path}'"


def resolve(spec: SweepSpec, values: Mapping[str, Value]) -> Point:
    """The resolved configuration of one assignment, with its key. A value that the specs
    refuse (a count of 0, a device that fails its own checks) gives a Point with the one-line
    ``reason``; its key then hashes the base and the values instead."""
    params = dict(values)
    try:
        config = _resolve(spec, params)
    except PimserveError as err:
        key = digest({"unresolved": {"base": spec.base.model_dump(mode="json"),
                                     "params": params}, "pimserve": version()}, 32)
        return Point(key, params, None, str(err))
    return Point(point_key(config), params, config)


def _resolve(spec: SweepSpec, values: dict[str, Value]) -> dict[str, Any]:
    base = spec.base
    targets = spec.targets
    order = sorted(values, key=lambda p: ORDER[targets[p].kind])
    sys_ref = str(values.get("system", base.system))
    model_ref = str(values.get("model", base.model))
    system = _system_cached(sys_ref)
    sysd = system.model_dump(mode="json")
    orig_sysd = json.loads(json.dumps(sysd))
    devs = [_dump_device(g.device) for g in system.groups]
    links = [_dump_link(g.link) if g.link else None for g in system.groups]
    orig_devs = [json.loads(json.dumps(d)) for d in devs]
    orig_links = [json.loads(json.dumps(v)) if v else None for v in links]
    coll = _dump_link(system.collective_link) if system.collective_link else None
    orig_coll = json.loads(json.dumps(coll)) if coll else None
    modeld = json.loads(_dump_model_cached(model_ref))
    orig_modeld = json.loads(json.dumps(modeld))
    run = dict(base.run)
    wl: dict[str, Any] = {"n_requests": base.n_requests, "rate_per_s": base.rate_per_s}
    alpha_by_sweep = False
    sel_names: dict[int, str] = {}
    for path in order:
        t, v = targets[path], values[path]
        if t.kind in ("system", "model"):
            continue
        if t.kind == "workload":
            wl[t.fields[0]] = v
        elif t.kind == "run":
            run[t.fields[0]] = v
        elif t.kind == "model_field":
            _set(modeld, t.fields, v)
        elif t.kind == "system_field":
            if t.fields[0] == "collective_link":
                coll = _dump_link(str(v)) if v is not None else None
                orig_coll = json.loads(json.dumps(coll)) if coll else None
            _set(sysd, t.fields, v)
            alpha_by_sweep |= t.fields == ("policies", "alpha")
        elif t.kind == "collective_link":
            if coll is None:
                raise ConfigurationError(f"{_where(path)}: system {system.name} has no "
                                         "collective_link to change")
            _set(coll, t.fields, v)
        else:
            assert t.selector is not None
            i = group_index(system, t.selector, _where(path))
            sel_names[i] = t.selector
            if t.kind == "group":
                f = t.fields[0]
                if f == "device":
                    devs[i] = _dump_device(str(v))
                    orig_devs[i] = json.loads(json.dumps(devs[i]))
                elif f == "link":
                    links[i] = _dump_link(str(v)) if v is not None else None
                    orig_links[i] = json.loads(json.dumps(links[i])) if links[i] else None
                sysd["groups"][i][f] = v
            elif t.kind == "device":
                _set(devs[i], t.fields, v)
            elif t.kind == "link":
                if links[i] is None:
                    raise ConfigurationError(f"{_where(path)}: group {t.selector} of system "
                                             f"{system.name} has no link (set "
                                             f"groups.{t.selector}.link first)")
                _set(links[i], t.fields, v)  # type: ignore[arg-type]
    if alpha_by_sweep and not {"policies.alpha_calibrated_for", "policies.alpha_source"} \
            & set(values):
        # a swept alpha applies as given, wherever it came from
        sysd["policies"]["alpha_calibrated_for"] = None
        sysd["policies"]["alpha_source"] = "sweep parameter policies.alpha"

    devices: dict[str, dict[str, Any]] = {}
    link_specs: dict[str, dict[str, Any]] = {}

    def register(store: dict[str, dict[str, Any]], d: dict[str, Any], orig: dict[str, Any],
                 cls: Any, where: str) -> str:
        if d != orig:
            validate(cls, d, where)
            d = _renamed(d, orig)
        name = d["name"]
        if name in store and store[name] != d:  # two different specs with one name
            d = {**d, "name": f"{name}~{digest(d, 8)}"}
            name = d["name"]
        store[name] = d
        return str(name)

    for i, g in enumerate(sysd["groups"]):
        d = devs[i]
        cls = _DEVICE_CLASSES.get(d.get("kind", ""), PIMSpec)
        g["device"] = register(devices, d, orig_devs[i], cls,
                               f"groups.{sel_names.get(i, i)}.device "
                               f"({orig_devs[i]['name']})")
        if links[i] is not None:
            g["link"] = register(link_specs, links[i], orig_links[i] or {}, LinkSpec,
                                 f"groups.{sel_names.get(i, i)}.link "
                                 f"({(orig_links[i] or {}).get('name')})")
        else:
            g["link"] = None
    if coll is not None:
        sysd["collective_link"] = register(link_specs, coll, orig_coll or {}, LinkSpec,
                                           "collective_link")
    changed = (sysd != _named(orig_sysd, system) or any(
        n.count("~") for n in [*devices, *link_specs]))
    sysd = validate(SystemSpec, sysd, f"system {system.name} with the sweep's parameters"
                    ).model_dump(mode="json")
    if changed:
        sysd["name"] = f"{system.name}~{digest([sysd, devices, link_specs], 8)}"
    modeld = validate(ModelSpec, modeld, f"model {orig_modeld['name']} with the sweep's "
                      "parameters").model_dump(mode="json")
    modeld = _renamed(modeld, orig_modeld)
    cfg = validate(RunConfig, run, "run options").model_dump(mode="json")
    wl = _workload(spec, values, wl)
    return {"system": sysd, "devices": {k: _intern(v) for k, v in devices.items()},
            "links": {k: _intern(v) for k, v in link_specs.items()},
            "model": _intern(modeld), "workload": _intern(wl), "run": _intern(cfg)}


_INTERNED: dict[str, Any] = {}


def _intern(d: Any) -> Any:
    """One shared object per distinct content (device, link and model specs repeat over a
    sweep's points; sharing them keeps a large sweep's memory small). Resolved
    configurations are never modified after :func:`resolve`."""
    text = canonical_json(d)
    if len(_INTERNED) > 100_000:
        _INTERNED.clear()
    return _INTERNED.setdefault(text, d)


def _named(sysd: dict[str, Any], system: SystemSpec) -> dict[str, Any]:
    """The base system's dump with groups naming their devices and links as resolved (to
    compare with the overridden one)."""
    out = json.loads(json.dumps(sysd))
    for g, src in zip(out["groups"], system.groups, strict=True):
        g["device"] = load_device(src.device).name
        g["link"] = load_link(src.link).name if src.link else None
    if system.collective_link:
        out["collective_link"] = load_link(system.collective_link).name
    return out


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str) -> str:
    """:func:`_sha256_hex` of a trace, memoised (a sweep hashes its base trace per point)."""
    return _sha256_hex(path)


def _workload(spec: SweepSpec, values: Mapping[str, Value],
              wl: dict[str, Any]) -> dict[str, Any]:
    base = spec.base
    if base.trace is not None:
        if "workload" in values:
            raise SpecError("parameter 'workload': the base serves a trace (base.trace); "
                            "sweep workload presets with a preset base")
        n = wl["n_requests"]
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ConfigurationError(f"n_requests must be a positive integer (got {n!r})")
        return {"trace": str(Path(base.trace).resolve()),
                "trace_sha256": _file_sha256(str(Path(base.trace).resolve())),
                "trace_format": base.trace_format, "trace_options": base.trace_options,
                "n_requests": n}
    name = str(values.get("workload", base.workload))
    from pimserve.workload.presets import WORKLOADS

    WORKLOADS.get(name)
    n, rate = wl["n_requests"], wl["rate_per_s"]
    if n is None:
        n = 256
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigurationError(f"n_requests must be a positive integer (got {n!r})")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)
                             or rate <= 0):
        raise ConfigurationError(f"rate_per_s must be a positive number (got {rate!r})")
    return {"preset": name, "n_requests": n,
            "rate_per_s": None if rate is None else float(rate)}


# ------------------------------------------------------------------------------------------
# back to engine objects

_SCRATCH: Path | None = None


_SCRATCH_PREFIX = "pimserve-sweep-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by another user
        return True
    return True


def _drop_stale_scratch() -> None:
    """Remove scratch folders whose maker died without cleaning up (killed, or a Ray worker
    stopped by its cluster): their names carry the maker's pid."""
    for d in Path(tempfile.gettempdir()).glob(f"{_SCRATCH_PREFIX}*-*"):
        pid = d.name[len(_SCRATCH_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def _scratch() -> Path:
    """The folder of changed device and link files, made once per process tree: processes
    forked from the one that made it write into it (files are named by content, written
    atomically); the maker removes it at exit, and a later sweep removes it if the maker
    was killed."""
    global _SCRATCH
    if _SCRATCH is None or not _SCRATCH.is_dir():
        _drop_stale_scratch()
        made_by = os.getpid()
        _SCRATCH = Path(tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}{made_by}-"))

        def _drop() -> None:
            if os.getpid() == made_by and _SCRATCH is not None:
                shutil.rmtree(_SCRATCH, ignore_errors=True)

        atexit.register(_drop)
    return _SCRATCH


def _spec_file(d: dict[str, Any]) -> str:
    import yaml

    path = _scratch() / f"{digest(d, 24)}.yaml"
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(yaml.safe_dump(d, sort_keys=True))
        os.replace(tmp, path)
    return str(path)


def _ref(d: dict[str, Any], preset: Any) -> str:
    """A name the catalog resolves to exactly ``d``: its preset name when it is the preset
    unchanged, else a scratch file with ``d``."""
    name = d.get("name", "")
    if "~" not in name:
        try:
            if preset(name) == d:
                return str(name)
        except PimserveError:
            pass
    return _spec_file(d)


@functools.lru_cache(maxsize=512)
def _system_from(text: str) -> SystemSpec:
    cfg = json.loads(text)
    sysd = json.loads(json.dumps(cfg["system"]))
    for g in sysd["groups"]:
        g["device"] = _ref(cfg["devices"][g["device"]], _dump_device)
        if g.get("link"):
            g["link"] = _ref(cfg["links"][g["link"]], _dump_link)
    if sysd.get("collective_link"):
        sysd["collective_link"] = _ref(cfg["links"][sysd["collective_link"]], _dump_link)
    return load_system(validate(SystemSpec, sysd, f"system {sysd['name']}"))


@functools.lru_cache(maxsize=64)
def _model_from(text: str) -> ModelSpec:
    return validate(ModelSpec, json.loads(text), "model")


@functools.lru_cache(maxsize=32)
def _requests_from(text: str, seed: int) -> tuple[Any, str]:
    from pimserve.api import load_workload

    wl = json.loads(text)
    if "trace" in wl:
        if _file_sha256(wl["trace"]) != wl["trace_sha256"]:
            raise ConfigurationError(f"trace {wl['trace']} changed since the sweep was "
                                     "resolved (its SHA-256 differs)")
        return load_workload(trace=wl["trace"], trace_format=wl["trace_format"],
                             n_requests=wl["n_requests"], seed=seed, **wl["trace_options"])
    return load_workload(wl["preset"], n_requests=wl["n_requests"],
                         rate_per_s=wl["rate_per_s"], seed=seed)


@dataclass
class Runnable:
    """The engine objects of one configuration."""

    system: SystemSpec
    model: ModelSpec
    requests: Any
    label: str
    cfg: RunConfig


def materialize(config: Mapping[str, Any]) -> Runnable:
    """Engine objects for a resolved configuration (memoised per process by content)."""
    sys_text = canonical_json({"system": config["system"], "devices": config["devices"],
                               "links": config["links"]})
    system = _system_from(sys_text)
    model = _model_from(canonical_json(config["model"]))
    cfg = validate(RunConfig, config["run"], "run options")
    reqs, label = _requests_from(canonical_json(config["workload"]), cfg.seed)
    return Runnable(system, model, reqs, label, cfg)


def check(point: Point) -> Point:
    """``point`` with ``reason`` set when the engine refuses it before running (the model
    does not fit, no KV block fits, an option the system cannot use, ...): builds the
    system and the simulator, which is cheap (well under a millisecond), runs nothing."""
    if point.config is None or point.reason is not None:
        return point
    from pimserve.engine.simulator import Simulator

    try:
        r = materialize(point.config)
        Simulator(r.system, r.model, r.requests, r.cfg, r.label)
    except PimserveError as err:
        point.reason = str(err)
    return point


# ------------------------------------------------------------------------------------------
# a configuration from engine-level inputs (reproductions, calibrations)


def spec_file(d: dict[str, Any]) -> str:
    """A device or link spec (plain data) as a YAML file in the scratch folder, named by its
    content; the path loads and validates like a user's own file. Shared by every caller
    that needs a changed preset on disk (sweeps, ``scaled_system`` of the reproductions)."""
    return _spec_file(d)


def _spec_dict(ref: str, dump: Any, preset: Any) -> dict[str, Any]:
    """The spec ``ref`` names, as data; named ``<name>~<8 hex digits>`` when it is a file
    whose content differs from the preset of the same name (so that a configuration never
    holds two different specs under one preset's name)."""
    d = dump(ref)
    name = str(d.get("name", ""))
    if ref != name and "~" not in name:
        try:
            same = preset(name) == d
        except PimserveError:  # no preset of that name: the file's own name stands
            same = True
        if not same:
            d = {**d, "name": f"{name}~{digest(d, 8)}"}
    return d


def config_for(system: str | SystemSpec, model: str | ModelSpec, workload: str,
               n_requests: int | None = None, options: Mapping[str, Any] | None = None, *,
               rate_per_s: float | None = None) -> dict[str, Any]:
    """The resolved configuration (see :func:`resolve`) of a run given as
    :func:`pimserve.simulate` takes it: a system and a model (names, files or specs, possibly
    changed in code), a workload preset, its size and arrival rate, and run options.

    Its :func:`point_key` identifies the run in a store, and :func:`materialize` gives back
    engine objects that run exactly as ``simulate(system, model, workload,
    n_requests=n_requests, rate_per_s=rate_per_s, **options)`` does. Unlike a sweep's
    parameters, nothing here renames the system or the model: a spec keeps the name it has
    (so PAPI's alpha calibrated for ``papi`` still applies to a ``papi`` spec whose devices a
    caller changed, as in ``simulate``); a device or link file whose content differs from
    the preset of its name is named ``<name>~<8 hex digits>``. Raises a PimserveError naming
    the field for a bad option, an unknown name or an invalid spec."""
    # a spec's devices and links are loaded (and so checked) as they are dumped below
    spec = system if isinstance(system, SystemSpec) else _system_cached(system)
    sysd = spec.model_dump(mode="json")
    devices: dict[str, dict[str, Any]] = {}
    link_specs: dict[str, dict[str, Any]] = {}

    def register(store: dict[str, dict[str, Any]], d: dict[str, Any]) -> str:
        name = str(d["name"])
        if name in store and store[name] != d:  # two different specs with one name
            d = {**d, "name": f"{name}~{digest(d, 8)}"}
            name = d["name"]
        store[name] = _intern(d)
        return name

    for g in sysd["groups"]:
        g["device"] = register(devices, _spec_dict(g["device"], _dump_device, _dump_device))
        if g.get("link"):
            g["link"] = register(link_specs, _spec_dict(g["link"], _dump_link, _dump_link))
    if sysd.get("collective_link"):
        sysd["collective_link"] = register(
            link_specs, _spec_dict(sysd["collective_link"], _dump_link, _dump_link))
    sysd = validate(SystemSpec, sysd, f"system {spec.name}").model_dump(mode="json")
    if isinstance(model, ModelSpec):
        modeld = model.model_dump(mode="json")
    else:
        modeld = json.loads(_dump_model_cached(model))
    cfg = validate(RunConfig, dict(options or {}), "run options").model_dump(mode="json")
    from pimserve.workload.presets import WORKLOADS

    WORKLOADS.get(workload)
    n = 256 if n_requests is None else n_requests
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigurationError(f"n_requests must be a positive integer (got {n!r})")
    if rate_per_s is not None and (isinstance(rate_per_s, bool)
                                   or not isinstance(rate_per_s, int | float)
                                   or not 0 < rate_per_s < float("inf")):
        raise ConfigurationError(f"rate_per_s must be a positive number (got {rate_per_s!r})")
    wl = {"preset": workload, "n_requests": n,
          "rate_per_s": None if rate_per_s is None else float(rate_per_s)}
    return {"system": sysd, "devices": devices, "links": link_specs,
            "model": _intern(modeld), "workload": wl, "run": _intern(cfg)}


def scratch_folder() -> Path:
    """This process tree's scratch folder of changed device and link files (made on first
    use; see :func:`spec_file`)."""
    return _scratch()


def drop_scratch() -> None:
    """Remove this process's scratch folder now, and forget the specs loaded from paths (so
    that nothing cached points into the removed folder); the folder is made again when next
    needed. For a process that made the folder and is done with it (a reproduction at its
    end); otherwise it goes at exit."""
    global _SCRATCH
    if _SCRATCH is not None:
        if _SCRATCH.name.startswith(f"{_SCRATCH_PREFIX}{os.getpid()}-"):  # made here
            shutil.rmtree(_SCRATCH, ignore_errors=True)
        _SCRATCH = None
    for cached in (_dump_device_cached, _dump_link_cached, _system_cached, _system_from):
        cached.cache_clear()
