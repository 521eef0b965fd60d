"""The one spelling of a Hugging Face transcoder source (``owner/name`` or
``owner/name@revision``), what a preset name stands for, and the one-line error of a failed Hub
download. The run checks (``flows.validation``) and the download stage (``tasks.download``) both
read a source here, so they cannot disagree on what a repo id is or how a missing one is said.
Light on purpose (no torch): the door imports it.
"""

from __future__ import annotations

import re
from pathlib import Path

from tracerflow.errors import SourceError

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_repo_source(source: str) -> tuple[str, str | None] | None:
    """``owner/name[@revision]`` -> (repo id, revision or None); None when ``source`` is not
    spelled that way."""
    repo_id, _, revision = source.partition("@")
    if not REPO_ID.match(repo_id):
        return None
    return repo_id, revision or None


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
