"""Graph slugs: the names that become file names in the graph-files folder and parts of URLs.

A slug is checked here, and only here, before it is joined to any path: letters, digits, ``-``
and ``_``, 1 to 128 characters. That rules out ``..``, separators (``/`` and ``\\``), absolute
paths, drive letters, dots, spaces and percent-encodings by construction, instead of by a list
of known-bad patterns. ``graph-metadata`` (any case) is reserved: ``graph-metadata.json`` is the
folder's index, written only under the export lock, never a graph.
"""

from __future__ import annotations

import re
from typing import TypeGuard

from tracerflow.errors import ConfigError

MAX_SLUG_LENGTH = 128
_SLUG_PATTERN = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_SLUG_LENGTH}}}")
# Names of files in the graph-files folder that are not graphs (compared case-insensitively:
# on a case-insensitive file system Graph-Metadata.json is the same file).
RESERVED_SLUGS = frozenset({"graph-metadata"})


class InvalidSlugError(ConfigError, ValueError):
    """A graph slug (or a graph file name) that may not touch the file system."""


def is_valid_slug(slug: object) -> TypeGuard[str]:
    """Whether ``slug`` is a string of 1-128 letters, digits, ``-`` or ``_``, not reserved."""
    # fullmatch, not match: "$" would accept a trailing newline.
    return (
        isinstance(slug, str)
        and _SLUG_PATTERN.fullmatch(slug) is not None
        and slug.lower() not in RESERVED_SLUGS
    )


def validate_slug(slug: object) -> str:
    """Return ``slug`` unchanged if it is safe to use as a file name, else raise.

    Raises:
        InvalidSlugError: ``slug`` is not a string of 1-128 letters, digits, ``-`` or ``_``,
            or it is a reserved name (``graph-metadata``).
    """
    if isinstance(slug, str) and slug.lower() in RESERVED_SLUGS:
        raise InvalidSlugError(f"invalid graph slug {slug!r}: a reserved name, not a graph")
    if not is_valid_slug(slug):
        raise InvalidSlugError(
            f"invalid graph slug {slug!r}: use 1-{MAX_SLUG_LENGTH} letters, digits, '-' or '_'"
        )
    return slug


def slug_from_graph_file_name(file_name: str) -> str:
    """The slug of a graph file name ``<slug>.json``, validated.

    Raises:
        InvalidSlugError: the name is not ``<valid slug>.json``.
    """
    if not file_name.endswith(".json"):
        raise InvalidSlugError(f"not a graph file name: {file_name!r}")
    return validate_slug(file_name[: -len(".json")])
