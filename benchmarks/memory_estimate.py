"""The memory estimate against measured peaks: ``tracerflow.memory.estimate_memory`` beside the
real peak RSS, at three sizes.

1. The real command: ``tracerflow run`` (a fresh interpreter, offline, its own temporary Prefect
   server) on the GPT-2 stand-in of ``tests/hub_cache.py`` (GPT-2 small's shape, the toy's
   421-token vocabulary, random weights, read from a Hub-shaped cache through TransformerLens's
   own loading) with the stand-in CLT (12 x 128 features, PerLayerTopK k 16) as a local
   folder, one prompt. Estimate: the run's own door estimate (``run_memory_needs``). Measured:
   the largest RSS high-water mark among the command and its children (``getrusage``).
2. and 3. Attribution and scoring alone at larger graphs: a fresh process imports what a
   scoring run imports (the flows, hence Prefect, torch, transformer-lens, circuit-tracer),
   builds a seeded random GPT-2-style replacement model (d_model 768, GPT-2's vocabulary) with
   random PerLayerTopK transcoders (``tests/synthetic.py``: built in place from a config, so
   one copy of the weights while it loads), attributes one prompt of exactly N tokens
   (after the BOS) with tracerflow's attribution, saves the graph as the attribute stage does,
   frees it, loads it back and scores it as the score stage does. Measured: the process's RSS
   high-water mark over all of that (Linux ``VmHWM``; attribution resets it, so the mark before
   it is kept too). Estimate: ``estimate_memory`` on the same shapes (k active features per
   layer and token, ``max_n_logits`` logits).

    python benchmarks/memory_estimate.py              # the three sizes (~6-9 minutes on 2 cores)
    python benchmarks/memory_estimate.py --baseline   # the import baseline, measured 3 times

Model and transcoder files are cached under ``--workdir``. ``--json`` writes the rows.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GPT2_VOCAB = 50257
N_CTX = 1024  # tests/synthetic.model_config's context: its positional embedding's rows
MAX_N_LOGITS = 10

# The real command's prompt: sentences of the stand-in's (the toy's) grammar, about 40 tokens.
RUN_PROMPT = (
    "Mary and John went to the store, John gave a drink to Mary. "
    "Then Alice and Bob went to the park, and Bob gave a book to"
)
RUN_NAME = "tracerflow run, GPT-2 stand-in, CLT 12x128"
# name: (kind, n_layers, d_model, n_heads, d_features, k, prompt tokens after BOS,
#        max_feature_nodes, batch_size)
SIZES: dict[str, tuple[str, int, int, int, int, int, int, int | None, int]] = {
    # Few layers and many active features: a large graph (every feature kept) at little cost.
    "CLT 3x16384 d768, k 64, all features": ("clt", 3, 768, 12, 16384, 64, 63, None, 256),
    "GPT-2-shaped PLT 12x8192, 2048 nodes": ("plt", 12, 768, 12, 8192, 16, 95, 2048, 64),
}


def status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def import_run_stack() -> None:
    """What a scoring run's process has imported before it loads a model."""
    import tracerflow.flows.score  # noqa: F401  (Prefect, the stages, DuckDB, torch)

    # What assembling a model imports first (the flow module leaves them to the stages).
    from tracerflow.models import ReplacementModel  # noqa: F401  (circuit-tracer, transformer-lens)


def run_baseline_worker() -> None:
    import_run_stack()
    print("RESULT " + json.dumps({"baseline": status_bytes("VmRSS")}), flush=True)


