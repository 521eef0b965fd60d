"""The token corpus reader: documents, windows, caps, batches, hashes and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from tracerflow import toy
from tracerflow.corpus import TokenCorpus
from tracerflow.errors import ConfigError
from tracerflow.toy.grammar import eval_corpus_texts, name_pairs


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(str(toy.tokenizer_dir()))


def ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def test_long_documents_are_cut_into_bos_led_windows_of_n_ctx(tokenizer: Any) -> None:
    text = "Mary and John went to the store, John gave a drink to Mary."
    corpus = TokenCorpus.from_texts([text, "Bob"], tokenizer, n_ctx=6)
    windows = list(corpus.windows())
    bos, text_ids = tokenizer.bos_token_id, ids(tokenizer, text)
    assert all(window[0] == bos and len(window) <= 6 for window in windows)
    assert [t for window in windows[:-1] for t in window[1:]] == text_ids
    assert windows[-1] == [bos, *ids(tokenizer, "Bob")]
    assert corpus.summary().n_text_tokens == len(text_ids) + 1


def test_max_tokens_caps_the_text_tokens_and_cuts_the_last_window(tokenizer: Any) -> None:
    corpus = TokenCorpus.from_texts(eval_corpus_texts(), tokenizer, n_ctx=64, max_tokens=50)
    windows = list(corpus.windows())
    assert sum(len(window) - 1 for window in windows) == 50
    assert corpus.summary().n_text_tokens == 50


def test_batches_hold_whole_windows_within_the_token_budget(tokenizer: Any) -> None:
    corpus = TokenCorpus.from_texts(eval_corpus_texts()[:40], tokenizer, n_ctx=64)
    batches = list(corpus.batches(batch_tokens=100))
    assert all(batch.tokens.numel() <= 100 for batch in batches)
    rows = [
        batch.tokens[row, : int(batch.lengths[row])].tolist()
        for batch in batches
        for row in range(batch.tokens.shape[0])
    ]
    assert rows == list(corpus.windows())
    assert sum(batch.n_text_tokens for batch in batches) == corpus.summary().n_text_tokens


def test_a_text_file_holds_one_document_per_non_empty_line(tokenizer: Any, tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("Mary went home.\n\n   \n# Bob went home.\n")
    corpus = TokenCorpus.from_file(path, tokenizer, n_ctx=64)
    want = TokenCorpus.from_texts(["Mary went home.", "# Bob went home."], tokenizer, n_ctx=64)
    assert list(corpus.windows()) == list(want.windows())
    assert corpus.summary() == want.summary()


def test_a_jsonl_file_reads_the_text_field_of_each_line(tokenizer: Any, tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text(json.dumps({"text": "Mary went home.", "id": 1}) + "\n\n")
    want = TokenCorpus.from_texts(["Mary went home."], tokenizer, n_ctx=64)
    assert list(TokenCorpus.from_file(path, tokenizer, n_ctx=64).windows()) == list(want.windows())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "ok"}\n[1, 2]\n', "corpus.jsonl:2: expected a JSON object with a string 'text'"),
        ('{"text": "ok"}\n{"body": "x"}\n', "corpus.jsonl:2: expected a JSON object"),
        ('{"text": 3}\n', "corpus.jsonl:1: expected a JSON object"),
        ('{"text": "ok"}\n{"text": \n', "corpus.jsonl:2: not JSON"),
    ],
)
def test_a_bad_jsonl_line_is_one_error_naming_the_file_and_line(
    tokenizer: Any, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        TokenCorpus.from_file(path, tokenizer, n_ctx=64).summary()


def test_bytes_that_are_not_utf8_name_their_line(tokenizer: Any, tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"fine\nalso fine\nbad \xff byte\n")
    with pytest.raises(ConfigError, match=r"corpus.txt:3: not UTF-8"):
        TokenCorpus.from_file(path, tokenizer, n_ctx=64).summary()


def test_a_missing_or_empty_corpus_is_one_clear_error(tokenizer: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        TokenCorpus.from_file(tmp_path / "nope.txt", tokenizer, n_ctx=64)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ConfigError, match="holds no tokens"):
        TokenCorpus.from_file(tmp_path / "empty.txt", tokenizer, n_ctx=64).summary()


def test_the_hash_follows_the_token_ids_and_the_windowing(tokenizer: Any) -> None:
    texts = eval_corpus_texts()[:20]

    def digest(texts: list[str], n_ctx: int = 64, max_tokens: int | None = None) -> str:
        corpus = TokenCorpus.from_texts(texts, tokenizer, n_ctx, max_tokens=max_tokens)
        return corpus.summary().sha256

    assert digest(texts) == digest(list(texts))
    assert digest(texts) != digest(texts[:-1])
    assert digest(texts) != digest(texts, n_ctx=8)
    assert digest(texts) != digest(texts, max_tokens=100)
    # the same tokens split into other documents are other windows: another hash
    assert digest(["Mary went home. Bob went home."]) != digest(
        ["Mary went home.", "Bob went home."]
    )


def test_the_toy_eval_corpus_is_the_shipped_file_a_few_thousand_held_out_tokens(
    tokenizer: Any,
) -> None:
    texts = eval_corpus_texts()
    assert toy.eval_corpus_path().read_text() == "\n".join(texts) + "\n"
    corpus = TokenCorpus.from_file(toy.eval_corpus_path(), tokenizer, n_ctx=64)
    assert 2000 <= corpus.summary().n_text_tokens <= 10_000
    held_out = set(name_pairs()[1])
    for text in texts:  # every sentence names a pair training never saw
        words = text.replace(",", " ").replace(".", " ").split()
        first = words.index("and") - 1
        assert (words[first], words[first + 2]) in held_out, text
