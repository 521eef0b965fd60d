"""A transcoder's parameters in a run, typed once: how its graphs are attributed and pruned.

``AttributionParams`` states each attribution parameter's default and limits once: presets take
their attribution defaults from it, the attribute stage keys each graph by it. ``RunParameters``
adds the pruning thresholds of the score and export stages; every score row records it. A value
out of its limits raises a one-line ``ConfigError`` naming the parameter. Pydantic only (no torch),
so presets and the run-request checks import it cheaply.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo

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


def override_field(model: type[BaseModel], name: str) -> Any:
    """``model``'s field ``name`` with its limits but default None: an optional override of the
    parameter (a suite's ``parameters:``), checked against the same limits."""
    return FieldInfo.merge_field_infos(model.model_fields[name], default=None)


# Every number a run can override, with the model that states its limits.
NUMERIC_PARAMETERS: dict[str, type[BaseModel]] = {
    "max_n_logits": AttributionParams,
    "desired_logit_prob": AttributionParams,
    "max_feature_nodes": AttributionParams,
    "batch_size": AttributionParams,
    "node_threshold": RunParameters,
    "edge_threshold": RunParameters,
}


def limits_text(name: str) -> str:
    """The limits of parameter ``name`` as a user reads them: ``a whole number >= 1`` or
    ``in (0, 1]``."""
    field = NUMERIC_PARAMETERS[name].model_fields[name]
    bounds = {
        kind: getattr(meta, kind)
        for meta in field.metadata
        for kind in _BOUNDS
        if hasattr(meta, kind)
    }
    if "le" not in bounds and "lt" not in bounds:
        return f"a whole number >= {bounds['ge']}"
    low = f"({bounds['gt']}" if "gt" in bounds else f"[{bounds['ge']}"
    high = f"{bounds['le']}]" if "le" in bounds else f"{bounds['lt']})"
    return f"in {low}, {high}"


def within_limits(name: str, value: object) -> bool:
    """Whether ``value`` is a valid ``name`` by the limits its model states."""
    model = NUMERIC_PARAMETERS[name]
    field = model.model_fields[name]
    try:
        annotated = Annotated[field.annotation, *field.metadata]  # type: ignore[valid-type]
        TypeAdapter(annotated).validate_python(value, strict=True)
    except ValidationError:
        return False
    return True


_BOUNDS = ("gt", "ge", "lt", "le")
