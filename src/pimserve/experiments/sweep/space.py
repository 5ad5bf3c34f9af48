"""What a sweep varies: each parameter's domain, and the strategies that pick points from them.

A parameter is either *free* (a :class:`Domain`: a list of values, a range, or a distribution)
or *derived* (an :class:`~pimserve.experiments.sweep.expr.Expr` over other parameters), or a
constant. Strategies turn the free domains into assignments ``{path: value}``:

- :func:`grid`: every combination of finite domains (the last parameter varies fastest);
- :func:`random_points`: ``samples`` seeded draws; without replacement when every domain is
  finite and there are at least as many combinations as samples;
- multi-objective search with Optuna lives in :mod:`.runner` (it needs the results).

:func:`complete` adds the derived parameters and :func:`admitted` applies the constraints.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pimserve.errors import ConfigurationError, SpecError
from pimserve.experiments.sweep.expr import Expr

Value = int | float | str | bool | None
DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
MAX_POINTS = 1_000_000  # points one sweep may enumerate (a typo in a range stops here)


@dataclass(frozen=True)
class Domain:
    """The values a free parameter takes.

    ``kind``: ``values`` (a list or an evaluated range: finite, ordered), ``uniform`` and
    ``loguniform`` (floats in [low, high]), ``int`` (integers low..high in steps of ``step``,
    log-uniform when ``log``), ``choice`` (one of ``values``, uniformly).
    """

    kind: str
    values: tuple[Value, ...] = ()
    low: float = 0.0
    high: float = 0.0
    step: int = 1
    log: bool = False

    @property
    def finite(self) -> bool:
        """Whether the domain lists its values (a grid can enumerate it)."""
        return self.kind in ("values", "choice", "int")

    def enumerate(self) -> tuple[Value, ...]:
        """Every value, in order (finite domains only)."""
        if self.kind == "int":
            return tuple(range(int(self.low), int(self.high) + 1, self.step))
        if not self.finite:
            raise ConfigurationError(f"a {self.kind} distribution has no finite list of values")
        return self.values

    def size(self) -> int:
        """How many values a finite domain has."""
        if self.kind == "int":
            return (int(self.high) - int(self.low)) // self.step + 1
        return len(self.values)

    def sample(self, rng: np.random.Generator) -> Value:
        """One seeded draw."""
        if self.kind in ("values", "choice"):
            return self.values[int(rng.integers(len(self.values)))]
        if self.kind == "uniform":
            return float(rng.uniform(self.low, self.high))
        if self.kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        # int
        if self.log:
            v = round(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
            v = int(self.low) + (v - int(self.low)) // self.step * self.step
            return max(int(self.low), min(int(self.high), v))
        return int(self.low) + int(rng.integers(self.size())) * self.step


@dataclass(frozen=True)
class Parameter:
    """One parameter of a sweep: a path into the configuration and how its value is set.

    Exactly one of ``domain`` (free), ``expr`` (derived from other parameters) or
    ``constant`` (the same value at every point; ``is_constant``) is used.
    """

    path: str
    domain: Domain | None = None
    expr: Expr | None = None
    constant: Value = None
    is_constant: bool = False

    @property
    def free(self) -> bool:
        return self.domain is not None


def _number(v: Any, where: str, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise SpecError(f"{where}: field '{key}' must be a finite number (got {v!r})")
    return v


def _is_int(*vs: Any) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in vs)


def _scalar(v: Any, where: str) -> Value:
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise SpecError(f"{where}: values must be finite (got {v!r})")
        return v
    raise SpecError(f"{where}: a value must be a number, a string, true/false or null "
                    f"(got {type(v).__name__} {v!r})")


RANGE_FORMS = ("a list [v1, v2, ...]; {values: [...]}; {start, stop, step} (stop included "
               "when on the grid); {start, stop, num[, log: true]} (linear or log-spaced); "
               "{dist: uniform|loguniform, low, high}; {dist: int, low, high[, step, log]}; "
               "{dist: choice, values: [...]}; {expr: '90 - other.param'}; or one value")


def parse_domain(raw: Any, where: str) -> Domain | Expr | tuple[Value]:
    """A parameter's value in the spec -> a Domain, an Expr, or a 1-tuple constant.

    Accepted forms: see :data:`RANGE_FORMS`. Strings are returned as constants here; the
    caller decides whether a string that names other parameters is an expression.
    """
    if isinstance(raw, list):
        if not raw:
            raise SpecError(f"{where}: an empty list of values (give at least one)")
        vals = tuple(_scalar(v, f"{where}[{i}]") for i, v in enumerate(raw))
        return Domain("values", vals)
    if not isinstance(raw, dict):
        return (_scalar(raw, where),)
    keys = set(raw)
    if "expr" in keys:
        if keys != {"expr"}:
            raise SpecError(f"{where}: 'expr' stands alone (got also {sorted(keys - {'expr'})})")
        return Expr(raw["expr"], where)
    if "dist" in keys:
        return _distribution(raw, where)
    if keys == {"values"}:
        if not isinstance(raw["values"], list):
            raise SpecError(f"{where}: field 'values' must be a list (got {raw['values']!r})")
        return parse_domain(raw["values"], where)
    if {"start", "stop"} <= keys:
        return _range(raw, where)
    raise SpecError(f"{where}: cannot read {raw!r} (accepted: {RANGE_FORMS})")


def _range(raw: dict[str, Any], where: str) -> Domain:
    allowed = {"start", "stop", "step", "num", "log"}
    extra = set(raw) - allowed
    if extra:
        raise SpecError(f"{where}: unknown range field '{sorted(extra)[0]}' (accepted: "
                        f"start, stop, step | num, log)")
    start, stop = _number(raw["start"], where, "start"), _number(raw["stop"], where, "stop")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise SpecError(f"{where}: field 'log' must be true or false (got {log!r})")
    if ("step" in raw) == ("num" in raw):
        raise SpecError(f"{where}: a range takes either 'step' or 'num' (got "
                        f"{'both' if 'step' in raw else 'neither'})")
    ints = _is_int(start, stop)
    if "step" in raw:
        step = _number(raw["step"], where, "step")
        if log:
            raise SpecError(f"{where}: a log-spaced range takes 'num', not 'step'")
        if step == 0 or (stop - start) * step < 0:
            raise SpecError(f"{where}: step {step} never goes from {start} to {stop}")
        n = math.floor((stop - start) / step + 1e-9) + 1
        if n > MAX_POINTS:
            raise SpecError(f"{where}: {n:,} values (at most {MAX_POINTS:,})")
        if ints and _is_int(step):
            vals: tuple[Value, ...] = tuple(int(start + i * step) for i in range(n))
        else:
            vals = tuple(float(round(start + i * step, 12)) for i in range(n))
        return Domain("values", vals)
    num = raw["num"]
    if not _is_int(num) or not 1 <= num <= MAX_POINTS:
        raise SpecError(f"{where}: field 'num' must be an integer from 1 to {MAX_POINTS:,} "
                        f"(got {num!r})")
    if log:
        if start <= 0 or stop <= 0:
            raise SpecError(f"{where}: a log-spaced range needs start and stop above 0 "
                            f"(got {start}, {stop})")
        arr = np.geomspace(start, stop, num)
    else:
        arr = np.linspace(start, stop, num)
    if ints:  # integer ends: integer values, rounded, repeats dropped
        out: list[Value] = []
        for v in arr:
            iv = round(float(v))
            if iv not in out:
                out.append(iv)
        return Domain("values", tuple(out))
    return Domain("values", tuple(float(v) for v in arr))


def _distribution(raw: dict[str, Any], where: str) -> Domain:
    kind = raw["dist"]
    if kind not in DISTRIBUTIONS:
        raise SpecError(f"{where}: field 'dist' must be one of {', '.join(DISTRIBUTIONS)} "
                        f"(got {kind!r})")
    fields = {"uniform": {"low", "high"}, "loguniform": {"low", "high"},
              "int": {"low", "high", "step", "log"}, "choice": {"values"}}[kind]
    extra = set(raw) - fields - {"dist"}
    if extra:
        raise SpecError(f"{where}: unknown field '{sorted(extra)[0]}' for dist {kind} "
                        f"(accepted: {', '.join(sorted(fields))})")
    if kind == "choice":
        vals = raw.get("values")
        if not isinstance(vals, list) or not vals:
            raise SpecError(f"{where}: dist choice needs a non-empty list 'values'")
        return Domain("choice", tuple(_scalar(v, f"{where}.values[{i}]")
                                      for i, v in enumerate(vals)))
    for k in ("low", "high"):
        if k not in raw:
            raise SpecError(f"{where}: dist {kind} needs '{k}'")
    low, high = _number(raw["low"], where, "low"), _number(raw["high"], where, "high")
    if not low < high:
        raise SpecError(f"{where}: low ({low}) must be below high ({high})")
    if kind == "loguniform" and low <= 0:
        raise SpecError(f"{where}: loguniform needs low above 0 (got {low})")
    if kind == "int":
        step, log = raw.get("step", 1), raw.get("log", False)
        if not _is_int(low, high, step) or step < 1:
            raise SpecError(f"{where}: dist int needs integer low, high and step >= 1 "
                            f"(got {low}, {high}, {step})")
        if not isinstance(log, bool) or (log and (low <= 0 or step != 1)):
            raise SpecError(f"{where}: dist int with log: true needs low >= 1 and step 1")
        return Domain("int", low=low, high=high, step=step, log=log)
    return Domain(kind, low=float(low), high=float(high))


# ------------------------------------------------------------------------------------------
# strategies


def grid_size(params: Sequence[Parameter]) -> int:
    """Combinations of the free parameters (all must be finite)."""
    n = 1
    for p in params:
        if p.domain is not None:
            n *= p.domain.size()
    return n


def grid(params: Sequence[Parameter]) -> Iterator[dict[str, Value]]:
    """Every combination of the free parameters' values, the last parameter fastest."""
    free = [p for p in params if p.domain is not None]
    for p in free:
        assert p.domain is not None
        if not p.domain.finite:
            raise SpecError(f"parameter '{p.path}': a grid needs a finite list of values; a "
                            f"{p.domain.kind} distribution has none (use strategy random or "
                            "optuna, or give a list or a range)")
    n = grid_size(params)
    if n > MAX_POINTS:
        raise SpecError(f"the grid has {n:,} points (at most {MAX_POINTS:,}); use strategy "
                        "random with 'samples'")
    lists = [p.domain.enumerate() for p in free if p.domain is not None]
    for combo in itertools.product(*lists):
        yield dict(zip((p.path for p in free), combo, strict=True))


