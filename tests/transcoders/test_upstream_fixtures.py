"""Checkpoints written by the crosslayer-transcoder library itself convert exactly.

``../shared/fixtures/upstream-checkpoints/`` holds folders written by the library's own
``save_pretrained`` (folded, as every published checkpoint is) with the outputs of its own
``forward``. A reader tested only on files its own writer made shares that writer's mistakes, so
these tests read what the outside world wrote.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.transcoders.reference import reference_forward
from tests.transcoders.test_exactness import reconstruct
from tracerflow.transcoders import convert, load_converted, read_checkpoint
from tracerflow.transcoders.synthetic import checkpoint_config, config_yaml

UPSTREAM = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "upstream-checkpoints"
TOLERANCE = 1e-5  # the bar: fp32 circuit-tracer against the library's fp32 forward
# The fixtures' active sets are compared exactly: the recorded ones are what the reference
# computes, and stay so under 1e-5 relative noise on the inputs (20 draws of each fixture), far
# more than another CPU's float32 rounding moves a pre-activation.
FOLDERS = sorted(path.name for path in UPSTREAM.glob("*/") if (path / "config.yaml").is_file())


def test_the_upstream_fixtures_are_there() -> None:
    assert len(FOLDERS) >= 3, f"expected the upstream fixtures in {UPSTREAM}"


def _reference(folder: Path) -> dict[str, torch.Tensor]:
    """The library's forward in circuit-tracer's layout: [L, T, ...] instead of [T, L, ...]."""
    return {
        key: value.transpose(0, 1)
        for key, value in load_file(folder / "reference.safetensors").items()
    }


def _convert_and_run(checkpoint_dir: Path, out_dir: Path, resid_mid: torch.Tensor):
    transcoder = load_converted(convert(checkpoint_dir, out_dir), device="cpu")
    with torch.no_grad():
        features = transcoder.encode(resid_mid)
        output = reconstruct(transcoder, resid_mid)
    return features, output


def _assert_matches(features, output, expected_features, expected_output) -> None:
    assert torch.equal(features != 0, expected_features != 0), "active sets differ"
    assert features.count_nonzero() > 0
    torch.testing.assert_close(features, expected_features, atol=TOLERANCE, rtol=TOLERANCE)
    torch.testing.assert_close(output, expected_output, atol=TOLERANCE, rtol=TOLERANCE)


@pytest.mark.parametrize("name", FOLDERS)
def test_every_upstream_checkpoint_converts_to_the_librarys_own_outputs(
    tmp_path: Path, name: str
) -> None:
    folder = UPSTREAM / name
    reference = _reference(folder)
    features, output = _convert_and_run(folder, tmp_path / "converted", reference["input"])
    _assert_matches(features, output, reference["features"], reference["output"])


@pytest.mark.parametrize("name", FOLDERS)
def test_the_independent_reference_agrees_with_the_library(name: str) -> None:
    """tests/transcoders/reference.py (which checks every synthetic case) computes what the
    library computes, so the synthetic cases are held to upstream semantics too."""
    folder = UPSTREAM / name
    reference = _reference(folder)
    features, output = reference_forward(folder, reference["input"])
    torch.testing.assert_close(features.float(), reference["features"], atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(output.float(), reference["output"], atol=TOLERANCE, rtol=0)


def test_the_topk_fixture_keeps_fewer_than_k_where_the_kth_is_negative() -> None:
    """The README's case: token 4 keeps 1 non-zero of its top 4 at layer 0 (ReLU after top-k)."""
    features = _reference(UPSTREAM / "a_clt_topk_folded")["features"]
    assert int((features[0, 4] != 0).sum()) == 1


def _fixture_config(name: str) -> dict:
    return yaml.safe_load((UPSTREAM / name / "config.yaml").read_text())


def _synthetic_config_for(name: str, *, is_folded: bool = True) -> dict:
    """What tracerflow's writer produces for the fixture's shape and nonlinearity."""
    upstream = _fixture_config(name)["model"]["init_args"]
    dims = upstream["encoder"]["init_args"]
    nonlinearity = upstream["nonlinearity"]
    source = nonlinearity["class_path"].rsplit(".", 1)[-1]
    args = {key: value for key, value in nonlinearity["init_args"].items() if value is not None}
    if source == "JumpReLU":  # its n_layers and d_features follow the shape
        args = {"theta": args["theta"], "bandwidth": args["bandwidth"]}
    return checkpoint_config(
        kind="clt" if upstream["decoder"]["class_path"].endswith("CrosslayerDecoder") else "plt",
        n_layers=dims["n_layers"],
        d_model=dims["d_acts"],
        d_features=dims["d_features"],
        nonlinearity=source,
        nonlinearity_args=args,
        is_folded=is_folded,
    )


