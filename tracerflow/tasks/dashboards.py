"""Stage 7, dashboards: a transcoder's feature pack, cached in the store, published for the viewer.

**Identity.** The store folder's key is the converted transcoder's content hash, the model's
identity, the corpus hash (``TokenCorpus.summary().sha256``) and the ``DashboardConfig``: every
record in it is a function of those and of its feature alone. The corpus hash needs the corpus
tokenized; it is kept in the store too (``corpus_summary``), keyed by the corpus's bytes and the
model, so a cached run tokenizes nothing. The published pack is named by the
same inputs (``feature_pack_name``: ``tracerflow-<hash12>-<id8>``, the corpus read as bytes, so
the flow names it before the graphs are exported), and a run's graph files carry that name as
their ``metadata.scan``: a graph leads to the pack of its own weights, model, corpus and
settings, and two sources or two corpora never overwrite each other's pack.

**Growth.** The store folder holds the features computed so far and grows: a run that wants
features the folder lacks streams the corpus for those only (``build_feature_pack``'s
``previous_pack``) and replaces the folder atomically with the union; a run whose features are
all there computes nothing and does not load the model.

**Concurrency.** Any number of runs, on one host or several, may run this stage for the same
pack at once under one artifact root: the store's lock of the key (``ArtifactStore.locked``) is
held while the folder is read, grown and published, and a lock beside the packs
(``features/.<pack>.lock``) serialises runs of one home that use different stores. The pack is
published as a new immutable version swapped in by a rename (``pack.publish_pack``), so the
viewer, which takes no lock, never reads half of one. Progress goes to a Prefect progress
artifact and to the log, every tenth of the corpus.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from filelock import FileLock

from tracerflow.corpus import CorpusSummary
from tracerflow.dashboards.config import DashboardConfig
from tracerflow.dashboards.pack import graph_file_features, publish_pack
from tracerflow.fsutil import check_no_link_below, sha256_file
from tracerflow.hashing import sha256_json
from tracerflow.storage.artifacts import ArtifactStore, stage_key
from tracerflow.tasks.progress import ProgressArtifact
from tracerflow.tasks.results import ConvertedTranscoder, FeatureDashboards, ModelSpec
from tracerflow.tasks.stage import stage_task

CODE_VERSION = "1"
# Windows of at most this many positions (BOS included; fewer where the model's context is
# shorter): a feature's example shows 12 tokens before its max and 4 after, so longer windows
# only cost memory, and one width keeps a corpus's hash independent of the model's n_ctx.
DASHBOARD_WINDOW_TOKENS = 128
DASHBOARD_BATCH_TOKENS = 4096
FEATURES_DIR = "features"
CORPUS_SUMMARY_STAGE = "corpus-summary"
CORPUS_SUMMARY_FILE = "summary.json"


def viewer_scan(content_hash: str) -> str:
    """The ``scan`` of a converted transcoder, a name of its weights alone: its packs' names
    start with it and its records' ``transcoder_id`` is it (``load_converted`` names a loaded
    transcoder's features the same)."""
    return f"tracerflow-{content_hash[:12]}"


def corpus_identity(corpus_file: str | None, prompts: list[str]) -> str:
    """What a pack's name knows of its corpus without tokenizing it: the sha256 of the corpus
    file's bytes, else of the prompts (the corpus when no file is given)."""
    if corpus_file is not None:
        try:
            return "file:" + sha256_file(Path(corpus_file))
        except OSError:  # the stage reads it and fails with the file's name; the scores don't
            return "unreadable file:" + corpus_file
    return "prompts:" + sha256_json(list(prompts))


def feature_pack_name(
    content_hash: str,
    model_identity: str,
    corpus: str,
    config: DashboardConfig | None = None,
) -> str:
    """The published pack's name, and the graphs' ``metadata.scan``: the transcoder's scan
    and 8 hex digits of its dashboards' inputs (model, ``corpus_identity``, settings, window),
    the inputs of ``dashboards_key`` read before any tokenizing. Same inputs, same name."""
    inputs = stage_key(
        "dashboards-pack",
        CODE_VERSION,
        model=model_identity,
        corpus=corpus,
        config=asdict(config or DashboardConfig()),
        window_tokens=DASHBOARD_WINDOW_TOKENS,
    )
    return f"{viewer_scan(content_hash)}-{inputs[:8]}"


def dashboards_key(
    content_hash: str, model_identity: str, corpus_sha256: str, config: DashboardConfig
) -> str:
    return stage_key(
        "dashboards",
        CODE_VERSION,
        converted=content_hash,
        model=model_identity,
        corpus=corpus_sha256,
        config=asdict(config),
    )