def run_worker(spec: dict[str, Any], workdir: Path) -> None:
    """One size: build, attribute, save, reload, score; print the peaks as JSON."""
    import_run_stack()
    baseline = status_bytes("VmRSS")
    from benchmarks.attribution import sweep_prompt
    from tests.synthetic import random_replacement_model
    from tracerflow.attribution import attribute
    from tracerflow.storage.graphs import load_graph, save_graph
    from tracerflow.tasks.score import score_graph

    model = random_replacement_model(
        workdir,
        kind=spec["kind"],
        n_layers=spec["n_layers"],
        d_model=spec["d_model"],
        n_heads=spec["n_heads"],
        d_features=spec["d_features"],
        k=spec["k"],
        d_vocab=GPT2_VOCAB,
        through_checkpoint=False,
    )
    prompt = sweep_prompt(model.tokenizer, spec["n_tokens"])
    loaded = status_bytes("VmRSS")
    before_attribution = status_bytes("VmHWM")
    result = attribute(
        prompt,
        model,
        max_feature_nodes=spec["max_feature_nodes"],
        batch_size=spec["batch_size"],
        max_n_logits=MAX_N_LOGITS,
    )
    graph = result.graph
    counts = {
        "n_positions": len(graph.input_tokens),
        "n_active": len(graph.active_features),
        "n_selected": len(graph.selected_features),
        "n_logits": len(graph.logit_targets),
        "attribute_s": round(result.phase_seconds["total"], 1),
    }
    with tempfile.TemporaryDirectory() as folder:
        save_graph(graph, Path(folder))
        del graph, result
        gc.collect()
        score_graph(load_graph(Path(folder)), 0.8, 0.98)
    out = {
        **counts,
        "baseline": baseline,
        "loaded": loaded,
        "peak": max(before_attribution, status_bytes("VmHWM")),
    }
    print("RESULT " + json.dumps(out), flush=True)


def prepare(spec: dict[str, Any], workdir: Path) -> None:
    """Write the random transcoder files (in their own process: writing them is no part of
    the peak measured)."""
    from tests.synthetic import random_converted

    random_converted(
        workdir / f"direct-{name_of(spec)}",
        kind=spec["kind"],
        n_layers=spec["n_layers"],
        d_model=spec["d_model"],
        d_features=spec["d_features"],
        k=spec["k"],
        seed=0,
    )


def name_of(spec: dict[str, Any]) -> str:
    """tests/synthetic.random_replacement_model's folder name for these shapes."""
    return (
        f"{spec['kind']}-L{spec['n_layers']}-d{spec['d_model']}-F{spec['d_features']}"
        f"-k{spec['k']}-s0"
    )


def estimate_of(spec: dict[str, Any]) -> Any:
    from tracerflow.memory import ModelShape, TranscoderShape, estimate_memory

    d_model, n_heads = spec["d_model"], spec["n_heads"]
    model = ModelShape(
        n_layers=spec["n_layers"],
        d_model=d_model,
        n_heads=n_heads,
        d_head=d_model // n_heads,
        d_mlp=4 * d_model,
        d_vocab=GPT2_VOCAB,
        n_positions=N_CTX,
        load_copies=1,  # built in place from a config (random init), not loaded from files
    )
    transcoder = TranscoderShape(
        kind=spec["kind"],
        n_layers=spec["n_layers"],
        d_model=d_model,
        d_features=spec["d_features"],
        k=spec["k"],
    )
    return estimate_memory(
        model,
        transcoder,
        n_tokens=spec["n_tokens"] + 1,  # circuit-tracer prepends BOS
        max_feature_nodes=spec["max_feature_nodes"],
        max_n_logits=MAX_N_LOGITS,
        batch_size=spec["batch_size"],
    )


def run_command_size(args: argparse.Namespace) -> dict[str, Any]:
    """The real command on the Hub-cache stand-in: its door estimate and its measured peak."""
    from tests.hub_cache import CLT_REPO, build_hub_cache

    hf_home = args.workdir / "hf-home"
    if not (hf_home / "hub").is_dir():
        build_hub_cache(hf_home)
    snapshot = next((hf_home / "hub").glob(f"models--{CLT_REPO.replace('/', '--')}/snapshots/*"))
    prompt = RUN_PROMPT
    arguments = ["--transcoder", str(snapshot), "--model", "gpt2", "--device", "cpu"]
    arguments += ["--prompt", prompt]
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    env.pop("PREFECT_API_URL", None)
    with tempfile.TemporaryDirectory() as home:
        env["TRACERFLOW_HOME"] = home
        spec = {"arguments": arguments}
        command = [sys.executable, __file__, "--worker", "run", "--spec", json.dumps(spec)]
        measured = child_output(command, env)
    os.environ["HF_HOME"] = str(hf_home)  # the estimate reads the stand-in's cached config
    os.environ.pop("HF_HUB_CACHE", None)
    from tracerflow.flows.validation import run_memory_needs
    from tracerflow.parameters import run_request

    request = run_request(transcoders=[str(snapshot)], prompts=[prompt], model="gpt2", device="cpu")
    needs = run_memory_needs(str(snapshot), request)
    assert needs is not None
    return {"name": RUN_NAME, **measured, "estimate": needs.estimate}


