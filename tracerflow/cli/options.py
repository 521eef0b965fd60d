"""Command-line options derived from a pydantic model: one ``--option`` per field, with the
field's help, its default and its type as ``TEXT``, ``INTEGER`` or ``FLOAT``.

A command declares its own options as usual and takes the model's fields as ``**options``;
``typer_signature`` gives typer the full signature to read, so a field added to the model is an
option of the command with nothing else to change. Values reach the command unchecked: the
command builds the model from them, which checks each against its limits.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from tracerflow.parameters import AttributionParams, RunParameters

_METAVARS: dict[type, str] = {str: "TEXT", int: "INTEGER", float: "FLOAT", Path: "PATH"}


def typer_signature(
    command: Callable[..., Any], model: type[BaseModel], before: str
) -> inspect.Signature:
    """``command``'s signature with its ``**options`` replaced by one keyword option per field of
    ``model``, placed before its parameter ``before``."""
    own = [
        parameter
        for parameter in inspect.signature(command, eval_str=True).parameters.values()
        if parameter.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    at = [parameter.name for parameter in own].index(before)
    derived = [model_option(name, field) for name, field in model.model_fields.items()]
    return inspect.Signature([*own[:at], *derived, *own[at:]], return_annotation=None)


def model_option(name: str, field: FieldInfo) -> inspect.Parameter:
    """The keyword parameter typer reads as the option of field ``name``."""
    value_type = _value_type(field.annotation)
    if value_type is bool:
        # A flag takes no value: no type shown.
        option = typer.Option(f"--{name.replace('_', '-')}", help=field.description, metavar="")
        annotation: Any = Annotated[bool, option]
    else:
        option = typer.Option(help=option_help(name, field), metavar=_METAVARS[value_type])
        optional = field.default is None
        annotation = Annotated[value_type | None if optional else value_type, option]  # type: ignore[operator]
    return inspect.Parameter(
        name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=field.default, annotation=annotation
    )


def option_help(name: str, field: FieldInfo) -> str:
    """The field's help, with its default where typer shows none: a graph parameter's default
    is its preset's value, else the one its parameter model states."""
    text = field.description or ""
    defaults = {**AttributionParams().model_dump(), **RunParameters().recorded()}
    if field.default is None and name in defaults:
        # Parentheses, not typer's brackets: rich help would read [...] as markup and drop it.
        text += f" (default: the preset's, else {defaults[name]})"
    return text


def _value_type(annotation: Any) -> type:
    """The type typer parses an option as: ``int | None`` -> int, a ``Literal`` of strings ->
    str (the model says which values it takes), ``Annotated[str, ...]`` -> str."""
    if get_origin(annotation) is Annotated:
        return _value_type(get_args(annotation)[0])
    if get_origin(annotation) is Literal:
        return str
    if get_origin(annotation) in (Union, types.UnionType):
        (inner,) = [arg for arg in get_args(annotation) if arg is not type(None)]
        return _value_type(inner)
    return annotation
