"""Every parameter of a run, declared once: its type, default, limits and help text.

``AttributionParams`` (what decides a graph, part of its cache key) and ``RunParameters`` (plus the
pruning thresholds of the score and export stages; every score row records it) state the graph
parameters and their defaults. ``RunOptions`` holds every option a run takes: the graph parameters
as overrides (None: the transcoder's preset's value, else the default above) and the run's own
settings. ``RunRequest`` adds what the run runs on (transcoders and prompts). The command line's
options (``tracerflow run``), a suite file's ``parameters:``, a preset's fields and the scoring
flow's parameter schema are all derived from these models, and the flow receives the request
whole. A bad value is one line naming the parameter. Pydantic only (no torch), so the CLI
imports it cheaply.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo

from tracerflow.errors import ConfigError, UsageError

# circuit-tracer's own default ``batch_size``: a run that sets none gets circuit-tracer's graph.
CIRCUIT_TRACER_BATCH_SIZE = 512
# The largest count a run takes: a number past what torch indexes with fails deep inside it
# instead of at the door (a billion logits or features is far beyond any model already).
MAX_COUNT = 2**31 - 1
# More threads than any machine tracerflow runs on has cores; libgomp crashes (SIGSEGV) when
# asked for a million.
MAX_THREADS = 1024


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

    max_n_logits: int = Field(
        10, ge=1, le=MAX_COUNT, description="most logit targets to attribute from"
    )
    desired_logit_prob: float = Field(
        0.95, gt=0, le=1, description="stop adding logit targets once they cover this probability"
    )
    max_feature_nodes: int | None = Field(
        8192, ge=1, le=MAX_COUNT, description="most feature nodes, the most influential first"
    )
    # circuit-tracer's meaning: it sets how often features are re-ranked when max_feature_nodes
    # binds, so it is part of the graph's identity. The speed and memory of tracerflow's
    # attribution do not depend on it (see tracerflow.attribution).
    batch_size: int = Field(
        CIRCUIT_TRACER_BATCH_SIZE,
        ge=1,
        le=MAX_COUNT,
        description="circuit-tracer's batch size: how often features are re-ranked when "
        "max_feature_nodes binds (part of which graph you get; not of its cost)",
    )
    offload: Literal["cpu", "disk"] | None = Field(
        None, description="circuit-tracer's offload of model weights during attribution"
    )


class RunParameters(_Parameters):
    """One transcoder's parameters in a run: its attribution and the thresholds its graphs are
    pruned at for the pruned scores and the viewer files."""

    attribution: AttributionParams = AttributionParams()
    node_threshold: float = Field(
        0.8, gt=0, le=1, description="pruning: keep the nodes carrying this share of influence"
    )
    edge_threshold: float = Field(
        0.98, gt=0, le=1, description="pruning: keep the edges carrying this share of influence"
    )

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
    """``model``'s field ``name`` with its limits and help but default None: an optional
    override of the parameter (a run's option), checked against the same limits."""
    return FieldInfo.merge_field_infos(model.model_fields[name], default=None)


def _device_name(value: str) -> str:
    if value != "cpu" and value != "cuda" and not _is_cuda_index(value):
        raise ValueError("must be cpu, cuda or cuda:N")
    return value


def _is_cuda_index(value: str) -> bool:
    prefix, _, index = value.partition(":")
    return prefix == "cuda" and index.isascii() and index.isdigit()


class RunOptions(BaseModel):
    """Every option of a run besides what it runs on, in the order ``tracerflow run --help``
    lists them. A graph parameter left None takes the transcoder's preset's value, else the
    default ``AttributionParams``/``RunParameters`` state (``parameters_for``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = Field(
        None,
        description=(
            "TransformerLens model name or local model folder (default: the preset's model; "
            "for a local transcoder folder, the model its config names; else gpt2)"
        ),
    )
    max_n_logits: int | None = override_field(AttributionParams, "max_n_logits")
    desired_logit_prob: float | None = override_field(AttributionParams, "desired_logit_prob")
    max_feature_nodes: int | None = override_field(AttributionParams, "max_feature_nodes")
    batch_size: int | None = override_field(AttributionParams, "batch_size")
    offload: Literal["cpu", "disk"] | None = override_field(AttributionParams, "offload")
    node_threshold: float | None = override_field(RunParameters, "node_threshold")
    edge_threshold: float | None = override_field(RunParameters, "edge_threshold")
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32", description="dtype the transcoders are converted to and the model runs in"
    )
    threads: int | None = Field(
        None,
        ge=1,
        le=MAX_THREADS,
        description="torch threads for attribution (default: TRACERFLOW_THREADS, else torch's "
        "default for this machine); recorded with every score",
    )
    device: Annotated[str, AfterValidator(_device_name)] | None = Field(
        None, description="cpu, cuda or cuda:N (default: cuda if any)"
    )
    corpus: str | None = Field(
        None,
        description="feature dashboards' corpus: text (a document a line) or JSONL ('text' per "
        "line); default: the preset's corpus, else the prompts",
    )
    all_features: bool = Field(
        False, description="feature dashboards for every feature, not only the graphs'"
    )
    eval_corpus: str | None = Field(
        None,
        description="text (one document a line) or .jsonl file the transcoder metrics are "
        "computed on (default: the preset's held-out corpus, else the prompts)",
    )
    eval_tokens: int | None = Field(
        None, ge=1, le=MAX_COUNT, description="at most this many evaluation tokens"
    )
    unscored_only: bool = Field(
        False,
        description="score only the checkpoints the score database holds no successful score "
        "of on every prompt (by folder and training step): what a deployment watching a "
        "training run's folder sets",
    )

    def parameters_for(self, preset_defaults: RunParameters | None) -> RunParameters:
        """One transcoder's parameters: this run's where it gives one, else its preset's
        (``preset_defaults``), else the defaults. The one place a default is resolved."""
        defaults = preset_defaults or RunParameters()
        attribution = {
            name: given if (given := getattr(self, name)) is not None else default
            for name, default in defaults.attribution.model_dump().items()
        }
        thresholds = {
            name: given if (given := getattr(self, name)) is not None else getattr(defaults, name)
            for name in ("node_threshold", "edge_threshold")
        }
        return RunParameters(attribution=AttributionParams(**attribution), **thresholds)


class RunRequest(RunOptions):
    """What a run was asked to do: transcoders × prompts, with its options."""

    transcoders: list[str] = Field(
        min_length=1,
        description="preset names, local checkpoint folders, folders or globs of a training "
        "run's checkpoint folders, or owner/repo[@rev]",
    )
    prompts: list[str] = Field(min_length=1, description="the prompts, one graph each")


def run_request(**values: Any) -> RunRequest:
    """A ``RunRequest`` from keyword values; ``UsageError`` naming the first bad one as the
    command line spells it (``--max-n-logits (max_n_logits) must be ..., got 0``)."""
    try:
        return RunRequest(**values)
    except ValidationError as error:
        raise UsageError(option_error(RunRequest, error)) from None


def option_error(model: type[BaseModel], error: ValidationError) -> str:
    """The first problem of ``error`` in one line, naming the option and what it must be."""
    first = error.errors()[0]
    name = str(first["loc"][0]) if first["loc"] else "request"
    if first["type"] == "missing" or (first["type"] == "too_short" and name in _INPUTS):
        return _INPUTS.get(name, f"{name} is required")
    field = model.model_fields.get(name)
    if first["type"] == "value_error":  # our own validators say what the value must be
        expected = str(first["msg"]).removeprefix("Value error, ").removeprefix("must be ")
    elif field is not None:
        expected = limits_text(field)
    else:
        return f"unknown option {name!r}"
    return f"{flag(name)} must be {expected}, got {first['input']!r}"


# What a request without transcoders or prompts is told.
_INPUTS = {
    "transcoders": "give at least one --transcoder or a --preset",
    "prompts": "give at least one --prompt or a --prompts-file",
}


def flag(name: str) -> str:
    """``max_n_logits`` -> ``--max-n-logits (max_n_logits)``: the CLI's name and the flow's."""
    return f"--{name.replace('_', '-')} ({name})"


def limits_text(field: FieldInfo) -> str:
    """What a value of ``field`` must be, as a user reads it: ``a whole number from 1 to 1024``,
    ``in (0, 1]``, ``one of float32, float16, bfloat16``."""
    choices = _literal_choices(field.annotation)
    if choices:
        return "one of " + ", ".join(choices)
    bounds = {
        kind: getattr(meta, kind)
        for meta in field.metadata
        for kind in ("gt", "ge", "lt", "le")
        if getattr(meta, kind, None) is not None
    }
    whole = _allows(field.annotation, int)
    if whole and "ge" in bounds and "le" in bounds:
        return f"a whole number from {bounds['ge']} to {bounds['le']}"
    if "le" not in bounds and "lt" not in bounds:
        low = [
            f"{'>=' if kind == 'ge' else '>'} {bounds[kind]}"
            for kind in ("ge", "gt")
            if kind in bounds
        ]
        return ("a whole number" if whole else "a number") + (f" {low[0]}" if low else "")
    low = f"({bounds['gt']}" if "gt" in bounds else f"[{bounds.get('ge', '-inf')}"
    high = f"{bounds['le']}]" if "le" in bounds else f"{bounds['lt']})"
    return f"in {low}, {high}"


def _literal_choices(annotation: Any) -> list[str]:
    if get_origin(annotation) is Literal:
        return [str(choice) for choice in get_args(annotation)]
    return [choice for arg in get_args(annotation) for choice in _literal_choices(arg)]


def _allows(annotation: Any, kind: type) -> bool:
    return annotation is kind or any(_allows(arg, kind) for arg in get_args(annotation))