def run_run_worker(spec: dict[str, Any]) -> None:
    """``tracerflow run`` as a child; the largest peak RSS among it and its children."""
    import resource

    command = [sys.executable, "-m", "tracerflow.cli", "run", *spec["arguments"]]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"tracerflow run failed: {done.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # kB on Linux
    lines = done.stdout.splitlines()
    print("RESULT " + json.dumps({"peak": peak, "report": lines[-8:]}), flush=True)


def child_output(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    raise RuntimeError(f"{command[2:5]} failed ({done.returncode}): {done.stderr[-3000:]}")


def child(args: argparse.Namespace, mode: str, spec: dict[str, Any] | None) -> dict[str, Any]:
    command = [sys.executable, __file__, "--workdir", str(args.workdir), "--worker", mode]
    if spec is not None:
        command += ["--spec", json.dumps(spec)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return child_output(command, env)


def report_row(measured: dict[str, Any], estimate: Any, active: str) -> dict[str, Any]:
    """Print one size's line; its row for --json."""
    ratio = estimate.total_bytes / measured["peak"]
    detail = ""
    if "baseline" in measured:
        detail = (
            f" (imports {measured['baseline'] / 2**20:.0f} MiB, model loaded "
            f"{measured['loaded'] / 2**20:.0f} MiB, attribute {measured['attribute_s']} s)"
        )
    print(
        f"{measured['name']:<42} {estimate.n_tokens:>6} {active:>13} "
        f"{estimate.total_bytes / 2**30:>7.2f}G {measured['peak'] / 2**30:>7.2f}G "
        f"{ratio:>6.2f}  {estimate.peak_stage}{detail}",
        flush=True,
    )
    row = {key: value for key, value in measured.items() if key != "estimate"}
    return row | {"estimate": estimate.total_bytes, "stages": estimate.stage_totals, "ratio": ratio}


def spec_of(name: str) -> dict[str, Any]:
    kind, n_layers, d_model, n_heads, d_features, k, n_tokens, nodes, batch = SIZES[name]
    return {
        "name": name,
        "kind": kind,
        "n_layers": n_layers,
        "d_model": d_model,
        "n_heads": n_heads,
        "d_features": d_features,
        "k": k,
        "n_tokens": n_tokens,
        "max_feature_nodes": nodes,
        "batch_size": batch,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", action="store_true", help="measure the baseline only")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tracerflow-memory-bench"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--no-command", action="store_true", help="skip size 1, the real command (minutes)"
    )
    parser.add_argument("--only", default="", help="only the sizes 2-3 whose name has this")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "baseline":
        run_baseline_worker()
        return
    if args.worker == "prepare":
        prepare(json.loads(args.spec), args.workdir)
        print("RESULT {}", flush=True)
        return
    if args.worker == "measure":
        run_worker(json.loads(args.spec), args.workdir)
        return
    if args.worker == "run":
        run_run_worker(json.loads(args.spec))
        return
    if args.baseline:
        for _ in range(3):
            print(f"baseline {child(args, 'baseline', None)['baseline'] / 2**20:.0f} MiB")
        return

    from tracerflow.memory import BASELINE_BYTES

    rows = []
    print(f"baseline in the estimate: {BASELINE_BYTES / 2**20:.0f} MiB")
    print(
        f"{'size':<42} {'tokens':>6} {'active (est.)':>13} {'estimate':>9} {'measured':>9} "
        f"{'ratio':>6}  estimate's peak stage"
    )
    if not args.no_command:
        command_size = run_command_size(args)
        estimate = command_size["estimate"]
        rows.append(report_row(command_size, estimate, f"~{estimate.n_active}"))
    for name in [name for name in SIZES if args.only in name]:
        spec = spec_of(name)
        child(args, "prepare", spec)
        measured = child(args, "measure", spec)
        estimate = estimate_of(spec)
        active = f"{measured['n_active']}/{estimate.n_active}"
        rows.append(report_row({**spec, **measured}, estimate, active))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    worst = max(abs(row["ratio"] - 1) for row in rows)
    print(f"largest deviation: {worst:.0%} (must be within 25%)")


if __name__ == "__main__":
    main()
