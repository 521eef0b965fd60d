"""`tracerflow run` and `tracerflow demo` as a user runs them."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tracerflow.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("arguments", "message", "exit_code"),
    [
        (["run", "--prompt", "x"], "give at least one --transcoder or a --preset", 2),
        (["run", "--transcoder", "toy-clt"], "give at least one --prompt or a --prompts-file", 2),
        (
            ["run", "--transcoder", "toy-clt", "--prompts-file", "/nonexistent.txt"],
            "/nonexistent.txt: prompts file does not exist",
            2,
        ),
        (["run", "--suite", "no-such-suite"], "suite 'no-such-suite' is not a file", 2),
        (
            ["run", "--preset", "toy-clt", "--eval-corpus", "/nonexistent.txt"],
            "/nonexistent.txt: --eval-corpus (eval_corpus) file does not exist",
            2,
        ),
        (
            ["run", "--preset", "toy-clt", "--eval-tokens", "0"],
            "--eval-tokens (eval_tokens) must be a whole number from 1 to 2147483647, got 0",
            2,
        ),
    ],
)
def test_bad_run_arguments_fail_in_one_line(arguments, message, exit_code):
    result = runner.invoke(app, arguments)
    assert result.exit_code == exit_code
    assert message in result.output
    assert "Traceback" not in result.output


def test_demo_prints_the_scores_table_and_where_things_are(demo_run):
    lines = demo_run.stdout.splitlines()
    scores = demo_run.stdout.split("transcoder quality")[0].splitlines()  # the metrics follow
    table = [line for line in scores if line.startswith(("toy-clt ", "toy-plt "))]
    assert len(table) == 12 and all(line.rstrip().endswith("ok") for line in table)
    assert f"score store       {demo_run.home / 'scores.duckdb'}" in lines
    assert "view the graphs   tracerflow view" in lines
    assert (demo_run.home / "scores.duckdb").is_file()


def test_bad_eval_corpus_contents_fail_in_one_line_naming_the_file(tmp_path):
    binary = tmp_path / "corpus.txt"
    binary.write_bytes(b"\x00\x01 not text")
    not_jsonl = tmp_path / "corpus.jsonl"
    not_jsonl.write_text('{"title": "no text field"}\n')
    for corpus, message in (
        (binary, "1: not text (it holds NUL bytes)"),
        (not_jsonl, "1: expected a JSON object with a string 'text' field"),
    ):
        result = runner.invoke(app, ["run", "--preset", "toy-clt", "--eval-corpus", str(corpus)])
        assert result.exit_code == 2
        assert f"{corpus}:{message}" in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_demo_prints_the_transcoder_metrics_under_the_scores(demo_run):
    lines = demo_run.stdout.splitlines()
    heading = lines.index("transcoder quality (all layers; docs/metrics.md)")
    last_score = max(i for i, line in enumerate(lines) if line.rstrip().endswith(" ok"))
    assert heading > last_score
    header, _, clt, plt = lines[heading + 1 : heading + 5]
    assert header.split() == [
        "transcoder_source", "corpus_name", "corpus_n_tokens", "fvu", "l0", "dead_share",
        "dense_1pct_share", "kl", "top1_agreement", "ce_loss_recovered",
    ]  # fmt: skip
    for row, source in ((clt, "toy-clt"), (plt, "toy-plt")):
        cells = row.split()
        assert cells[:3] == [source, "eval-corpus.txt", "4103"]
        fvu, l0, *_, ce_recovered = map(float, cells[3:])
        assert 0 < fvu < 0.1 and l0 == 36.0 and ce_recovered > 0.9  # a trained toy transcoder


@pytest.fixture
def in_demo_home(demo_run, monkeypatch):
    monkeypatch.setenv("TRACERFLOW_HOME", str(demo_run.home))
    return demo_run.home


def test_history_shows_the_metrics_of_each_run_after_its_scores(in_demo_home):
    result = runner.invoke(app, ["history"])
    assert result.exit_code == 0, result.output
    scores, metrics = result.output.split("transcoder quality, all layers")
    assert "replacement_score" in scores
    rows = [line.split() for line in metrics.splitlines() if "eval-corpus.txt" in line]
    assert sorted(row[2] for row in rows) == ["toy-clt", "toy-plt"]


def test_history_metrics_lists_every_layer_and_all_layers(in_demo_home):
    import json

    result = runner.invoke(app, ["history", "--metrics", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    layers = sorted((row["transcoder_source"], row["layer"] is None) for row in rows)
    assert layers == sorted([(s, False) for s in ("toy-clt", "toy-plt") for _ in range(3)]
                            + [("toy-clt", True), ("toy-plt", True)])  # fmt: skip


def test_compare_pairs_the_same_tokens_and_its_intervals_are_the_metric_differences(
    in_demo_home,
):
    """The paired per-token means, scaled, are exactly the differences of the recorded metrics
    (the same N tokens, the same original model): a check of the FVU and CE-recovered scaling."""
    import json

    result = runner.invoke(app, ["compare", "toy-clt", "toy-plt", "--format", "json"])
    assert result.exit_code == 0, result.output
    (pair,) = json.loads(result.output)["metrics"]
    assert pair["corpus_name"] == "eval-corpus.txt" and pair["n_tokens"] == 4103
    for name in ("fvu", "l0", "kl", "top1_agreement", "ce_loss_recovered"):
        interval = pair["intervals"][name]
        assert interval["n"] > 3800  # every token; CE: those with a next token
        assert interval["mean"] == pytest.approx(pair["difference"][name], rel=1e-5, abs=1e-9)
        assert interval["ci_low"] <= interval["mean"] <= interval["ci_high"]

    table = runner.invoke(app, ["compare", "toy-clt", "toy-plt"]).output
    assert "transcoder quality on eval-corpus.txt (4103 tokens" in table
    kl_line = next(line for line in table.splitlines() if line.startswith("kl "))
    assert kl_line.rstrip().endswith("]")  # an interval, not "-"


def test_plot_metrics_writes_a_png(in_demo_home, tmp_path):
    out = tmp_path / "metrics.png"
    result = runner.invoke(app, ["plot", "metrics", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
