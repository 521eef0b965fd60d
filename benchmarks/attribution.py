"""Attribution speed: bare ``circuit_tracer.attribute`` against tracerflow's, in one run.

Builds a GPT-2-small-shaped model (12 layers, d_model 768, GPT-2's vocabulary size) with seeded
random weights and seeded random PerLayerTopK CLT/PLT transcoders, and attributes the reference
notebook's prompt with:
  - circuit-tracer at its API default (batch_size 512) and at its best batch size on this CPU,
  - tracerflow's attribution stage (``tracerflow.attribution.attribute``, its default batch).
Every measurement runs in a fresh process (so peak RSS and page faults are its own), in the
order given by ``--repeats`` rounds that alternate the runs, and reports medians. It prints per
phase wall time, then user/system CPU time, minor page faults and peak RSS, and the ratios; and
checks that every run produced the same graph.

    python benchmarks/attribution.py                       # the notebook's shape, CLT and PLT
    python benchmarks/attribution.py --short               # 4 layers, d 256, 4096 features
    python benchmarks/attribution.py --kinds clt --stock-batch-sizes 64 --repeats 3
    python benchmarks/attribution.py --device cuda
    python benchmarks/attribution.py --short --threads 1      # then --threads 2: which is faster

Every run uses one torch thread count (``--threads``, default torch's for this machine): which
count is fastest depends on the machine and its load, so it is measured here, side by side, and
then set (``TRACERFLOW_THREADS`` / ``--threads``); a scoring run never picks it by timing.

Transcoder files are cached under ``--workdir`` (a 16k-feature CLT is 4.4 GB on disk).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PHASES = ("precompute", "forward", "inputs", "logits", "features", "package")
GPT2_VOCAB = 50257


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="clt,plt", help="comma-separated: clt, plt")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=GPT2_VOCAB)
    parser.add_argument("--features", type=int, default=16000, help="transcoder features/layer")
    parser.add_argument("--k", type=int, default=16, help="PerLayerTopK k")
    parser.add_argument("--max-feature-nodes", type=int, default=None)
    parser.add_argument(
        "--stock-batch-sizes",
        default="512,64",
        help="circuit-tracer batch sizes to run: its default (512) and its best on this CPU",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="tracerflow's batch_size (default: 512)"
    )
    parser.add_argument(
        "--block-size",
        type=int,
        default=None,
        help="tracerflow's rows per backward (default: auto)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's default)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="alternating rounds; medians")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--short", action="store_true", help="4 layers, d_model 256, 4096 features: ~1 minute"
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tracerflow-bench"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write all results here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.short:
        args.layers, args.d_model, args.heads, args.features = 4, 256, 4, 4096
    return args


# ---------------------------------------------------------------- one measurement (child process)


def build_model(args: argparse.Namespace, kind: str) -> Any:
    from tracerflow.attribution.synthetic import random_replacement_model

    return random_replacement_model(
        args.workdir,
        kind=kind,
        n_layers=args.layers,
        d_model=args.d_model,
        n_heads=args.heads,
        d_features=args.features,
        k=args.k,
        d_vocab=args.vocab,
        seed=args.seed,
        device=args.device,
        through_checkpoint=False,
    )


def run_worker(args: argparse.Namespace) -> None:
    """Build the model, attribute once, write the graph's comparable parts, print usage JSON."""
    import torch
    from circuit_tracer.graph import compute_graph_scores

    from tracerflow.attribution import attribute
    from tracerflow.attribution.resources import current_rss_bytes, peak_rss_bytes, reset_peak_rss
    from tracerflow.attribution.stock import run_stock
    from tracerflow.attribution.synthetic import NOTEBOOK_PROMPT

    spec = json.loads(args.worker)
    if args.threads is not None:
        torch.set_num_threads(args.threads)  # for circuit-tracer and tracerflow alike
    model = build_model(args, spec["kind"])
    rss_before = current_rss_bytes()
    options = {"max_feature_nodes": args.max_feature_nodes, "batch_size": spec["batch_size"]}
    error = None
    try:
        if spec["path"] == "stock":
            reset_peak_rss()
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            graph, usage = run_stock(NOTEBOOK_PROMPT, model, **options)
            batch_size = str(spec["batch_size"])
            peak = peak_rss_bytes()
        else:
            result = attribute(NOTEBOOK_PROMPT, model, block_size=args.block_size, **options)
            graph, usage, peak = result.graph, result.phase_usage, result.peak_rss_bytes
            batch_size = f"{result.batch_size}/{result.block_size}"
    except (RuntimeError, MemoryError) as exc:  # the API default can exhaust memory
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    out: dict[str, Any] = {**spec, "rss_before": rss_before, "error": error}
    if error is None:
        replacement, completeness = compute_graph_scores(graph)
        torch.save(
            {
                "adjacency": graph.adjacency_matrix,
                "active_features": graph.active_features,
                "selected_features": graph.selected_features,
                "logit_targets": [tuple(t) for t in graph.logit_targets],
            },
            spec["graph_path"],
        )
        out.update(
            batch_size=batch_size,
            peak_rss=peak,
            peak_device=(
                torch.cuda.max_memory_allocated() if args.device.startswith("cuda") else None
            ),
            n_active=len(graph.active_features),
            n_selected=len(graph.selected_features),
            scores=[replacement, completeness],
            threads=torch.get_num_threads(),
            usage={name: vars(phase) for name, phase in usage.items()},
        )
    print("RESULT " + json.dumps(out), flush=True)


