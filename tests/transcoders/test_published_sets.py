"""circuit-tracer's published sets (the Hub presets) through Hub-shaped caches at reduced sizes,
with their real file and tensor names: each downloads offline as its format, passes the run's door
checks with its layers and ``d_model``, and converts; a Hub config records the commit of every
file it names; the download size ``tracerflow presets`` shows is what the files hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from tests.hub_sets import (
    GEMMA_SCOPE_REPO,
    N_FEATURES,
    reduced,
    write_published_set,
)
from tests.presets import preset_named
from tracerflow.tasks.download import resolve_source
from tracerflow.transcoders import convert, read_manifest
from tracerflow.transcoders.formats import (
    check_source_folder,
    source_format,
)

# preset -> (layers written, the format the repo is read as)
PUBLISHED = {
    "gemma-2-2b-gemmascope": (3, "circuit-tracer-hub-config"),
    "gemma-2-2b-clt-426k": (3, "circuit-tracer"),
    "llama-3.2-1b-plt": (2, "circuit-tracer"),
    "llama-3.2-1b-clt-524k": (3, "circuit-tracer"),
    "qwen3-0.6b-plt": (2, "circuit-tracer"),
}


def tensor_bytes(folder: Path, names: list[str]) -> int:
    """The bytes of every tensor in the files (safetensors or npz), headers aside."""
    total = 0
    for name in names:
        path = folder / name
        if name.endswith(".npz"):
            with np.load(path, allow_pickle=False) as arrays:
                total += sum(arrays[key].nbytes for key in arrays.files)
        else:
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118
                    tensor = handle.get_tensor(key)
                    total += tensor.numel() * tensor.element_size()
    return total


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_a_published_set_downloads_checks_and_converts_offline(
    hf_cache: Path, tmp_path: Path, name: str
) -> None:
    preset = preset_named(name)
    n_layers, format_name = PUBLISHED[name]
    published = write_published_set(hf_cache, preset, n_layers, seed=3)
    layout = published.layout

    snapshot = resolve_source(preset.transcoder_source())

    assert snapshot.format == format_name
    assert (snapshot.revision, snapshot.commit_sha) == ("main", published.repo.commit_sha)
    folder = Path(snapshot.path)
    check_source_folder(folder, name)
    assert source_format(folder).dimensions(folder) == (n_layers, layout.d_model)
    converted = convert(folder, tmp_path / "converted")
    manifest = read_manifest(converted)
    assert (manifest.kind, manifest.n_layers, manifest.d_model, manifest.d_features) == (
        preset.kind,
        n_layers,
        layout.d_model,
        N_FEATURES,
    )
    assert manifest.content_hash == snapshot.content_hash
    assert manifest.activation.name == ("jump_relu" if layout.thresholds else "relu")
    # the download size `tracerflow presets` shows is what the files hold
    if published.files_repo is None:
        names = [n for n in source_format(folder).files(folder) if n.endswith(".safetensors")]
        assert tensor_bytes(folder, names) == layout.tensor_bytes(preset.kind)
    else:
        commit = published.files_repo.commit_sha
        assert snapshot.file_commits is not None
        assert set(snapshot.file_commits.values()) == {commit}
        assert len(snapshot.file_commits) == n_layers
        names = [uri.removeprefix(f"hf://{GEMMA_SCOPE_REPO}/") for uri in snapshot.file_commits]
        assert tensor_bytes(published.files_repo.snapshot, names) == layout.tensor_bytes("plt")


def test_the_full_size_layouts_give_the_reported_file_sizes() -> None:
    """The sizes the layouts imply are those reported for the real files (docs/presets.md):
    GemmaScope ~288 MiB a layer, Llama PLT ~1.01 GiB a layer, the Gemma CLT's W_enc_0 ~75 MB."""
    gemma = preset_named("gemma-2-2b-gemmascope").layout
    llama = preset_named("llama-3.2-1b-plt").layout
    assert gemma is not None and llama is not None
    per_layer = gemma.tensor_bytes("plt") // gemma.n_layers
    assert round(per_layer / 2**20) == 288
    assert round(llama.tensor_bytes("plt") / llama.n_layers / 2**30, 2) == 1.01
    clt = preset_named("gemma-2-2b-clt-426k").layout
    assert clt is not None and round(2 * clt.d_model * clt.d_features / 1e6) == 75


def test_reduced_layouts_keep_the_real_dimensions() -> None:
    layout = preset_named("qwen3-0.6b-plt").layout
    assert layout is not None
    assert reduced(layout, 2).model_dump() == layout.model_dump() | {
        "n_layers": 2,
        "d_features": N_FEATURES,
    }
