"""Typed configs become CLI options (as in Vidur): one click option per pydantic field."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any

import click
from pydantic import BaseModel


def _click_type(annotation: Any) -> tuple[Any, bool]:
    """(click type, is_flag) for a field annotation; Optional[X] becomes X."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _click_type(args[0])
    if origin is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(annotation)]), False
    if annotation is bool:
        return bool, True
    if annotation in (int, float, str):
        return annotation, False
    return str, False


def options_from(model: type[BaseModel], skip: tuple[str, ...] = ()) -> Callable:
    """Decorator adding ``--field-name`` options for every field of ``model``.

    Options default to None so that only what the user gave is passed on; the model's own
    defaults (shown in --help) apply to the rest.
    """

    def deco(f: Callable) -> Callable:
        for name, field in reversed(list(model.model_fields.items())):
            extra = field.json_schema_extra
            if name in skip or (isinstance(extra, dict) and extra.get("cli") is False):
                continue  # cli False: the command gives the field its own option
            typ, is_flag = _click_type(field.annotation)
            default = field.default if field.default is not None else "none"
            help_ = f"{field.description or ''} [default: {default}]"
            opt = "--" + name.replace("_", "-")
            if is_flag:
                f = click.option(f"{opt}/--no-{name.replace('_', '-')}", name, default=None,
                                 help=help_)(f)
            else:
                f = click.option(opt, name, type=typ, default=None, help=help_)(f)
        return f

    return deco


def given(kwargs: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """The subset of ``kwargs`` that are fields of ``model`` and were given (not None)."""
    return {k: v for k, v in kwargs.items() if k in model.model_fields and v is not None}
