"""circuit-tracer's own folders: detected, described, checked at the door, and converted by a
verified copy whose features and reconstructions are those of circuit-tracer's own loaders.

The fixtures are written by circuit-tracer's own ``to_safetensors`` (``foreign_formats``) from
the upstream library's checkpoints, so where a folder's config says TopK the library's own
forward (``reference.safetensors``) is what tracerflow must compute.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from tests.transcoders.foreign_formats import (
    UPSTREAM,
    UPSTREAM_NAMES,
    circuit_tracer_config,
    circuit_tracer_folder,
    load_with_circuit_tracer,
)
from tests.transcoders.test_exactness import reconstruct
from tracerflow.cli import app
from tracerflow.errors import CheckpointError
from tracerflow.fsutil import sha256_file
from tracerflow.transcoders import convert, load_converted, read_manifest
from tracerflow.transcoders.formats import (
    check_source_folder,
    checkpoint_files,
    describe_folder,
    detect_format,
    source_format,
)
from tracerflow.transcoders.manifest import ActivationSpec, Manifest

EXACT = 1e-6  # against circuit-tracer's own loaders on the same files
LIBRARY = 1e-5  # against the library's own forward, as tests/transcoders/test_upstream_fixtures
KIND = {"a_clt_topk_folded": "clt", "c_plt_topk_folded": "plt", "d_clt_jumprelu_folded": "clt"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each upstream fixture as circuit-tracer writes it, without a config.yaml."""
    root = tmp_path_factory.mktemp("circuit-tracer")
    return {name: circuit_tracer_folder(UPSTREAM / name, root / name) for name in UPSTREAM_NAMES}


def reference(name: str) -> dict[str, torch.Tensor]:
    """The library's own forward of the fixture, in circuit-tracer's [L, T, ...] layout."""
    return {
        key: value.transpose(0, 1)
        for key, value in load_file(UPSTREAM / name / "reference.safetensors").items()
    }


