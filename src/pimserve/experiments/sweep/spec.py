"""Sweep specs: the YAML file that names a base configuration and the parameters to vary.

::

    name: papi-stack-budget              # the store's `sweep` column (default: file name)
    base:                                # what every point starts from
      system: papi                       # preset name or YAML path (relative to this file)
      model: llama-65b
      workload: dolly-creative           # a preset, or `trace: PATH` + `trace_format`
      n_requests: 64
      run: {batch: 16, tlp: 2}           # RunConfig fields (`pimserve run --help`)
    parameters:                          # path -> values (see space.RANGE_FORMS)
      groups.fc_pim.count: [10, 20, 30, 40, 50, 60]
      groups.attn.count: "90 - groups.fc_pim.count"
      alpha: {start: 16, stop: 64, step: 16}
    constraints: ["groups.attn.count >= 10"]
    strategy: grid                       # or {kind: random, samples, seed} | {kind: optuna, ...}
    objectives: [throughput, energy_per_token, tpot_p99, hw_cost]

Parameter paths (:func:`parse_target`) reach any preset or run option; docs/sweeps.md lists
them. Everything here is checked when the spec loads; errors are one line naming the field and
what is accepted.
"""

from __future__ import annotations

import difflib
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError, model_validator

from pimserve.engine.config import RunConfig
from pimserve.errors import PimserveError, SpecError
from pimserve.experiments.sweep.expr import Expr
from pimserve.experiments.sweep.space import (
    MAX_POINTS,
    Domain,
    Parameter,
    order_derived,
    parse_domain,
)
from pimserve.specs.base import Spec, read_yaml, validate
from pimserve.specs.catalog import load_device, load_model, load_system
from pimserve.specs.devices import GPUSpec, LinkSpec, PIMSpec, SSDPIMSpec
from pimserve.specs.model import ModelSpec
from pimserve.specs.system import DeviceGroup, SystemSpec

STRATEGIES = ("grid", "random", "optuna")


@dataclass(frozen=True)
class Objective:
    """A metric a sweep optimises: its store column, direction and label (with unit)."""

    name: str
    column: str
    direction: Literal["max", "min"]
    label: str


OBJECTIVES: dict[str, Objective] = {
    o.name: o for o in (
        Objective("throughput", "throughput_tok_s", "max", "throughput (tokens/s)"),
        Objective("energy_per_token", "energy_per_token_j", "min", "energy per token (J)"),
        Objective("tpot_p99", "tpot_ms_p99", "min", "p99 TPOT (ms)"),
        Objective("hw_cost", "hw_pim_logic_mm2", "min", "added PIM logic area (mm²)"),
    )
}
"""The objectives of search and of the Pareto front, by name (their columns also accepted)."""