@pytest.mark.parametrize("name", FOLDERS)
def test_synthetic_writes_the_upstream_yaml_key_for_key(name: str) -> None:
    written = (UPSTREAM / name / "config.yaml").read_text()
    assert config_yaml(_synthetic_config_for(name)) == written


@pytest.mark.parametrize("name", FOLDERS)
def test_synthetic_unfolded_without_standardizers_matches_upstream(name: str) -> None:
    """``save_pretrained(fold_standardizers=False)`` of a model without standardizers writes the
    same tree with ``is_folded: false``."""
    upstream = _fixture_config(name)
    upstream["model"]["is_folded"] = False
    assert _synthetic_config_for(name, is_folded=False) == upstream


def test_synthetic_unfolded_standardizers_are_what_from_pretrained_builds() -> None:
    """The one place the writer goes beyond what upstream writes: standardizer nodes whose
    init_args are the library's constructor arguments; the rest of the tree is upstream's."""
    config = checkpoint_config(
        kind="clt",
        n_layers=3,
        d_model=16,
        d_features=32,
        nonlinearity="PerLayerTopK",
        nonlinearity_args={"k": 4},
        standardizer="dimensionwise",
        is_folded=False,
    )
    upstream = _fixture_config("a_clt_topk_folded")
    args = config["model"]["init_args"]
    assert args["input_standardizer"] == {
        "class_path": "crosslayer_transcoder.model.standardize.DimensionwiseInputStandardizer",
        "init_args": {"n_layers": 3, "activation_dim": 16},
    }
    for key in ("decoder", "encoder", "nonlinearity"):
        assert args[key] == upstream["model"]["init_args"][key]
    assert sorted(args) == sorted(upstream["model"]["init_args"])


def _rewrite_config(tmp_path: Path, name: str, edit) -> Path:
    folder = tmp_path / f"{name}-variant"
    shutil.copytree(UPSTREAM / name, folder)
    config = _fixture_config(name)
    edit(config["model"])
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def _drop_is_folded(model: dict) -> None:
    del model["is_folded"]  # written by save_pretrained before folding existed


def _unfolded_without_standardizers(model: dict) -> None:
    model["is_folded"] = False  # save_pretrained(fold_standardizers=False), none to fold


def _standardizer_keys_absent(model: dict) -> None:
    del model["init_args"]["input_standardizer"], model["init_args"]["output_standardizer"]


def _identity_standardizers(model: dict) -> None:
    for side in ("input_standardizer", "output_standardizer"):
        model["init_args"][side] = {
            "class_path": "crosslayer_transcoder.model.standardize.Standardizer",
            "init_args": {},
        }


@pytest.mark.parametrize(
    "edit",
    [
        _drop_is_folded,
        _unfolded_without_standardizers,
        _standardizer_keys_absent,
        _identity_standardizers,
    ],
    ids=lambda edit: edit.__name__.strip("_"),
)
@pytest.mark.parametrize("name", FOLDERS)
def test_configs_the_librarys_from_pretrained_also_loads_convert(
    tmp_path: Path, name: str, edit
) -> None:
    folder = _rewrite_config(tmp_path, name, edit)
    reference = _reference(UPSTREAM / name)
    features, output = _convert_and_run(folder, tmp_path / "converted", reference["input"])
    _assert_matches(features, output, reference["features"], reference["output"])


def test_the_librarys_relu_class_converts(tmp_path: Path) -> None:
    """``crosslayer_transcoder.model.jumprelu.ReLU`` on the CLT fixture's weights."""

    def to_relu(model: dict) -> None:
        model["init_args"]["nonlinearity"] = {
            "class_path": "crosslayer_transcoder.model.jumprelu.ReLU",
            "init_args": {},
        }

    folder = _rewrite_config(tmp_path, "a_clt_topk_folded", to_relu)
    assert read_checkpoint(folder).activation.source == "ReLU"
    resid_mid = _reference(UPSTREAM / "a_clt_topk_folded")["input"]
    expected_features, expected_output = reference_forward(folder, resid_mid)
    features, output = _convert_and_run(folder, tmp_path / "converted", resid_mid)
    _assert_matches(features, output, expected_features.float(), expected_output.float())
