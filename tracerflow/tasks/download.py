"""Stage 1, download: resolve a transcoder source to a local checkpoint folder and its identity.

A source is one of:
  - a preset name (``toy-clt``, ``gpt2-clt-16k``, ...): its transcoder source, resolved below;
  - a local checkpoint folder (``./my-clt`` or ``/abs/path``);
  - a Hugging Face repo id with an optional revision: ``owner/name`` or ``owner/name@rev``.
Hub sources go through ``huggingface_hub.snapshot_download``, so the standard cache (``HF_HOME``)
and ``HF_HUB_OFFLINE=1`` behave as Hugging Face users expect; the resolved commit sha is part of
the result (and so of every later cache key and database row). Files a source names in other Hub
repos (a circuit-tracer config's ``hf://`` list) are fetched with ``hf_hub_download`` at their
revisions, and each one's commit sha is recorded too (``file_commits``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tracerflow.errors import CheckpointError, SourceError
from tracerflow.sources import parse_repo_source
from tracerflow.storage.artifacts import ArtifactStore, stage_key
from tracerflow.tasks.results import CheckpointSnapshot, file_text
from tracerflow.tasks.stage import stage_task
from tracerflow.transcoders import formats
from tracerflow.transcoders.conversion import content_hash
from tracerflow.transcoders.formats.hub_config import cached_file, parse_hf_uri, snapshot_commit
from tracerflow.transcoders.formats.layer_files import file_sha256

# Still 1 although snapshots now record their format and the commits of the Hub files a config
# names (issue 25): a store's cached downloads stay valid (flows/records.py asks the registry for
# the format of one cached before; a source of a format that names Hub files is new, so no
# cached snapshot of one lacks its commits).
CODE_VERSION = "1"
SNAPSHOT_FILE = "snapshot.json"
_COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")


def parse_hub_source(source: str) -> tuple[str, str | None] | None:
    """``owner/name[@revision]`` -> (repo id, revision); None when it is not a Hub source (an
    existing folder of that name is a local source)."""
    if Path(source).expanduser().exists():
        return None
    return parse_repo_source(source)


def unpreset(source: str) -> str:
    """A preset's transcoder source (a folder or a repo id); any other source unchanged."""
    from tracerflow.presets import find_preset

    preset = find_preset(source)
    return preset.transcoder_source() if preset is not None else source


def resolve_source(source: str) -> CheckpointSnapshot:
    """Resolve a source to a checkpoint folder on this machine (downloading if needed)."""
    target = unpreset(source)
    if target != source:
        return resolve_source(target).model_copy(update={"source": source})

    folder = Path(source).expanduser()
    if folder.is_dir():
        folder = folder.resolve()
        checkpoint_format, hashes, file_commits = _file_hashes(folder)
        return CheckpointSnapshot(
            source=source,
            location=str(folder),
            revision=None,
            commit_sha=None,
            path=str(folder),
            content_hash=content_hash(hashes),
            format=checkpoint_format,
            file_commits=file_commits,
        )
    hub = parse_hub_source(source)
    if hub is None:
        raise SourceError(
            f"transcoder source '{source}' is not a preset, an existing folder, or a Hugging Face "
            "repo id (owner/name[@revision]); `tracerflow presets` lists the presets"
        )
    return download_from_hub(source, *hub)


def download_from_hub(source: str, repo_id: str, revision: str | None) -> CheckpointSnapshot:
    """``snapshot_download`` the checkpoint files of a Hub repo, format by format in the order
    the registry gives, until one format's files are all there; the commit sha comes from the
    snapshot folder (``.../snapshots/<sha>``), which is how the HF cache pins a revision."""
    from huggingface_hub import snapshot_download

    for candidate, patterns in formats.download_pattern_groups():
        try:
            folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
        except OSError as error:  # huggingface_hub's and requests' errors are all OSErrors
            raise hub_error(error, repo_id, revision) from error
        if candidate.detect(folder) >= 1.0:
            break
    commit_sha = folder.name if _COMMIT_SHA.match(folder.name) else None
    checkpoint_format, hashes, file_commits = _file_hashes(folder)
    return CheckpointSnapshot(
        source=source,
        location=repo_id,
        revision=revision or "main",
        commit_sha=commit_sha,
        path=str(folder),
        content_hash=content_hash(hashes),
        format=checkpoint_format,
        file_commits=file_commits,
    )


