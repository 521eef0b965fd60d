"""The models a run takes, checked at the door without loading them: local model folders, and
the shape of any model whose config is at hand (a local config, a cached Hub ``config.json``),
so that a transcoder of another depth or width is refused in one line before anything starts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.standin_models import (
    D_MODEL,
    N_LAYERS,
    QWEN3_REPO,
    write_model_folder,
    write_qwen3_hub_repo,
    write_transcoder,
)
from tracerflow.errors import ConfigError, UsageError
from tracerflow.flows.validation import check_dimensions, check_model, check_prompt
from tracerflow.model_sources import local_model, model_dimensions, model_identity
from tracerflow.models import check_fits


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("llama") / "model"
    return write_model_folder(folder, "llama", tiny_tokenizer_dir, seed=1)


@pytest.fixture(scope="module")
def narrow_transcoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A circuit-tracer PLT of 3 layers of d_model 16: fits none of the stand-ins."""
    folder = tmp_path_factory.mktemp("narrow") / "plt"
    return write_transcoder(folder, "plt", seed=3, n_layers=3, d_model=16, n_features=8)


def test_a_local_model_folder_is_a_model_with_its_shape_read_from_its_config(llama_folder):
    check_model(str(llama_folder), given=True, fetch=True)
    assert model_dimensions(str(llama_folder)) == (N_LAYERS, D_MODEL)
    found = local_model(str(llama_folder))
    assert found is not None and found.tokenizer_dir == llama_folder.resolve()


def test_a_transcoder_of_another_shape_than_a_local_model_is_refused_at_the_door(
    llama_folder, narrow_transcoder
):
    with pytest.raises(UsageError) as refused:
        check_dimensions(str(narrow_transcoder), str(llama_folder))
    message = str(refused.value)
    assert "\n" not in message
    assert f"has 3 layers of d_model 16, but model '{llama_folder}' has 2 layers of d_model 64" in (
        message
    )
    assert message.endswith("give --model the model it was trained on")


def test_the_shape_of_a_hub_model_is_read_from_its_cached_config(
    tmp_path, monkeypatch, tiny_tokenizer_dir, narrow_transcoder
):
    """Qwen3's shape is what its Hub ``config.json`` says (TransformerLens reads it from there
    too); a model not in the cache has no shape at the door (checked once loaded)."""
    hub_cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    assert model_dimensions(QWEN3_REPO) is None
    check_dimensions(str(narrow_transcoder), QWEN3_REPO)  # nothing to compare with: passes
    write_qwen3_hub_repo(hub_cache, tiny_tokenizer_dir)
    assert model_dimensions(QWEN3_REPO) == (N_LAYERS, D_MODEL)
    assert model_dimensions("qwen/qwen3-0.6b") == (N_LAYERS, D_MODEL)  # names in any case
    with pytest.raises(UsageError) as refused:
        check_dimensions(str(narrow_transcoder), QWEN3_REPO)
    assert "but model 'Qwen/Qwen3-0.6B' has 2 layers of d_model 64" in str(refused.value)


def test_gpt2s_shape_comes_from_its_cached_config(tmp_path, monkeypatch):
    from tests.hub_cache import gpt2_config, write_hub_repo

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    write_hub_repo(tmp_path, "gpt2", {"config.json": json.dumps(gpt2_config(100)).encode()})
    assert model_dimensions("gpt2") == (12, 768)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda folder: (folder / "config.json").unlink(), "is not a model folder: no config.json"),
        (lambda folder: (folder / "model.safetensors").unlink(), "no model.safetensors"),
        (
            lambda folder: (folder / "config.json").write_text('{"model_type": "llama"}'),
            "no n_layers, d_model, d_head, n_ctx; a model folder's config holds TransformerLens "
            "HookedTransformerConfig fields (this is a Hugging Face config.json",
        ),
        (lambda folder: (folder / "tokenizer.json").unlink(), None),  # tokenizer_config.json left
        (
            lambda folder: [
                (folder / name).unlink() for name in ("tokenizer.json", "tokenizer_config.json")
            ],
            "no tokenizer in it or tokenizer/",
        ),
        (lambda folder: (folder / "model.safetensors").write_bytes(b"x" * 16), "not a safetensors"),
    ],
    ids=[
        "no-config",
        "no-weights",
        "hub-config",
        "tokenizer-config-only",
        "no-tokenizer",
        "bad-weights",
    ],
)
def test_a_broken_model_folder_is_refused_at_the_door_in_one_line(
    llama_folder, tmp_path, damage, message
):
    folder = tmp_path / "model"
    shutil.copytree(llama_folder, folder)
    damage(folder)
    if message is None:
        check_model(str(folder), given=True, fetch=True)
        return
    with pytest.raises(UsageError) as refused:
        check_model(str(folder), given=True, fetch=True)
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert str(refused.value).startswith("--model (model): ")


def test_a_missing_model_folder_is_named():
    with pytest.raises(UsageError) as refused:
        check_model("/nonexistent/model", given=True, fetch=False)
    assert str(refused.value) == "--model (model): model folder '/nonexistent/model' does not exist"


def test_a_prompt_too_long_for_a_local_model_is_counted_with_its_tokenizer(llama_folder, tmp_path):
    folder = tmp_path / "short"
    shutil.copytree(llama_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "n_ctx": 8}))
    check_prompt("Mary and John", str(folder), 1)
    with pytest.raises(UsageError, match=r"tokens; .*short takes at most 8"):
        check_prompt(" ".join(["Mary"] * 10), str(folder), 1)


def test_a_local_models_identity_is_its_files_not_its_path(llama_folder, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(llama_folder, copy)
    assert model_identity(str(copy)) == model_identity(str(llama_folder))
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "eps": 1e-3}))
    assert model_identity(str(copy)) != model_identity(str(llama_folder))


def test_a_transcoder_of_another_shape_is_refused_before_it_is_installed():
    """Where the door could not tell (a Hub model not cached yet), loading the model does."""
    with pytest.raises(ConfigError, match="has 3 layers of d_model 16, but model 'm' has 2"):
        check_fits(SimpleNamespace(n_layers=3, d_model=16), N_LAYERS, D_MODEL, "m")
    check_fits(SimpleNamespace(n_layers=N_LAYERS, d_model=D_MODEL), N_LAYERS, D_MODEL, "m")
    plt = SimpleNamespace(n_layers=N_LAYERS, transcoders=[SimpleNamespace(d_model=16)] * 2)
    with pytest.raises(ConfigError, match="has 2 layers of d_model 16"):  # a PLT: its layers'
        check_fits(plt, N_LAYERS, D_MODEL, "m")
