"""Check a run request before anything starts: prompts, sources, the model, files, the device and
whether its estimated peak memory fits.

Pure and cheap (no torch, no Prefect, no weights), so the CLI runs it before it starts a Prefect
server and a typo costs a second, not a temporary server and a failed row; the scoring flow runs
it again for runs that come from a deployment. A bad request raises ``UsageError`` (one line,
exit 2). What the run itself still checks (exact token counts of real models, whether a
transcoder's Hub repo exists) is said at each check below.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracerflow.errors import CheckpointError, ConfigError, SourceError, UsageError
from tracerflow.machine import cuda_device_count, default_device
from tracerflow.memory import (
    MemoryEstimate,
    ModelShape,
    TranscoderShape,
    available_memory_bytes,
    cuda_free_bytes,
    estimate_memory,
    largest_fitting_feature_nodes,
    parse_memory_limit,
    size_text,
)
from tracerflow.parameters import RunRequest, flag, run_request
from tracerflow.sources import parse_repo_source
from tracerflow.training import expand_sources

if TYPE_CHECKING:
    from tracerflow.suites import LoadedSuite

DEFAULT_MODEL = "gpt2"
# For models whose context is not known without loading them: far beyond what attribution can
# take on any model tracerflow runs (its graph is dense in the number of tokens).
MAX_PROMPT_CHARS = 8192


def validate_run_request(request: RunRequest, check_items: bool = True) -> None:
    """Raise ``UsageError`` naming the first bad input of ``request`` that its model cannot
    check by itself (each value's limits are checked when the request is made): files, sources,
    prompts, models and devices. Reads only small files (presets, checkpoint headers, the toy
    tokenizer, TransformerLens's list of model names, the Hugging Face cache's index).

    ``check_items=False`` checks the run's parameters only and leaves each source and prompt to
    its own items, which then fail and are recorded in their series (what a scheduled run wants:
    one broken checkout tonight, or a Hub down for a minute, must not hide the others' scores).
    """
    check_device(request.device)
    if request.model is not None:
        check_model(request.model, given=True, fetch=False)
    if request.corpus is not None:
        check_corpus_file(request.corpus, "--corpus (corpus)", read_all=check_items)
    if request.eval_corpus is not None:
        check_corpus_file(request.eval_corpus, "--eval-corpus (eval_corpus)", read_all=check_items)
    if not check_items:
        return
    # A folder of checkpoints or a glob stands for each checkpoint in it (tracerflow.training).
    sources = [checkpoint.source for checkpoint in expand_sources(request.transcoders)]
    request = request.model_copy(update={"transcoders": sources})
    for source in request.transcoders:
        check_source(source)
        check_model_named(source, request.model)
        check_dimensions(source, model_for_source(source, request.model))
    models = {model_for_source(source, request.model) for source in request.transcoders}
    for model in sorted(models):
        for index, prompt in enumerate(request.prompts, start=1):
            check_prompt(prompt, model, index)
    for model in sorted(models):  # late: it may ask the network
        check_model(model, given=request.model is not None, fetch=True)
    for source in request.transcoders:
        check_cached_when_offline(source)
    check_memory(request)


def check_cached_when_offline(source: str) -> None:
    """Offline (``HF_HUB_OFFLINE``), a Hub source, or a preset of one, must be in the Hugging
    Face cache at its revision, or the run would start only to fail every item at the download:
    the download's own ``SourceError`` (exit 2), from the cache alone. Online, whether the repo
    exists is the download stage's question."""
    from tracerflow.model_sources import hub_cache_dir, hub_offline
    from tracerflow.sources import hub_error, parse_hub_source, unpreset

    # huggingface_hub's own offline switch: TRANSFORMERS_OFFLINE keeps transformers (the model)
    # offline, not the transcoder's download.
    hub = parse_hub_source(unpreset(source)) if hub_offline(transformers_too=False) else None
    if hub is None:
        return
    from huggingface_hub import snapshot_download

    repo_id, revision = hub
    try:
        snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=hub_cache_dir(),
            local_files_only=True,
            allow_patterns=[],
        )
    except OSError as error:  # huggingface_hub's errors are OSErrors
        raise hub_error(error, repo_id, revision) from None


def model_for_source(source: str, model: str | None) -> str:
    """The model a transcoder runs on: the request's, else its preset's, else the one its local
    folder's config names (circuit-tracer's ``model_name``), else GPT-2."""
    from tracerflow.presets import find_preset

    if model:
        return model
    preset = find_preset(source)
    if preset is not None:
        return preset.model
    return declared_model(source) or DEFAULT_MODEL


def declared_model(source: str) -> str | None:
    """The model a local transcoder folder's config names (circuit-tracer's ``config.yaml``
    ``model_name``, which its Hub configs carry too); None for any other source or config."""
    from tracerflow.transcoders.formats.circuit_tracer import read_config

    folder = Path(source).expanduser()
    if not folder.is_dir():
        return None
    try:
        name = (read_config(folder) or {}).get("model_name")
    except CheckpointError:
        return None  # the source's own check says what is wrong with it
    return name if isinstance(name, str) and name.strip() else None


def check_model_named(source: str, model: str | None) -> None:
    """A local transcoder folder runs on the model ``--model`` names or its config names: its
    weights do not say which model they were trained on, and GPT-2 by default would fail every
    item (or, worse, run on the wrong model of the same shape)."""
    from tracerflow.presets import find_preset

    if model or find_preset(source) is not None or not Path(source).expanduser().is_dir():
        return
    if declared_model(source) is None:
        raise UsageError(
            f"transcoder '{source}' names no model (a local folder's files do not say which "
            "model it was trained on): give --model"
        )


def check_model(model: str, given: bool, fetch: bool) -> None:
    """The built-in toy model, a local model folder (its config, weights header and tokenizer
    checked), or a TransformerLens model name; with ``fetch``, also one its download would find
    (offline: in the Hugging Face cache; online: the Hub answers), so a run that would fail every
    item loading its model is refused before it starts. Loads nothing.
    ``given``: the request named it (``--model``, a suite's ``model:``), and the message starts
    with that option; otherwise it is a preset's model or the default, named by the message."""
    from tracerflow.model_sources import check_model_source, local_model, official_model_name

    where = f"{flag('model')}: " if given else ""
    try:
        if local_model(model) is not None:
            return
        if fetch:
            check_model_source(model)
        else:
            official_model_name(model)
    except ConfigError as error:
        raise UsageError(f"{where}{error}") from None
    except SourceError as error:
        raise SourceError(f"{where}{error}", retryable=error.retryable) from None


def check_preset(name: str) -> None:
    """``UsageError`` listing the known presets when ``name`` is not one."""
    from tracerflow.presets import find_preset, list_presets

    if find_preset(name) is None:
        known = ", ".join(preset.name for preset in list_presets())
        raise UsageError(f"unknown preset '{name}'; known presets: {known}")


def check_source(source: str) -> None:
    """A preset, a checkpoint folder that passes its format's door checks (the convert stage
    reads it in full), or ``owner/name[@revision]`` by its pattern (whether the repo exists is
    the download stage's question); ``UsageError`` otherwise."""
    from tracerflow.presets import find_preset, list_presets

    if find_preset(source) is not None:
        return
    folder = Path(source).expanduser()
    if folder.exists():
        check_checkpoint_folder(folder, source)
        return
    repo_id = source.partition("@")[0]
    if source.startswith(("/", ".", "~")) or repo_id.count("/") > 1:
        raise UsageError(f"transcoder folder '{source}' does not exist")
    if parse_repo_source(source) is not None:
        return
    known = ", ".join(preset.name for preset in list_presets())
    raise UsageError(
        f"transcoder '{source}' is not a preset ({known}), an existing folder, or a Hugging Face "
        "repo id (owner/name[@revision])"
    )


def check_checkpoint_folder(folder: Path, source: str) -> None:
    """A checkpoint folder of a format the registry knows, with its files there and its format's
    cheap checks passed (for a crosslayer-transcoder checkpoint: ``config.yaml`` parses and
    ``checkpoint.safetensors`` has a readable header; the tensors are checked when converted)."""
    from tracerflow.transcoders.formats import check_source_folder

    if not folder.is_dir():
        raise UsageError(f"transcoder source '{source}' is a file, not a checkpoint folder")
    try:
        check_source_folder(folder, source)
    except CheckpointError as error:
        raise UsageError(str(error)) from None


def model_dimensions(model: str) -> tuple[int, int] | None:
    """(n_layers, d_model) of ``model`` where a config at hand tells it without loading the model
    (``model_sources.model_dimensions``: a local model's config, a cached Hub ``config.json``);
    None otherwise, and for a model the door refuses anyway (its own check says why)."""
    from tracerflow.model_sources import model_dimensions as read_dimensions

    try:
        return read_dimensions(model)
    except ConfigError:
        return None


def check_dimensions(source: str, model: str) -> None:
    """A local transcoder folder must be as deep and as wide as ``model``: ``UsageError`` in one
    line when the (n_layers, d_model) its format reads cheaply is not the model's. A preset
    matches its own model; run on another (``--model``), its folder is checked like any other.
    A Hub repo, or a model whose config is not at hand yet, is checked once both are loaded,
    before the transcoder is installed (``models.check_fits``)."""
    from tracerflow.presets import find_preset
    from tracerflow.transcoders.formats import source_format

    preset = find_preset(source)
    if preset is not None and preset.model == model:
        return
    folder = Path(preset.transcoder_source() if preset is not None else source).expanduser()
    if not folder.is_dir():
        return
    expected = model_dimensions(model)
    if expected is None:
        return
    try:
        found = source_format(folder, source).dimensions(folder)
    except CheckpointError as error:
        raise UsageError(str(error)) from None
    if found is not None and found != expected:
        raise UsageError(
            f"transcoder '{source}' has {found[0]} layers of d_model {found[1]}, but model "
            f"'{model}' has {expected[0]} layers of d_model {expected[1]}; give --model the "
            "model it was trained on"
        )


def check_prompt(prompt: str, model: str, index: int) -> None:
    """Not empty, and short enough for ``model``: a local model (``toy-gpt2`` among them) whose
    tokenizer has a ``tokenizer.json`` is counted exactly with it (BOS included, as the attribute
    stage counts); other models are bounded by ``MAX_PROMPT_CHARS`` here and by their exact token
    count in the attribute stage, once the model is loaded."""
    from tracerflow.model_sources import local_model

    where = f"prompt {index}"
    if not prompt.strip():
        raise UsageError(f"{where} is empty")
    try:
        local = local_model(model)
    except ConfigError:
        local = None  # the model's own check says what is wrong with it
    if local is not None and (local.tokenizer_dir / "tokenizer.json").is_file():
        n_ctx = local.n_ctx
        n_tokens = token_count(prompt, local.tokenizer_dir)
        if n_tokens > n_ctx:
            raise UsageError(
                f"{where} ({prompt[:40]!r}...) has {n_tokens} tokens; {model} takes at most {n_ctx}"
            )
    elif len(prompt) > MAX_PROMPT_CHARS:
        raise UsageError(
            f"{where} has {len(prompt)} characters; tracerflow takes at most {MAX_PROMPT_CHARS}"
        )


def token_count(prompt: str, tokenizer_dir: Path) -> int:
    """Tokens a model sees for ``prompt``: its tokenizer's tokens plus the BOS it prepends
    (counted with ``tokenizer.json`` alone, without loading the model or torch)."""
    from tracerflow.shapes import tokenizer_token_count

    return tokenizer_token_count(prompt, tokenizer_dir / "tokenizer.json")


def check_corpus_file(corpus: str, option: str, read_all: bool = True) -> None:
    """A corpus file given as ``option`` (the dashboards' ``--corpus``, the metrics'
    ``--eval-corpus``): an existing file; with ``read_all``, one that the corpus reader reads in
    full (UTF-8 text, or JSONL with a string ``text`` per line) and that holds some text. Reading
    it costs one pass over the file; a deployment's run leaves that to the stage that reads it,
    which then fails alone."""
    path = Path(corpus).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise UsageError(f"{path}: {option} file {what}")
    if not read_all:
        return
    from tracerflow.corpus import read_documents

    has_text = False
    for document in read_documents(path):  # every line: a bad one further on is caught now
        has_text = has_text or bool(document.strip())
    if not has_text:
        raise UsageError(f"{path}: {option} file holds no text")


def check_device(device: str | None) -> None:
    """A CUDA device only where CUDA is usable (its name's form is the request model's check)."""
    if device is not None and device.startswith("cuda"):
        count = cuda_device_count()
        index = int(device.partition(":")[2] or 0)
        if count == 0:
            raise UsageError(f"--device {device}: CUDA is not available on this machine")
        if index >= count:
            raise UsageError(f"--device {device}: this machine has {count} CUDA device(s)")


def suite_request(loaded: LoadedSuite) -> RunRequest:
    """The run request a suite makes (what ``suite_flow`` passes to the scoring flow)."""
    return run_request(
        **loaded.suite.parameters.model_dump(exclude_none=True),
        transcoders=loaded.suite.transcoders,
        prompts=loaded.prompts,
        model=loaded.suite.model,
        corpus=loaded.corpus,
        eval_corpus=loaded.eval_corpus,
        eval_tokens=loaded.suite.eval_tokens,
    )


def check_memory(request: RunRequest, available_bytes: int | None = None) -> None:
    """Refuse, in one line, a run whose estimated peak memory (``tracerflow.memory``) exceeds
    ``available_bytes``: by default ``$TRACERFLOW_MEMORY_LIMIT``, else the memory available now.
    The line names the need, what is available and a setting that fits (a smaller
    ``--max-feature-nodes``, ``--offload disk``) where one does. Each transcoder is estimated at
    the request's longest prompt; one whose shapes are not known before it is downloaded or
    loaded (a Hub repo, a Lightning checkpoint, a model not in the cache) is not checked. On
    CUDA the check is that the GPU's free memory holds the model and transcoder weights."""
    from tracerflow.settings import get_settings

    limit = get_settings().memory_limit
    if available_bytes is None and limit is not None:
        try:
            available_bytes = parse_memory_limit(limit)
        except ValueError as error:
            raise UsageError(str(error)) from None
        if available_bytes is None:  # "off"
            return
    device = request.device or default_device()
    for source in request.transcoders:
        needs = run_memory_needs(source, request)
        if needs is None:
            continue
        if device.startswith("cuda"):
            _check_cuda_weights(source, needs, device, available_bytes)
            continue
        available = available_memory_bytes() if available_bytes is None else available_bytes
        if needs.estimate.total_bytes > available:
            raise UsageError(_refusal(source, needs, available))


@dataclass(frozen=True)
class MemoryNeeds:
    """One transcoder's estimate in a request, and what it was computed from."""

    estimate: MemoryEstimate
    model: ModelShape
    transcoder: TranscoderShape
    options: dict[str, Any]  # estimate_memory's keyword arguments besides max_feature_nodes
    max_feature_nodes: int | None
    prompt_index: int  # 1-based: the longest prompt


def run_memory_needs(source: str, request: RunRequest) -> MemoryNeeds | None:
    """The estimate for ``source`` in ``request`` at its longest prompt; None when the model's
    or the transcoder's shape is not known before the run."""
    from tracerflow.presets import run_parameters
    from tracerflow.shapes import model_shape, token_count, transcoder_shape

    model_name = model_for_source(source, request.model)
    model = model_shape(model_name)
    transcoder = transcoder_shape(source)
    if model is None or transcoder is None:
        return None
    counts = [token_count(model_name, prompt) for prompt in request.prompts]
    longest = max(range(len(counts)), key=counts.__getitem__)
    attribution = run_parameters(source, request).attribution
    options: dict[str, Any] = {
        "n_tokens": counts[longest],
        "max_n_logits": attribution.max_n_logits,
        "batch_size": attribution.batch_size,
        "offload": attribution.offload,
        "dtype": request.dtype,
    }
    estimate = estimate_memory(
        model, transcoder, max_feature_nodes=attribution.max_feature_nodes, **options
    )
    return MemoryNeeds(
        estimate, model, transcoder, options, attribution.max_feature_nodes, longest + 1
    )


def _refusal(source: str, needs: MemoryNeeds, available: int) -> str:
    """The one line a run that cannot fit is refused with."""
    estimate = needs.estimate
    what = (
        f"transcoder '{source}', prompt {needs.prompt_index} of {estimate.n_tokens} tokens, "
        f"{estimate.n_feature_nodes} of ~{estimate.n_active} feature nodes, in its "
        f"{estimate.peak_stage} stage"
    )
    fixes = []
    fitting = largest_fitting_feature_nodes(
        available, needs.model, needs.transcoder, **needs.options
    )
    if fitting is not None and fitting < estimate.n_feature_nodes:
        smaller = estimate_memory(
            needs.model, needs.transcoder, max_feature_nodes=fitting, **needs.options
        )
        fixes.append(f"--max-feature-nodes {fitting} ({size_text(smaller.total_bytes)})")
    if needs.options["offload"] is None:
        offloaded = estimate_memory(
            needs.model,
            needs.transcoder,
            max_feature_nodes=needs.max_feature_nodes,
            **{**needs.options, "offload": "disk"},
        )
        if offloaded.total_bytes <= available:
            fixes.append(f"--offload disk ({size_text(offloaded.total_bytes)})")
    fix = (
        f"this would fit: {' or '.join(fixes)}"
        if fixes
        else "no --max-feature-nodes or --offload fits: give shorter prompts or a larger machine"
    )
    need = size_text(estimate.total_bytes)
    return (
        f"this run needs about {need} of memory at its peak ({what}), but "
        f"{size_text(available)} is available; {fix} (TRACERFLOW_MEMORY_LIMIT sets the memory "
        "a run may use; off skips this check)"
    )


def _check_cuda_weights(
    source: str, needs: MemoryNeeds, device: str, available_bytes: int | None
) -> None:
    """On CUDA: the model's and transcoder's weights must fit in the GPU's free memory."""
    weights = needs.estimate.stages["precompute"]
    need = weights["model weights"] + weights["transcoder weights"]
    free = cuda_free_bytes(device) if available_bytes is None else available_bytes
    if need > free:
        raise UsageError(
            f"transcoder '{source}': the model and transcoder weights alone take about "
            f"{size_text(need)}, but {device} has {size_text(free)} free; run with --device cpu, "
            "or --offload cpu (TRACERFLOW_MEMORY_LIMIT sets the memory a run may use; off "
            "skips this check)"
        )
