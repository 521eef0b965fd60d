"""The one spelling of a Hugging Face transcoder source: ``owner/name`` or ``owner/name@revision``.

Pattern only (no filesystem, no network): the run checks (``flows.validation``) and the download
stage (``tasks.download``) both read a source with it, so they cannot disagree on what a repo id
is. Whether the repo exists is the download stage's question.
"""

from __future__ import annotations

import re

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_repo_source(source: str) -> tuple[str, str | None] | None:
    """``owner/name[@revision]`` -> (repo id, revision or None); None when ``source`` is not
    spelled that way."""
    repo_id, _, revision = source.partition("@")
    if not REPO_ID.match(repo_id):
        return None
    return repo_id, revision or None