def objective(name: str, where: str = "objectives") -> Objective:
    """An objective by name or by column; SpecError listing the accepted names otherwise."""
    for o in OBJECTIVES.values():
        if name in (o.name, o.column):
            return o
    close = difflib.get_close_matches(name, list(OBJECTIVES), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise SpecError(f"{where}: unknown objective '{name}'{hint} (accepted: "
                    f"{', '.join(OBJECTIVES)}, or their columns "
                    f"{', '.join(o.column for o in OBJECTIVES.values())})")


class BaseConfig(Spec):
    """What every point of a sweep starts from before its parameters are applied."""

    system: str = Field("papi", description="system preset name or YAML path")
    model: str = Field("llama-65b", description="model preset name, YAML or config.json path")
    workload: str = Field("dolly-creative", description="workload preset (`pimserve workloads`)")
    trace: str | None = Field(None, description="a trace file instead of the preset")
    trace_format: str = Field("azure", description="azure | mooncake | dolly | arxiv | generic")
    trace_options: dict[str, Any] = Field(
        default_factory=dict, description="trace loader options (columns, time_unit, sort)")
    n_requests: int | None = Field(64, gt=0, le=10_000_000,
                                   description="requests per point (None: all of a trace)")
    rate_per_s: float | None = Field(None, gt=0, allow_inf_nan=False,
                                     description="Poisson arrival rate of a preset, req/s")
    run: dict[str, Any] = Field(default_factory=dict, description="RunConfig fields")


class StrategyConfig(Spec):
    """How points are chosen: grid, seeded random sampling, or Optuna search."""

    kind: Literal["grid", "random", "optuna"] = "grid"
    samples: int | None = Field(None, gt=0, le=MAX_POINTS, description="random: draws")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="random/optuna: sampling seed")
    sampler: Literal["nsga2", "tpe"] = Field("nsga2", description="optuna: the sampler")
    trials: int | None = Field(None, gt=0, le=1_000_000, description="optuna: points tried")
    batch: int = Field(16, gt=0, le=100_000,
                       description="optuna: trials asked together, before their results are "
                       "told (fixed, so a resumed search replays the same trials)")

    @model_validator(mode="after")
    def _needs(self) -> StrategyConfig:
        if self.kind == "random" and self.samples is None:
            raise ValueError("strategy random needs 'samples' (how many points to draw)")
        if self.kind == "optuna" and self.trials is None:
            raise ValueError("strategy optuna needs 'trials' (how many points to try)")
        if self.kind != "random" and self.samples is not None:
            raise ValueError(f"'samples' is for strategy random, not {self.kind}")
        if self.kind != "optuna" and self.trials is not None:
            raise ValueError(f"'trials' is for strategy optuna, not {self.kind}")
        return self


class SweepFile(Spec):
    """The top level of a sweep YAML file."""

    name: str | None = Field(None, min_length=1, max_length=200)
    description: str = ""
    base: BaseConfig = Field(default_factory=BaseConfig)
    parameters: dict[str, Any] = Field(default_factory=dict)
    constraints: list[str] = Field(default_factory=list)
    strategy: StrategyConfig | Literal["grid", "random", "optuna"] = "grid"
    objectives: list[str] = Field(default_factory=lambda: list(OBJECTIVES), min_length=1)


# ------------------------------------------------------------------------------------------
# parameter paths


TargetKind = Literal["system", "model", "model_field", "workload", "run", "system_field",
                     "group", "device", "link", "collective_link"]
ORDER: dict[str, int] = {"system": 0, "model": 0, "workload": 0, "run": 0, "group": 1,
                         "system_field": 1, "device": 2, "link": 2, "collective_link": 2,
                         "model_field": 2}
"""Application order of overrides: choices first, then group fields (a new device preset),
then fields inside a device, link or model."""

_DEVICE_CLASSES: dict[str, type[BaseModel]] = {"gpu": GPUSpec, "pim": PIMSpec,
                                               "ssd_pim": SSDPIMSpec}
WORKLOAD_KEYS = ("workload", "n_requests", "rate_per_s")
PATH_FORMS = ("system, model, model.<field>, workload, n_requests, rate_per_s, a run option "
              "(batch, tlp, alpha, ... or run.<option>), groups.<role|tier|index>.<field> "
              "(count, device, link, links, ...), groups.<g>.device.<field>[.<field>], "
              "groups.<g>.link.<field>, policies.<field>[.<field>], tensor_parallel, "
              "pipeline_parallel, collective_link[.<field>]")


@dataclass(frozen=True)
class Target:
    """Where a parameter path points: ``kind``, the group ``selector`` and the ``fields``
    inside the object; ``annotation`` is the leaf field's type (for value checks)."""

    path: str
    kind: TargetKind
    selector: str | None = None
    fields: tuple[str, ...] = ()
    annotation: Any = None

    @property
    def canonical(self) -> str:
        """One name per place (``batch`` and ``run.batch`` are the same)."""
        return f"{self.kind}:{self.selector or ''}:{'.'.join(self.fields)}"


