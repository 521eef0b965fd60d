"""A transcoder's parameters in a run, typed once: how its graphs are attributed and pruned.

``AttributionParams`` states each attribution parameter's default and limits once: presets take
their attribution defaults from it, the attribute stage keys each graph by it. ``RunParameters``
adds the pruning thresholds of the score and export stages; every score row records it. A value
out of its limits raises a one-line ``ConfigError`` naming the parameter. Pydantic only (no torch),
so presets and the run-request checks import it cheaply.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    model_validator,
)

from tracerflow.errors import ConfigError


class _Parameters(BaseModel):
    """Frozen, no unknown fields; an invalid value is a ``ConfigError`` naming the parameter."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="wrap")
    @classmethod
    def _config_error(cls, values: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        try:
            return handler(values)
        except ValidationError as error:
            # Not a ValueError, so pydantic lets it through instead of wrapping it again.
            first = error.errors()[0]
            name = ".".join(str(part) for part in first["loc"])
            raise ConfigError(f"{name}: {first['msg']}, got {first['input']!r}") from None


class AttributionParams(_Parameters):
    """circuit-tracer's ``attribute`` arguments that decide a graph (part of its cache key)."""

    max_n_logits: int = Field(10, ge=1)
    desired_logit_prob: float = Field(0.95, gt=0, le=1)
    max_feature_nodes: int | None = Field(8192, ge=1)
    # circuit-tracer's meaning: it sets how often features are re-ranked when max_feature_nodes
    # binds, so it is part of the graph's identity. None: circuit-tracer's default. The speed
    # and memory of tracerflow's attribution do not depend on it (see tracerflow.attribution).
    batch_size: int | None = Field(None, ge=1)
    offload: Literal["cpu", "disk"] | None = None


class RunParameters(_Parameters):
    """One transcoder's parameters in a run: its attribution and the thresholds its graphs are
    pruned at for the pruned scores and the viewer files."""

    attribution: AttributionParams = AttributionParams()
    node_threshold: float = Field(0.8, gt=0, le=1)
    edge_threshold: float = Field(0.98, gt=0, le=1)

    def recorded(self) -> dict[str, Any]:
        """The flat parameter set a score row records and hashes (``params_json``)."""
        return {
            **self.attribution.model_dump(),
            "node_threshold": self.node_threshold,
            "edge_threshold": self.edge_threshold,
        }


def parameter_field(model: type[BaseModel], name: str) -> Any:
    """``model``'s field ``name`` (default and limits), for a model that carries the same
    parameter under the same name (a preset's defaults), so its limits are stated once."""
    return model.model_fields[name]
