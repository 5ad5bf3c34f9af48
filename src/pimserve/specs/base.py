"""Base class of every spec and the YAML loading that turns validation errors into one line."""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from pimserve.errors import SpecError
from pimserve.fileio import MAX_SPEC_BYTES, read_bounded_text

M = TypeVar("M", bound="Spec")


class Spec(BaseModel):
    """Immutable, validated data. Unknown fields are errors (a misspelt unit suffix is caught)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _sub_model(ann: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``M``, ``list[M]``, ``M | None``, ...)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in typing.get_args(ann):
        found = _sub_model(arg)
        if found is not None:
            return found
    return None


def format_validation_error(err: ValidationError, model: type[BaseModel], where: str) -> str:
    """One line naming the first wrong field, what was given and what is accepted."""
    errs = err.errors()
    # a misspelt field (often a wrong unit suffix) explains the "missing" error it causes
    e = next((x for x in errs if x["type"] == "extra_forbidden"), errs[0])
    loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
    if e["type"] == "extra_forbidden":
        name = str(e["loc"][-1])
        sub: Any = model
        for part in e["loc"][:-1]:  # walk to the sub-model that rejected the field
            if isinstance(part, int):  # an index into a list of sub-models
                continue
            f = getattr(sub, "model_fields", {}).get(str(part))
            ann = getattr(f, "annotation", None) if f else None
            found = _sub_model(ann)
            if found is not None:
                sub = found
        fields = list(getattr(sub, "model_fields", {}))
        close = difflib.get_close_matches(name, fields, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"{where}: unknown field '{loc}'{hint} (accepted: {', '.join(fields)})"
    given = e.get("input")
    given_s = "" if isinstance(given, dict) else f" (got {given!r})"
    return f"{where}: field '{loc}': {e['msg']}{given_s}"


def validate(model: type[M], data: Any, where: str) -> M:
    """Validate ``data`` as ``model``; on failure raise a one-line SpecError naming the field."""
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, model, where)) from None


def read_yaml(path: Path) -> Any:
    """Read a YAML file; a syntax error names the file, line and column."""
    try:
        text = read_bounded_text(path, MAX_SPEC_BYTES, "YAML spec")
    except OSError as err:
        raise SpecError(f"{path}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: not UTF-8 text (byte {err.start})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).split("\n")[0]
        raise SpecError(f"{path}:{at}: malformed YAML: {problem}") from None


def load_yaml_spec(model: type[M], path: Path) -> M:
    """Load one spec from a YAML file."""
    return validate(model, read_yaml(path), str(path))