def _sub_model(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in typing.get_args(ann):
        found = _sub_model(arg)
        if found is not None:
            return found
    return None


def _walk(cls: type[BaseModel], parts: list[str], path: str, prefix: str) -> Any:
    """The annotation of field ``parts`` inside ``cls``; SpecError naming the parameter and
    the fields accepted at the level that failed."""
    cur: type[BaseModel] | None = cls
    ann: Any = None
    for i, part in enumerate(parts):
        fields = dict(cur.model_fields) if cur is not None else {}
        at = ".".join([prefix, *parts[:i]]) if prefix else ".".join(parts[:i])
        if part not in fields or part == "name":
            names = [f for f in fields if f != "name"]
            close = difflib.get_close_matches(part, names, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            what = "is set by the sweep, not a parameter" if part == "name" else "is unknown"
            raise SpecError(f"parameter '{path}': field '{part}' {what}{hint} (accepted after "
                            f"'{at}': {', '.join(names)})")
        ann = fields[part].annotation
        sub = _sub_model(ann)
        if i < len(parts) - 1:
            if sub is None:
                raise SpecError(f"parameter '{path}': '{part}' is a value, it has no field "
                                f"'{parts[i + 1]}'")
            cur = sub
        elif sub is not None:
            raise SpecError(f"parameter '{path}': '{part}' is a group of fields; name one "
                            f"(accepted: {', '.join(sub.model_fields)})")
    return ann


def group_index(spec: SystemSpec, selector: str, where: str) -> int:
    """The group of ``spec`` a selector names: a role (gpu, fc_pim, attn; kv_tier when there
    is one tier), a tier label (hbm, ddr, ssd) or an index; SpecError listing the
    accepted selectors otherwise."""
    groups = spec.groups
    if selector.isdigit() and int(selector) < len(groups):
        return int(selector)
    by_role = [i for i, g in enumerate(groups) if g.role == selector]
    if len(by_role) == 1:
        return by_role[0]
    by_tier = [i for i, g in enumerate(groups) if g.role == "kv_tier" and g.tier == selector]
    if len(by_tier) == 1:
        return by_tier[0]
    roles = [g.role for g in groups if g.role != "kv_tier"]
    tiers = [g.tier or "" for g in groups if g.role == "kv_tier"]
    accepted = [*roles, *tiers, *(str(i) for i in range(len(groups)))]
    why = "several kv_tier groups: name one by tier" if len(by_role) > 1 else "no such group"
    raise SpecError(f"{where}: system {spec.name} has {why} '{selector}' (accepted: "
                    f"{', '.join(accepted)})")


def parse_target(path: str, systems: list[SystemSpec],
                 group_devices: dict[str, list[str]] | None = None) -> Target:
    """Resolve a parameter path against the candidate base ``systems`` (the base system, or
    every value of a swept ``system``); a path must fit at least one of them.
    ``group_devices`` maps a group selector to the device presets a ``groups.<g>.device``
    parameter lists (device fields are checked against those devices too)."""
    if not isinstance(path, str) or not path or len(path) > 300:
        raise SpecError(f"parameter {path!r}: a path must be a non-empty string")
    if not re.fullmatch(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*", path):
        raise SpecError(f"parameter {path!r}: a path is dot-separated names of letters, "
                        f"digits, '_' and '-' (accepted: {PATH_FORMS})")
    parts = path.split(".")
    head = parts[0]
    if path in ("system", "model"):
        return Target(path, path, annotation=str)
    if head == "model":
        return Target(path, "model_field", fields=tuple(parts[1:]),
                      annotation=_walk(ModelSpec, parts[1:], path, "model"))
    if path in WORKLOAD_KEYS:
        ann = {"workload": str, "n_requests": int, "rate_per_s": float}[path]
        return Target(path, "workload", fields=(path,), annotation=ann)
    if head == "run" or (len(parts) == 1 and head in RunConfig.model_fields):
        sub = parts[1:] if head == "run" else parts
        if len(sub) != 1:
            raise SpecError(f"parameter '{path}': run options are flat (run.<option>)")
        return Target(path, "run", fields=(sub[0],),
                      annotation=_walk(RunConfig, sub, path, "run"))
    if head == "groups":
        if len(parts) < 3:
            raise SpecError(f"parameter '{path}': name a group and a field, e.g. "
                            "groups.attn.count (groups.<role|tier|index>.<field>)")
        return _group_target(path, parts, systems, group_devices or {})
    if head == "collective_link" and len(parts) > 1:
        return Target(path, "collective_link", fields=tuple(parts[1:]),
                      annotation=_walk(LinkSpec, parts[1:], path, "collective_link"))
    if head in SystemSpec.model_fields and head not in ("groups", "name"):
        return Target(path, "system_field", fields=tuple(parts),
                      annotation=_walk(SystemSpec, parts, path, ""))
    names = ["system", "model", *WORKLOAD_KEYS, *RunConfig.model_fields, "groups",
             *(f for f in SystemSpec.model_fields if f not in ("groups", "name"))]
    close = difflib.get_close_matches(head, names, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise SpecError(f"parameter '{path}': unknown path{hint} (accepted: {PATH_FORMS})")


def _group_target(path: str, parts: list[str], systems: list[SystemSpec],
                  group_devices: dict[str, list[str]]) -> Target:
    selector, rest = parts[1], parts[2:]
    first_err: PimserveError | None = None
    for spec in systems:
        try:
            i = group_index(spec, selector, f"parameter '{path}'")
            g = spec.groups[i]
            if rest[0] == "device" and len(rest) > 1:
                names = group_devices.get(selector) or [g.device]
                anns = []
                for name in names:
                    dev = load_device(name)
                    try:
                        anns.append(_walk(_DEVICE_CLASSES[dev.kind], rest[1:], path,
                                          f"groups.{selector}.device ({dev.kind} {dev.name})"))
                    except SpecError as err:
                        first_err = first_err or err
                if not anns:
                    continue
                return Target(path, "device", selector, tuple(rest[1:]), anns[0])
            if rest[0] == "link" and len(rest) > 1:
                return Target(path, "link", selector, tuple(rest[1:]),
                              _walk(LinkSpec, rest[1:], path, f"groups.{selector}.link"))
            if len(rest) != 1:
                raise SpecError(f"parameter '{path}': '{rest[0]}' is a value, it has no field "
                                f"'{rest[1]}'")
            return Target(path, "group", selector, (rest[0],),
                          _walk(DeviceGroup, rest, path, f"groups.{selector}"))
        except SpecError as err:
            first_err = first_err or err
    assert first_err is not None
    raise first_err


def numeric(annotation: Any) -> bool:
    """Whether a field holds numbers (int or float, not bool)."""
    if annotation in (int, float):
        return True
    return any(numeric(a) for a in typing.get_args(annotation))


def check_value(target: Target, value: Any) -> None:
    """SpecError when ``value`` has the wrong type for the field (a string for a count, a
    fraction for an integer, a word outside a Literal); bounds are checked per point."""
    if target.annotation is None:
        return
    try:
        TypeAdapter(target.annotation).validate_python(value)
    except ValidationError as err:
        msg = err.errors()[0]["msg"]
        raise SpecError(f"parameter '{target.path}': value {value!r} is not accepted: "
                        f"{msg}") from None


# ------------------------------------------------------------------------------------------
# the spec


@dataclass
class SweepSpec:
    """A loaded, checked sweep: the base, the parameters with their targets, constraints,
    strategy and objectives. ``raw`` is the YAML as read (recorded in the store)."""

    name: str
    description: str
    base: BaseConfig
    parameters: list[Parameter]
    targets: dict[str, Target]
    constraints: list[Expr]
    strategy: StrategyConfig
    objectives: list[Objective]
    raw: dict[str, Any] = field(default_factory=dict)
    folder: Path = Path(".")

    @property
    def free(self) -> list[Parameter]:
        return [p for p in self.parameters if p.free]

    def with_base(self, **changes: Any) -> SweepSpec:
        """A copy whose base has ``changes`` (e.g. ``n_requests`` to shrink a sweep)."""
        import copy

        out = copy.copy(self)
        out.base = self.base.model_copy(update=changes)
        validate(BaseConfig, out.base.model_dump(), "base")
        return out


def _local(ref: str, folder: Path) -> str:
    """A relative YAML/JSON path in the spec, resolved against the spec file's folder."""
    if (ref.endswith((".yaml", ".yml", ".json")) or "/" in ref) and not Path(ref).is_absolute():
        cand = folder / ref
        if cand.exists():
            return str(cand)
    return ref


def load_sweep_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep YAML file; SpecError (one line naming the field) if wrong."""
    p = Path(path)
    if not p.exists():
        raise SpecError(f"sweep spec '{p}' does not exist")
    if not p.is_file():
        raise SpecError(f"sweep spec '{p}' is not a file")
    data = read_yaml(p)
    return sweep_spec_from_dict(data, str(p), folder=p.parent, default_name=p.stem)


def sweep_spec_from_dict(data: Any, where: str = "sweep spec", folder: Path = Path("."),
                         default_name: str = "sweep") -> SweepSpec:
    """Check a sweep spec given as data (as :func:`load_sweep_spec` does for a file)."""
    f = validate(SweepFile, data, where)
    trace = f.base.trace
    if trace is not None and not Path(trace).is_absolute():
        trace = str(folder / trace)
    base = f.base.model_copy(update={"system": _local(f.base.system, folder),
                                     "model": _local(f.base.model, folder), "trace": trace})
    validate(RunConfig, base.run, f"{where}: base.run")
    from pimserve.workload.presets import WORKLOADS

    try:
        base_system = load_system(base.system)
        load_model(base.model)
        if base.trace is None:
            WORKLOADS.get(base.workload)
    except PimserveError as err:
        raise SpecError(f"{where}: base: {err}") from None
    if base.trace is not None and not Path(base.trace).is_file():
        raise SpecError(f"{where}: base.trace '{base.trace}' is not a file")
    strategy = (validate(StrategyConfig, {"kind": f.strategy}, f"{where}: strategy")
                if isinstance(f.strategy, str) else f.strategy)
    objectives = []
    for i, name in enumerate(f.objectives):
        o = objective(name, f"{where}: objectives[{i}]")
        if o in objectives:
            raise SpecError(f"{where}: objectives[{i}]: '{name}' given twice")
        objectives.append(o)

    raw_params = f.parameters
    # candidate systems and devices (a swept system or device preset)
    systems = [base_system]
    if "system" in raw_params:
        dom = parse_domain(raw_params["system"], "parameter 'system'")
        vals = dom.enumerate() if isinstance(dom, Domain) else dom
        if isinstance(vals, Expr) or not all(isinstance(v, str) for v in vals):
            raise SpecError("parameter 'system': give system names or paths (a list or "
                            "{dist: choice, values: [...]})")
        systems = []
        for v in vals:
            try:
                systems.append(load_system(_local(str(v), folder)))
            except PimserveError as err:
                raise SpecError(f"parameter 'system': {err}") from None
    group_devices: dict[str, list[str]] = {}
    for path, raw in raw_params.items():
        parts = path.split(".") if isinstance(path, str) else []
        if len(parts) == 3 and parts[0] == "groups" and parts[2] == "device":
            dom = parse_domain(raw, f"parameter '{path}'")
            vals = dom.enumerate() if isinstance(dom, Domain) else dom
            if isinstance(vals, Expr):
                raise SpecError(f"parameter '{path}': give device preset names")
            group_devices[parts[1]] = [_local(str(v), folder) for v in vals]
            for v in group_devices[parts[1]]:
                try:
                    load_device(v)
                except PimserveError as err:
                    raise SpecError(f"parameter '{path}': {err}") from None

    if base.trace is not None:
        if base.rate_per_s is not None:
            raise SpecError(f"{where}: base.rate_per_s applies to workload presets; a trace "
                            "(base.trace) has its own arrival times")
        for key in ("workload", "rate_per_s"):
            if key in raw_params:
                raise SpecError(f"parameter '{key}': the base serves a trace (base.trace), "
                                f"which has its own requests and arrival times; '{key}' "
                                "applies to workload presets")
    targets: dict[str, Target] = {}
    seen: dict[str, str] = {}
    parsed: dict[str, Any] = {}
    for path, raw in raw_params.items():
        t = parse_target(path, systems, group_devices)
        if t.canonical in seen:
            raise SpecError(f"parameters '{seen[t.canonical]}' and '{path}' set the same field")
        seen[t.canonical] = path
        targets[path] = t
        parsed[path] = parse_domain(raw, f"parameter '{path}'")
    params: list[Parameter] = []
    for path, dom in parsed.items():
        t = targets[path]
        if isinstance(dom, Expr):
            params.append(Parameter(path, expr=dom))
            continue
        if isinstance(dom, tuple):
            (v,) = dom
            if isinstance(v, str) and numeric(t.annotation):
                # a string for a number: a derived expression over other parameters
                params.append(Parameter(path, expr=Expr(v, f"parameter '{path}'")))
                continue
            if t.kind in ("system", "model") or (t.kind == "group" and t.fields[0] in
                                                 ("device", "link")):
                v = _local(v, folder) if isinstance(v, str) else v
            check_value(t, v)
            _check_name(t, v)
            params.append(Parameter(path, constant=v, is_constant=True))
            continue
        vals = dom.enumerate() if dom.finite else ()
        if t.kind in ("system", "model") or (t.kind == "group" and t.fields[0] in
                                             ("device", "link")):
            vals = tuple(_local(v, folder) if isinstance(v, str) else v for v in vals)
            dom = Domain(dom.kind, vals) if dom.kind in ("values", "choice") else dom
        for v in vals:
            check_value(t, v)
            _check_name(t, v)
        if not dom.finite and not numeric(t.annotation):
            raise SpecError(f"parameter '{path}': a {dom.kind} distribution needs a numeric "
                            "field")
        params.append(Parameter(path, domain=dom))
    order_derived(params)  # unknown names, circles
    known = set(targets)
    constraints = []
    for i, text in enumerate(f.constraints):
        c = Expr(text, f"{where}: constraints[{i}]")
        for n in c.names:
            if n not in known:
                close = difflib.get_close_matches(n, sorted(known), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise SpecError(f"{where}: constraints[{i}] '{text}' reads '{n}', which is no "
                                f"parameter{hint} (parameters: {', '.join(sorted(known))})")
        constraints.append(c)
    if strategy.kind == "grid":
        for p in params:
            if p.domain is not None and not p.domain.finite:
                raise SpecError(f"parameter '{p.path}': a grid needs a finite list of values; "
                                f"a {p.domain.kind} distribution has none (use strategy "
                                "random or optuna, or give a list or a range)")
    name = f.name or default_name
    return SweepSpec(name, f.description, base, params, targets, constraints, strategy,
                     objectives, raw=data if isinstance(data, dict) else {}, folder=folder)


def _check_name(t: Target, v: Any) -> None:
    """A preset name a parameter lists (system, model, workload, device, link) must exist;
    SpecError naming the parameter and the known names otherwise."""
    from pimserve.specs.catalog import load_link
    from pimserve.workload.presets import WORKLOADS

    loader: Any = None
    if t.kind == "system":
        loader = load_system
    elif t.kind == "model":
        loader = load_model
    elif t.kind == "workload" and t.fields[0] == "workload":
        loader = WORKLOADS.get
    elif t.kind == "group" and t.fields[0] == "device":
        loader = load_device
    elif (t.kind == "group" and t.fields[0] == "link") or t.fields == ("collective_link",):
        loader = load_link
    if loader is None or v is None:
        return
    try:
        loader(str(v))
    except PimserveError as err:
        raise SpecError(f"parameter '{t.path}': {err}") from None
