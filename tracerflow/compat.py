"""The one circuit-tracer version tracerflow was checked against, and the one check of it.

Two parts of tracerflow lean on circuit-tracer's internals, not only on its public API:
``tracerflow.attribution`` replays circuit-tracer 0.5.0's ``attribute`` phase by phase, and
``tracerflow.transcoders.load`` installs the exact TopK activation on 0.5.0's transcoder classes
(through ``activation_function``, the attribute every encode path reads in that release). A
patch release may change either and nothing would fail: the graph or the activation would just be
silently different. So the rule is exact equality with the release both were read against.

What each does on a mismatch is its own business: attribution falls back to circuit-tracer's own
``attribute`` (correct for any release, only slower); loading refuses, because without the exact
activation a TopK transcoder runs as a ReLU one.
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
