"""Every bad checkpoint gives one CheckpointError naming the file, the key and the problem, and
leaves no output folder behind."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from tracerflow.errors import CheckpointError
from tracerflow.transcoders import convert, load_converted
from tracerflow.transcoders.synthetic import random_checkpoint


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return random_checkpoint(tmp_path / "ckpt", kind="clt", standardizer="dimensionwise")


def edit_config(checkpoint: Path, edit) -> None:
    config = yaml.safe_load((checkpoint / "config.yaml").read_text())
    edit(config)
    (checkpoint / "config.yaml").write_text(yaml.safe_dump(config))


def edit_tensors(checkpoint: Path, edit) -> None:
    tensors = load_file(checkpoint / "checkpoint.safetensors")
    edit(tensors)
    save_file(tensors, checkpoint / "checkpoint.safetensors")


def assert_conversion_fails(checkpoint: Path, out: Path, *fragments: str) -> None:
    with pytest.raises(CheckpointError) as raised:
        convert(checkpoint, out)
    message = str(raised.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_missing_folder(tmp_path):
    assert_conversion_fails(tmp_path / "nope", tmp_path / "out", "nope", "does not exist")


def test_missing_config(checkpoint, tmp_path):
    (checkpoint / "config.yaml").unlink()
    assert_conversion_fails(checkpoint, tmp_path / "out", "config.yaml", "missing")


def test_no_model_key(checkpoint, tmp_path):
    (checkpoint / "config.yaml").write_text("trainer: {}\n")
    assert_conversion_fails(checkpoint, tmp_path / "out", "config.yaml", "model:")


def test_non_utf8_config(checkpoint, tmp_path):
    (checkpoint / "config.yaml").write_bytes(b"model:\n  class_path: caf\xe9\n")
    assert_conversion_fails(checkpoint, tmp_path / "out", "config.yaml", "not UTF-8", "0xe9")


def test_binary_config(checkpoint, tmp_path):
    """A weights file saved under the config's name: valid UTF-8 bytes, but NULs."""
    (checkpoint / "config.yaml").write_bytes((checkpoint / "checkpoint.safetensors").read_bytes())
    with pytest.raises(CheckpointError) as raised:
        convert(checkpoint, tmp_path / "out")
    message = str(raised.value)
    assert "config.yaml" in message and "\n" not in message


def test_is_folded_must_be_a_boolean(checkpoint, tmp_path):
    edit_config(checkpoint, lambda config: config["model"].update(is_folded="false"))
    assert_conversion_fails(checkpoint, tmp_path / "out", "'model.is_folded' must be true or false")


def test_unknown_class_is_never_imported(checkpoint, tmp_path):
    def evil(config):
        config["model"]["init_args"]["nonlinearity"]["class_path"] = "os.system"

    edit_config(checkpoint, evil)
    assert_conversion_fails(
        checkpoint, tmp_path / "out", "config.yaml", "nonlinearity", "unknown class 'os.system'"
    )


def test_samplewise_standardizer_is_refused_with_a_reason(checkpoint, tmp_path):
    def samplewise(config):
        config["model"]["init_args"]["input_standardizer"] = {
            "class_path": "crosslayer_transcoder.model.standardize.SamplewiseInputStandardizer"
        }

    edit_config(checkpoint, samplewise)
    assert_conversion_fails(checkpoint, tmp_path / "out", "input_standardizer", "not an affine")


def test_missing_tensor(checkpoint, tmp_path):
    edit_tensors(checkpoint, lambda t: t.pop("decoder.W_1"))
    assert_conversion_fails(
        checkpoint, tmp_path / "out", "checkpoint.safetensors", "missing tensor 'decoder.W_1'"
    )


def test_extra_tensor(checkpoint, tmp_path):
    edit_tensors(checkpoint, lambda t: t.update(surprise=torch.zeros(3)))
    assert_conversion_fails(
        checkpoint, tmp_path / "out", "checkpoint.safetensors", "unexpected tensor 'surprise'"
    )


def test_shape_disagrees_with_config(checkpoint, tmp_path):
    edit_tensors(checkpoint, lambda t: t.update({"encoder.b": torch.zeros(2, 31)}))
    assert_conversion_fails(checkpoint, tmp_path / "out", "'encoder.b'", "[2, 31]", "[2, 32]")


def test_config_dimension_disagrees_between_parts(checkpoint, tmp_path):
    def widen(config):
        config["model"]["init_args"]["decoder"]["init_args"]["d_features"] = 64

    edit_config(checkpoint, widen)
    assert_conversion_fails(checkpoint, tmp_path / "out", "decoder.init_args.d_features", "64")


def test_non_finite_value(checkpoint, tmp_path):
    def poison(tensors):
        tensors["decoder.W_1"][1, 3, 2] = float("nan")

    edit_tensors(checkpoint, poison)
    assert_conversion_fails(checkpoint, tmp_path / "out", "'decoder.W_1[1]'", "non-finite")


def test_truncated_weights(checkpoint, tmp_path):
    weights = checkpoint / "checkpoint.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert_conversion_fails(checkpoint, tmp_path / "out", "checkpoint.safetensors", "truncated")


def test_not_safetensors(checkpoint, tmp_path):
    (checkpoint / "checkpoint.safetensors").write_bytes(b"PK\x03\x04 this is a zip")
    assert_conversion_fails(checkpoint, tmp_path / "out", "checkpoint.safetensors", "safetensors")


def test_k_larger_than_features(checkpoint, tmp_path):
    edit_config(
        checkpoint, lambda c: c["model"]["init_args"]["nonlinearity"].update(init_args={"k": 999})
    )
    assert_conversion_fails(checkpoint, tmp_path / "out", "nonlinearity.init_args.k", "999")


def test_existing_output_is_not_overwritten(checkpoint, tmp_path):
    out = convert(checkpoint, tmp_path / "out")
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(CheckpointError, match="already exists"):
        convert(checkpoint, out)
    assert before == {p.name: p.stat().st_mtime_ns for p in out.iterdir()}


def test_interrupted_conversion_leaves_nothing(checkpoint, tmp_path, monkeypatch):
    """A crash after some layers were written leaves no folder that looks finished."""
    import safetensors.torch  # the checkpoint's writer imports save_file from here when it runs

    real_save = safetensors.torch.save_file
    calls = []

    def crash_on_third_file(tensors, path):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real_save(tensors, path)

    monkeypatch.setattr(safetensors.torch, "save_file", crash_on_third_file)
    with pytest.raises(KeyboardInterrupt):
        convert(checkpoint, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_loading_an_unfinished_folder_is_refused(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(CheckpointError, match="incomplete"):
        load_converted(tmp_path / "half")