def graph_features(graph_files: Iterable[Path]) -> set[tuple[int, int]]:
    """The union of the feature nodes of the graph files that exist (a failed export has none)."""
    features: set[tuple[int, int]] = set()
    for graph_file in graph_files:
        if graph_file.is_file():
            features |= graph_file_features(graph_file)
    return features


def model_tokenizer(model_name: str) -> Any:
    """The tokenizer a model's corpus is cut with, without loading the model's weights (a fully
    cached stage never loads them): a local model's (the toy's shipped folder among them), else
    the Hub's."""
    from transformers import AutoTokenizer

    from tracerflow.model_sources import local_model, official_model_name

    local = local_model(model_name)
    if local is not None:
        return AutoTokenizer.from_pretrained(str(local.tokenizer_dir))
    return AutoTokenizer.from_pretrained(official_model_name(model_name))


def window_tokens(model_name: str) -> int:
    """Positions per corpus window: ``DASHBOARD_WINDOW_TOKENS``, or a local model's shorter
    context (the toy's 64; the Hub models tracerflow runs take 512 and more)."""
    from tracerflow.model_sources import local_model

    local = local_model(model_name)
    if local is not None:
        return min(DASHBOARD_WINDOW_TOKENS, local.n_ctx)
    return DASHBOARD_WINDOW_TOKENS


def corpus_summary(
    store: ArtifactStore, model: ModelSpec, corpus_file: str | None, prompts: list[str]
) -> CorpusSummary:
    """The dashboard corpus's ``TokenCorpus.summary()`` (windows, text tokens, the sha256 the
    store key names), kept in the store under what determines it: the corpus's bytes
    (``corpus_identity``), the model (its tokenizer), the window width and the tokenizer code's
    version. A run whose pack is complete then neither imports ``transformers`` nor tokenizes
    the corpus (seconds of a cached re-run)."""
    from importlib.metadata import version

    key = stage_key(
        CORPUS_SUMMARY_STAGE,
        CODE_VERSION,
        model=model.identity,
        corpus=corpus_identity(corpus_file, prompts),
        window_tokens=window_tokens(model.name),
        transformers=version("transformers"),
    )

    def write(out_dir: Path) -> None:
        summary = dashboard_corpus(model.name, corpus_file, prompts).summary()
        (out_dir / CORPUS_SUMMARY_FILE).write_text(json.dumps(asdict(summary)))

    folder, _ = store.get_or_compute(CORPUS_SUMMARY_STAGE, key, write)
    return CorpusSummary(**json.loads((folder / CORPUS_SUMMARY_FILE).read_text()))


def dashboard_corpus(model_name: str, corpus_file: str | None, prompts: list[str]) -> Any:
    """The ``TokenCorpus`` a transcoder's dashboards stream: ``corpus_file`` (text or JSONL), else
    the run's prompts."""
    from tracerflow.corpus import TokenCorpus

    tokenizer = model_tokenizer(model_name)
    n_ctx = window_tokens(model_name)
    if corpus_file is not None:
        return TokenCorpus.from_file(corpus_file, tokenizer, n_ctx)
    return TokenCorpus.from_texts(prompts, tokenizer, n_ctx)


def build_dashboards(
    model: ModelSpec,
    converted: ConvertedTranscoder,
    pack: str,
    corpus_file: str | None,
    prompts: list[str],
    graph_files: list[Path],
    all_features: bool,
    store: ArtifactStore,
    graph_files_dir: Path,
    config: DashboardConfig | None = None,
    progress_for: Callable[[int], Callable[[int, int], None]] | None = None,
) -> FeatureDashboards:
    """Make the pack ``pack`` (``feature_pack_name``) hold the features of ``graph_files``
    (every feature with ``all_features``), computing only those the store's pack lacks, and
    publish it. ``progress_for(corpus_tokens)`` gives the ``progress`` callback of a
    computation."""
    from tracerflow.dashboards.pack import pack_features

    config = config or DashboardConfig()
    summary = corpus_summary(store, model, corpus_file, prompts)
    key = dashboards_key(converted.content_hash, model.identity, summary.sha256, config)
    wanted = None if all_features else graph_features(graph_files)
    features_dir = Path(graph_files_dir) / FEATURES_DIR
    check_no_link_below(Path(graph_files_dir), features_dir / pack)  # before any write there
    features_dir.mkdir(parents=True, exist_ok=True)
    # Two locks, always taken in this order: the one beside the packs (runs of this home) and
    # the store's of the key (runs sharing the artifact root, on any host). Under both, the
    # store folder is read, grown and published by one run at a time; a run that waited finds
    # its features computed.
    with FileLock(str(features_dir / f".{pack}.lock")), store.locked("dashboards", key):
        previous: Path | None = None  # the store's pack, when it lacks features wanted
        n_computed = 0

        def holds_wanted(folder: Path) -> bool:
            nonlocal previous
            have = pack_features(folder)
            if wanted is None:
                missing = converted.n_layers * converted.d_features - len(have)
            else:
                missing = len(wanted - have)
            previous = folder
            return not missing

        def write(out_dir: Path) -> None:
            nonlocal n_computed
            progress = progress_for(summary.n_text_tokens) if progress_for else None
            corpus = dashboard_corpus(model.name, corpus_file, prompts)
            n_computed = _compute_pack(
                model, converted, corpus, wanted, previous, out_dir, config, progress
            )

        folder, _ = store.get_or_compute("dashboards", key, write, reuse=holds_wanted)
        publish_pack(folder, features_dir / pack)
        n_features = len(pack_features(folder))
    return FeatureDashboards(
        key=key,
        scan=pack,
        corpus_sha256=summary.sha256,
        corpus_tokens=summary.n_text_tokens,
        n_features=n_features,
        n_computed=n_computed,
        published_path=str(features_dir / pack),
        cached=n_computed == 0,
    )


