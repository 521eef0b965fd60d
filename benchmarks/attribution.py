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
    python benchmarks/attribution.py --kinds clt --stock-batch-sizes 8 --repeats 3
    python benchmarks/attribution.py --device cuda
    python benchmarks/attribution.py --short --threads 1      # then --threads 2: which is faster
    python benchmarks/attribution.py --n-tokens 16,32,64,128 --stock-batch-sizes 8,16 --threads 1 \
        --plot docs/attribution-length.png                   # cost against prompt length

``--n-tokens`` sweeps prompt length: each prompt is exactly N tokens of a fixed English text
(repeated as needed) after the BOS token circuit-tracer prepends, so the model sees N + 1
positions. circuit-tracer runs at a length only while its time, estimated from its previous
length (cost grows about as the square of the positions), stays within ``--stock-budget-s``.

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
import textwrap
import time
from pathlib import Path
from typing import Any

# The tests' seeded random models (tests/synthetic.py): run as `python benchmarks/x.py`, the
# repository root is not on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PHASES = ("precompute", "forward", "inputs", "logits", "features", "package")
GPT2_VOCAB = 50257
N_CTX = 1024  # the synthetic model's context length (synthetic.model_config)
# The sweep's prompts: token ids of this text, repeated and cut to the length asked for.
SWEEP_TEXT = (
    "Mary and John went to the store, John gave a drink to Mary. "
    "Alice and Bob went to the park, Bob gave a book to Alice. "
    "When Tom and Sue went to the office, Sue handed a letter to Tom. "
    "The cat sat on the mat and the dog sat on the log. "
)


