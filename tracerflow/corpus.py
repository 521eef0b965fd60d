"""Token corpora, streamed: documents -> windows of token ids -> bounded batches.

One reader for every stage that runs a model over text it did not attribute (the ``evaluate``
stage; feature dashboards later). It knows nothing of metrics: it yields ``TokenBatch``es.

- Documents come from a list of texts (a run's prompts) or a file: ``.jsonl`` holds one JSON
  object per non-empty line with a string ``"text"`` field; any other file is UTF-8 text with one
  document per non-empty line (the format of prompt files; ``#`` lines are text here).
- Each document is tokenized without special tokens and cut into windows of at most ``n_ctx``
  positions, each window starting with the tokenizer's BOS (as TransformerLens prepends it and
  circuit-tracer zeroes features there). Documents are not packed together, so a window's tokens
  only ever attend to their own document.
- ``max_tokens`` caps the *text* tokens (BOS not counted); the last window is cut short.
- Batches hold whole windows, right-padded, at most ``batch_tokens`` positions each (at least
  one window), so memory is bounded by one batch whatever the corpus size.
- ``summary()`` streams the corpus once more for its size and sha256 (of the window lengths and
  token ids, little-endian int64): the content key of anything computed over it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tracerflow.errors import ConfigError

if TYPE_CHECKING:  # imported where a batch is made: reading a stored summary needs no torch
    import torch

DEFAULT_BATCH_TOKENS = 1024
JSONL_SUFFIXES = (".jsonl",)


class Tokenizer(Protocol):
    """What the reader needs of a Hugging Face tokenizer."""

    bos_token_id: int | None
    pad_token_id: int | None

    def __call__(self, text: str, *, add_special_tokens: bool, verbose: bool) -> Any: ...


@dataclass(frozen=True)
class TokenBatch:
    """Windows of one batch: ``tokens [batch, pos]`` (BOS first, right-padded with BOS) and
    ``lengths [batch]``, each window's number of real positions (BOS included)."""

    tokens: torch.Tensor
    lengths: torch.Tensor

    @property
    def real(self) -> torch.Tensor:
        """``[batch, pos]`` True at real (non-padding) positions."""
        import torch

        positions = torch.arange(self.tokens.shape[1], device=self.tokens.device)
        return positions[None, :] < self.lengths.to(self.tokens.device)[:, None]

    @property
    def n_text_tokens(self) -> int:
        """Real positions other than each window's BOS."""
        return int((self.lengths - 1).sum())


@dataclass(frozen=True)
class CorpusSummary:
    """Size and content hash of a corpus as it is windowed."""

    n_windows: int
    n_text_tokens: int
    sha256: str


