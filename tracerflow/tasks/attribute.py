"""Stage 4, attribute: the attribution graph of one prompt (``tracerflow.storage.graphs``).

Keyed by (model identity, converted transcoder, prompt, attribution parameters, dtype, device,
torch's thread count, and the versions of the code that computes it). Next to the graph goes
``attribution.json``: the batch size and thread count used, seconds per phase and peak memory.
The thread count is a setting of the run, never chosen by timing: at the same count the same
inputs give the same graph, bit for bit, so it is part of the key and of every score row.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from prefect.logging import get_run_logger

from tracerflow.errors import AttributionError
from tracerflow.machine import torch_version
from tracerflow.parameters import AttributionParams
from tracerflow.storage.artifacts import ArtifactStore, stage_key
from tracerflow.storage.graphs import TENSORS_FILE, save_graph
from tracerflow.tasks.assemble import MODEL_LOCK, assembled_model
from tracerflow.tasks.progress import ProgressArtifact
from tracerflow.tasks.results import (
    Attribution,
    AttributionStats,
    ConvertedTranscoder,
    ModelSpec,
    file_text,
)
from tracerflow.tasks.stage import ChunkResults, chunk_task, for_each_prompt

# 4: the graph in safetensors + JSON, no longer a pickled graph.pt. 5: a block's top layer runs
# W_V once per row (the adjacency moves in the last bits).
CODE_VERSION = "5"
STATS_FILE = "attribution.json"


def code_versions() -> dict[str, str]:
    """The versions that determine an attribution graph, part of its key and of every row."""
    return dict(_loaded_code_versions())


@functools.cache
def _loaded_code_versions() -> dict[str, str]:
    # Once per process: reading a distribution's metadata costs milliseconds, paid per prompt,
    # and the code this process runs is the code it loaded.
    import tracerflow

    return {
        "tracerflow": tracerflow.__version__,
        "attribute_stage": CODE_VERSION,
        "circuit_tracer": version("circuit-tracer"),
        "torch": torch_version(),
    }


def attribute_key(
    model: ModelSpec,
    converted: ConvertedTranscoder,
    prompt: str,
    params: AttributionParams,
    threads: int,
    fast_path_on_cuda: bool = False,
) -> str:
    # On CUDA which path runs is a setting (circuit-tracer's unless opted in), and the two round
    # differently: part of the key there. On CPU the path is fixed, and keys stay as they were.
    on_cuda = {"fast_path_on_cuda": fast_path_on_cuda} if model.device.startswith("cuda") else {}
    return stage_key(
        "attribute",
        CODE_VERSION,
        model=model.identity,
        transcoder=converted.key,
        prompt=prompt,
        params=params.model_dump(),
        dtype=model.dtype,
        device=model.device,
        threads=threads,
        versions=code_versions(),
        **on_cuda,
    )


def attribute_prompt(
    prompt: str,
    model: ModelSpec,
    converted: ConvertedTranscoder,
    params: AttributionParams,
    threads: int,
    store: ArtifactStore,
    progress: Callable[[int, int], None] | None = None,
    fast_path_on_cuda: bool = False,
) -> Attribution:
    """Attribute one prompt at ``threads`` intra-op threads unless the store has its graph;
    return the graph's folder and stats."""
    key = attribute_key(model, converted, prompt, params, threads, fast_path_on_cuda)

    def write(out_dir: Path) -> None:
        replacement_model = assembled_model(model.name, converted.path, model.dtype, model.device)
        check_prompt(prompt, replacement_model, model.name)
        with MODEL_LOCK:
            stats = run_attribution(
                prompt,
                replacement_model,
                params,
                threads,
                out_dir,
                model.device,
                progress,
                fast_path_on_cuda,
            )
        (out_dir / STATS_FILE).write_text(file_text(stats))

    folder, cached = store.get_or_compute("attribute", key, write)
    return Attribution(
        key=key,
        graph_path=str(folder / TENSORS_FILE),
        stats=AttributionStats.model_validate_json((folder / STATS_FILE).read_text()),
        cached=cached,
    )


def check_prompt(prompt: str, replacement_model: Any, model_name: str) -> None:
    """Fail before attribution with a message naming the prompt, not deep inside a dependency."""
    if not prompt.strip():
        raise AttributionError("the prompt is empty")
    n_tokens = len(replacement_model.to_tokens(prompt, prepend_bos=True, truncate=False)[0])
    n_ctx = replacement_model.cfg.n_ctx
    if n_tokens > n_ctx:
        raise AttributionError(
            f"prompt {prompt[:40]!r}... has {n_tokens} tokens; {model_name} takes at most {n_ctx}"
        )


