"""The tests' way to name a shipped preset: tracerflow itself asks ``find_preset`` (None for a
name that is a path or a repo) and reports an unknown one through ``check_preset``."""

from __future__ import annotations

from tracerflow.presets import Preset, find_preset


def preset_named(name: str) -> Preset:
    """The preset ``name``; the calling test fails, naming it, when there is none."""
    preset = find_preset(name)
    assert preset is not None, f"no preset named {name!r}"
    return preset
