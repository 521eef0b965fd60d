"""Memory of the score stage: circuit-tracer's functions against tracerflow/scoring.py, one graph.

    python benchmarks/scoring.py                                   # a 64-token CLT graph's size
    python benchmarks/scoring.py --n-tokens 256 --features 47461 --only tracerflow

The graph is random but shaped like a GPT-2-small attribution graph with every active feature
kept: ``--features`` selected features over 12 layers, 12 x (n_tokens + 1) error nodes,
n_tokens + 1 token nodes, 10 logits (the defaults are the 64-token CLT graph of
docs/performance.md, N = 13 133 nodes; 256 tokens with 47 461 features gives its N = 50 812).
Edges run only from a lower layer to a higher one, as in an attribution graph, so influence
converges; a third of them are zero. It is saved as the attribute stage saves graphs
(safetensors) and scored in a fresh process per run, loaded as the score stage loads it:

- ``circuit-tracer``: what the score stage did before tracerflow/scoring.py: circuit-tracer's
  ``compute_graph_scores``, its ``prune_graph`` for the kept features, a clone of the adjacency
  with the pruned features merged into error, ``compute_graph_scores`` of that;
- ``tracerflow``: the score stage's ``score_graph`` now.

Printed per run: wall seconds, peak RSS (the kernel's VmHWM: the graph file's mapped pages
included, which the kernel can drop and read again) and peak anonymous memory (RssAnon, sampled
every 5 ms: what cannot be dropped) above what the process held after its imports, in GiB, and
the four scores, which must be equal.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

N_LAYERS = 12
N_LOGITS = 10
NODE_THRESHOLD, EDGE_THRESHOLD = 0.8, 0.98


def build_graph(folder: Path, n_tokens: int, n_features: int, seed: int) -> int:
    """Write the random layered graph into ``folder``; return its node count."""
    import torch
    from circuit_tracer.graph import Graph, LogitTarget
    from transformer_lens import HookedTransformerConfig

    from tracerflow.storage.graphs import save_graph

    n_pos = n_tokens + 1
    generator = torch.Generator().manual_seed(seed)
    feature_layer = torch.arange(n_features) * N_LAYERS // n_features
    feature_pos = torch.randint(0, n_pos, (n_features,), generator=generator)
    layer = torch.cat(
        [
            feature_layer,
            torch.arange(N_LAYERS).repeat_interleave(n_pos),
            torch.full((n_pos,), -1),
            torch.full((N_LOGITS,), N_LAYERS),
        ]
    )
    n_nodes = len(layer)
    error_end = n_features + N_LAYERS * n_pos
    adjacency = torch.zeros(n_nodes, n_nodes)
    for start in range(0, n_nodes, 2048):
        rows = adjacency[start : start + 2048]
        rows.normal_(generator=generator).pow_(3)
        rows.mul_(layer[start : start + 2048, None] > layer[None, :])
        rows.mul_(torch.rand(rows.shape, generator=generator) > 1 / 3)
    adjacency[n_features:error_end] = 0  # error nodes have no inputs
    probabilities = torch.rand(N_LOGITS, generator=generator)
    cfg = HookedTransformerConfig(
        n_layers=N_LAYERS,
        d_model=8,
        n_ctx=n_pos,
        d_head=4,
        d_vocab=50257,
        act_fn="relu",
        tokenizer_name="gpt2",
        original_architecture="GPT2LMHeadModel",
    )
    graph = Graph(
        input_string="random",
        input_tokens=torch.arange(n_pos),
        active_features=torch.stack([feature_layer, feature_pos, torch.arange(n_features)], 1),
        adjacency_matrix=adjacency,
        cfg=cfg,
        selected_features=torch.arange(n_features),
        activation_values=torch.ones(n_features),
        logit_targets=[LogitTarget(f"t{i}", i) for i in range(N_LOGITS)],
        logit_probabilities=probabilities / probabilities.sum() * 0.9,
        vocab_size=50257,
        scan="random",
    )
    save_graph(graph, folder)
    return n_nodes


def stock_scores(graph) -> list[float]:  # type: ignore[no-untyped-def]
    from circuit_tracer.graph import compute_graph_scores, prune_graph

    replacement, completeness = compute_graph_scores(graph)
    n_features = len(graph.selected_features)
    keep = prune_graph(graph, NODE_THRESHOLD, EDGE_THRESHOLD).node_mask[:n_features]
    adjacency = graph.adjacency_matrix.clone()
    pruned = (~keep).nonzero().squeeze(1)
    layer_pos = graph.active_features[graph.selected_features[pruned]][:, :2]
    error_nodes = n_features + layer_pos[:, 0] * graph.n_pos + layer_pos[:, 1]
    adjacency.index_add_(1, error_nodes, adjacency[:, pruned])
    adjacency[:, pruned] = 0
    adjacency[pruned, :] = 0
    graph.adjacency_matrix = adjacency
    return [replacement, completeness, *compute_graph_scores(graph)]


def tracerflow_scores(graph) -> list[float]:  # type: ignore[no-untyped-def]
    from tracerflow.tasks.score import score_graph

    scores = score_graph(graph, NODE_THRESHOLD, EDGE_THRESHOLD)
    return [
        scores.replacement_score,
        scores.completeness_score,
        scores.pruned_replacement_score,
        scores.pruned_completeness_score,
    ]


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def worker(kind: str, folder: Path, threads: int) -> None:
    # Both runs' imports come before the baseline, so it holds the same in either. tracerflow's
    # stages import Prefect: its defaults first, as every entry point sets them.
    from tracerflow.settings import configure_prefect_defaults

    configure_prefect_defaults()
    import torch
    from circuit_tracer.graph import compute_graph_scores  # noqa: F401

    from tracerflow.storage.graphs import load_graph
    from tracerflow.tasks.score import score_graph  # noqa: F401

    torch.set_num_threads(threads)
    baseline_anon = status_kb("RssAnon")
    peak_anon = [baseline_anon]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak_anon[0] = max(peak_anon[0], status_kb("RssAnon"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    graph = load_graph(folder)
    scores = (stock_scores if kind == "circuit-tracer" else tracerflow_scores)(graph)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    peak_anon[0] = max(peak_anon[0], status_kb("RssAnon"))
    result = {
        "wall_s": wall,
        "peak_rss_gb": status_kb("VmHWM") / 2**20,
        "peak_anon_gb": (peak_anon[0] - baseline_anon) / 2**20,
        "scores": scores,
    }
    print("RESULT " + json.dumps(result), flush=True)


def run(kind: str, folder: Path, threads: int) -> dict | None:
    command = [sys.executable, __file__, "--worker", kind, "--graph", str(folder)]
    command += ["--threads", str(threads)]
    process = subprocess.run(command, capture_output=True, text=True)
    for line in process.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    tail = (process.stderr or process.stdout).strip().splitlines()[-3:]
    print(f"  {kind}: no result (exit {process.returncode}): {' | '.join(tail)}")
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-tokens", type=int, default=64)
    parser.add_argument("--features", type=int, default=12278, help="selected features")
    kinds = ["circuit-tracer", "tracerflow"]
    parser.add_argument("--only", choices=kinds)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="keep the graph here (default: a temp dir)")
    parser.add_argument(
        "--worker", choices=["circuit-tracer", "tracerflow"], help=argparse.SUPPRESS
    )
    parser.add_argument("--graph", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.graph, args.threads)
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tracerflow-scoring-"))
    folder = workdir / f"graph-{args.n_tokens}-{args.features}-{args.seed}"
    if not (folder / "graph.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        print(f"building the graph in {folder} ...", flush=True)
        build_graph(folder, args.n_tokens, args.features, args.seed)
    n_nodes = args.features + (N_LAYERS + 1) * (args.n_tokens + 1) + N_LOGITS
    matrix_gb = n_nodes**2 * 4 / 2**30
    print(
        f"N = {n_nodes} nodes ({args.n_tokens} tokens, {args.features} features), adjacency "
        f"{matrix_gb:.2f} GiB; {args.threads} torch thread(s); thresholds node "
        f"{NODE_THRESHOLD}, edge {EDGE_THRESHOLD}"
    )
    kinds = [args.only] if args.only else kinds
    results = {kind: run(kind, folder, args.threads) for kind in kinds}
    print("| run | wall s | peak RSS GiB | peak anonymous GiB above imports | / adjacency |")
    print("|---|---|---|---|---|")
    for kind, result in results.items():
        if result:
            print(
                f"| {kind} | {result['wall_s']:.1f} | {result['peak_rss_gb']:.2f} | "
                f"{result['peak_anon_gb']:.2f} | {result['peak_anon_gb'] / matrix_gb:.2f} |"
            )
    for kind, result in results.items():
        if result:
            print(f"{kind} scores (replacement, completeness, pruned both): {result['scores']}")
    stock, ours = results.get("circuit-tracer"), results.get("tracerflow")
    if stock and ours:
        equal = stock["scores"] == ours["scores"]
        print(
            f"peak anonymous memory circuit-tracer / tracerflow: "
            f"x{stock['peak_anon_gb'] / ours['peak_anon_gb']:.2f}; "
            f"wall x{stock['wall_s'] / ours['wall_s']:.2f}; scores equal: {equal}"
        )


if __name__ == "__main__":
    main()