def hub_error(
    error: OSError, repo_id: str, revision: str | None, path: str | None = None
) -> SourceError:
    """The one-line ``SourceError`` for a failed Hub download (of the repo, or of the file
    ``path`` in it). A repo or revision that does not exist, or that this machine may not read,
    fails at once; network trouble, a Hub outage or a rate limit may pass, so those are
    retryable."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        DisabledRepoError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}@{revision or 'main'}" + (f" ({path})" if path else "")
    page = f"{constants.ENDPOINT}/{repo_id}"
    if isinstance(error, GatedRepoError):  # a RepositoryNotFoundError: test it first
        return SourceError(
            f"Hugging Face repo '{repo_id}' is gated: accept its conditions at {page} and log in "
            "on this machine (`huggingface-cli login` or HF_TOKEN)"
        )
    if isinstance(error, RepositoryNotFoundError):
        return SourceError(
            f"Hugging Face repo '{repo_id}' does not exist, or is private and this machine is "
            "not logged in with access to it (`huggingface-cli login` or HF_TOKEN)"
        )
    if isinstance(error, RevisionNotFoundError):
        return SourceError(
            f"Hugging Face repo '{repo_id}' has no revision '{revision}' (a branch, tag or "
            f"commit sha; see {page}/tree/main)"
        )
    if isinstance(error, DisabledRepoError):
        return SourceError(f"Hugging Face repo '{repo_id}' has been disabled by its owners")
    if isinstance(error, LocalEntryNotFoundError):  # not cached, and the Hub not reachable
        offline = constants.HF_HUB_OFFLINE
        hint = (
            "HF_HUB_OFFLINE is set and the repo is not in the Hugging Face cache"
            if offline
            else "the Hub could not be reached"
        )
        return SourceError(
            f"could not download {where}: {hint}. To run offline, put the repo in the HF cache "
            "(HF_HOME) and set HF_HUB_OFFLINE=1, or pass a local checkpoint folder as the source",
            retryable=not offline,
        )
    response = error.response if isinstance(error, HfHubHTTPError) else None
    status = response.status_code if response is not None else None
    # Other 4xx answers (bad request, forbidden) will not change on a retry; 408/429 may.
    permanent = status is not None and 400 <= status < 500 and status not in (408, 429)
    first_line = next((line for line in str(error).splitlines() if line.strip()), "")
    return SourceError(
        f"could not download {where}: {type(error).__name__}: {first_line}",
        retryable=not permanent,
    )


def _file_hashes(folder: Path) -> tuple[str, dict[str, str], dict[str, str] | None]:
    """The folder's format, the sha256 of its files as its format names them, and the commit of
    each Hub file it names elsewhere (fetched now; None when its format names none). In the HF
    cache, LFS files are symlinks to blobs named by their sha256: use that name instead of
    re-reading several GB."""
    try:
        checkpoint_format = formats.source_format(folder)
    except CheckpointError as error:
        raise SourceError(str(error)) from None
    hashes = {}
    for name in checkpoint_format.files(folder):
        path = folder / name
        if not path.is_file():
            raise SourceError(f"{folder}: no {name}; not a {checkpoint_format.title}")
        hashes[name] = file_sha256(path)
    file_commits = None
    if checkpoint_format.references is not None:
        try:
            hub_files = checkpoint_format.references(folder)
        except CheckpointError as error:
            raise SourceError(str(error)) from None
        file_commits = {}
        for hub_file in hub_files:
            local_path = fetch_hub_file(hub_file)
            hashes[hub_file.uri] = file_sha256(local_path)
            file_commits[hub_file.uri] = snapshot_commit(local_path, hub_file.path)
    return checkpoint_format.name, hashes, file_commits


def fetch_hub_file(hub_file: formats.HubFile) -> Path:
    """``hf_hub_download`` one file at its revision (offline: from the cache), as circuit-tracer
    fetches a config's ``hf://`` files, without its gated-repo look-up first."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(hub_file.repo_id, hub_file.path, revision=hub_file.revision))
    except OSError as error:
        raise hub_error(error, hub_file.repo_id, hub_file.revision, hub_file.path) from error


def download(source: str, store: ArtifactStore) -> CheckpointSnapshot:
    """Resolve ``source``, or read it back from the store: local folders are kept by their
    (path, size, mtime) and Hub sources pinned to a commit sha; anything that can move
    (``@main``, a preset of a Hub repo) is resolved again on each run."""
    fingerprint = _fingerprint(source)
    if fingerprint is None:
        return resolve_source(source)
    key = stage_key("download", CODE_VERSION, f=fingerprint, source=source)

    def write(out_dir: Path) -> None:
        (out_dir / SNAPSHOT_FILE).write_text(file_text(resolve_source(source)))

    folder, cached = store.get_or_compute("download", key, write, reuse=_checkpoint_is_there)
    return _read_snapshot(folder).model_copy(update={"cached": cached})


def _read_snapshot(folder: Path) -> CheckpointSnapshot:
    return CheckpointSnapshot.model_validate_json((folder / SNAPSHOT_FILE).read_text())


def _checkpoint_is_there(folder: Path) -> bool:
    """Whether the checkpoint a stored snapshot names, outside the home, is still there with
    every Hub file it names, none of them by a revision that can move (those are resolved again
    on each run)."""
    snapshot = _read_snapshot(folder)
    for uri in snapshot.file_commits or {}:
        hub_file = parse_hf_uri(uri, str(folder))
        pinned = hub_file.revision is not None and _COMMIT_SHA.match(hub_file.revision)
        if not pinned or cached_file(hub_file) is None:
            return False
    return Path(snapshot.path).is_dir()


def _fingerprint(source: str) -> str | None:
    fingerprint = _local_fingerprint(source)
    if fingerprint is None:
        hub = parse_hub_source(source)
        if hub is None or hub[1] is None or not _COMMIT_SHA.match(hub[1]):
            return None
        fingerprint = hub[1]
    return fingerprint


def _local_fingerprint(source: str) -> str | None:
    folder = Path(unpreset(source)).expanduser()
    if not folder.is_dir():
        return None
    stats = [
        (folder / name).stat()
        for name in formats.checkpoint_files(folder)
        if (folder / name).exists()
    ]
    return f"{folder.resolve()}|" + "|".join(f"{s.st_size}:{s.st_mtime_ns}" for s in stats)


def _is_retryable(task: Any, task_run: Any, state: Any) -> bool:
    """Retry network trouble, not a wrong name or a repo missing from the offline cache."""
    try:
        state.result()
    except SourceError as error:
        return error.retryable
    except Exception:
        return False
    return False


download_task = stage_task(
    "download", retries=3, retry_delay_seconds=[2, 5, 15], retry_condition_fn=_is_retryable
)(download)
