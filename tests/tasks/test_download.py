"""The download stage against a real Hugging Face cache folder, offline.

``huggingface_hub`` reads ``HF_HOME`` and ``HF_HUB_OFFLINE`` when it is imported, so each case runs
in a fresh interpreter with the environment a user would set.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tracerflow.errors import SourceError
from tracerflow.tasks.download import parse_hub_source, resolve_source
from tracerflow.transcoders.synthetic import random_checkpoint

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "someone/tiny-clt"


def hub_cache_with(checkpoint: Path, hf_home: Path, repo: str = REPO, ref: str = "main") -> Path:
    """Lay out ``checkpoint`` as the HF cache does: blobs named by sha256, snapshot symlinks."""
    repo_dir = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / COMMIT
    (repo_dir / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / ref).write_text(COMMIT)
    for file in checkpoint.iterdir():
        if file.name.startswith("_"):
            continue
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        (repo_dir / "blobs" / digest).write_bytes(file.read_bytes())
        (snapshot / file.name).symlink_to(Path("../../blobs") / digest)
    return snapshot


def resolve_in_subprocess(source: str, hf_home: Path, offline: bool = True):
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1" if offline else "0"}
    code = (
        "import json, sys\n"
        "from tracerflow.errors import SourceError\n"
        "from tracerflow.tasks.download import resolve_source\n"
        "try:\n"
        f"    print(json.dumps(resolve_source({source!r}).to_dict()))\n"
        "except SourceError as e:\n"
        "    print('SourceError:', e, 'retryable=', e.retryable); sys.exit(3)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


def test_hub_source_resolves_from_the_offline_cache_with_its_commit(tmp_path):
    checkpoint = random_checkpoint(tmp_path / "ckpt")
    snapshot = hub_cache_with(checkpoint, tmp_path / "hf")

    result = resolve_in_subprocess(REPO, tmp_path / "hf")

    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    assert resolved["commit_sha"] == COMMIT
    assert resolved["revision"] == "main"
    assert resolved["location"] == REPO
    assert Path(resolved["path"]) == snapshot
    # The identity is the content: the same files in a plain folder hash the same.
    assert resolved["content_hash"] == resolve_source(str(checkpoint)).content_hash


def test_revision_suffix_selects_a_ref(tmp_path):
    checkpoint = random_checkpoint(tmp_path / "ckpt")
    hub_cache_with(checkpoint, tmp_path / "hf", ref="v1")
    result = resolve_in_subprocess(f"{REPO}@v1", tmp_path / "hf")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["revision"] == "v1"


def test_missing_repo_offline_fails_fast_with_how_to_fix(tmp_path):
    result = resolve_in_subprocess("nobody/missing", tmp_path / "hf")
    assert result.returncode == 3
    assert "could not download nobody/missing@main" in result.stdout
    assert "HF_HUB_OFFLINE" in result.stdout and "local checkpoint folder" in result.stdout
    assert "retryable= False" in result.stdout


def test_local_folder_is_its_own_source(tmp_path):
    checkpoint = random_checkpoint(tmp_path / "ckpt")
    snapshot = resolve_source(str(checkpoint))
    assert snapshot.path == str(checkpoint.resolve())
    assert snapshot.commit_sha is None and len(snapshot.content_hash) == 64


def test_unknown_source_names_what_it_accepts():
    with pytest.raises(SourceError, match="not a preset, an existing folder"):
        resolve_source("not a source")


@pytest.mark.parametrize(
    ("source", "parsed"),
    [
        ("owner/name", ("owner/name", None)),
        ("owner/name@v2", ("owner/name", "v2")),
        ("owner/name@" + COMMIT, ("owner/name", COMMIT)),
        ("../x/y/z", None),
        ("name", None),
    ],
)
def test_parse_hub_source(source, parsed):
    assert parse_hub_source(source) == parsed