class TokenCorpus:
    """Documents tokenized into BOS-led windows; iterate ``batches()`` as often as needed."""

    def __init__(
        self,
        documents: Callable[[], Iterable[str]],
        tokenizer: Tokenizer,
        n_ctx: int,
        *,
        max_tokens: int | None = None,
        name: str = "corpus",
    ) -> None:
        if n_ctx < 2:
            raise ConfigError(f"{name}: a window needs n_ctx >= 2 (BOS and a token), got {n_ctx}")
        if max_tokens is not None and max_tokens < 1:
            raise ConfigError(f"{name}: max_tokens must be at least 1, got {max_tokens}")
        if tokenizer.bos_token_id is None:
            raise ConfigError(f"{name}: the model's tokenizer has no BOS token")
        self._documents = documents
        self._tokenizer = tokenizer
        self.n_ctx = n_ctx
        self.max_tokens = max_tokens
        self.name = name
        self._summary: CorpusSummary | None = None

    @classmethod
    def from_texts(
        cls,
        texts: Sequence[str],
        tokenizer: Tokenizer,
        n_ctx: int,
        *,
        max_tokens: int | None = None,
        name: str = "prompts",
    ) -> TokenCorpus:
        """A corpus of the given texts, one document each (a run's prompts)."""
        documents = list(texts)
        return cls(lambda: documents, tokenizer, n_ctx, max_tokens=max_tokens, name=name)

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        tokenizer: Tokenizer,
        n_ctx: int,
        *,
        max_tokens: int | None = None,
    ) -> TokenCorpus:
        """A text (one document per non-empty line) or ``.jsonl`` (``"text"`` per line) file,
        read lazily. ``ConfigError`` names the file (and line) when it cannot be read."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(f"{path}: corpus file does not exist")
        read = _jsonl_documents if path.suffix.lower() in JSONL_SUFFIXES else _text_documents
        return cls(lambda: read(path), tokenizer, n_ctx, max_tokens=max_tokens, name=str(path))

    def windows(self) -> Iterator[list[int]]:
        """Each window's token ids, BOS first, in corpus order, up to ``max_tokens``."""
        bos = int(self._tokenizer.bos_token_id)  # type: ignore[arg-type]
        per_window = self.n_ctx - 1
        budget = self.max_tokens
        for document in self._documents():
            ids = list(self._tokenizer(document, add_special_tokens=False, verbose=False).input_ids)
            for start in range(0, len(ids), per_window):
                chunk = ids[start : start + per_window]
                if budget is not None:
                    chunk = chunk[:budget]
                    budget -= len(chunk)
                yield [bos, *chunk]
                if budget == 0:
                    return

    def batches(self, batch_tokens: int = DEFAULT_BATCH_TOKENS) -> Iterator[TokenBatch]:
        """Windows grouped in order into batches of at most ``batch_tokens`` padded positions."""
        if batch_tokens < 1:
            raise ConfigError(f"{self.name}: batch_tokens must be at least 1, got {batch_tokens}")
        pending: list[list[int]] = []
        width = 0
        for window in self.windows():
            new_width = max(width, len(window))
            if pending and new_width * (len(pending) + 1) > batch_tokens:
                yield self._batch(pending)
                pending, new_width = [], len(window)
            pending.append(window)
            width = new_width
        if pending:
            yield self._batch(pending)

    def _batch(self, windows: list[list[int]]) -> TokenBatch:
        import torch

        width = max(len(window) for window in windows)
        pad = int(self._tokenizer.bos_token_id)  # type: ignore[arg-type]
        tokens = torch.full((len(windows), width), pad, dtype=torch.long)
        for row, window in enumerate(windows):
            tokens[row, : len(window)] = torch.tensor(window, dtype=torch.long)
        lengths = torch.tensor([len(window) for window in windows], dtype=torch.long)
        return TokenBatch(tokens=tokens, lengths=lengths)

    def summary(self) -> CorpusSummary:
        """Number of windows and text tokens, and the sha256 of the windows (computed once)."""
        if self._summary is None:
            import torch

            digest = hashlib.sha256()
            n_windows = n_tokens = 0
            for window in self.windows():
                digest.update(len(window).to_bytes(8, "little"))
                digest.update(torch.tensor(window, dtype=torch.int64).numpy().tobytes())
                n_windows += 1
                n_tokens += len(window) - 1
            if n_tokens == 0:
                raise ConfigError(f"{self.name}: the evaluation corpus holds no tokens")
            self._summary = CorpusSummary(n_windows, n_tokens, digest.hexdigest())
        return self._summary


def read_documents(path: Path) -> Iterator[str]:
    """The documents of a corpus file, read lazily as ``TokenCorpus.from_file`` reads them (to
    check a file before a run starts); ``ConfigError`` names the file and line of a bad one."""
    read = _jsonl_documents if path.suffix.lower() in JSONL_SUFFIXES else _text_documents
    return read(path)


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 file, read lazily; one clear error for undecodable bytes.
    Lines are decoded one by one so that the error names the right line."""
    try:
        with path.open("rb") as handle:
            for line_number, raw in enumerate(handle, start=1):
                if b"\0" in raw:
                    raise ConfigError(f"{path}:{line_number}: not text (it holds NUL bytes)")
                try:
                    yield line_number, raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as error:
                    raise ConfigError(
                        f"{path}:{line_number}: not UTF-8 text ({error.reason} at byte "
                        f"{error.start} of the line)"
                    ) from error
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the corpus ({error})") from error


def _text_documents(path: Path) -> Iterator[str]:
    for _, line in _text_lines(path):
        if line.strip():
            yield line


def _jsonl_documents(path: Path) -> Iterator[str]:
    for line_number, line in _text_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}:{line_number}: not JSON ({error.msg})") from error
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise ConfigError(
                f"{path}:{line_number}: expected a JSON object with a string 'text' field"
            )
        yield text
