"""The graph index: graph files plus scores from the database, and the page that shows them.

Scores are written by storage's own ``record_run`` and read back through its ``graph_index``;
the values checked are the ones recorded, written out by hand.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from tests.storage.builders import run_info
from tests.viewer.conftest import GRAPH_SPECS, TOY_MODEL_NAME, toy_score
from tracerflow.storage import record_run
from tracerflow.viewer.index import (
    build_graph_index,
    load_db_scores,
    read_graph_metadata,
    render_index_html,
    strip_bos,
    viewer_metadata,
)

FIRST_RUN = dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC)


def test_lists_every_graph_from_the_metadata_file(graph_files_dir: Path) -> None:
    slugs = {entry["slug"] for entry in read_graph_metadata(graph_files_dir)}
    assert slugs == set(GRAPH_SPECS)


def test_skips_entries_with_bad_slugs_or_missing_files(graph_files_dir: Path) -> None:
    metadata_path = graph_files_dir / "graph-metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["graphs"] += [{"slug": "../../etc/passwd"}, {"slug": "gone"}, {"slug": None}, "x"]
    metadata_path.write_text(json.dumps(metadata))
    assert {e["slug"] for e in read_graph_metadata(graph_files_dir)} == set(GRAPH_SPECS)


@pytest.mark.parametrize("content", [None, "", "not json", "[]", '{"graphs": 3}'])
def test_missing_or_broken_metadata_means_no_graphs(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        (tmp_path / "graph-metadata.json").write_text(content)
    assert read_graph_metadata(tmp_path) == []


def test_without_a_database_graphs_show_without_scores(graph_files_dir: Path) -> None:
    entries = build_graph_index(graph_files_dir, graph_files_dir / "missing.duckdb")
    assert {e.slug for e in entries} == set(GRAPH_SPECS)
    for entry in entries:
        assert entry.replacement_score is None and entry.completeness_score is None
        assert entry.transcoder in ("toy-clt", "toy-plt")  # the graph's scan
        assert entry.model == TOY_MODEL_NAME
        assert entry.recorded_at is not None  # the file's time
        assert entry.prompt


def test_scores_recorded_by_a_run_are_shown_for_their_slugs(graph_files_dir: Path) -> None:
    db_path = graph_files_dir.parent / "scores.duckdb"
    record_run(
        db_path,
        run_info("nightly-1", FIRST_RUN),
        [
            toy_score("toy-clt-ioi", 0.7059, 0.9124, FIRST_RUN),
            toy_score("toy-plt-cat", 0.7082, 0.9168, FIRST_RUN + dt.timedelta(minutes=1)),
        ],
    )

    entries = {e.slug: e for e in build_graph_index(graph_files_dir, db_path)}
    ioi, cat = entries["toy-clt-ioi"], entries["toy-plt-cat"]
    assert (ioi.replacement_score, ioi.completeness_score) == (0.7059, 0.9124)
    # builders.score records the pruned scores 0.05 and 0.03 below the unpruned ones.
    assert ioi.pruned_replacement_score == pytest.approx(0.6559)
    assert ioi.pruned_completeness_score == pytest.approx(0.8824)
    assert (cat.replacement_score, cat.completeness_score) == (0.7082, 0.9168)
    assert cat.pruned_replacement_score == pytest.approx(0.6582)
    assert ioi.transcoder == "./checkpoints/toy-clt" and cat.transcoder == "./checkpoints/toy-plt"
    assert ioi.model == cat.model == TOY_MODEL_NAME
    assert ioi.prompt == GRAPH_SPECS["toy-clt-ioi"][1]
    assert ioi.recorded_at == FIRST_RUN
    assert cat.recorded_at == FIRST_RUN + dt.timedelta(minutes=1)
    unscored = entries["toy-clt-collide"]
    assert unscored.replacement_score is None and unscored.transcoder == "toy-clt"

    page = render_index_html(entries.values(), graph_files_dir)
    ioi_row = page.split("data-slug='toy-clt-ioi'")[1].split("</tr>")[0]
    assert ">0.7059<" in ioi_row and ">0.9124<" in ioi_row and ">0.6559<" in ioi_row
    assert "0.7082" not in ioi_row

    # The graph page reads the same four scores from data/graph-metadata.json.
    served = {g["slug"]: g for g in viewer_metadata(graph_files_dir, db_path)["graphs"]}
    assert served["toy-clt-ioi"]["replacement_score"] == 0.7059
    assert served["toy-clt-ioi"]["pruned_completeness_score"] == pytest.approx(0.8824)
    assert served["toy-clt-collide"]["completeness_score"] is None


def test_the_newest_score_of_a_slug_wins(graph_files_dir: Path) -> None:
    db_path = graph_files_dir.parent / "scores.duckdb"
    later = FIRST_RUN + dt.timedelta(days=1)
    # Recorded out of order: the run written last is the older one.
    record_run(db_path, run_info("night-2", later), [toy_score("toy-clt-ioi", 0.72, 0.93, later)])
    record_run(
        db_path, run_info("night-1", FIRST_RUN), [toy_score("toy-clt-ioi", 0.70, 0.91, FIRST_RUN)]
    )
    scores = load_db_scores(db_path)
    assert scores["toy-clt-ioi"]["replacement_score"] == 0.72
    assert scores["toy-clt-ioi"]["recorded_at"] == later


def _not_a_database(db_path: Path) -> None:
    db_path.write_bytes(b"not a duckdb file" * 100)


def _from_a_newer_tracerflow(db_path: Path) -> None:
    record_run(db_path, run_info("n"), [toy_score("toy-clt-ioi", 0.7, 0.9, FIRST_RUN)])
    with duckdb.connect(str(db_path)) as con:
        con.execute("INSERT INTO schema_version VALUES (99, 'from the future', now())")


@pytest.mark.parametrize("spoil", [_not_a_database, _from_a_newer_tracerflow])
def test_an_unreadable_database_means_graphs_without_scores(
    graph_files_dir: Path, spoil: Callable[[Path], None]
) -> None:
    db_path = graph_files_dir.parent / "scores.duckdb"
    spoil(db_path)
    entries = build_graph_index(graph_files_dir, db_path)
    assert {e.slug for e in entries} == set(GRAPH_SPECS)
    assert all(e.replacement_score is None for e in entries)


def test_a_database_held_by_a_writer_means_graphs_without_scores(graph_files_dir: Path) -> None:
    db_path = graph_files_dir.parent / "scores.duckdb"
    record_run(db_path, run_info("n"), [toy_score("toy-clt-ioi", 0.7, 0.9, FIRST_RUN)])
    with duckdb.connect(str(db_path)):  # a writer in this process: readers are refused at once
        entries = build_graph_index(graph_files_dir, db_path)
    assert len(entries) == len(GRAPH_SPECS)
    assert all(e.replacement_score is None for e in entries)


def test_metadata_prompts_are_shown_without_the_bos_token(graph_files_dir: Path) -> None:
    metadata = json.loads((graph_files_dir / "graph-metadata.json").read_text())
    # circuit-tracer writes the decoded tokens, its prepended BOS included, as the prompt.
    assert all(g["prompt"].startswith("<|endoftext|>") for g in metadata["graphs"])
    entries = build_graph_index(graph_files_dir)
    assert {e.slug: e.prompt for e in entries} == {
        slug: prompt for slug, (_, prompt, _) in GRAPH_SPECS.items()
    }


@pytest.mark.parametrize(
    ("prompt", "shown"),
    [
        ("<|endoftext|>The cat sat", "The cat sat"),
        ("<bos>The cat sat", "The cat sat"),
        ("The cat sat", "The cat sat"),
        ("<|endoftext|><|endoftext|>x", "<|endoftext|>x"),
        ("x<|endoftext|>", "x<|endoftext|>"),
        ("", ""),
    ],
)
def test_strip_bos_removes_one_leading_bos_token_only(prompt: str, shown: str) -> None:
    assert strip_bos(prompt) == shown


def test_index_page_escapes_prompts_and_links_each_graph(graph_files_dir: Path) -> None:
    metadata_path = graph_files_dir / "graph-metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["graphs"][0]["prompt"] = "<img src=x onerror=alert(1)>'"
    metadata_path.write_text(json.dumps(metadata))
    page = render_index_html(build_graph_index(graph_files_dir), graph_files_dir)
    assert "<img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;&#x27;" in page
    for slug in GRAPH_SPECS:
        assert f"href='/graph.html?slug={slug}'" in page


def test_the_index_shows_each_transcoder_s_newest_metrics_above_the_graphs(
    graph_files_dir: Path, tmp_path: Path
) -> None:
    from tests.storage.builders import score, transcoder
    from tests.storage.test_transcoder_metrics import metrics_record
    from tracerflow.viewer.index import load_db_metrics

    db_path = tmp_path / "scores.duckdb"
    scored = [score(transcoder("toy-clt"), "Mary and John", 0.8, 0.9)]
    record = metrics_record("toy-clt", fvu=0.0123, kl=0.0456)
    record_run(db_path, run_info("run-1"), scored, metrics=[record])

    quality = load_db_metrics(db_path)
    page = render_index_html(
        build_graph_index(graph_files_dir, db_path), graph_files_dir, (), quality
    )

    assert [row["transcoder_source"] for row in quality] == ["toy-clt"]
    table = page.split("<table id='quality'", 1)[1].split("</table>", 1)[0]
    assert "toy-clt" in table and "held-out.txt" in table
    assert ">0.0185<" in table and ">0.0456<" in table  # all-layers FVU (1.5 × 0.0123), KL
    assert page.index("<table id='quality'") < page.index('<table id="graphs"')
    assert load_db_metrics(tmp_path / "none.duckdb") == []
    assert "id='quality'" not in render_index_html([], graph_files_dir)


def test_graphs_are_named_by_source_and_revision_with_the_hash_in_a_tooltip(
    graph_files_dir: Path,
) -> None:
    db_path = graph_files_dir.parent / "scores.duckdb"
    record_run(
        db_path, run_info("nightly-1", FIRST_RUN), [toy_score("toy-clt-ioi", 0.7, 0.9, FIRST_RUN)]
    )
    # builders.transcoder records revision "main", commit "sha-of-<source>", weights
    # "weights-of-<source>".
    served = {g["slug"]: g for g in viewer_metadata(graph_files_dir, db_path)["graphs"]}
    ioi = served["toy-clt-ioi"]
    assert ioi["transcoder_label"] == "./checkpoints/toy-clt @ main"
    assert ioi["transcoder_title"].splitlines() == [
        "commit sha-of-./checkpoints/toy-clt",
        "weights sha256 weights-of-./checkpoints/toy-clt",
        "scan toy-clt",
    ]
    # Without a score row the graph's scan names it, as before.
    assert served["toy-clt-collide"]["transcoder_label"] == "toy-clt"

    page = render_index_html(build_graph_index(graph_files_dir, db_path), graph_files_dir)
    ioi_row = page.split("data-slug='toy-clt-ioi'")[1].split("</tr>")[0]
    assert (
        "<span class='transcoder' title='commit sha-of-./checkpoints/toy-clt\n"
        "weights sha256 weights-of-./checkpoints/toy-clt\nscan toy-clt'>"
        "./checkpoints/toy-clt @ main</span>"
    ) in ioi_row