# ---------------------------------------------------------------- orchestration (parent process)


def measure(args: argparse.Namespace, argv: list[str], spec: dict[str, Any]) -> dict[str, Any]:
    command = [sys.executable, __file__, *argv, "--worker", json.dumps(spec)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        reason = f"exit {proc.returncode}" + (
            " (killed: out of memory?)" if proc.returncode < 0 else ""
        )
        tail = proc.stderr.strip().splitlines()[-3:]
        return {**spec, "error": f"{reason}: {' | '.join(tail)}"}
    result = json.loads(lines[-1][len("RESULT ") :])
    result["process_s"] = time.perf_counter() - started
    return result


def same_graph(reference_path: str, other_path: str) -> str:
    import torch

    ref, other = torch.load(reference_path), torch.load(other_path)
    checks = []
    for key in ("active_features", "selected_features"):
        checks.append(f"{key.split('_')[0]} {'==' if torch.equal(ref[key], other[key]) else '!='}")
    checks.append(f"logits {'==' if ref['logit_targets'] == other['logit_targets'] else '!='}")
    if ref["adjacency"].shape != other["adjacency"].shape:
        return ", ".join(checks) + ", adjacency shapes differ"
    rel = (ref["adjacency"] - other["adjacency"]).abs().max() / ref["adjacency"].abs().max()
    return ", ".join(checks) + f", adjacency max diff {rel.item():.1e} of max"


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-field medians over repeated runs of one configuration."""
    ok = [run for run in runs if run.get("error") is None]
    if not ok:
        return runs[0]
    merged = dict(ok[0])
    merged["usage"] = {
        phase: {
            field: statistics.median(run["usage"][phase][field] for run in ok)
            for field in ok[0]["usage"][phase]
        }
        for phase in ok[0]["usage"]
    }
    merged["peak_rss"] = statistics.median(run["peak_rss"] or 0 for run in ok)
    merged["n_runs"] = len(ok)
    return merged


def gb(n_bytes: float | None) -> str:
    return "-" if not n_bytes else f"{n_bytes / 1e9:.2f}"


def print_table(kind: str, results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    header = (
        f"| {'run':<24} | {'batch':>7} | "
        + " | ".join(f"{p:>10}" for p in PHASES)
        + " | total s | user s | sys s | minflt | peak RSS GB |"
    )
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for result in results:
        label = result["label"]
        if result.get("error"):
            print(f"| {label:<24} | {result['batch_size']!s:>7} | failed: {result['error']}")
            continue
        usage = result["usage"]
        cells = [f"{usage[p]['wall_s']:>10.2f}" if p in usage else f"{'-':>10}" for p in PHASES]
        total = usage["total"]
        print(
            f"| {label:<24} | {result['batch_size']!s:>7} | "
            + " | ".join(cells)
            + f" | {total['wall_s']:>7.2f} | {total['user_s']:>6.1f} | {total['system_s']:>5.1f}"
            + f" | {total['minor_faults']:>6} | {gb(result['peak_rss']):>11} |"
        )
    print()
    print(
        f"| {'run: user s / sys s / minflt':<30} | " + " | ".join(f"{p:>19}" for p in PHASES) + " |"
    )
    print("|" + "-" * 32 + ("|" + "-" * 21) * len(PHASES) + "|")
    for result in results:
        if result.get("error"):
            continue
        usage = result["usage"]
        cells = [
            f"{usage[p]['user_s']:>5.1f}/{usage[p]['system_s']:>5.1f}/{usage[p]['minor_faults']:>7}"
            if p in usage
            else f"{'-':>19}"
            for p in PHASES
        ]
        print(f"| {result['label']:<30} | " + " | ".join(cells) + " |")
    ours = next((r for r in results if r["path"] == "fast" and not r.get("error")), None)
    if ours is None:
        return
    print()
    for result in results:
        if result is ours or result.get("error"):
            continue
        wall = result["usage"]["total"]["wall_s"] / ours["usage"]["total"]["wall_s"]
        feats = result["usage"]["features"]["wall_s"] / max(
            ours["usage"]["features"]["wall_s"], 1e-9
        )
        rss = (result["peak_rss"] or 0) / max(ours["peak_rss"] or 1, 1)
        print(
            f"{result['label']} / tracerflow: wall x{wall:.1f} (phase 4 x{feats:.1f}), "
            f"peak RSS x{rss:.2f}; graph: {result['graph_check']}"
        )
    print(
        f"tracerflow: batch_size/block_size {ours['batch_size']}; "
        f"{ours.get('threads')} torch threads"
    )
    print(
        f"{kind}: {ours['n_active']} active features, {ours['n_selected']} selected; scores "
        f"(replacement, completeness) = ({ours['scores'][0]:.6f}, {ours['scores'][1]:.6f})"
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return
    import torch

    args.workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"# model: {args.layers} layers, d_model {args.d_model}, {args.heads} heads, vocab "
        f"{args.vocab}; transcoders: {args.features} features/layer, PerLayerTopK k={args.k}; "
        f"max_feature_nodes={args.max_feature_nodes}; device {args.device}, "
        f"{args.threads or torch.get_num_threads()} threads; torch {torch.__version__}"
    )
    stock_sizes = [int(b) for b in args.stock_batch_sizes.split(",") if b]
    all_results: dict[str, list[dict[str, Any]]] = {}
    for kind in [k for k in args.kinds.split(",") if k]:
        build_model(args, kind)  # write the transcoder files once, outside the measurements
        configs = [("stock", b, f"circuit-tracer b={b}") for b in stock_sizes]
        configs.append(("fast", args.batch_size, "tracerflow"))
        runs: dict[str, list[dict[str, Any]]] = {label: [] for _, _, label in configs}
        for round_index in range(args.repeats):
            # Alternate the order every round so slow drift on a shared machine hits all runs.
            ordered = configs if round_index % 2 == 0 else configs[::-1]
            for path, batch_size, label in ordered:
                graph_path = str(
                    args.workdir / f"graph-{kind}-{path}-{batch_size}-{round_index}.pt"
                )
                spec = {
                    "kind": kind,
                    "path": path,
                    "batch_size": batch_size,
                    "label": label,
                    "graph_path": graph_path,
                }
                runs[label].append(measure(args, argv, spec))
        results = [median_run(runs[label]) for _, _, label in configs]
        ours = results[-1]
        for result in results[:-1]:
            if not result.get("error") and not ours.get("error"):
                result["graph_check"] = same_graph(result["graph_path"], ours["graph_path"])
        print(f"\n## {kind.upper()}\n")
        print_table(kind, results, args)
        all_results[kind] = results
    if args.json:
        args.json.write_text(json.dumps(all_results, indent=2))


if __name__ == "__main__":
    main()
