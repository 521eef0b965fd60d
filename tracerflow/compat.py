"""The one circuit-tracer version tracerflow was checked against, and the one check of it.

Attribution replays circuit-tracer's phases and loading patches its transcoder classes, so any
other release is a mismatch: attribution falls back to circuit-tracer's own ``attribute`` and
loading refuses. Why exact equality: docs/checkpoints.md.
"""

from __future__ import annotations

from importlib.metadata import version

# The circuit-tracer release tracerflow's attribution and transcoder loader were checked against
# line by line; pyproject.toml pins the same.
VALIDATED_CIRCUIT_TRACER = "0.5.0"


def installed_circuit_tracer() -> str:
    return version("circuit-tracer")


def circuit_tracer_mismatch(installed: str | None = None) -> str | None:
    """Why the installed circuit-tracer (or ``installed``) is not the validated one, or None."""
    installed = installed_circuit_tracer() if installed is None else installed
    if installed == VALIDATED_CIRCUIT_TRACER:
        return None
    return (
        f"circuit-tracer {installed} is installed; tracerflow was checked against "
        f"{VALIDATED_CIRCUIT_TRACER} exactly "
        f"(pip install circuit-tracer=={VALIDATED_CIRCUIT_TRACER})"
    )
