"""The slug validator: the only gate between a name in a request or file and the file system."""

from __future__ import annotations

import pytest

from tracerflow.errors import ConfigError
from tracerflow.viewer.slugs import (
    MAX_SLUG_LENGTH,
    InvalidSlugError,
    is_valid_slug,
    slug_from_graph_file_name,
    validate_slug,
)


@pytest.mark.parametrize(
    "slug", ["a", "toy-clt-ioi", "gpt2_clt_16k", "A1-b2_C3", "x" * MAX_SLUG_LENGTH]
)
def test_accepts_letters_digits_dash_underscore(slug: str) -> None:
    assert validate_slug(slug) == slug
    assert is_valid_slug(slug)


@pytest.mark.parametrize(
    "slug",
    [
        "",
        ".",
        "..",
        "../etc/passwd",
        "..\\windows",
        "/etc/passwd",
        "C:\\x",
        "C:x",
        "a/b",
        "a\\b",
        "a.json",
        "%2e%2e",
        "a b",
        "a\n",
        "a\x00",
        "é",
        "x" * (MAX_SLUG_LENGTH + 1),
    ],
)
def test_rejects_anything_else(slug: str) -> None:
    assert not is_valid_slug(slug)
    with pytest.raises(InvalidSlugError):
        validate_slug(slug)


@pytest.mark.parametrize("value", [None, 1, b"abc", ["a"]])
def test_rejects_non_strings(value: object) -> None:
    with pytest.raises(InvalidSlugError):
        validate_slug(value)


def test_invalid_slug_is_a_config_error_and_a_value_error() -> None:
    with pytest.raises(ConfigError):
        validate_slug("..")
    with pytest.raises(ValueError):
        validate_slug("..")


def test_graph_file_name_gives_its_slug() -> None:
    assert slug_from_graph_file_name("toy-clt.json") == "toy-clt"


@pytest.mark.parametrize(
    "name", ["toy-clt", "toy.clt.json", "../x.json", ".json", "x.json/", "x.JSON", "x.json.gz"]
)
def test_graph_file_name_must_be_slug_dot_json(name: str) -> None:
    with pytest.raises(InvalidSlugError):
        slug_from_graph_file_name(name)
