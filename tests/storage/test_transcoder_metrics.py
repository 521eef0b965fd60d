"""The ``transcoder_metrics`` table (migration 004): written with the run's scores in one
transaction, idempotent on the run, the same provenance as the scores, and its views."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.storage.builders import (
    FIRST_NIGHT,
    GPT2,
    IOI_PROMPTS,
    OLD_CLT,
    PLT,
    run_info,
    score,
    transcoder,
)
from tracerflow.errors import StorageError
from tracerflow.evaluation import LayerMetrics, ReplacementFidelity, TranscoderMetrics
from tracerflow.storage.database import open_database, reading, record_run
from tracerflow.storage.metrics import MetricsRecord
from tracerflow.storage.migrations import CURRENT_VERSION, apply_migrations
from tracerflow.storage.quality import latest_metrics, metrics_history, metrics_of_run


def layer(index: int | None, fvu: float, l0: float) -> LayerMetrics:
    return LayerMetrics(
        layer=index,
        n_features=100 if index is not None else 200,
        fvu=fvu,
        mse=2 * fvu,
        l0=l0,
        dead_share=0.03,
        dense_1pct_share=0.5,
        dense_10pct_share=0.1,
        density_histogram=[0] * 27 + [7],
    )


def metrics(fvu: float, kl: float) -> dict[str, Any]:
    return TranscoderMetrics(
        kind="clt",
        n_layers=2,
        d_features=100,
        n_windows=3,
        n_tokens=40,
        layers=[layer(0, fvu, 16.0), layer(1, fvu * 2, 16.0)],
        all_layers=layer(None, fvu * 1.5, 32.0),
        fidelity=ReplacementFidelity(
            kl=kl,
            top1_agreement=0.9,
            ce_original=2.0,
            ce_replacement=2.1,
            ce_ablated=4.0,
            ce_loss_recovered=0.95,
            n_predictions=37,
        ),
    ).model_dump()


def metrics_record(source: str = OLD_CLT, fvu: float = 0.1, kl: float = 0.05, night: int = 0):
    return MetricsRecord(
        transcoder=transcoder(source),
        model=GPT2,
        corpus_name="/data/held-out.txt",
        corpus_hash="tokens-sha",
        corpus_n_tokens=40,
        corpus_n_windows=3,
        evaluate_key=f"key-{source}-{night}",
        evaluation_seconds=1.5,
        metrics=metrics(fvu, kl),
        created_at=FIRST_NIGHT + timedelta(days=night),
    )


def record_night(db_path: Path, night: int, fvu: float, *extra: MetricsRecord) -> int:
    scores = [score(transcoder(OLD_CLT), prompt, 0.8, 0.9) for prompt in IOI_PROMPTS[:2]]
    return record_run(
        db_path,
        run_info(f"run-{night}", started_at=FIRST_NIGHT + timedelta(days=night)),
        scores,
        metrics=[metrics_record(fvu=fvu, night=night), *extra],
    )


def test_a_run_records_a_row_per_layer_and_one_for_all_layers(db_path: Path) -> None:
    record_night(db_path, 0, 0.1)

    with reading(db_path) as con:
        rows = con.execute(
            "SELECT layer, fvu, l0, kl, evaluation_seconds FROM transcoder_metrics "
            "ORDER BY layer NULLS LAST"
        ).fetchall()
    assert rows == [
        (0, 0.1, 16.0, None, None),
        (1, 0.2, 16.0, None, None),
        (None, pytest.approx(0.15), 32.0, 0.05, 1.5),  # whole-model metrics: all-layers row
    ]


def test_metrics_rows_have_the_provenance_of_the_run_s_scores(db_path: Path) -> None:
    record_night(db_path, 0, 0.1)

    with reading(db_path) as con:
        metric_ids = set(
            con.execute(
                "SELECT flow_run_id, transcoder_id, model_id FROM transcoder_metrics"
            ).fetchall()
        )
        score_ids = set(
            con.execute("SELECT flow_run_id, transcoder_id, model_id FROM scores").fetchall()
        )
        provenance = con.execute(
            "SELECT DISTINCT corpus_hash, corpus_n_tokens, metrics_version FROM transcoder_metrics"
        ).fetchall()
    assert metric_ids == score_ids and len(metric_ids) == 1
    assert provenance == [("tokens-sha", 40, "1")]


def test_recording_the_same_run_again_adds_no_metrics(db_path: Path) -> None:
    record_night(db_path, 0, 0.1)
    assert record_night(db_path, 0, 0.9) == 0

    with reading(db_path) as con:
        assert con.execute("SELECT count(*), max(fvu) FROM transcoder_metrics").fetchone() == (
            3,
            0.2,
        )


def test_metrics_that_fail_to_write_roll_back_the_run_s_scores_too(db_path: Path) -> None:
    open_database(db_path).close()  # an existing database (a new one would be removed again)
    duplicate = metrics_record(fvu=0.1, night=0)  # the same ids twice: the insert fails
    with pytest.raises(StorageError, match="nothing of it was written"):
        record_night(db_path, 0, 0.1, duplicate)

    with reading(db_path) as con:
        counts = [
            con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in ("runs", "scores", "transcoder_metrics")
        ]
    assert counts == [0, 0, 0]


def test_views_give_the_newest_metrics_their_history_and_sit_beside_the_score_summary(
    db_path: Path,
) -> None:
    record_night(db_path, 0, 0.1)
    record_night(db_path, 1, 0.08, metrics_record(PLT, fvu=0.3, night=1))

    newest = {row["transcoder_source"]: row for row in latest_metrics(db_path)}
    assert newest[OLD_CLT]["fvu"] == pytest.approx(0.12) and newest[PLT]["fvu"] == pytest.approx(
        0.45
    )
    history = metrics_history(db_path, transcoder=OLD_CLT)
    assert [row["fvu_change"] for row in history] == [pytest.approx(-0.03), None]
    with reading(db_path) as con:
        quality = con.execute(
            "SELECT transcoder_source, n_prompts, replacement_mean, fvu, kl FROM transcoder_quality"
        ).fetchall()
    assert quality == [(OLD_CLT, 2, 0.8, pytest.approx(0.12), 0.05)]
    assert [row["transcoder_source"] for row in metrics_of_run(db_path, "run-1")] == [OLD_CLT, PLT]
    assert metrics_of_run(db_path, "run-1")[0]["corpus_name"] == "held-out.txt"


def test_a_database_at_003_gains_the_table_and_keeps_its_scores(db_path: Path) -> None:
    with duckdb.connect(str(db_path)) as con:
        apply_migrations(con, up_to=3)
    scores = [score(transcoder(OLD_CLT), IOI_PROMPTS[0], 0.8, 0.9)]
    record_run(db_path, run_info("old-run"), scores)  # migrates to the current version first

    with open_database(db_path) as con:
        assert con.execute("SELECT max(version) FROM schema_version").fetchone() == (
            CURRENT_VERSION,
        )
        assert con.execute("SELECT count(*) FROM scores").fetchone() == (1,)
        assert con.execute("SELECT count(*) FROM transcoder_quality").fetchone() == (1,)


def test_005_adds_the_attribution_path_and_a_row_records_it(db_path: Path) -> None:
    """005 adds ``scores.attribution_path`` to a 004 database; a row says which attribution
    computed its graph, or NULL when none ran."""
    with duckdb.connect(str(db_path)) as con:
        apply_migrations(con, up_to=4)
        columns = {row[0] for row in con.execute("DESCRIBE scores").fetchall()}
    assert "attribution_path" not in columns
    ran = dataclasses.replace(
        score(transcoder(OLD_CLT), IOI_PROMPTS[0], 0.8, 0.9), attribution_path="circuit-tracer"
    )
    never_ran = score(transcoder(OLD_CLT), IOI_PROMPTS[1], 0.8, 0.9)
    record_run(db_path, run_info("run-a"), [ran, never_ran])  # migrates to 005 first
    with reading(db_path) as con:
        paths = con.execute("SELECT attribution_path FROM scores").fetchall()
    assert sorted(paths, key=str) == [("circuit-tracer",), (None,)]


def test_006_adds_the_transcoder_format_and_keeps_the_ids(db_path: Path) -> None:
    """006 adds ``scores.transcoder_format`` to a 005 database; a row records the format its
    transcoder was read as (NULL where unknown), and the format is no part of any id: the same
    transcoder recorded before and after 006 is one row of ``transcoders``."""
    before = score(transcoder(OLD_CLT), IOI_PROMPTS[0], 0.8, 0.9)
    with duckdb.connect(str(db_path)) as con:
        apply_migrations(con, up_to=5)
    record_run(db_path, run_info("run-a"), [before])  # migrates to 006 first
    read_as = dataclasses.replace(before.transcoder, format="circuit-tracer")
    after = dataclasses.replace(before, transcoder=read_as, prompt=IOI_PROMPTS[1])
    record_run(db_path, run_info("run-b"), [after])
    with reading(db_path) as con:
        rows = con.execute(
            "SELECT transcoder_id, transcoder_format FROM scores ORDER BY flow_run_id"
        ).fetchall()
        assert con.execute("SELECT count(*) FROM transcoders").fetchone() == (1,)
    assert rows == [
        (before.transcoder.transcoder_id, None),
        (before.transcoder.transcoder_id, "circuit-tracer"),
    ]


def test_007_adds_the_file_commits_and_keeps_the_ids(db_path: Path) -> None:
    """007 adds ``scores.transcoder_file_commits_json`` to a 006 database: a row of a transcoder
    read through a circuit-tracer Hub config records the commit of each Hub file it names, as
    canonical JSON; the commits are no part of any id."""
    before = score(transcoder(OLD_CLT), IOI_PROMPTS[0], 0.8, 0.9)
    with duckdb.connect(str(db_path)) as con:
        apply_migrations(con, up_to=6)
    record_run(db_path, run_info("run-a"), [before])  # migrates to 007 first
    commits = {"hf://org/files/layer_1.npz": "b" * 40, "hf://org/files/layer_0.npz": "a" * 40}
    read_as = dataclasses.replace(before.transcoder, file_commits=commits)
    after = dataclasses.replace(before, transcoder=read_as, prompt=IOI_PROMPTS[1])
    record_run(db_path, run_info("run-b"), [after])
    with reading(db_path) as con:
        rows = con.execute(
            "SELECT transcoder_id, transcoder_file_commits_json FROM scores ORDER BY flow_run_id"
        ).fetchall()
        assert con.execute("SELECT count(*) FROM transcoders").fetchone() == (1,)
    assert rows[0] == (before.transcoder.transcoder_id, None)
    assert rows[1][0] == before.transcoder.transcoder_id
    assert rows[1][1] == (
        '{"hf://org/files/layer_0.npz":"'
        + "a" * 40
        + '","hf://org/files/layer_1.npz":"'
        + "b" * 40
        + '"}'
    )


def test_history_metrics_fits_the_terminal_and_csv_keeps_every_column(db_path: Path) -> None:
    from typer.testing import CliRunner

    from tracerflow.cli import app
    from tracerflow.storage.quality import METRICS_HISTORY_COLUMNS

    record_night(db_path, 0, 0.13)
    record_night(db_path, 1, 0.10)

    def history(*args: str) -> str:
        command = ["history", "--metrics", "--db", str(db_path), *args]
        result = CliRunner().invoke(app, command, env={"COLUMNS": "80"})
        assert result.exit_code == 0, result.output
        return result.stdout

    table = history().splitlines()
    assert max(len(line) for line in table) <= 80  # it was about 410 wide
    assert table[0].split()[:3] == ["created_at", "transcoder_source", "layer"]
    chosen = history("--columns", "layer,fvu,fvu_change").splitlines()
    assert chosen[0].split() == ["layer", "fvu", "fvu_change"]
    assert "-0.03" in "".join(chosen)  # 0.10 − 0.13 on the all-layers row
    full = history("--format", "csv").splitlines()
    assert full[0].split(",") == list(METRICS_HISTORY_COLUMNS)
    assert len(full) == 1 + 2 * 3  # two nights of two layers plus all layers