def random_points(params: Sequence[Parameter], samples: int,
                  seed: int) -> Iterator[dict[str, Value]]:
    """``samples`` seeded draws of the free parameters. When every domain is finite and the
    grid has at least ``samples`` points they are distinct (drawn without replacement, in
    draw order); otherwise each parameter is drawn independently."""
    free = [p for p in params if p.domain is not None]
    rng = np.random.default_rng(seed)
    if free and all(p.domain is not None and p.domain.finite for p in free):
        sizes = [p.domain.size() for p in free if p.domain is not None]
        total = math.prod(sizes)
        if samples <= total:
            lists = [p.domain.enumerate() for p in free if p.domain is not None]
            picks = (rng.choice(total, size=samples, replace=False) if total <= 10**8
                     else rng.integers(total, size=samples))
            for flat in picks.tolist():
                idx = np.unravel_index(int(flat), sizes)
                yield {p.path: lists[i][int(idx[i])] for i, p in enumerate(free)}
            return
    for _ in range(samples):
        yield {p.path: p.domain.sample(rng) for p in free if p.domain is not None}


def order_derived(params: Sequence[Parameter]) -> list[Parameter]:
    """The derived parameters in an order where each comes after those it reads; a cycle or
    a name that is no parameter raises SpecError naming it."""
    known = {p.path for p in params}
    derived = {p.path: p for p in params if p.expr is not None}
    for p in derived.values():
        assert p.expr is not None
        for n in p.expr.names:
            if n not in known:
                import difflib

                close = difflib.get_close_matches(n, sorted(known), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise SpecError(f"parameter '{p.path}': expression '{p.expr.text}' reads "
                                f"'{n}', which is no parameter of the sweep{hint} (parameters: "
                                f"{', '.join(sorted(known))})")
    out: list[Parameter] = []
    state: dict[str, int] = {}

    def visit(path: str, chain: list[str]) -> None:
        if state.get(path) == 2:
            return
        if state.get(path) == 1:
            raise SpecError(f"parameters depend on each other in a circle: "
                            f"{' -> '.join([*chain, path])}")
        state[path] = 1
        p = derived[path]
        assert p.expr is not None
        for n in p.expr.names:
            if n in derived:
                visit(n, [*chain, path])
        state[path] = 2
        out.append(p)

    for path in derived:
        visit(path, [])
    return out


def complete(params: Sequence[Parameter], free_values: Mapping[str, Value]) -> dict[str, Value]:
    """The full assignment: the free values, the constants, and each derived parameter
    evaluated (in dependency order). Keys follow the order of ``params``."""
    values: dict[str, Value] = dict(free_values)
    for p in params:
        if p.is_constant:
            values[p.path] = p.constant
    for p in order_derived(params):
        assert p.expr is not None
        values[p.path] = p.expr.evaluate(values)
    return {p.path: values[p.path] for p in params}


def admitted(constraints: Sequence[Expr], values: Mapping[str, Value]) -> bool:
    """Whether an assignment satisfies every constraint."""
    return all(bool(c.evaluate(values)) for c in constraints)
