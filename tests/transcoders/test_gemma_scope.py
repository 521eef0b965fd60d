"""GemmaScope ``params.npz`` transcoders, alone and listed by a circuit-tracer Hub config: each
converts to what circuit-tracer's own GemmaScope loader gives (features and reconstructions within
1e-6), ``inspect`` names them, a bad file is refused at the door in one line, and detecting and
checking them never imports torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from circuit_tracer.transcoder.single_layer_transcoder import (
    load_gemma_scope_transcoder,
    load_transcoder_set,
)
from circuit_tracer.utils.hf_utils import download_hf_uri
from typer.testing import CliRunner

from tests.hub_cache import write_hub_repo
from tests.transcoders.foreign_formats import gemma_scope_folder, gemma_scope_npz
from tracerflow.cli import app
from tracerflow.errors import CheckpointError, SourceError
from tracerflow.tasks.download import resolve_source
from tracerflow.transcoders import convert, read_manifest
from tracerflow.transcoders.formats import check_source_folder, describe_folder, detect_format
from tracerflow.transcoders.load import load_converted

N_FEATURES = 32
GEMMA_SCOPE_REPO = "google/gemma-scope-2b-pt-transcoders"


def hub_config_folder(hf_cache: Path, n_layers: int) -> Path:
    """A config repo's snapshot listing one GemmaScope file a layer of a second repo (which also
    holds a variant the config does not list)."""
    files, entries = {}, []
    for layer in range(n_layers):
        chosen = f"layer_{layer}/width_16k/average_l0_{20 + layer}/params.npz"
        files[chosen] = gemma_scope_npz(64, N_FEATURES, seed=layer)
        files[f"layer_{layer}/width_16k/average_l0_{90 + layer}/params.npz"] = gemma_scope_npz(
            64, N_FEATURES, seed=50 + layer
        )
        entries.append(f"hf://{GEMMA_SCOPE_REPO}/{chosen}")
    write_hub_repo(hf_cache, GEMMA_SCOPE_REPO, files)
    config = {
        "model_kind": "transcoder_set",
        "feature_input_hook": "ln2.hook_normalized",
        "feature_output_hook": "hook_mlp_out",
        "transcoders": entries,
    }
    repo = write_hub_repo(
        hf_cache, "someone/gemma-scope-config", {"config.yaml": yaml.dump(config).encode()}
    )
    return repo.snapshot


def test_gemma_scope_converts_to_what_circuit_tracers_gemma_scope_loader_gives(
    tmp_path: Path,
) -> None:
    folder = gemma_scope_folder(tmp_path / "gemma-scope", n_layers=3)
    assert detect_format(folder).name == "gemma-scope"
    check_source_folder(folder, "gemma-scope")
    converted = load_converted(convert(folder, tmp_path / "converted"), "cpu", torch.float32)
    inputs = torch.randn(3, 7, 64, generator=torch.Generator().manual_seed(0))
    features = converted.encode(inputs)
    reconstruction = converted.decode(features, inputs)
    for layer in range(3):
        (npz,) = (folder / f"layer_{layer}").rglob("params.npz")
        reference = load_gemma_scope_transcoder(str(npz), layer, torch.device("cpu"))
        want_features = reference.encode(inputs[layer])
        assert (want_features > 0).any()
        torch.testing.assert_close(features[layer], want_features, rtol=0, atol=1e-6)
        want = reference.decode(want_features)
        torch.testing.assert_close(reconstruction[layer], want, rtol=0, atol=1e-6)


def test_inspect_names_a_gemma_scope_folder(tmp_path: Path) -> None:
    folder = gemma_scope_folder(tmp_path / "gemma-scope", n_layers=2)
    fields = describe_folder(folder)
    assert fields["format"] == "GemmaScope params.npz transcoders"
    assert (fields["kind"], fields["n_layers"], fields["d_model"], fields["d_features"]) == (
        "plt",
        2,
        64,
        N_FEATURES,
    )
    assert (fields["activation"], fields["feature_input_hook"]) == (
        "jump_relu",
        "ln2.hook_normalized",
    )
    result = CliRunner().invoke(app, ["inspect", str(folder)])
    assert result.exit_code == 0, result.output
    assert "GemmaScope params.npz transcoders" in result.output


def _two_variants(folder: Path) -> None:
    shutil.copytree(folder / "layer_1" / "width_16k", folder / "layer_1" / "width_65k")


def _pickled(folder: Path) -> None:
    (path,) = (folder / "layer_0").rglob("params.npz")
    arrays = dict(np.load(path))
    arrays["notes"] = np.array([{"a": 1}], dtype=object)
    np.savez(path, **arrays)


def _transposed(folder: Path) -> None:
    (path,) = (folder / "layer_1").rglob("params.npz")
    arrays = dict(np.load(path))
    arrays["W_dec"] = arrays["W_dec"].T.copy()
    np.savez(path, **arrays)


REFUSALS = {
    "a missing layer": (
        lambda folder: shutil.rmtree(folder / "layer_1"),
        "no params.npz under layer_1/",
    ),
    "two variants of a layer": (_two_variants, "several params.npz for one layer"),
    "an object array": (_pickled, "holds Python objects"),
    "a misshapen array": (_transposed, "array 'W_dec' has shape [64, 32], but W_enc implies"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_bad_gemma_scope_folder_is_refused_at_the_door(tmp_path: Path, case: str) -> None:
    edit, message = REFUSALS[case]
    folder = gemma_scope_folder(tmp_path / "bad", n_layers=3)
    edit(folder)
    with pytest.raises(CheckpointError) as raised:
        check_source_folder(folder, "bad")
    assert message in str(raised.value)
    assert len(str(raised.value).splitlines()) == 1


def test_a_hub_config_whose_files_are_not_cached_is_refused_when_read(
    hf_cache: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "config"
    folder.mkdir()
    entry = f"hf://{GEMMA_SCOPE_REPO}/layer_0/width_16k/average_l0_76/params.npz"
    (folder / "config.yaml").write_text(
        yaml.safe_dump({"model_kind": "transcoder_set", "transcoders": [entry]})
    )
    assert detect_format(folder).name == "circuit-tracer-hub-config"
    check_source_folder(folder, "config")  # the download stage fetches the files
    with pytest.raises(CheckpointError, match="is not in the Hugging Face cache or on disk"):
        describe_folder(folder)


def test_detecting_and_checking_gemma_scope_and_hub_configs_never_imports_torch(
    hf_cache: Path, tmp_path: Path
) -> None:
    folders = [gemma_scope_folder(tmp_path / "gemma-scope", 2), hub_config_folder(hf_cache, 2)]
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from tracerflow.transcoders import formats\n"
        "names = []\n"
        "for folder in map(Path, sys.argv[1:]):\n"
        "    names.append(formats.detect_format(folder).name)\n"
        "    formats.check_source_folder(folder, str(folder))\n"
        "    formats.source_format(folder).dimensions(folder)\n"
        "print(json.dumps({'names': names, 'torch': 'torch' in sys.modules}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *map(str, folders)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_CACHE": str(hf_cache)},
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer == {"names": ["gemma-scope", "circuit-tracer-hub-config"], "torch": False}


def test_a_hub_config_of_gemma_scope_files_converts_as_the_files_it_lists(
    hf_cache: Path, tmp_path: Path
) -> None:
    folder = hub_config_folder(hf_cache, 2)
    fields = describe_folder(folder)
    assert fields["format"] == "circuit-tracer Hub config"
    assert (fields["n_layers"], fields["d_model"], fields["activation"]) == (2, 64, "jump_relu")
    assert fields["file_commits"].startswith(f"{GEMMA_SCOPE_REPO}@")
    converted = convert(folder, tmp_path / "converted")
    manifest = read_manifest(converted)
    listed = yaml.safe_load((folder / "config.yaml").read_text())["transcoders"]
    assert sorted(manifest.source_files_sha256) == sorted(["config.yaml", *listed])
    assert manifest.feature_input_hook == "ln2.hook_normalized"
    # circuit-tracer's own loading of the listed files (its download_hf_uri, then the
    # GemmaScope loader its load_transcoders picks for a gemma-scope repo's npz files)
    paths = {layer: download_hf_uri(uri) for layer, uri in enumerate(listed)}
    reference = load_transcoder_set(
        paths,
        scan="gemma-scope",
        feature_input_hook="ln2.hook_normalized",
        feature_output_hook="hook_mlp_out",
        device=torch.device("cpu"),
        dtype=torch.float32,
        special_load_fn="gemma-scope",
    )
    loaded = load_converted(converted, "cpu", torch.float32)
    inputs = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(1))
    features = loaded.encode(inputs)
    want = reference.encode(inputs)
    torch.testing.assert_close(features, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        loaded.decode(features, inputs), reference.decode(want, inputs), rtol=0, atol=1e-6
    )


def test_downloading_a_hub_config_offline_names_a_listed_file_missing_from_the_cache(
    hf_cache: Path,
) -> None:
    entry = f"hf://{GEMMA_SCOPE_REPO}/layer_0/width_16k/average_l0_76/params.npz"
    config = {"model_kind": "transcoder_set", "transcoders": [entry]}
    write_hub_repo(hf_cache, "someone/config", {"config.yaml": yaml.safe_dump(config).encode()})
    with pytest.raises(SourceError) as raised:
        resolve_source("someone/config")
    message = str(raised.value)
    assert message.startswith(
        f"could not download {GEMMA_SCOPE_REPO}@main (layer_0/width_16k/average_l0_76/params.npz): "
        "HF_HUB_OFFLINE is set"
    )
    assert len(message.splitlines()) == 1 and not raised.value.retryable