def run_attribution(
    prompt: str,
    replacement_model: Any,
    params: AttributionParams,
    threads: int,
    out_dir: Path,
    device: str,
    progress: Callable[[int, int], None] | None = None,
    fast_path_on_cuda: bool = False,
) -> AttributionStats:
    """Attribute with tracerflow's fast path (circuit-tracer's own when unsupported) and save
    the graph into ``out_dir``; ``progress(done, total)`` follows the feature phase."""
    from tracerflow.attribution import attribute  # torch: a run whose graphs are stored needs none

    try:
        result = attribute(
            prompt,
            replacement_model,
            max_n_logits=params.max_n_logits,
            desired_logit_prob=params.desired_logit_prob,
            max_feature_nodes=params.max_feature_nodes,
            batch_size=params.batch_size,
            offload=params.offload,
            progress=progress,
            threads=threads,
            fast_path_on_cuda=fast_path_on_cuda,
        )
    except RuntimeError as error:
        if "expected a non-empty list of Tensors" in str(error):
            raise AttributionError(
                f"no transcoder feature is active on prompt {prompt[:40]!r}: nothing to attribute"
            ) from error
        raise
    save_graph(result.graph, out_dir)
    cfg = replacement_model.cfg
    return AttributionStats(
        batch_size=result.batch_size,
        threads=result.threads,
        fast_path=result.fast_path,
        attribution_seconds=result.phase_seconds.get("total"),
        phase_seconds=result.phase_seconds,
        peak_memory_bytes=result.peak_device_bytes or result.peak_rss_bytes,
        n_tokens=len(result.graph.input_tokens),
        device=device,
        host=platform.node(),
        model_n_layers=cfg.n_layers,
        model_d_model=cfg.d_model,
        model_d_vocab=cfg.d_vocab,
        model_n_ctx=cfg.n_ctx,
        stock_reason=result.stock_reason,
    )


class ChunkProgress:
    """A chunk's attribution progress in one artifact, created when its first prompt is
    computed (a chunk the store holds in full shows none) and updated at most every 2 s: an API
    call per block, or per prompt, would cost small graphs more than their attribution."""

    def __init__(self, n_prompts: int, description: str) -> None:
        self.n_prompts = n_prompts
        self.artifact = ProgressArtifact(description, every_seconds=2.0)

    def within(self, index: int) -> Callable[[int, int], None]:
        """``progress(done, total)`` of the features of the chunk's prompt number ``index``."""

        def report(done: int, total: int) -> None:
            if total and self.artifact.show(100.0 * (index + done / total) / self.n_prompts):
                get_run_logger().info("prompt %d of %d: features attributed: %d of %d",
                                      index + 1, self.n_prompts, done, total)  # fmt: skip

        return report

    def computed(self, index: int) -> None:
        """Prompt number ``index`` was computed: the chunk shows progress from now on."""
        if not self.artifact.shown:
            self.artifact.show(100.0 * (index + 1) / self.n_prompts, now=True)

    def finish(self) -> None:
        self.artifact.finish()


@chunk_task("attribute")
def attribute_task(
    prompts: list[str],
    model: ModelSpec,
    converted: ConvertedTranscoder,
    params: AttributionParams,
    threads: int,
    store: ArtifactStore,
    fast_path_on_cuda: bool = False,
) -> ChunkResults:
    """Attribute a chunk of prompts: each an ``Attribution``, or a ``PromptFailure``."""
    logger = get_run_logger()
    progress = ChunkProgress(
        len(prompts), f"attribution of {len(prompts)} prompts with {converted.key[:12]}"
    )

    def attribute_one(index: int, prompt: str) -> Attribution:
        result = attribute_prompt(
            prompt, model, converted, params, threads, store, progress.within(index),
            fast_path_on_cuda,
        )  # fmt: skip
        if not result.cached:
            progress.computed(index)
        return result

    results = for_each_prompt("attribute", prompts, list(enumerate(prompts)), attribute_one)
    progress.finish()
    # One line per chunk, not per prompt: each prompt's seconds are in the run's scores table.
    computed = [r for r in results if isinstance(r, Attribution) and not r.cached]
    if computed:
        logger.info(
            "attributed %d of %d prompts in %.1f s (%d from the store; %d threads, %s path)",
            len(computed),
            len(prompts),
            sum(r.stats.attribution_seconds or 0.0 for r in computed),
            sum(isinstance(r, Attribution) and r.cached for r in results),
            threads,
            computed[0].stats.path,
        )
        reasons = sorted({r.stats.stock_reason for r in computed if r.stats.stock_reason})
        for reason in reasons:
            logger.warning("circuit-tracer's own attribution computed these graphs: %s", reason)
    return results
