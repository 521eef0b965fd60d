"""Check a run request before anything starts: prompts, sources, numbers, device and dtype.

Pure and cheap (no torch, no Prefect, no weights), so the CLI runs it before it starts a Prefect
server and a typo costs a second, not a temporary server and a failed row; the scoring flow runs
it again for runs that come from a deployment. A bad request raises ``UsageError`` (one line,
exit 2). What the run itself still checks (exact token counts of real models, whether a Hub repo
exists) is said at each check below.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracerflow.errors import UsageError

if TYPE_CHECKING:
    from tracerflow.suites import LoadedSuite

DEFAULT_MODEL = "gpt2"
DTYPES = ("float32", "float16", "bfloat16")
OFFLOADS = ("cpu", "disk")
# For models whose context is not known without loading them: far beyond what attribution can
# take on any model tracerflow runs (its graph is dense in the number of tokens).
MAX_PROMPT_CHARS = 8192
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")
_MAX_HEADER_BYTES = 100_000_000
# tracerflow.transcoders.checkpoint's names; importing it would import torch.
CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "checkpoint.safetensors"  # safetensors' own limit on the JSON header


@dataclass(frozen=True)
class RunRequest:
    """What a run was asked to do, as given (None: the preset's or the notebook's default)."""

    transcoders: Sequence[str]
    prompts: Sequence[str]
    model: str | None = None
    max_n_logits: int | None = None
    desired_logit_prob: float | None = None
    max_feature_nodes: int | None = None
    batch_size: int | None = None
    offload: str | None = None
    node_threshold: float | None = None
    edge_threshold: float | None = None
    dtype: str = "float32"
    threads: int | None = None
    device: str | None = None
    corpus: str | None = None  # the dashboards' corpus file (None: the preset's, else the prompts)
    all_features: bool = False  # dashboards for every feature, not only the graphs' ones
    eval_corpus: str | None = None  # the evaluate stage's corpus file (None: preset's, prompts)
    eval_tokens: int | None = None  # cap on the evaluation tokens


def validate_run_request(request: RunRequest, check_items: bool = True) -> None:
    """Raise ``UsageError`` naming the first bad input of ``request``; return None when all are
    fine. Reads only small files (presets, checkpoint headers, the toy tokenizer).

    ``check_items=False`` checks the run's parameters only and leaves each source and prompt to
    its own items, which then fail and are recorded in their series (what a scheduled run wants:
    one broken checkout tonight must not hide the others' scores).
    """
    if not request.transcoders:
        raise UsageError("give at least one --transcoder or a --preset")
    if not request.prompts:
        raise UsageError("give at least one --prompt or a --prompts-file")
    _check_numbers(request)
    if request.offload is not None and request.offload not in OFFLOADS:
        raise UsageError(f"--offload must be one of {', '.join(OFFLOADS)}, got {request.offload!r}")
    if request.dtype not in DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}, got {request.dtype!r}")
    check_device(request.device)
    if request.corpus is not None:
        check_corpus_file(request.corpus, "--corpus (corpus)", read_all=check_items)
    if request.eval_corpus is not None:
        check_corpus_file(request.eval_corpus, "--eval-corpus (eval_corpus)", read_all=check_items)
    if not check_items:
        return
    for source in request.transcoders:
        check_source(source)
    models = {model_for_source(source, request.model) for source in request.transcoders}
    for model in sorted(models):
        for index, prompt in enumerate(request.prompts, start=1):
            check_prompt(prompt, model, index)


def _check_numbers(request: RunRequest) -> None:
    """Each number against the limits its parameter model states (``tracerflow.parameters``)."""
    from tracerflow.parameters import NUMERIC_PARAMETERS, limits_text, within_limits

    for name in NUMERIC_PARAMETERS:
        value = getattr(request, name)
        if value is not None and not within_limits(name, value):
            raise UsageError(f"{_flag(name)} must be {limits_text(name)}, got {value!r}")
    # Run settings, not graph parameters: whole numbers >= 1 (threads like the setting's).
    for name in ("threads", "eval_tokens"):
        value = getattr(request, name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise UsageError(f"{_flag(name)} must be a whole number >= 1, got {value!r}")


def _flag(name: str) -> str:
    """``max_n_logits`` -> ``--max-n-logits (max_n_logits)``: the CLI's name and the flow's."""
    return f"--{name.replace('_', '-')} ({name})"


def model_for_source(source: str, model: str | None) -> str:
    """The model a transcoder runs on: the request's, else its preset's, else GPT-2."""
    from tracerflow.presets import find_preset

    if model:
        return model
    preset = find_preset(source)
    return preset.model if preset is not None else DEFAULT_MODEL


def check_preset(name: str) -> None:
    """``UsageError`` listing the known presets when ``name`` is not one."""
    from tracerflow.presets import find_preset, list_presets

    if find_preset(name) is None:
        known = ", ".join(preset.name for preset in list_presets())
        raise UsageError(f"unknown preset '{name}'; known presets: {known}")


def check_source(source: str) -> None:
    """A preset, a checkpoint folder (``config.yaml`` and ``checkpoint.safetensors`` with a readable
    header; the convert stage reads it in full), or ``owner/name[@revision]`` by its pattern
    (whether the repo exists is the download stage's question); ``UsageError`` otherwise."""
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
    if _REPO_ID.match(repo_id):
        return
    known = ", ".join(preset.name for preset in list_presets())
    raise UsageError(
        f"transcoder '{source}' is not a preset ({known}), an existing folder, or a Hugging Face "
        "repo id (owner/name[@revision])"
    )


def check_checkpoint_folder(folder: Path, source: str) -> None:
    """A crosslayer-transcoder checkpoint folder: ``config.yaml`` that parses to a mapping and a
    ``checkpoint.safetensors`` whose header reads (the tensors are checked when converted)."""
    import yaml

    if not folder.is_dir():
        raise UsageError(f"transcoder source '{source}' is a file, not a checkpoint folder")
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        raise UsageError(
            f"'{source}' is not a transcoder checkpoint folder: no {' or '.join(missing)}"
        )
    try:
        config = yaml.safe_load((folder / CONFIG_FILE).read_text())
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as error:
        raise UsageError(f"{folder / CONFIG_FILE}: not readable YAML ({error})") from None
    if not isinstance(config, dict) or "model" not in config:
        raise UsageError(f"{folder / CONFIG_FILE}: not a crosslayer-transcoder config (no 'model')")
    weights = folder / WEIGHTS_FILE
    try:
        with weights.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            if not 0 < size <= _MAX_HEADER_BYTES:
                raise ValueError(f"header length {size}")
            header = json.loads(handle.read(size))
        if not isinstance(header, dict):
            raise ValueError("header is not a mapping")
    except (struct.error, ValueError, OSError) as error:
        raise UsageError(f"{weights}: not a safetensors file ({error})") from None


def check_prompt(prompt: str, model: str, index: int) -> None:
    """Not empty, and short enough for ``model``: ``toy-gpt2`` is counted exactly with its shipped
    tokenizer (n_ctx 64, BOS included); other models are bounded by ``MAX_PROMPT_CHARS`` here and
    by their exact token count in the attribute stage, once the model is loaded."""
    from tracerflow import toy

    where = f"prompt {index}"
    if not prompt.strip():
        raise UsageError(f"{where} is empty")
    if model == toy.TOY_MODEL_NAME:
        n_ctx = toy.model_n_ctx()
        n_tokens = toy_token_count(prompt)
        if n_tokens > n_ctx:
            raise UsageError(
                f"{where} ({prompt[:40]!r}...) has {n_tokens} tokens; {model} takes at most {n_ctx}"
            )
    elif len(prompt) > MAX_PROMPT_CHARS:
        raise UsageError(
            f"{where} has {len(prompt)} characters; tracerflow takes at most {MAX_PROMPT_CHARS}"
        )


def toy_token_count(prompt: str) -> int:
    """Tokens the toy model sees for ``prompt``: its BPE tokens plus the BOS it prepends."""
    from tokenizers import Tokenizer

    from tracerflow import toy

    tokenizer = Tokenizer.from_file(str(toy.tokenizer_dir() / "tokenizer.json"))
    return len(tokenizer.encode(prompt, add_special_tokens=False).ids) + 1


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
    """``cpu``, ``cuda`` or ``cuda:N``; a CUDA device only where CUDA is usable."""
    if device is None:
        return
    if not _DEVICE.match(device):
        raise UsageError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda"):
        count = cuda_device_count()
        index = int(device.partition(":")[2] or 0)
        if count == 0:
            raise UsageError(f"--device {device}: CUDA is not available on this machine")
        if index >= count:
            raise UsageError(f"--device {device}: this machine has {count} CUDA device(s)")


def cuda_device_count() -> int:
    """CUDA devices torch can use. Without an NVIDIA driver the answer is 0 without importing
    torch (seconds on a loaded machine); with one, torch decides (a CPU build says 0)."""
    driver = Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()
    if not driver:
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def suite_request(loaded: LoadedSuite) -> RunRequest:
    """The run request a suite makes (what ``suite_flow`` passes to the scoring flow)."""
    parameters = loaded.suite.parameters
    return RunRequest(
        transcoders=loaded.suite.transcoders,
        prompts=loaded.prompts,
        model=loaded.suite.model,
        max_n_logits=parameters.max_n_logits,
        desired_logit_prob=parameters.desired_logit_prob,
        max_feature_nodes=parameters.max_feature_nodes,
        batch_size=parameters.batch_size,
        offload=parameters.offload,
        node_threshold=parameters.node_threshold,
        edge_threshold=parameters.edge_threshold,
        dtype=parameters.dtype,
        threads=parameters.threads,
        corpus=loaded.corpus,
        eval_corpus=loaded.eval_corpus,
        eval_tokens=loaded.suite.eval_tokens,
    )


def request_of(parameters: dict[str, Any]) -> RunRequest:
    """A ``RunRequest`` from the scoring flow's keyword parameters (extra ones ignored)."""
    fields = RunRequest.__dataclass_fields__
    return RunRequest(**{name: value for name, value in parameters.items() if name in fields})
