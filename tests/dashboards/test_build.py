"""``build_feature_pack``: a re-run with more features computes only the missing ones, and the
merged pack is the pack of one run over all of them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from tracerflow.dashboards import build_feature_pack
from tracerflow.models import ReplacementModel

FIRST = [(0, 3), (2, 7)]
MORE = [(0, 3), (1, 5), (2, 7), (2, 100)]


def test_a_rerun_computes_only_the_missing_features_and_matches_one_run(
    models: dict[str, ReplacementModel], corpus: torch.Tensor, tmp_path: Path
) -> None:
    model = models["clt"]
    first = build_feature_pack(
        model, corpus.split(32), tmp_path / "first", transcoder_id="toy", features=FIRST
    )
    assert (first.n_computed, first.n_reused, first.n_features) == (2, 0, 2)

    seen: list[int] = []
    rerun = build_feature_pack(
        model,
        corpus.split(32),
        tmp_path / "rerun",
        transcoder_id="toy",
        features=MORE,
        previous_pack=first.pack_dir,
        progress=lambda sequences, tokens: seen.append(sequences),
    )
    assert (rerun.n_computed, rerun.n_reused, rerun.n_features) == (2, 2, 4)
    assert seen[-1] == corpus.shape[0] == rerun.corpus_sequences

    at_once = build_feature_pack(
        model, corpus.split(32), tmp_path / "once", transcoder_id="toy", features=MORE
    )
    for name in sorted(p.name for p in at_once.pack_dir.iterdir()):
        assert (rerun.pack_dir / name).read_bytes() == (at_once.pack_dir / name).read_bytes()


def test_nothing_missing_reads_no_corpus(
    models: dict[str, ReplacementModel], corpus: torch.Tensor, tmp_path: Path
) -> None:
    model = models["plt"]
    first = build_feature_pack(
        model, corpus.split(32), tmp_path / "first", transcoder_id="toy", features=FIRST
    )

    def unread() -> Iterator[torch.Tensor]:
        raise AssertionError("the corpus was read")
        yield corpus

    again = build_feature_pack(
        model,
        unread(),
        tmp_path / "again",
        transcoder_id="toy",
        features=FIRST[:1],
        previous_pack=first.pack_dir,
    )
    assert (again.n_computed, again.n_reused, again.corpus_tokens) == (0, 2, 0)
