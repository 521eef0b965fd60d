"""The download stage against a real Hugging Face cache folder, offline.

``huggingface_hub`` reads ``HF_HOME`` and ``HF_HUB_OFFLINE`` when it is imported, so each case runs
in a fresh interpreter with the environment a user would set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from huggingface_hub.errors import HfHubHTTPError

from tests.fake_hub import DROPPED_REPO, EXISTING_REPO, GATED_REPO, OUTAGE_REPO, fake_hub
from tests.hub_cache import CachedRepo, write_hub_repo
from tracerflow.errors import SourceError
from tracerflow.tasks.download import _is_retryable, hub_error, parse_hub_source, resolve_source
from tracerflow.transcoders import convert
from tracerflow.transcoders.synthetic import random_checkpoint

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "someone/tiny-clt"


def hub_cache_with(
    checkpoint: Path, hf_home: Path, repo: str = REPO, ref: str = "main"
) -> CachedRepo:
    """``checkpoint`` as one commit of ``repo`` in the HF cache under ``hf_home``, laid out as
    huggingface_hub does (LFS blobs named by sha256, others by git sha1; snapshot symlinks)."""
    files = {f.name: f.read_bytes() for f in checkpoint.iterdir() if not f.name.startswith("_")}
    return write_hub_repo(hf_home / "hub", repo, files, ref=ref)


def resolve_in_subprocess(source: str, hf_home: Path, offline: bool = True):
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1" if offline else "0"}
    code = (
        "import json, sys\n"
        "from tracerflow.errors import SourceError\n"
        "from tracerflow.tasks.download import resolve_source\n"
        "try:\n"
        f"    print(resolve_source({source!r}).model_dump_json())\n"
        "except SourceError as e:\n"
        "    print('SourceError:', e, 'retryable=', e.retryable); sys.exit(3)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


def test_hub_source_resolves_from_the_offline_cache_with_its_commit(tmp_path):
    checkpoint = random_checkpoint(tmp_path / "ckpt")
    cached = hub_cache_with(checkpoint, tmp_path / "hf")

    result = resolve_in_subprocess(REPO, tmp_path / "hf")

    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    assert resolved["commit_sha"] == cached.commit_sha
    assert resolved["revision"] == "main"
    assert resolved["location"] == REPO
    assert Path(resolved["path"]) == cached.snapshot
    # The identity is the content: the same files in a plain folder hash the same.
    assert resolved["content_hash"] == resolve_source(str(checkpoint)).content_hash


def fetching_hub(monkeypatch, repo_files: dict[str, bytes], root: Path) -> list[list[str]]:
    """``snapshot_download`` of a Hub repo holding ``repo_files``: each call adds the files its
    ``allow_patterns`` match to the snapshot folder, as the real one does; the calls' patterns
    are returned as they happen."""
    import fnmatch

    import huggingface_hub

    calls: list[list[str]] = []

    def snapshot_download(repo_id, revision=None, allow_patterns=()):
        calls.append(list(allow_patterns))
        snapshot = root / "snapshots" / COMMIT
        snapshot.mkdir(parents=True, exist_ok=True)
        for name, data in repo_files.items():
            if any(fnmatch.fnmatch(name, pattern) for pattern in allow_patterns):
                (snapshot / name).write_bytes(data)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


def test_a_hub_repo_is_fetched_one_format_at_a_time_until_one_is_whole(tmp_path, monkeypatch):
    """A checkpoint beside a (large) Lightning training file fetches the checkpoint alone; a
    circuit-tracer repo is found after the checkpoint formats and a Hub config (its config.yaml
    alone) came up empty."""
    checkpoint = random_checkpoint(tmp_path / "ckpt")
    files = {
        name: (checkpoint / name).read_bytes() for name in ("config.yaml", "checkpoint.safetensors")
    }
    calls = fetching_hub(monkeypatch, {**files, "clt.ckpt": b"training state"}, tmp_path / "a")
    snapshot = resolve_source(REPO)
    assert calls == [["config.yaml", "checkpoint.safetensors"]]
    assert snapshot.format == "crosslayer-transcoder"
    assert not (Path(snapshot.path) / "clt.ckpt").exists()

    converted = convert(checkpoint, tmp_path / "converted")
    files = {path.name: path.read_bytes() for path in converted.glob("*.safetensors")}
    calls = fetching_hub(monkeypatch, files, tmp_path / "b")
    snapshot = resolve_source(REPO)
    assert len(calls) == 4 and calls[2] == ["config.yaml"]
    assert calls[3][0] == "layer_*.safetensors"
    assert snapshot.format == "circuit-tracer" and snapshot.commit_sha == COMMIT


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


# --- Hub errors -------------------------------------------------------------------------------
# Offline, snapshot_download only ever raises LocalEntryNotFoundError; the typed errors come from
# the Hub's answers, so these cases ask a loopback server that answers as the Hub does.

HUB_ANSWERS = {
    "nobody/missing": "RepositoryNotFoundError",
    GATED_REPO: "GatedRepoError",
    f"{EXISTING_REPO}@no-such-branch": "RevisionNotFoundError",
    OUTAGE_REPO: "LocalEntryNotFoundError",  # a 503 while nothing is cached
    DROPPED_REPO: "LocalEntryNotFoundError",  # a connection error while nothing is cached
}


def hub_env(hub_url: str, hf_home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": hub_url,
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


@pytest.fixture(scope="module")
def hub_failures(tmp_path_factory) -> dict[str, dict]:
    """What ``resolve_source`` raises for each source of ``HUB_ANSWERS``, asked of the fake Hub in
    one fresh interpreter: the message, ``retryable`` and the huggingface_hub error behind it."""
    code = (
        "import json, sys\n"
        "from tracerflow.errors import SourceError\n"
        "from tracerflow.tasks.download import resolve_source\n"
        "for source in sys.argv[1:]:\n"
        "    try:\n"
        "        resolve_source(source)\n"
        "    except SourceError as error:\n"
        "        print(json.dumps({'source': source, 'message': str(error),\n"
        "            'retryable': error.retryable, 'cause': type(error.__cause__).__name__}))\n"
    )
    with fake_hub() as hub:
        result = subprocess.run(
            [sys.executable, "-c", code, *HUB_ANSWERS],
            env=hub_env(hub.url, tmp_path_factory.mktemp("hf")),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    failures = {entry["source"]: entry for entry in map(json.loads, result.stdout.splitlines())}
    assert set(failures) == set(HUB_ANSWERS), result.stdout
    return failures


@pytest.mark.parametrize(
    "source", ["nobody/missing", GATED_REPO, f"{EXISTING_REPO}@no-such-branch"]
)
def test_a_repo_or_revision_the_hub_refuses_fails_at_once_in_one_line(source, hub_failures):
    failure = hub_failures[source]
    assert failure["cause"] == HUB_ANSWERS[source]
    assert failure["retryable"] is False
    repo_id, _, revision = source.partition("@")
    assert f"'{repo_id}'" in failure["message"] and "\n" not in failure["message"]
    if revision:
        assert f"no revision '{revision}'" in failure["message"]


def test_a_gated_repo_says_how_to_get_access(hub_failures):
    assert "is gated: accept its conditions" in hub_failures[GATED_REPO]["message"]


@pytest.mark.parametrize("source", [OUTAGE_REPO, DROPPED_REPO])
def test_hub_outages_and_network_errors_are_retried(source, hub_failures):
    failure = hub_failures[source]
    assert failure["cause"] == HUB_ANSWERS[source]
    assert failure["retryable"] is True
    assert f"could not download {source}@main: the Hub could not be reached" in failure["message"]


@pytest.mark.parametrize(
    ("status", "retryable"), [(400, False), (403, False), (408, True), (429, True), (502, True)]
)
def test_other_http_errors_are_retried_unless_a_retry_cannot_help(status, retryable):
    response = requests.Response()
    response.status_code = status
    error = hub_error(
        HfHubHTTPError(f"{status} Client Error.\n\nfor url", response=response), REPO, None
    )
    assert error.retryable is retryable
    assert str(error) == f"could not download {REPO}@main: HfHubHTTPError: {status} Client Error."


def test_the_download_task_retries_only_retryable_errors():
    class Raising:
        def __init__(self, error: Exception) -> None:
            self.error = error

        def result(self):
            raise self.error

    assert _is_retryable(None, None, Raising(SourceError("Hub down", retryable=True)))
    assert not _is_retryable(None, None, Raising(SourceError("no such repo")))
    assert not _is_retryable(None, None, Raising(ValueError("a bug")))


def test_cli_reports_a_missing_repo_in_one_line_without_retrying(prefect_api, tmp_path):
    from prefect.settings import PREFECT_API_URL

    # The toy model, which the door lets in: the run starts and fails at the download.
    command = ["run", "--transcoder", "nobody/missing", "--model", "toy-gpt2", "--prompt", "x"]
    with fake_hub() as hub:
        env = {
            **hub_env(hub.url, tmp_path / "hf"),
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            "TRACERFLOW_HOME": str(tmp_path / "home"),
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        }
        result = subprocess.run(
            [sys.executable, "-m", "tracerflow.cli", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert result.returncode == 1, result.stdout + result.stderr
    assert hub.requests["nobody/missing"] == 1  # asked once: no retries
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    assert "SourceError: Hugging Face repo 'nobody/missing' does not exist" in errors[0]
