"""The Hub cache the real-preset tests run on is what the Hub and the upstream library produce:
huggingface_hub's own cache scanner accepts it, and its transcoder files have the exact shape
of checkpoints the crosslayer-transcoder library wrote (``../shared/fixtures/``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import scan_cache_dir
from safetensors import safe_open

from tests.hub_cache import git_blob_sha1, upstream_config, upstream_tensors, write_hub_repo

UPSTREAM = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "upstream-checkpoints"
FIXTURES = {"a_clt_topk_folded": "clt", "c_plt_topk_folded": "plt"}  # 3 layers, d 16, F 32, k 4


@pytest.mark.parametrize(("folder", "kind"), FIXTURES.items())
def test_transcoder_config_is_byte_for_byte_the_librarys(folder, kind):
    written_by_the_library = (UPSTREAM / folder / "config.yaml").read_text()
    assert upstream_config(kind, n_layers=3, d_model=16, n_features=32, k=4) == (
        written_by_the_library
    )


@pytest.mark.parametrize(("folder", "kind"), FIXTURES.items())
def test_transcoder_tensors_have_the_librarys_names_shapes_and_dtype(folder, kind):
    with safe_open(str(UPSTREAM / folder / "checkpoint.safetensors"), "pt") as handle:
        slices = {key: handle.get_slice(key) for key in handle.keys()}  # noqa: SIM118 (no __iter__)
        expected = {key: (part.get_shape(), part.get_dtype()) for key, part in slices.items()}
    tensors = upstream_tensors(kind, n_layers=3, d_model=16, n_features=32, seed=0)
    assert {key: (list(t.shape), "F32") for key, t in tensors.items()} == expected


def test_huggingface_hub_reads_the_layout_as_its_own(tmp_path):
    files = {"config.yaml": b"model: {}\n", "checkpoint.safetensors": b"\0" * 8}
    cached = write_hub_repo(tmp_path, "someone/repo", files)

    info = scan_cache_dir(tmp_path)

    assert not info.warnings
    (repo,) = info.repos
    assert (repo.repo_id, repo.repo_type, repo.refs.keys()) == ("someone/repo", "model", {"main"})
    (revision,) = repo.revisions
    assert revision.commit_hash == cached.commit_sha
    blobs = {file.file_name: Path(file.blob_path).name for file in revision.files}
    assert blobs["config.yaml"] == git_blob_sha1(files["config.yaml"])  # a plain git file
    assert len(blobs["checkpoint.safetensors"]) == 64  # an LFS file: its sha256
