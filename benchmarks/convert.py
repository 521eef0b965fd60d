"""Conversion cost at a realistic shape: time and peak memory next to the checkpoint's size.

    python benchmarks/convert.py                     # CLT, 12 layers, d 768, 4096 features
    python benchmarks/convert.py --features 16000    # the default preset's shape (~4.4 GB)

The checkpoint is generated first (seeded random weights); the conversion then runs in a fresh
child process so that its peak RSS is the conversion's alone. The target is a peak RSS well below
the checkpoint's size: conversion streams one layer at a time and never holds two copies.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from tracerflow.transcoders.synthetic import (
    checkpoint_config,
    random_tensors,
    write_checkpoint,
)

# Peak RSS counts the memory-mapped checkpoint pages the kernel can drop at will; the anonymous
# part (sampled from /proc every 5 ms) is what conversion really holds.
CHILD = """
import sys, threading, time, resource, torch
from tracerflow.transcoders import convert
peak_anon = 0
def sample():
    global peak_anon
    while True:
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                peak_anon = max(peak_anon, int(line.split()[1]) * 1024)
        time.sleep(0.005)
threading.Thread(target=sample, daemon=True).start()
start = time.perf_counter()
convert(sys.argv[1], sys.argv[2], dtype=torch.float32)
seconds = time.perf_counter() - start
print(seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, peak_anon)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["clt", "plt"], default="clt")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--features", type=int, default=4096)
    parser.add_argument("--unfolded", action="store_true", help="write standardizers to fold")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tracerflow-bench-") as tmp:
        checkpoint = Path(tmp) / "checkpoint"
        standardizer = "dimensionwise" if args.unfolded else None
        start = time.perf_counter()
        tensors = random_tensors(
            kind=args.kind,
            n_layers=args.layers,
            d_model=args.d_model,
            d_features=args.features,
            nonlinearity="PerLayerTopK",
            standardizer=standardizer,
        )
        largest = max(t.numel() * t.element_size() for t in tensors.values())
        config = checkpoint_config(
            kind=args.kind,
            n_layers=args.layers,
            d_model=args.d_model,
            d_features=args.features,
            nonlinearity="PerLayerTopK",
            nonlinearity_args={"k": 16},
            standardizer=standardizer,
            is_folded=not args.unfolded,
        )
        write_checkpoint(checkpoint, config, tensors)
        del tensors
        size = (checkpoint / "checkpoint.safetensors").stat().st_size
        print(f"generated in {time.perf_counter() - start:.1f} s")

        result = subprocess.run(
            [sys.executable, "-c", CHILD, str(checkpoint), str(Path(tmp) / "converted")],
            check=True,
            capture_output=True,
            text=True,
        )
        seconds, peak_rss, peak_anon = (float(v) for v in result.stdout.split())

    gib = 1024**3
    print(
        f"shape            {args.kind} {args.layers} x {args.features} features, d {args.d_model}"
        f"{' (unfolded)' if args.unfolded else ''}"
    )
    print(f"checkpoint size  {size / gib:.2f} GiB")
    print(f"largest tensor   {largest / gib:.2f} GiB")
    print(f"convert time     {seconds:.1f} s")
    print(f"peak RSS         {peak_rss / gib:.2f} GiB  ({peak_rss / size:.2f} x checkpoint size)")
    print(f"peak anonymous   {peak_anon / gib:.2f} GiB  ({peak_anon / size:.2f} x checkpoint size)")
    print(f"torch threads    {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
