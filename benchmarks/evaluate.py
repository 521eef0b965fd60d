"""Evaluation speed: tokens/s of ``tracerflow.evaluation.evaluate_transcoder``.

  - the toy presets (clt, plt, jumprelu-clt) on their shipped held-out corpus (4 103 tokens);
  - the GPT-2-small shape (12 layers, d_model 768, GPT-2's vocabulary size, 1 024-token windows)
    with seeded random weights and a random PerLayerTopK transcoder of 16 000 features a layer
    (k=16), on ``--tokens`` tokens of text; no download (``tests/synthetic.py``).

Prints one line per setting: tokens, seconds (median of ``--repeats`` for the toy), tokens/s,
peak RSS; at the GPT-2 shape also the time on the 22 prompts of the ``gpt2-16k-nightly`` suite
(the stage's default tokens there); then the toy CLT's metrics. Each evaluation makes three
forward passes (original, replacement, MLPs zeroed) and encodes every layer twice.

``--nightly-share`` also runs the ``toy-nightly`` suite end to end (its flow, in a fresh
TRACERFLOW_HOME, on a temporary Prefect server, nothing cached) and prints the ``evaluate``
stage's share of the flow's wall time: the sum of its task runs' durations (Prefect's records)
over the flow run's.

    python benchmarks/evaluate.py                          # toy + GPT-2 shape (CLT)
    python benchmarks/evaluate.py --gpt2-kinds clt,plt --tokens 4096
    python benchmarks/evaluate.py --gpt2-kinds ""          # toy only
    python benchmarks/evaluate.py --device cuda
    python benchmarks/evaluate.py --toy-kinds "" --gpt2-kinds "" --nightly-share

Random transcoder files are cached under ``--workdir`` (the 16k-feature CLT is 4.4 GB on disk).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

# The tests' seeded random models (tests/synthetic.py): run as `python benchmarks/x.py`, the
# repository root is not on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GPT2_VOCAB = 50257


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy-kinds", default="clt,plt,jumprelu-clt")
    parser.add_argument("--gpt2-kinds", default="clt", help="comma-separated: clt, plt (or none)")
    parser.add_argument("--tokens", type=int, default=2048, help="GPT-2-shape evaluation tokens")
    parser.add_argument("--batch-tokens", type=int, default=1024)
    parser.add_argument("--features", type=int, default=16000)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="toy runs per preset (median)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--nightly-share", action="store_true", help="time the toy-nightly suite")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tracerflow-bench-evaluate"
    )
    return parser.parse_args(argv)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def timed_evaluation(model: Any, corpus: Any, batch_tokens: int) -> tuple[float, Any]:
    from tracerflow.evaluation import evaluate_transcoder

    if model.cfg.device != "cpu":
        torch.cuda.synchronize()
    started = time.perf_counter()
    evaluation = evaluate_transcoder(model, corpus.batches(batch_tokens))
    if model.cfg.device != "cpu":
        torch.cuda.synchronize()
    return time.perf_counter() - started, evaluation.metrics


def report(label: str, n_tokens: int, seconds: float) -> None:
    print(
        f"{label:<34} {n_tokens:>7} tokens {seconds:>8.2f} s {n_tokens / seconds:>9.1f} tokens/s"
        f"   peak RSS {peak_rss_gb():.1f} GB",
        flush=True,
    )


def bench_toy(args: argparse.Namespace) -> Any:
    from tracerflow import toy
    from tracerflow.corpus import TokenCorpus
    from tracerflow.models import load_replacement_model
    from tracerflow.transcoders import convert, load_converted

    shown = None
    for name in filter(None, args.toy_kinds.split(",")):
        converted = convert(toy.transcoder_dir(name), args.workdir / f"toy-{name}", overwrite=True)
        model = load_replacement_model(
            "toy-gpt2", load_converted(converted, args.device), args.device
        )
        corpus = TokenCorpus.from_file(toy.eval_corpus_path(), model.tokenizer, model.cfg.n_ctx)
        runs = [timed_evaluation(model, corpus, args.batch_tokens) for _ in range(args.repeats)]
        metrics = runs[0][1]
        report(f"toy-{name}", metrics.n_tokens, statistics.median(s for s, _ in runs))
        shown = shown or (name, metrics)
    return shown


def gpt2_corpus(model: Any, n_tokens: int) -> Any:
    """Full 1 024-token windows of grammar text (the synthetic tokenizer's few hundred ids)."""
    from tracerflow.corpus import TokenCorpus
    from tracerflow.toy.grammar import eval_corpus_texts

    document = " ".join(eval_corpus_texts())
    repeats = 1 + n_tokens // max(1, len(document) // 8)
    return TokenCorpus.from_texts(
        [document] * repeats, model.tokenizer, model.cfg.n_ctx, max_tokens=n_tokens
    )


def bench_gpt2(args: argparse.Namespace, kind: str) -> None:
    from tests.synthetic import random_replacement_model
    from tracerflow.corpus import TokenCorpus
    from tracerflow.suites import builtin_suites_dir, read_prompts_file

    started = time.perf_counter()
    model = random_replacement_model(
        args.workdir,
        kind=kind,
        n_layers=12,
        d_model=768,
        n_heads=12,
        d_features=args.features,
        k=args.k,
        d_vocab=GPT2_VOCAB,
        device=args.device,
    )
    print(f"  (built the GPT-2-shape {kind} model in {time.perf_counter() - started:.0f} s)")
    corpus = gpt2_corpus(model, args.tokens)
    seconds, metrics = timed_evaluation(model, corpus, args.batch_tokens)
    report(f"gpt2-shape {kind} F={args.features} k={args.k}", metrics.n_tokens, seconds)
    # The stage's default tokens in the nightly suite: its prompts, one window each.
    prompts = TokenCorpus.from_texts(
        read_prompts_file(builtin_suites_dir() / "ioi-prompts.txt"),
        model.tokenizer,
        model.cfg.n_ctx,
    )
    seconds, metrics = timed_evaluation(model, prompts, args.batch_tokens)
    report(f"gpt2-shape {kind}, nightly's 22 prompts", metrics.n_tokens, seconds)


def print_metrics(name: str, metrics: Any) -> None:
    print(f"\ntoy-{name} on the shipped held-out corpus:")
    print("layer      FVU       L0   dead  >1%   >10%")
    for row in metrics.rows():
        layer = "all" if row.layer is None else str(row.layer)
        print(
            f"{layer:<5} {row.fvu:>8.5f} {row.l0:>8.3f} {row.dead_share:>6.3f} "
            f"{row.dense_1pct_share:>5.3f} {row.dense_10pct_share:>5.3f}"
        )
    fidelity = metrics.fidelity
    print(
        f"KL {fidelity.kl:.5f}  top-1 {fidelity.top1_agreement:.4f}  "
        f"CE original/replacement/ablated {fidelity.ce_original:.4f}/"
        f"{fidelity.ce_replacement:.4f}/{fidelity.ce_ablated:.4f}  "
        f"CE recovered {fidelity.ce_loss_recovered:.4f}"
    )


def bench_nightly_share(workdir: Path) -> None:
    """The evaluate stage's share of the toy-nightly suite's flow run, nothing cached."""
    home = Path(tempfile.mkdtemp(prefix="nightly-", dir=workdir))
    os.environ["TRACERFLOW_HOME"] = str(home)
    from tracerflow.settings import configure_prefect_defaults, get_settings

    # This run is an entry point, as the CLI's: Prefect's defaults before Prefect is imported.
    configure_prefect_defaults()
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from tracerflow.flows.temporary_server import prefect_api
    from tracerflow.storage.database import reading

    with prefect_api():
        from tracerflow.flows.suite import suite_flow

        started = time.perf_counter()
        state = suite_flow("toy-nightly", return_state=True)
        wall = time.perf_counter() - started
        if not state.is_completed():
            raise SystemExit(f"toy-nightly did not complete: {state.message}")
        with reading(get_settings().database_path) as con:
            ((flow_run_id,),) = con.execute("SELECT flow_run_id FROM runs").fetchall()
        with get_client(sync_client=True) as client:
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            flow_run = client.read_flow_run(flow_run_id)
    seconds = {"evaluate": 0.0, "attribute": 0.0}
    for run in task_runs:
        stage = run.name.rsplit("-", 1)[0]
        if stage in seconds and run.start_time and run.end_time:
            seconds[stage] += (run.end_time - run.start_time).total_seconds()
    flow_seconds = (flow_run.end_time - flow_run.start_time).total_seconds()
    print(
        f"\ntoy-nightly end to end (fresh home): suite flow {wall:.1f} s, score flow "
        f"{flow_seconds:.1f} s; evaluate {seconds['evaluate']:.1f} s = "
        f"{seconds['evaluate'] / flow_seconds:.1%} of the score flow "
        f"(attribute {seconds['attribute']:.1f} s = {seconds['attribute'] / flow_seconds:.1%})"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
        f"batch_tokens {args.batch_tokens}",
        flush=True,
    )
    shown = bench_toy(args)
    for kind in filter(None, args.gpt2_kinds.split(",")):
        bench_gpt2(args, kind)
    if shown is not None:
        print_metrics(*shown)
    if args.nightly_share:
        bench_nightly_share(args.workdir)


if __name__ == "__main__":
    sys.exit(main())
