"""A run's parameters: one model states each default and limit, and a bad value is one line."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tracerflow.errors import ConfigError, UsageError
from tracerflow.parameters import (
    CIRCUIT_TRACER_BATCH_SIZE,
    MAX_COUNT,
    AttributionParams,
    RunOptions,
    RunParameters,
    RunRequest,
    run_request,
)
from tracerflow.presets import Preset


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_n_logits": 0}, "max_n_logits: Input should be greater than or equal to 1, got 0"),
        ({"desired_logit_prob": 1.5}, "desired_logit_prob: Input should be less than or equal"),
        ({"max_feature_nodes": 0}, "max_feature_nodes: Input should be greater than or equal"),
        ({"batch_size": -1}, "batch_size: Input should be greater than or equal to 1, got -1"),
        ({"offload": "tape"}, "offload: Input should be 'cpu' or 'disk', got 'tape'"),
    ],
)
def test_a_bad_attribution_parameter_is_a_config_error_naming_it(values, message) -> None:
    with pytest.raises(ConfigError) as raised:
        AttributionParams(**values)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_a_bad_threshold_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"^edge_threshold: Input should be greater than 0"):
        RunParameters(edge_threshold=0.0)


def test_a_preset_takes_its_defaults_and_limits_from_the_parameters() -> None:
    fields = {"name": "p", "description": "", "model": "m", "transcoder": "o/r", "kind": "clt"}
    preset = Preset(**fields)
    assert preset.run_parameters() == RunParameters()
    with pytest.raises(ValidationError, match="max_n_logits"):
        Preset(**fields, max_n_logits=0)
    with pytest.raises(ValidationError, match="node_threshold"):
        Preset(**fields, node_threshold=1.5)


def test_the_recorded_parameters_are_the_flat_set_a_row_hashes() -> None:
    parameters = RunParameters(attribution=AttributionParams(batch_size=8, offload="disk"))
    assert parameters.recorded() == {
        "max_n_logits": 10,
        "desired_logit_prob": 0.95,
        "max_feature_nodes": 8192,
        "batch_size": 8,
        "offload": "disk",
        "node_threshold": 0.8,
        "edge_threshold": 0.98,
    }


def test_the_default_batch_size_is_circuit_tracers_own() -> None:
    import inspect

    import circuit_tracer

    stock_default = inspect.signature(circuit_tracer.attribute).parameters["batch_size"].default
    assert AttributionParams().batch_size == CIRCUIT_TRACER_BATCH_SIZE == stock_default


def test_a_run_option_wins_over_the_preset_which_wins_over_the_default() -> None:
    preset = RunParameters(
        attribution=AttributionParams(max_n_logits=5, batch_size=64), node_threshold=0.5
    )
    options = RunOptions(max_n_logits=7, edge_threshold=0.9)
    resolved = options.parameters_for(preset)
    assert resolved.recorded() == {
        "max_n_logits": 7,  # the run's
        "desired_logit_prob": 0.95,  # neither: the default
        "max_feature_nodes": 8192,
        "batch_size": 64,  # the preset's
        "offload": None,
        "node_threshold": 0.5,  # the preset's
        "edge_threshold": 0.9,  # the run's
    }
    assert RunOptions().parameters_for(None) == RunParameters()


def test_every_graph_parameter_is_a_run_option_with_the_same_limits_and_help() -> None:
    graph_fields = {**AttributionParams.model_fields, **RunParameters.model_fields}
    del graph_fields["attribution"]
    for name, field in graph_fields.items():
        option = RunOptions.model_fields[name]
        assert option.default is None, name  # None: the preset's, else the default
        assert option.description == field.description and field.description, name
        assert option.metadata == field.metadata, name


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_n_logits": 0}, "--max-n-logits (max_n_logits) must be a whole number from 1 to"),
        ({"max_n_logits": 10**20}, "--max-n-logits (max_n_logits) must be a whole number from"),
        (
            {"desired_logit_prob": 0.0},
            "--desired-logit-prob (desired_logit_prob) must be in (0, 1]",
        ),
        ({"dtype": "float64"}, "--dtype (dtype) must be one of float32, float16, bfloat16"),
        ({"device": "cuda:x"}, "--device (device) must be cpu, cuda or cuda:N, got 'cuda:x'"),
        ({"threads": 0}, "--threads (threads) must be a whole number from 1 to 1024, got 0"),
        ({"threads": 10**6}, "--threads (threads) must be a whole number from 1 to 1024"),
        ({"transcoders": []}, "give at least one --transcoder or a --preset"),
        ({"prompts": []}, "give at least one --prompt or a --prompts-file"),
    ],
)
def test_a_bad_run_request_is_one_usage_error_naming_the_option(values, message) -> None:
    request = {"transcoders": ["toy-clt"], "prompts": ["The cat sat on the"], **values}
    with pytest.raises(UsageError) as raised:
        run_request(**request)
    assert str(raised.value).startswith(message)


def test_every_run_option_is_a_command_line_option_with_its_help_and_type() -> None:
    import typer

    from tracerflow.cli import app

    command = typer.main.get_command(app)
    run = command.get_command(typer.Context(command), "run")
    options = {param.name: param for param in run.params}
    for name, field in RunOptions.model_fields.items():
        option = options[name]
        assert option.opts == [f"--{name.replace('_', '-')}"], name
        assert option.default == field.default, name
        assert field.description and option.help.startswith(field.description), name
        assert option.metavar in ("TEXT", "INTEGER", "FLOAT", ""), (name, option.metavar)
    assert "the preset's, else 10" in options["max_n_logits"].help  # a default typer cannot show


def test_the_scoring_flows_parameter_schema_is_the_request_models() -> None:
    """What a deployment's run form shows and checks: every run option with its limits and
    help, from the same model."""
    from prefect.utilities.callables import parameter_schema

    from tracerflow.flows.score import score_flow

    schema = parameter_schema(score_flow).model_dump()
    assert schema["properties"]["request"]["$ref"] == "#/definitions/RunRequest"
    properties = schema["definitions"]["RunRequest"]["properties"]
    assert set(properties) == set(RunRequest.model_fields)
    assert properties["max_n_logits"]["anyOf"][0] == {
        "minimum": 1,
        "maximum": MAX_COUNT,
        "type": "integer",
    }
    assert properties["max_n_logits"]["description"] == "most logit targets to attribute from"
    assert properties["dtype"]["enum"] == ["float32", "float16", "bfloat16"]
