"""The score database's commands (`history`, `compare`, `sql`, `plot history`), driven through
typer's CliRunner on the real `tracerflow` app."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from tracerflow.cli import app as tracerflow_app
from tracerflow.storage import run_sql

from .builders import IOI_PROMPTS, NEW_CLT, OLD_CLT, PLT, SMOKE_PROMPT


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    return tracerflow_app


def invoke(app: typer.Typer, *args: str, **kwargs: object):
    return CliRunner().invoke(app, [str(arg) for arg in args], **kwargs)  # type: ignore[arg-type]


def test_history_prints_a_table_newest_first(app: typer.Typer, populated_db: Path) -> None:
    result = invoke(app, "history", "--db", populated_db, "--transcoder", PLT)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["created_at", "transcoder_source", "version"]
    assert "nightly-4" in lines[2] and "nightly-0" in lines[-1]


def test_history_as_json_carries_every_column(app: typer.Typer, populated_db: Path) -> None:
    result = invoke(
        app, "history", "--db", populated_db, "--prompt", IOI_PROMPTS[0], "--format", "json"
    )

    rows = json.loads(result.stdout)
    assert {row["prompt"] for row in rows} == {IOI_PROMPTS[0]}
    assert {"replacement_change", "params_hash", "error"} <= rows[0].keys()


def test_history_as_csv_parses_back(app: typer.Typer, populated_db: Path) -> None:
    result = invoke(
        app, "history", "--db", populated_db, "--since", "2025-06-05", "--format", "csv"
    )

    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows and all(row["created_at"] >= "2025-06-05" for row in rows)


def test_history_reads_the_database_under_tracerflow_home_by_default(
    app: typer.Typer, populated_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert populated_db.name == "scores.duckdb"  # the default file name under the home
    monkeypatch.setenv("TRACERFLOW_HOME", str(populated_db.parent))

    result = invoke(app, "history", "--format", "json")

    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) > 0


def test_compare_prints_rows_and_the_interval(app: typer.Typer, populated_db: Path) -> None:
    result = invoke(app, "compare", OLD_CLT, NEW_CLT, "--db", populated_db)

    assert result.exit_code == 0, result.output
    assert "replacement score (B − A): mean +" in result.stdout
    assert "95% CI [" in result.stdout


def test_compare_reads_its_prompts_from_a_file(
    app: typer.Typer, populated_db: Path, tmp_path: Path
) -> None:
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text(f"{IOI_PROMPTS[1]}\n\n{IOI_PROMPTS[2]}\n")

    result = invoke(
        app, "compare", OLD_CLT, NEW_CLT, "--db", populated_db,
        "--prompts-file", prompts_file, "--format", "json",
    )  # fmt: skip

    summary = json.loads(result.stdout)
    assert sorted(row["prompt"] for row in summary["rows"]) == sorted(IOI_PROMPTS[1:3])
    assert summary["replacement_difference"]["n"] == 2


def test_sql_prints_query_results(app: typer.Typer, populated_db: Path) -> None:
    result = invoke(
        app, "sql", "SELECT count(*) AS n FROM runs", "--db", populated_db, "--format", "csv"
    )

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["n", "6"]


def test_sql_writes_parquet_to_a_file(app: typer.Typer, populated_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "latest.parquet"

    result = invoke(
        app, "sql", "SELECT transcoder_source, replacement_score FROM latest_scores",
        "--db", populated_db, "--format", "parquet", "--out", out,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.column_names == ["transcoder_source", "replacement_score"]
    assert table.num_rows == 3 * len(IOI_PROMPTS) + 1


def test_a_refused_statement_is_one_line_on_stderr_and_exit_2(
    app: typer.Typer, populated_db: Path
) -> None:
    result = invoke(app, "sql", "DELETE FROM scores", "--db", populated_db)

    assert result.exit_code == 2
    assert result.stderr.startswith("error: `tracerflow sql` only reads: DELETE")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_a_missing_database_is_an_error_not_a_traceback(app: typer.Typer, tmp_path: Path) -> None:
    result = invoke(app, "history", "--db", tmp_path / "none.duckdb")

    assert result.exit_code == 2
    assert "no score database at" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_plot_history_writes_a_png(app: typer.Typer, populated_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "history.png"

    result = invoke(app, "plot", "history", "--db", populated_db, "--out", out)

    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert out.stat().st_size > 10_000


def test_plot_history_refuses_an_unknown_file_type(
    app: typer.Typer, populated_db: Path, tmp_path: Path
) -> None:
    result = invoke(app, "plot", "history", "--db", populated_db, "--out", tmp_path / "h.pdf")

    assert result.exit_code == 2
    assert "must end in .png" in result.stderr


@pytest.mark.parametrize("output_format", ["table", "json"])
def test_history_of_an_unknown_transcoder_lists_the_recorded_ones_and_exits_2(
    app: typer.Typer, populated_db: Path, output_format: str
) -> None:
    # A typo is not an empty history: "no scores match" and exit 0 hid it.
    result = invoke(
        app, "history", "--db", populated_db, "--transcoder", PLT + "2", "--format", output_format
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: no scores for transcoder '{PLT}2'; recorded transcoders: "
        + ", ".join(sorted({OLD_CLT, NEW_CLT, PLT}))
    ]


def test_history_of_a_known_transcoder_with_nothing_since_is_an_empty_answer(
    app: typer.Typer, populated_db: Path
) -> None:
    result = invoke(
        app, "history", "--db", populated_db, "--transcoder", PLT, "--since", "2100-01-01"
    )
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == "no scores match"


def test_history_limit_keeps_the_newest_and_suite_keeps_its_runs(
    app: typer.Typer, populated_db: Path
) -> None:
    every = json.loads(invoke(app, "history", "--db", populated_db, "--format", "json").stdout)
    newest = json.loads(
        invoke(app, "history", "--db", populated_db, "--limit", "3", "--format", "json").stdout
    )
    assert newest == every[:3]
    smoke = json.loads(
        invoke(app, "history", "--db", populated_db, "--suite", "smoke", "--format", "json").stdout
    )
    assert [row["prompt"] for row in smoke] == [SMOKE_PROMPT]
    assert {row["suite_name"] for row in every} == {"ioi", "smoke"}


def test_the_history_table_fits_the_terminal_and_csv_keeps_every_character(
    app: typer.Typer, populated_db: Path
) -> None:
    table = invoke(app, "history", "--db", populated_db, env={"COLUMNS": "100"}).stdout
    scores = table.split("\n\ntranscoder quality")[0].splitlines()
    assert max(len(line) for line in scores) <= 100
    assert any("…" in line for line in scores[2:])  # the prompts were cut to fit
    assert scores[0].split()[:6] == [
        "created_at", "transcoder_source", "version", "prompt", "replacement_score",
        "completeness_score",
    ]  # fmt: skip
    assert scores[-1].startswith("(not shown: ")  # and names the rest
    full = invoke(app, "history", "--db", populated_db, "--format", "csv", env={"COLUMNS": "100"})
    prompts = {row["prompt"] for row in csv.DictReader(io.StringIO(full.stdout))}
    assert prompts == {*IOI_PROMPTS, SMOKE_PROMPT}


def test_history_columns_chooses_the_table_s_columns_and_names_the_known_ones(
    app: typer.Typer, populated_db: Path
) -> None:
    chosen = invoke(app, "history", "--db", populated_db, "--columns", "prompt,replacement_score")
    assert chosen.stdout.splitlines()[0].split() == ["prompt", "replacement_score"]
    wrong = invoke(app, "history", "--db", populated_db, "--columns", "prompt,score")
    assert wrong.exit_code == 2
    assert wrong.stderr.startswith("error: --columns: unknown column 'score'; known: created_at,")


def test_a_table_is_cut_widest_column_first_down_to_what_fits() -> None:
    # Worked by hand: widths 1 and 26 plus the two-space gap is 29; to fit 20 the prompt gives 9
    # characters (the one-letter column is at its own width), ending in "…".
    from tracerflow.cli.render import fitted, text_table

    rows = [["x", "abcdefghijklmnopqrstuvwxyz"]]
    assert fitted(["a", "prompt"], rows, 20).rows == [["x", "abcdefghijklmnop…"]]
    assert fitted(["a", "prompt"], rows, 29).rows == rows  # fits already
    assert len(text_table(["a", "prompt"], rows).splitlines()[-1]) == 29  # the gap is real
    # Two wide columns share the cut, down to 10 characters each (10 + 2 + 10 = 22).
    wide = [["a" * 30, "b" * 30]]
    assert [len(c) for c in fitted(["one", "two"], wide, 42).rows[0]] == [20, 20]
    assert [len(c) for c in fitted(["one", "two"], wide, 22).rows[0]] == [10, 10]
    # Narrower than that, the last column is left out and named.
    narrow = fitted(["one", "two"], wide, 21)
    assert (narrow.columns, narrow.hidden) == (["one"], ["two"])
    assert narrow.rows == [["a" * 20 + "…"]]


def test_history_subgraphs_lists_the_saved_subgraphs(app: typer.Typer, populated_db: Path) -> None:
    result = invoke(app, "history", "--db", populated_db, "--subgraphs", "--format", "json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)  # the one builders.populate records
    columns, _ = run_sql(populated_db, "SELECT * FROM subgraphs_wide")
    assert set(row) == set(columns)  # json carries every column
    assert (row["transcoder_source"], row["prompt"]) == (OLD_CLT, IOI_PROMPTS[0])
    assert (row["subgraph_replacement_score"], row["subgraph_completeness_score"]) == (0.25, 0.625)
    assert row["graph_replacement_score"] == row["replacement_score"]
    assert json.loads(row["pinned_ids_json"]) == ["1_7_3", "err_0_2"]
    none = invoke(app, "history", "--db", populated_db, "--subgraphs", "--transcoder", PLT)
    assert (none.exit_code, none.output) == (0, "no subgraphs match\n")
    mixed = invoke(app, "history", "--db", populated_db, "--subgraphs", "--metrics")
    assert mixed.exit_code == 2
    assert mixed.output == (
        "error: --subgraphs takes --transcoder, --as-of and --format, not --metrics\n"
    )
