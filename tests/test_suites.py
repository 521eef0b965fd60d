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


@pytest.mark.parametrize(
    ("line", "field"),
    [("node_threshold: 0", "node_threshold"), ("desired_logit_prob: 1.5", "desired_logit_prob")],
)
def test_a_parameter_outside_its_limits_is_refused_where_it_is_written(tmp_path, line, field):
    """A suite's overrides have the limits presets and runs have (tracerflow.parameters): a
    threshold of 0 is refused at the suite's line, not later as a command-line flag."""
    path = write(
        tmp_path, f"name: n\ntranscoders: [toy-clt]\nprompts: [a]\nparameters:\n  {line}\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_suite(path)
    assert f"{path}:5" in str(raised.value) and f"parameters.{field}" in str(raised.value)


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


def test_a_suite_s_eval_corpus_is_resolved_in_its_folder_and_reaches_the_run(tmp_path):
    from tracerflow.flows.validation import suite_request

    (tmp_path / "held-out.txt").write_text("Alice and Bob went to the park\n")
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: s\ntranscoders: [toy-clt]\nprompts: [x]\neval_corpus: held-out.txt\neval_tokens: 9\n"
    )
    request = suite_request(load_suite(suite))
    assert request.eval_corpus == str((tmp_path / "held-out.txt").resolve())
    assert request.eval_tokens == 9


@pytest.mark.parametrize(
    ("value", "message"),
    [("missing.txt", "does not exist"), ("../outside.txt", "leads outside the suite file")],
)
def test_a_bad_eval_corpus_names_the_suite_file_line_and_field(tmp_path, value, message):
    folder = tmp_path / "suites"
    folder.mkdir()
    (tmp_path / "outside.txt").write_text("text\n")
    suite = folder / "suite.yaml"
    suite.write_text(f"name: s\ntranscoders: [toy-clt]\nprompts: [x]\neval_corpus: {value}\n")
    with pytest.raises(ConfigError, match=rf"suite.yaml:4: field 'eval_corpus': .*{message}"):
        load_suite(suite, allow_outside_paths=False)
