"""Feature-dashboard speed and size: corpus tokens/s and bytes per feature, at two shapes.

- ``toy``: the built-in toy model and CLT (3 layers x 512 features), on grammar text
  (training-pair sentences, a stream cut into BOS-led windows of the model's context, 64);
- ``gpt2``: a GPT-2-small-shaped model (12 layers, d 768, vocabulary 50 257) with seeded random
  weights and a random PerLayerTopK transcoder of 16 000 features per layer (k=16), on uniformly
  random token ids (random weights: the text does not matter, only the shapes do).

For each, dashboards of ``--features`` features (``all``, or a number drawn at random with a
fixed seed: a graph's features are a few hundred to a few thousand) are collected over the
corpus, turned into frontend records and written as a feature pack. Prints tokens/s of the
streaming pass, the time to build records, the state's size, and the pack's bytes per feature.

    python benchmarks/dashboards.py                         # both shapes, defaults below
    python benchmarks/dashboards.py --shapes toy --features all
    python benchmarks/dashboards.py --shapes gpt2 --features 2000 --tokens 16384

The GPT-2 transcoder is written once under ``--workdir`` (a 16k PLT is 1.2 GB; a CLT's
encoders, which are all the streaming pass reads, cost the same, its decoders 6.5x more disk).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from tracerflow.dashboards import (
    DashboardConfig,
    collect_dashboards,
    dashboard_records,
    write_feature_pack,
)

# The tests' seeded random models (tests/synthetic.py): run as `python benchmarks/x.py`, the
# repository root is not on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="toy,gpt2", help="comma-separated: toy, gpt2")
    parser.add_argument("--features", default="2000", help="'all' or how many (random, seeded)")
    parser.add_argument("--tokens", type=int, default=8192, help="corpus tokens (gpt2 shape)")
    parser.add_argument("--toy-sentences", type=int, default=4000)
    parser.add_argument("--seq", type=int, default=128, help="sequence length (gpt2 shape)")
    parser.add_argument("--batch", type=int, default=8, help="sequences per batch")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--kind", default="plt", choices=["clt", "plt"], help="gpt2 transcoder")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tf-bench")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args(argv)


def toy_setup(args: argparse.Namespace) -> tuple[Any, torch.Tensor]:
    from tracerflow import toy
    from tracerflow.models import load_replacement_model
    from tracerflow.toy.grammar import sample_sentences
    from tracerflow.transcoders import convert, load_converted

    converted = args.workdir / "toy-clt"
    if not (converted / "_SUCCESS").exists():
        convert(toy.transcoder_dir("clt"), converted, overwrite=True)
    model = load_replacement_model("toy-gpt2", load_converted(converted, "cpu"), "cpu")
    tokenizer = model.tokenizer
    stream: list[int] = []
    for sentence in sample_sentences(args.toy_sentences, held_out=False, seed=11):
        stream += tokenizer(" " + sentence.text)["input_ids"]
    body = model.cfg.n_ctx - 1
    n = len(stream) // body
    windows = torch.tensor(stream[: n * body]).view(n, body)
    bos = torch.full((n, 1), tokenizer.bos_token_id)
    return model, torch.cat([bos, windows], dim=1)


def gpt2_setup(args: argparse.Namespace) -> tuple[Any, torch.Tensor]:
    from tests.synthetic import random_replacement_model

    model = random_replacement_model(
        args.workdir,
        kind=args.kind,
        n_layers=12,
        d_model=768,
        n_heads=12,
        d_features=16000,
        k=16,
        d_vocab=50257,
        through_checkpoint=False,
    )
    generator = torch.Generator().manual_seed(0)
    n = max(1, args.tokens // args.seq)
    tokens = torch.randint(0, 50256, (n, args.seq), generator=generator)
    tokens[:, 0] = 50256  # BOS
    return model, tokens


def chosen_features(model: Any, spec: str) -> list[tuple[int, int]] | None:
    if spec == "all":
        return None
    n_layers, d_transcoder = model.cfg.n_layers, int(model.transcoders.d_transcoder)
    everything = [(layer, index) for layer in range(n_layers) for index in range(d_transcoder)]
    return sorted(random.Random(0).sample(everything, min(int(spec), len(everything))))


def measure(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    model, corpus = toy_setup(args) if shape == "toy" else gpt2_setup(args)
    setup_s = time.perf_counter() - started
    features = chosen_features(model, args.features)
    batches = corpus.split(args.batch)
    # One warm-up batch outside the timing (first-call allocations, lazy weights).
    collect_dashboards(model, batches[:1], features)

    started = time.perf_counter()
    state = collect_dashboards(model, batches, features, config=DashboardConfig())
    stream_s = time.perf_counter() - started
    started = time.perf_counter()
    records = dashboard_records(state, model, f"bench-{shape}")
    records_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        pack = write_feature_pack(
            Path(tmp) / "pack", records, model.cfg.n_layers, int(model.transcoders.d_transcoder)
        )
        sizes = {path.name: path.stat().st_size for path in pack.iterdir()}
    record_bytes = sum(size for name, size in sizes.items() if name.endswith(".bin"))
    n_features = len(state.features)
    return {
        "shape": shape,
        "features": n_features,
        "corpus_tokens": state.n_tokens,
        "sequences": state.n_sequences,
        "seq_len": corpus.shape[1],
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "setup_s": round(setup_s, 1),
        "stream_s": round(stream_s, 2),
        "tokens_per_s": round(state.n_tokens / stream_s, 1),
        "records_s": round(records_s, 2),
        "state_mb": round(state.nbytes() / 2**20, 1),
        "bytes_per_feature": round(record_bytes / n_features),
        "index_bytes": sizes["index.json.gz"],
        "summary_bytes": sizes["summary.json.gz"],
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for shape in args.shapes.split(","):
        result = measure(shape.strip(), args)
        results.append(result)
        print(
            f"{result['shape']:>5}: {result['features']} features, {result['corpus_tokens']} "
            f"tokens in {result['stream_s']} s = {result['tokens_per_s']} tokens/s "
            f"({result['threads']} threads, batch {result['batch']} x {result['seq_len']}); "
            f"records {result['records_s']} s; state {result['state_mb']} MB; "
            f"{result['bytes_per_feature']} B/feature in the pack "
            f"(+ index {result['index_bytes']} B)",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
