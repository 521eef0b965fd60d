"""Suite files: the shipped suites load; bad ones name the file, the line and the field."""

from __future__ import annotations

import pytest

from tracerflow.errors import ConfigError
from tracerflow.suites import load_suite


def test_shipped_suites_load():
    toy = load_suite("toy-nightly")
    assert toy.suite.transcoders == ["toy-clt", "toy-plt", "toy-jumprelu-clt"]
    gpt2 = load_suite("suites/gpt2-16k-nightly.yaml")
    assert len(gpt2.prompts) >= 20
    assert "Mary and John went to the store, Jon gave a drink to" in gpt2.prompts
    assert gpt2.suite.parameters.max_feature_nodes == 8192


def write(tmp_path, text):
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def test_a_wrong_type_names_file_line_and_field(tmp_path):
    path = write(
        tmp_path,
        "name: nightly\ntranscoders: [toy-clt]\nprompts: [a]\nparameters:\n"
        "  max_feature_nodes: lots\n",
    )
    with pytest.raises(ConfigError) as raised:
        load_suite(path)
    message = str(raised.value)
    assert f"{path}:5" in message and "parameters.max_feature_nodes" in message


def test_an_unknown_field_is_refused(tmp_path):
    path = write(tmp_path, "name: n\ntranscoders: [toy-clt]\nprompts: [a]\nprompt_file: x\n")
    with pytest.raises(ConfigError, match=r"suite.yaml:4: field 'prompt_file': Extra inputs"):
        load_suite(path)


def test_a_suite_without_prompts_is_refused(tmp_path):
    path = write(tmp_path, "name: n\ntranscoders: [toy-clt]\n")
    with pytest.raises(ConfigError, match="needs 'prompts' or 'prompts_file'"):
        load_suite(path)


def test_a_missing_prompts_file_is_named(tmp_path):
    path = write(tmp_path, "name: n\ntranscoders: [toy-clt]\nprompts_file: none.txt\n")
    with pytest.raises(ConfigError, match=r"suite.yaml:3: field 'prompts_file': .*none.txt"):
        load_suite(path)


def test_an_unknown_suite_lists_the_builtin_ones():
    with pytest.raises(ConfigError, match="toy-nightly"):
        load_suite("nightly-typo")


def test_a_suite_corpus_is_read_from_the_suite_folder_only(tmp_path):
    (tmp_path / "corpus.txt").write_text("Mary and John went to the store\n")
    path = write(tmp_path, "name: n\ntranscoders: [toy-clt]\nprompts: [a]\ncorpus: corpus.txt\n")
    assert load_suite(path).corpus == str(tmp_path / "corpus.txt")
    outside = write(tmp_path, "name: n\ntranscoders: [toy-clt]\nprompts: [a]\ncorpus: ../c.txt\n")
    with pytest.raises(
        ConfigError, match=r"suite.yaml:4: field 'corpus': \.\./c\.txt leads outside"
    ):
        load_suite(outside, allow_outside_paths=False)