def _compute_pack(
    model: ModelSpec,
    converted: ConvertedTranscoder,
    corpus: Any,
    wanted: set[tuple[int, int]] | None,
    previous: Path | None,
    out_dir: Path,
    config: DashboardConfig,
    progress: Callable[[int, int], None] | None,
) -> int:
    """Stream the corpus for the wanted features ``previous`` lacks; write the union into
    ``out_dir``. Returns how many features were computed."""
    from tracerflow.dashboards.build import build_feature_pack
    from tracerflow.tasks.assemble import assembled_model

    replacement = assembled_model(model.name, converted.path, model.dtype, model.device)
    bos = replacement.tokenizer.bos_token_id
    batches = (batch.tokens.to(model.device) for batch in corpus.batches(DASHBOARD_BATCH_TOKENS))
    result = build_feature_pack(
        replacement,
        batches,
        out_dir,
        # The records name the weights' scan, not the pack: a store folder grown by runs with
        # other pack names (e.g. a corpus file and the same prompts) holds the same bytes.
        transcoder_id=viewer_scan(converted.content_hash),
        features=wanted,
        previous_pack=previous,
        config=config,
        # The corpus pads windows with BOS; position 0 (BOS) is never counted anyway.
        pad_token_id=bos,
        progress=progress,
    )
    return result.n_computed


class ProgressReport:
    """``progress(n_sequences, n_tokens)`` for ``build_feature_pack``: a Prefect progress
    artifact and a log line, each time another tenth of the corpus is done."""

    def __init__(self, scan: str, total_tokens: int, log: Callable[[str], None]) -> None:
        self.scan = scan
        self.total_tokens = max(total_tokens, 1)
        self.log = log
        self.reported_tenths = -1
        self.artifact = ProgressArtifact(
            f"feature dashboards of {scan}: corpus tokens streamed",
            key=f"dashboards-{scan}".lower(),
        )

    def __call__(self, n_sequences: int, n_tokens: int) -> None:
        percent = min(100.0, 100.0 * n_tokens / self.total_tokens)
        tenths = int(percent // 10)
        if tenths == self.reported_tenths:
            return
        self.reported_tenths = tenths
        self.log(
            f"dashboards {self.scan}: {n_tokens}/{self.total_tokens} corpus tokens "
            f"({percent:.0f}%), {n_sequences} windows"
        )
        self.artifact.show(percent, now=True)


@stage_task("dashboards")
def dashboards_task(
    model: ModelSpec,
    converted: ConvertedTranscoder,
    pack: str,
    corpus_file: str | None,
    prompts: list[str],
    graph_files: list[Path],
    all_features: bool,
    store: ArtifactStore,
    graph_files_dir: Path,
) -> FeatureDashboards:
    from prefect.logging import get_run_logger

    run_logger = get_run_logger()
    result = build_dashboards(
        model,
        converted,
        pack,
        corpus_file,
        prompts,
        graph_files,
        all_features,
        store,
        graph_files_dir,
        progress_for=lambda total: ProgressReport(pack, total, run_logger.info),
    )
    run_logger.info(
        "dashboards %s: %d features in the pack (%d computed now) over %d corpus tokens, "
        "published in %s",
        pack,
        result.n_features,
        result.n_computed,
        result.corpus_tokens,
        result.published_path,
    )
    return result
