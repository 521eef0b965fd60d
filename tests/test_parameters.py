"""A run's parameters: one model states each default and limit, and a bad value is one line."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tracerflow.errors import ConfigError
from tracerflow.parameters import AttributionParams, RunParameters
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