def run(transcoder, resid_mid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return transcoder.encode(resid_mid), reconstruct(transcoder, resid_mid)


def with_config(folder: Path, tmp_path: Path, config: dict) -> Path:
    copy = Path(shutil.copytree(folder, tmp_path / f"{folder.name}-with-config"))
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    return copy


@pytest.mark.parametrize("name", UPSTREAM_NAMES)
def test_circuit_tracers_own_folders_are_detected_and_described(
    folders: dict[str, Path], name: str
) -> None:
    folder = folders[name]
    assert detect_format(folder).name == source_format(folder).name == "circuit-tracer"
    check_source_folder(folder, name)
    fields = describe_folder(folder)
    assert fields["format"] == "circuit-tracer transcoder folder"
    assert (fields["kind"], fields["n_layers"], fields["d_model"], fields["d_features"]) == (
        KIND[name],
        3,
        16,
        32,
    )
    # Without a config, the activation is what circuit-tracer 0.5.0 picks from the tensors.
    assert fields["activation"] == ("jump_relu" if "jumprelu" in name else "relu")
    assert fields["config"] is None and fields["files"] == (6 if KIND[name] == "clt" else 3)


@pytest.mark.parametrize("name", UPSTREAM_NAMES)
def test_features_and_reconstructions_are_circuit_tracers_own(
    folders: dict[str, Path], tmp_path: Path, name: str
) -> None:
    folder = folders[name]
    resid_mid = reference(name)["input"]
    features, output = run(load_converted(convert(folder, tmp_path / "out"), "cpu"), resid_mid)
    expected_features, expected_output = run(
        load_with_circuit_tracer(folder, KIND[name], 3), resid_mid
    )
    assert features.count_nonzero() > 0
    assert torch.equal(features != 0, expected_features != 0)
    torch.testing.assert_close(features, expected_features, atol=EXACT, rtol=0)
    torch.testing.assert_close(output, expected_output, atol=EXACT, rtol=0)


def test_conversion_is_a_verified_copy_keyed_by_the_folders_own_files(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    folder = folders["d_clt_jumprelu_folded"]
    out = convert(folder, tmp_path / "out")
    manifest = read_manifest(out)
    tensor_files = sorted(path.name for path in folder.glob("*.safetensors"))
    assert sorted(path.name for path in out.glob("*.safetensors")) == tensor_files
    for name in tensor_files:
        assert (out / name).read_bytes() == (folder / name).read_bytes()
    assert manifest.source_files_sha256 == {
        name: sha256_file(folder / name) for name in checkpoint_files(folder)
    }
    assert manifest.source_was_folded is None  # nothing to fold: already circuit-tracer's
    assert (manifest.activation.name, manifest.activation.source) == ("jump_relu", "JumpReLU")
    half = convert(folder, tmp_path / "half", dtype=torch.bfloat16)  # a cast, not a copy
    assert load_file(half / "W_enc_0.safetensors")["W_enc_0"].dtype == torch.bfloat16


@pytest.mark.parametrize("name", ["a_clt_topk_folded", "c_plt_topk_folded"])
def test_a_topk_config_keeps_the_writing_librarys_topk(
    folders: dict[str, Path], tmp_path: Path, name: str
) -> None:
    """circuit-tracer 0.5.0 ignores a config's TopK (it runs these folders as ReLU); tracerflow
    runs the library's PerLayerTopK, so it computes the library's own forward."""
    folder = with_config(
        folders[name], tmp_path, circuit_tracer_config(KIND[name], activation="topk", k=4)
    )
    assert describe_folder(folder)["activation"] == "topk" and describe_folder(folder)["k"] == 4
    expected = reference(name)
    features, output = run(
        load_converted(convert(folder, tmp_path / "out"), "cpu"), expected["input"]
    )
    assert torch.equal(features != 0, expected["features"] != 0)
    torch.testing.assert_close(features, expected["features"], atol=LIBRARY, rtol=LIBRARY)
    torch.testing.assert_close(output, expected["output"], atol=LIBRARY, rtol=LIBRARY)
    relu_features, _ = run(load_with_circuit_tracer(folder, KIND[name], 3), expected["input"])
    assert relu_features.count_nonzero() > features.count_nonzero()  # what 0.5.0 would run


def test_k_tensors_of_circuit_tracers_later_writer_give_the_topk_size(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    """circuit-tracer after 0.5.0 saves a TopK PLT with a ``k`` tensor in each layer file; 0.5.0
    cannot load that key, so the copy leaves it out and the manifest keeps k."""
    folder = Path(shutil.copytree(folders["c_plt_topk_folded"], tmp_path / "with-k"))
    for layer in range(3):
        path = folder / f"layer_{layer}.safetensors"
        save_file({**load_file(path), "k": torch.tensor(4)}, path)
    assert describe_folder(folder)["k"] == 4
    out = convert(folder, tmp_path / "out")
    assert "k" not in load_file(out / "layer_0.safetensors")
    expected = reference("c_plt_topk_folded")
    features, _ = run(load_converted(out, "cpu"), expected["input"])
    torch.testing.assert_close(features, expected["features"], atol=LIBRARY, rtol=LIBRARY)


def test_hooks_and_model_name_come_from_the_config(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    config = circuit_tracer_config(
        "clt", feature_input_hook="ln2.hook_normalized", model_name="google/gemma-2-2b"
    )
    folder = with_config(folders["a_clt_topk_folded"], tmp_path, config)
    fields = describe_folder(folder)
    assert fields["feature_input_hook"] == "ln2.hook_normalized"
    assert fields["model_name"] == "google/gemma-2-2b" and fields["config"] == "config.yaml"
    manifest = read_manifest(convert(folder, tmp_path / "out"))
    assert (manifest.feature_input_hook, manifest.feature_output_hook) == (
        "ln2.hook_normalized",
        "hook_mlp_out",
    )
    assert "config.yaml" in manifest.source_files_sha256  # the config is part of the identity


def _drop(name: str):
    return lambda folder: (folder / name).unlink()


def _write(name: str, data: dict):
    return lambda folder: save_file(data, folder / name)


def _config(**fields):
    return lambda folder: (folder / "config.yaml").write_text(
        yaml.safe_dump(circuit_tracer_config("clt", **fields))
    )


def _strip_threshold(layer: int):
    def edit(folder: Path) -> None:
        path = folder / f"W_enc_{layer}.safetensors"
        save_file({k: v for k, v in load_file(path).items() if k != f"threshold_{layer}"}, path)

    return edit


def _retype(name: str, key: str, value: torch.Tensor):
    def edit(folder: Path) -> None:
        save_file({**load_file(folder / name), key: value}, folder / name)

    return edit


REFUSALS = {
    "a missing layer": (_drop("W_dec_1.safetensors"), "no W_dec_1.safetensors"),
    "both kinds of files": (
        _write("layer_0.safetensors", {"W_enc": torch.zeros(32, 16)}),
        "holds both per-layer files",
    ),
    "an unexpected tensor": (
        _retype("W_enc_2.safetensors", "W_skip", torch.zeros(16, 16)),
        "W_enc_2.safetensors: unexpected tensor 'W_skip'",
    ),
    "a tensor of another shape": (
        _retype("W_dec_2.safetensors", "W_dec_2", torch.zeros(32, 2, 16)),
        "tensor 'W_dec_2' has shape [32, 2, 16], but layer 0 implies [32, 1, 16]",
    ),
    "thresholds in some layers only": (
        _strip_threshold(1),
        "layer 1 has no 'threshold' tensor but layer 0 has one",
    ),
    "a Hub config listing its files": (
        _config(transcoders=["hf://someone/clt/W_enc_0.safetensors"]),
        "a cross-layer transcoder under 'transcoders' (the GemmaScope-2 CLT layout)",
    ),
    "a config of the other kind": (
        lambda folder: (folder / "config.yaml").write_text(
            yaml.safe_dump(circuit_tracer_config("plt"))
        ),
        "model_kind is 'transcoder_set', but the folder holds the files of a "
        "cross_layer_transcoder",
    ),
    "relu over thresholds": (
        _config(activation="relu"),
        "says activation relu, but the files hold JumpReLU thresholds",
    ),
    "an unknown activation": (_config(activation="gelu"), "activation 'gelu' is not one"),
    "a manifest of another shape": (
        lambda folder: Manifest(
            tracerflow_version="0",
            kind="clt",
            n_layers=2,
            d_model=16,
            d_features=32,
            activation=ActivationSpec(source="JumpReLU", name="jump_relu"),
            dtype="float32",
            source_was_folded=None,
            source_files_sha256={},
            content_hash="0" * 64,
        ).write(folder),
        "tracerflow.json: says a 2-layer clt, but the folder holds the files of a 3-layer clt",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_bad_folder_is_refused_at_the_door_naming_what_is_wrong(
    folders: dict[str, Path], tmp_path: Path, case: str
) -> None:
    edit, message = REFUSALS[case]
    folder = Path(shutil.copytree(folders["d_clt_jumprelu_folded"], tmp_path / "bad"))
    edit(folder)
    with pytest.raises(CheckpointError) as raised:
        check_source_folder(folder, "bad")
    assert message in str(raised.value)
    assert len(str(raised.value).splitlines()) == 1


def test_convert_and_inspect_refuse_a_bad_folder_in_one_line(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    folder = Path(shutil.copytree(folders["c_plt_topk_folded"], tmp_path / "bad"))
    (folder / "config.yaml").write_text(
        yaml.safe_dump(circuit_tracer_config("plt", activation="topk"))
    )
    runner = CliRunner()
    for command in (["convert", str(folder), str(tmp_path / "out")], ["inspect", str(folder)]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, result.output
        assert result.output.strip().splitlines() == [
            f"error: {folder / 'config.yaml'}: activation topk needs a positive integer k, got None"
        ]
    assert not (tmp_path / "out").exists()
