"""The one repo-id pattern the run checks and the download stage share."""

from __future__ import annotations

import pytest

from tracerflow.sources import parse_repo_source

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("source", "parsed"),
    [
        ("owner/name", ("owner/name", None)),
        ("owner/name@v2", ("owner/name", "v2")),
        (f"owner/name@{SHA}", ("owner/name", SHA)),
        ("owner/name@", ("owner/name", None)),
        ("o.w-n_er/na.me-1", ("o.w-n_er/na.me-1", None)),
        ("name", None),
        ("a/b/c", None),
        ("/abs/path", None),
        ("./rel/path", None),
        ("-owner/name", None),
        ("owner/name with space", None),
    ],
)
def test_parse_repo_source(source: str, parsed: tuple[str, str | None] | None) -> None:
    assert parse_repo_source(source) == parsed
