"""The scoring flow's dashboards step: each transcoder's feature pack, after its graphs' exports.

``submit_dashboards`` queues the dashboards stage of one transcoder right after its prompts, so
with the in-process runner (one task at a time) it runs while the transcoder's model is still
the assembled one, after every attribution on it, never beside one. It waits for the exports
(failed ones too) and takes the features of the graph files that exist. ``feature_pack`` names
the transcoder's pack before its graphs are exported, which carry the name as their ``scan``.

A failed dashboards stage loses no score: the flow records every row first, then ends Failed
with a message that says the scores were recorded (``flows.failures``). The viewer keeps the
pack it had, since a pack is only published once it is complete.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from prefect.utilities.annotations import allow_failure

from tracerflow.flows.run_types import RunContext, SubmittedTranscoder
from tracerflow.parameters import RunRequest
from tracerflow.presets import preset_file
from tracerflow.tasks.dashboards import corpus_identity, dashboards_task, feature_pack_name
from tracerflow.tasks.export import graph_slug
from tracerflow.tasks.results import ConvertedTranscoder, ModelSpec


def corpus_for(source: str, corpus: str | None) -> str | None:
    """The corpus file of a transcoder's dashboards: the run's ``--corpus``, else its preset's
    ``dashboard_corpus``, else None (the run's prompts)."""
    if corpus is not None:
        return str(Path(corpus).expanduser().resolve())
    return preset_file(source, "dashboard_corpus")


def feature_pack(
    request: RunRequest, source: str, model: ModelSpec, converted: ConvertedTranscoder
) -> str:
    """The name of the pack this run's dashboards of ``source`` go to (``feature_pack_name``):
    its weights, model, corpus and settings."""
    corpus = corpus_identity(corpus_for(source, request.corpus), list(request.prompts))
    return feature_pack_name(converted.content_hash, model.identity, corpus)


def submit_dashboards(
    run: RunContext, request: RunRequest, transcoder: SubmittedTranscoder
) -> SubmittedTranscoder:
    """``transcoder`` with its dashboards stage queued after its exports, failed or not (none
    for a transcoder that could not be prepared)."""
    if transcoder.converted is None or transcoder.model is None or not transcoder.feature_pack:
        return transcoder
    content_hash = transcoder.converted.content_hash
    graph_files_dir = Path(run.settings.graph_files_dir)
    graph_files = [
        graph_files_dir / f"{graph_slug(transcoder.source, content_hash, prompt)}.json"
        for prompt in transcoder.prompts
    ]
    future = dashboards_task.submit(
        transcoder.model,
        transcoder.converted,
        transcoder.feature_pack,
        corpus_for(transcoder.source, request.corpus),
        list(transcoder.prompts),
        graph_files,
        request.all_features,
        run.store,
        graph_files_dir,
        wait_for=[allow_failure(chunk.stages.exported) for chunk in transcoder.chunks],
    )
    return replace(transcoder, dashboards=future)