def positive_ints(text: str) -> list[int]:
    """``16,32,64`` -> [16, 32, 64]; anything else is an argparse error naming the value."""
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


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
        default="512,8,16",
        help="circuit-tracer batch sizes to run: its API default (512) and its best on this CPU "
        "(8 for a CLT, 16 for a PLT in a 2026-11-30 sweep from 4 to 128)",
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
    parser.add_argument(
        "--n-tokens",
        type=positive_ints,
        default=None,
        help="prompt lengths to sweep, e.g. 16,32,64,128 (default: the notebook's prompt)",
    )
    parser.add_argument(
        "--stock-budget-s",
        type=float,
        default=600.0,
        help="skip circuit-tracer at a length whose estimated time exceeds this (seconds)",
    )
    parser.add_argument(
        "--plot", type=Path, default=None, help="write the sweep's curves to this PNG"
    )
    parser.add_argument(
        "--from-json",
        type=lambda text: [Path(item) for item in text.split(",") if item],
        default=None,
        help="print the tables and --plot from saved --json files (comma-separated); run nothing",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write all results here")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the lengths already in --json (same settings) and measure only the others",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.short:
        args.layers, args.d_model, args.heads, args.features = 4, 256, 4, 4096
    if args.resume and args.json is None:
        parser.error("--resume: needs --json, the file of the run to resume")
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        parser.error(f"--plot: expected a .png path, got {str(args.plot)!r}")
    if args.n_tokens is not None and max(args.n_tokens) >= N_CTX:
        parser.error(f"--n-tokens: at most {N_CTX - 1} (the model's context, BOS included)")
    return args


# ---------------------------------------------------------------- one measurement (child process)


def build_model(args: argparse.Namespace, kind: str) -> Any:
    from tests.synthetic import random_replacement_model

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

    from tests.synthetic import NOTEBOOK_PROMPT
    from tracerflow.attribution import attribute
    from tracerflow.attribution.resources import peak_rss_bytes, reset_peak_rss
    from tracerflow.attribution.stock import run_stock

    spec = json.loads(args.worker)
    if args.threads is not None:
        torch.set_num_threads(args.threads)  # for circuit-tracer and tracerflow alike
    model = build_model(args, spec["kind"])
    prompt: str | torch.Tensor = NOTEBOOK_PROMPT
    if spec["n_tokens"] is not None:
        prompt = sweep_prompt(model.tokenizer, spec["n_tokens"])
    rss_before = current_rss_bytes()
    options = {"max_feature_nodes": args.max_feature_nodes, "batch_size": spec["batch_size"]}
    error = None
    try:
        if spec["path"] == "stock":
            reset_peak_rss()
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            graph, usage = run_stock(prompt, model, **options)
            batch_size = str(spec["batch_size"])
            peak = peak_rss_bytes()
        else:
            result = attribute(prompt, model, block_size=args.block_size, **options)
            graph, usage, peak = result.graph, result.phase_usage, result.peak_rss_bytes
            batch_size = f"{result.batch_size}/{result.block_size}"
    except (RuntimeError, MemoryError) as exc:  # the API default can exhaust memory
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    out: dict[str, Any] = {**spec, "rss_before": rss_before, "error": error}
    if error is None:
        out.update(
            batch_size=batch_size,
            peak_rss=peak,
            peak_device=(
                torch.cuda.max_memory_allocated() if args.device.startswith("cuda") else None
            ),
            n_positions=len(graph.input_tokens),
            n_active=len(graph.active_features),
            n_selected=len(graph.selected_features),
            threads=torch.get_num_threads(),
            usage={name: vars(phase) for name, phase in usage.items()},
        )
    # The attribution's figures first: what follows can need more memory than it did.
    print("RESULT " + json.dumps(out), flush=True)
    if error is not None:
        return
    if spec["save_graph"]:  # only where another run's graph is compared with it
        torch.save(
            {
                "adjacency": graph.adjacency_matrix,
                "active_features": graph.active_features,
                "selected_features": graph.selected_features,
                "logit_targets": [tuple(t) for t in graph.logit_targets],
            },
            spec["graph_path"],
        )
    # Scoring (circuit-tracer's compute_graph_scores, computed by tracerflow/scoring.py) holds one
    # more copy of the dense adjacency: 10.3 GB at 256 tokens. Skip it, saying so, where it
    # cannot fit.
    needed = graph.adjacency_matrix.nbytes
    available = available_memory_bytes()
    if available is not None and needed > available:
        reason = f"skipped: scoring needs {needed / 1e9:.1f} GB more, {available / 1e9:.1f} free"
        print("SCORES " + json.dumps({"scores": None, "scores_note": reason}), flush=True)
        return
    print("SCORES " + json.dumps({"scores": list(graph_scores(graph))}), flush=True)


def graph_scores(graph: Any) -> tuple[float, float]:
    """circuit-tracer's ``compute_graph_scores(graph)`` as tracerflow's score stage computes it
    (``tracerflow.scoring``), in one more N x N buffer: (replacement, completeness)."""
    import torch

    from tracerflow.scoring import GraphLayout, influence_and_scores, logit_weights

    adjacency = graph.adjacency_matrix
    scores = influence_and_scores(
        adjacency, GraphLayout.of(graph), logit_weights(graph), torch.empty_like(adjacency)
    )
    return scores.replacement, scores.completeness


def current_rss_bytes() -> int | None:
    """The process's resident memory now (Linux's ``VmRSS``), else None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024  # the kernel reports kB
    except OSError:
        pass
    return None


def available_memory_bytes() -> int | None:
    """The kernel's MemAvailable (Linux), else None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def sweep_prompt(tokenizer: Any, n_tokens: int) -> Any:
    """Exactly ``n_tokens`` token ids [n_tokens] of ``SWEEP_TEXT``, repeated as needed."""
    import torch

    ids = tokenizer(SWEEP_TEXT, add_special_tokens=False).input_ids
    repeats = -(-n_tokens // len(ids))
    return torch.tensor((ids * repeats)[:n_tokens])


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
    scores = [line for line in proc.stdout.splitlines() if line.startswith("SCORES ")]
    if scores:
        result.update(json.loads(scores[-1][len("SCORES ") :]))
    elif result.get("error") is None:
        result.update(scores=None, scores_note=f"scoring failed: exit {proc.returncode}")
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
        if result.get("skipped"):
            print(f"| {label:<24} | {result['batch_size']!s:>7} | {result['skipped']}")
            continue
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
        if result.get("error") or result.get("skipped"):
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
        if result is ours or result.get("error") or result.get("skipped"):
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
    scores = (
        f"({ours['scores'][0]:.6f}, {ours['scores'][1]:.6f})"
        if ours.get("scores")
        else ours.get("scores_note", "-")
    )
    print(
        f"{kind}: {ours['n_active']} active features, {ours['n_selected']} selected; scores "
        f"(replacement, completeness) = {scores}"
    )


def skip_reason(
    previous: dict[str, Any] | None, n_tokens: int | None, budget_s: float
) -> str | None:
    """Why circuit-tracer does not run at this length, or None. ``previous`` is its last run
    at a shorter length (measured or failed): from a measured one its wall time here is
    estimated, its cost growing about as the square of the positions (BOS included)."""
    if previous is None or n_tokens is None:
        return None
    if previous.get("error"):
        return f"skipped (failed at {previous['n_tokens']} tokens)"
    scale = (n_tokens + 1) / (previous["n_tokens"] + 1)
    estimate = previous["usage"]["total"]["wall_s"] * scale**2
    if estimate > budget_s:
        return f"skipped (estimated {estimate:.0f} s > budget {budget_s:.0f} s)"
    return None


def measure_length(
    args: argparse.Namespace,
    argv: list[str],
    kind: str,
    n_tokens: int | None,
    previous_stock: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """Every configuration at one prompt length, medians over ``--repeats`` alternating rounds;
    circuit-tracer's runs are skipped where ``--stock-budget-s`` says so."""
    stock_sizes = [int(b) for b in args.stock_batch_sizes.split(",") if b]
    configs = [("stock", b, f"circuit-tracer b={b}") for b in stock_sizes]
    configs.append(("fast", args.batch_size, "tracerflow"))
    skipped = {
        label: reason
        for path, _, label in configs
        if path == "stock"
        and (reason := skip_reason(previous_stock.get(label), n_tokens, args.stock_budget_s))
    }
    to_run = [config for config in configs if config[2] not in skipped]
    runs: dict[str, list[dict[str, Any]]] = {label: [] for _, _, label in to_run}
    length = "prompt" if n_tokens is None else f"{n_tokens}tok"
    for round_index in range(args.repeats):
        # Alternate the order every round so slow drift on a shared machine hits all runs.
        ordered = to_run if round_index % 2 == 0 else to_run[::-1]
        for path, batch_size, label in ordered:
            graph_name = f"graph-{kind}-{length}-{path}-{batch_size}-{round_index}.pt"
            spec = {
                "kind": kind,
                "path": path,
                "batch_size": batch_size,
                "label": label,
                "n_tokens": n_tokens,
                "graph_path": str(args.workdir / graph_name),
                # Kept only where circuit-tracer's graph is compared with tracerflow's.
                "save_graph": any(config[0] == "stock" for config in to_run),
            }
            runs[label].append(measure(args, argv, spec))
    results = []
    for path, batch_size, label in configs:
        if label in skipped:
            results.append(
                {"label": label, "path": path, "batch_size": batch_size, "skipped": skipped[label]}
            )
        else:
            results.append(median_run(runs[label]))
        results[-1]["n_tokens"] = n_tokens
    ours = results[-1]
    for result in results[:-1]:
        if not result.get("error") and not result.get("skipped") and not ours.get("error"):
            result["graph_check"] = same_graph(result["graph_path"], ours["graph_path"])
    return results


def print_sweep(kind: str, lengths: list[dict[str, Any]]) -> None:
    """One line per length: the fastest circuit-tracer run that ran against tracerflow.

    Wall time is what a user waits; CPU time (user + system) is what the run itself cost, and on
    a machine shared with other work it moves less with their load than wall time does."""
    print(f"\n## {kind.upper()}: cost against prompt length\n")
    print(
        "| n_tokens | positions | active features | circuit-tracer wall s | tracerflow wall s "
        "| ratio (wall) | circuit-tracer CPU s | tracerflow CPU s | ratio (CPU) "
        "| circuit-tracer peak RSS GB | tracerflow peak RSS GB | graph |"
    )
    print("|" + "---|" * 12)
    for length in lengths:
        ours, stock = sweep_pair(length["results"])
        if ours.get("error"):
            print(f"| {length['n_tokens']} | | | | failed: {ours['error']} |" + " |" * 7)
            continue
        ours_wall, ours_cpu = wall_and_cpu(ours)
        cells = [str(length["n_tokens"]), str(ours["n_positions"]), str(ours["n_active"])]
        if stock.get("skipped") or stock.get("error"):
            reason = stock.get("skipped") or f"failed: {stock['error']}"
            cells += [reason, f"{ours_wall:.1f}", "-", "-", f"{ours_cpu:.1f}", "-"]
            cells += ["-", gb(ours["peak_rss"]), "-"]
        else:
            stock_wall, stock_cpu = wall_and_cpu(stock)
            cells += [
                f"{stock_wall:.1f} (b={stock['batch_size']})",
                f"{ours_wall:.1f}",
                f"×{stock_wall / ours_wall:.1f}",
                f"{stock_cpu:.1f}",
                f"{ours_cpu:.1f}",
                f"×{stock_cpu / ours_cpu:.1f}",
                gb(stock["peak_rss"]),
                gb(ours["peak_rss"]),
                stock.get("graph_check", "-"),
            ]
        print("| " + " | ".join(cells) + " |")


def wall_and_cpu(result: dict[str, Any]) -> tuple[float, float]:
    """The attribution call's wall seconds and CPU seconds (user + system)."""
    total = result["usage"]["total"]
    return total["wall_s"], total["user_s"] + total["system_s"]


def sweep_pair(results: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """tracerflow's result and the fastest circuit-tracer run (else the first, skipped or not)."""
    ours = next(r for r in results if r["path"] == "fast")
    stock_runs = [r for r in results if r["path"] == "stock"]
    ran = [r for r in stock_runs if not r.get("skipped") and not r.get("error")]
    if ran:
        return ours, min(ran, key=lambda r: r["usage"]["total"]["wall_s"])
    return ours, stock_runs[0] if stock_runs else {"skipped": "not asked for"}


def plot_sweep(path: Path, sweeps: dict[str, list[dict[str, Any]]], title: str) -> None:
    """Wall time and CPU time (log-log) and peak RSS against prompt length, per kind, for both
    runs. CPU time is the steadier curve on a machine shared with other work."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, (wall_axes, cpu_axes, rss_axes) = plt.subplots(1, 3, figsize=(15, 4.8))
    colors = {"clt": "tab:blue", "plt": "tab:orange"}
    for kind, lengths in sweeps.items():
        for which, style in (("circuit-tracer", "--o"), ("tracerflow", "-s")):
            points = []
            for length in lengths:
                ours, stock = sweep_pair(length["results"])
                run = ours if which == "tracerflow" else stock
                if run.get("usage"):
                    points.append((length["n_tokens"], *wall_and_cpu(run), run["peak_rss"]))
            if not points:
                continue
            n_tokens, walls, cpus, peaks = zip(*points, strict=True)
            label = f"{kind.upper()} {which}"
            color = colors.get(kind)
            wall_axes.plot(n_tokens, walls, style, color=color, label=label)
            cpu_axes.plot(n_tokens, cpus, style, color=color, label=label)
            rss_axes.plot(n_tokens, [peak / 1e9 for peak in peaks], style, color=color, label=label)
    rss_axes.axhline(24, color="grey", linewidth=0.8, linestyle=":")
    rss_axes.text(0.02, 24.4, "24 GB: this machine's memory", color="grey", fontsize=8,
                  transform=rss_axes.get_yaxis_transform())  # fmt: skip
    lengths_swept = sorted(
        {length["n_tokens"] for lengths in sweeps.values() for length in lengths}
    )
    for axes, ylabel in (
        (wall_axes, "attribution wall time (s)"),
        (cpu_axes, "attribution CPU time, user + system (s)"),
        (rss_axes, "peak RSS (GB)"),
    ):
        axes.set_xscale("log", base=2)
        axes.set_xticks(lengths_swept, [str(n) for n in lengths_swept])
        axes.set_xlabel("prompt tokens (after BOS)")
        axes.set_ylabel(ylabel)
        axes.grid(True, which="both", linewidth=0.3)
        axes.legend(fontsize=8)
    wall_axes.set_yscale("log")
    cpu_axes.set_yscale("log")
    figure.suptitle(textwrap.fill(title, 120), fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    print(f"\nplot: {path}")


def describe(args: argparse.Namespace, torch_version: str) -> str:
    return (
        f"model: {args.layers} layers, d_model {args.d_model}, {args.heads} heads, vocab "
        f"{args.vocab}; transcoders: {args.features} features/layer, PerLayerTopK k={args.k}; "
        f"max_feature_nodes={args.max_feature_nodes}; device {args.device}, "
        f"{args.threads or 'default'} threads; torch {torch_version}"
    )


def report(saved: dict[str, Any], plot: Path | None) -> None:
    """The sweep tables (when lengths were swept) and the plot, from results in memory or JSON."""
    sweeps = {
        kind: lengths
        for kind, lengths in saved["kinds"].items()
        if any(length["n_tokens"] is not None for length in lengths)
    }
    for kind, lengths in sweeps.items():
        print_sweep(kind, lengths)
    if plot is not None:
        if not sweeps:
            raise SystemExit("error: --plot needs a --n-tokens sweep")
        plot_sweep(plot, sweeps, saved["settings"])


def resumed(args: argparse.Namespace, settings: str) -> dict[str, Any]:
    """The results saved in ``--json`` by a run with the same settings (none if no file yet)."""
    if not args.json.is_file():
        return {"settings": settings, "kinds": {}}
    saved = json.loads(args.json.read_text())
    if saved.get("settings") != settings:
        raise SystemExit(
            f"error: --resume: {args.json} was written with other settings: {saved.get('settings')}"
        )
    return saved


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return
    if args.from_json:
        saved: dict[str, Any] = {"settings": "", "kinds": {}}
        for json_path in args.from_json:
            loaded = json.loads(json_path.read_text())
            saved["settings"] = saved["settings"] or loaded["settings"]
            saved["kinds"].update(loaded["kinds"])
        report(saved, args.plot)
        return
    import torch

    args.workdir.mkdir(parents=True, exist_ok=True)
    settings = describe(args, torch.__version__)
    print(f"# {settings}")
    saved = resumed(args, settings) if args.resume else {"settings": settings, "kinds": {}}
    for kind in [k for k in args.kinds.split(",") if k]:
        build_model(args, kind)  # write the transcoder files once, outside the measurements
        done = saved["kinds"].setdefault(kind, [])
        # circuit-tracer's last run (measured or failed) per configuration: what skips it later.
        previous_stock: dict[str, dict[str, Any]] = {}
        for length in done:
            for result in length["results"]:
                if result["path"] == "stock" and not result.get("skipped"):
                    previous_stock[result["label"]] = result
        for n_tokens in args.n_tokens or [None]:
            if any(length["n_tokens"] == n_tokens for length in done):
                print(f"\n## {kind.upper()}, {n_tokens} tokens: kept from {args.json}")
                continue
            results = measure_length(args, argv, kind, n_tokens, previous_stock)
            for result in results:
                if result["path"] == "stock" and not result.get("skipped"):
                    previous_stock[result["label"]] = result
            length = "the notebook's prompt" if n_tokens is None else f"{n_tokens} tokens"
            print(f"\n## {kind.upper()}, {length}\n", flush=True)
            print_table(kind, results, args)
            done.append({"n_tokens": n_tokens, "results": results})
            if args.json:  # after every length, so a long sweep cut short keeps what it measured
                args.json.write_text(json.dumps(saved, indent=2))
    report(saved, args.plot)


if __name__ == "__main__":
    main()
