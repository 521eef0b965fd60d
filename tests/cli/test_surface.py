"""The command surface does not change by accident: every command path with its parameters
(names, option strings, defaults, help) matches ``surface.json``, dumped from main before the
command line became one package. Change the JSON only with a deliberate change of the surface."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from tracerflow.cli import app

GOLDEN = Path(__file__).with_name("surface.json")


def surface(command: Any, path: list[str]) -> dict[str, Any]:
    """Every command under ``command``, keyed by its path, with what ``--help`` shows of it."""
    entry = {
        "help": (command.help or "").strip(),
        "params": [
            {
                "name": param.name,
                "opts": list(param.opts) + list(getattr(param, "secondary_opts", [])),
                "kind": type(param).__name__,
                "required": getattr(param, "required", None),
                "default": "<callable>" if callable(param.default) else repr(param.default),
                "help": getattr(param, "help", None),
                "multiple": getattr(param, "multiple", None),
                "type": str(getattr(param, "type", None)),
            }
            for param in command.params
        ],
    }
    found = {" ".join(path) or "tracerflow": entry}
    if hasattr(command, "list_commands"):  # a group (typer's click, not necessarily click's)
        context = typer.Context(command)
        for name in sorted(command.list_commands(context)):
            subcommand = command.get_command(context, name)
            assert subcommand is not None
            found.update(surface(subcommand, [*path, name]))
    return found


def test_every_command_and_option_is_as_before() -> None:
    assert surface(typer.main.get_command(app), []) == json.loads(GOLDEN.read_text())


def test_the_top_level_help_lists_the_commands_in_the_same_order() -> None:
    root = typer.main.get_command(app)
    assert root.list_commands(typer.Context(root)) == [
        "run", "demo", "history", "compare", "sql", "deploy", "presets", "view", "convert",
        "inspect", "upload", "plot", "server", "store", "export", "subgraph",
    ]  # fmt: skip
