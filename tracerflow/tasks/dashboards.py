"""Stage 7, dashboards: a transcoder's feature pack, cached in the store, published for the viewer.

The store folder's key is the converted transcoder's content hash, the model's identity, the
corpus hash (``TokenCorpus.summary().sha256``) and the ``DashboardConfig``: every record in it is
a function of those and of its feature alone. The folder holds the features computed so far and
grows: a run that wants features the folder lacks streams the corpus for those only
(``build_feature_pack``'s ``previous_pack``) and replaces the folder atomically with the union; a
run whose features are all there computes nothing and does not load the model.

The pack is published into ``<graph_files_dir>/features/<scan>/``: layer files first, then
``summary.json.gz``, then ``index.json.gz`` (the viewer lists a pack once its index exists), each
replaced atomically and only when it differs. Progress goes to a Prefect progress artifact and to
the log, every tenth of the corpus.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from filelock import FileLock

from tracerflow.dashboards.compute import DashboardConfig
from tracerflow.dashboards.pack import INDEX_FILE, SUMMARY_FILE, graph_file_features
from tracerflow.fsutil import check_no_link_below, write_bytes_atomically
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


def viewer_scan(content_hash: str) -> str:
    """The viewer's ``scan`` of a converted transcoder: its graphs' and its feature pack's name
    (``load_converted`` names a loaded transcoder's features the same)."""
    return f"tracerflow-{content_hash[:12]}"


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
    scan: str,
    corpus_file: str | None,
    prompts: list[str],
    graph_files: list[Path],
    all_features: bool,
    store: ArtifactStore,
    graph_files_dir: Path,
    config: DashboardConfig | None = None,
    progress_for: Callable[[int], Callable[[int, int], None]] | None = None,
) -> FeatureDashboards:
    """Make the pack of ``scan`` hold the features of ``graph_files`` (every feature with
    ``all_features``), computing only those the store's pack lacks, and publish it.
    ``progress_for(corpus_tokens)`` gives the ``progress`` callback of a computation."""
    from tracerflow.dashboards.pack import pack_features

    config = config or DashboardConfig()
    corpus = dashboard_corpus(model.name, corpus_file, prompts)
    summary = corpus.summary()
    key = dashboards_key(converted.content_hash, model.identity, summary.sha256, config)
    wanted = None if all_features else graph_features(graph_files)
    features_dir = Path(graph_files_dir) / FEATURES_DIR
    check_no_link_below(Path(graph_files_dir), features_dir / scan)  # before any write there
    features_dir.mkdir(parents=True, exist_ok=True)
    # One stage per transcoder at a time in a home: another run's stage may be replacing the
    # folder this one reads, or publishing into the same pack (a run that waited here then
    # finds its features computed). The lock lives beside the packs, as graph-metadata.json's
    # beside it: the store holds stage folders only.
    with FileLock(str(features_dir / f".{scan}.lock")):
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
            n_computed = _compute_pack(
                model, converted, scan, corpus, wanted, previous, out_dir, config, progress
            )

        folder, _ = store.get_or_compute("dashboards", key, write, reuse=holds_wanted)
        published = publish_pack(folder, features_dir / scan)
        n_features = len(pack_features(folder))
    return FeatureDashboards(
        key=key,
        scan=scan,
        corpus_sha256=summary.sha256,
        corpus_tokens=summary.n_text_tokens,
        n_features=n_features,
        n_computed=n_computed,
        published_path=str(published),
        cached=n_computed == 0,
    )


def _compute_pack(
    model: ModelSpec,
    converted: ConvertedTranscoder,
    scan: str,
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
        transcoder_id=scan,
        features=wanted,
        previous_pack=previous,
        config=config,
        # The corpus pads windows with BOS; position 0 (BOS) is never counted anyway.
        pad_token_id=bos,
        progress=progress,
    )
    return result.n_computed


def publish_pack(pack_dir: Path, target: Path) -> Path:
    """Make ``target`` hold ``pack_dir``'s files: layer files, then the summary, then the index,
    each replaced atomically when it differs (the viewer lists a pack once its index exists)."""
    target.mkdir(parents=True, exist_ok=True)
    names = sorted(path.name for path in pack_dir.glob("*.bin"))
    for name in [*names, SUMMARY_FILE, INDEX_FILE]:
        data = (pack_dir / name).read_bytes()
        published = target / name
        if not published.is_file() or published.read_bytes() != data:
            write_bytes_atomically(published, data)
    return target


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
    scan: str,
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
        scan,
        corpus_file,
        prompts,
        graph_files,
        all_features,
        store,
        graph_files_dir,
        progress_for=lambda total: ProgressReport(scan, total, run_logger.info),
    )
    run_logger.info(
        "dashboards %s: %d features in the pack (%d computed now) over %d corpus tokens, "
        "published in %s",
        scan,
        result.n_features,
        result.n_computed,
        result.corpus_tokens,
        result.published_path,
    )
    return result
