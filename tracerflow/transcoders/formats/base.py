"""What a transcoder format module provides to the registry (``tracerflow.transcoders.formats``).

Nothing here imports torch: detecting a folder's format, naming its files and the run's door
checks must stay cheap, since the CLI runs them before it starts anything. Reading tensors is
each format's ``read``, which may import torch when it is called.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tracerflow.errors import CheckpointError

if TYPE_CHECKING:
    import torch

    from tracerflow.transcoders.checkpoint import Activation

# safetensors' own limit on the JSON header; a larger length means the file is not safetensors.
_MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class FolderFormat:
    """A kind of folder ``tracerflow inspect`` describes.

    ``detect(folder)`` scores how much the folder looks like this format from file names and at
    most one small read (a config, a header): 0 not at all, 1 certainly, in between when some of
    its files are there (reading it then names the missing ones). The registry takes the highest
    score. ``describe(folder)`` is what ``inspect`` prints, one flat mapping of field to value.
    """

    name: str  # a stable identifier: crosslayer-transcoder, tracerflow-converted
    title: str  # what inspect prints as its format, and errors name
    file_patterns: tuple[str, ...]  # its files, as names or glob patterns
    detect: Callable[[Path], float]
    describe: Callable[[Path], dict[str, Any]]


class ConvertibleSource(Protocol):
    """What a format's ``read`` gives ``convert``: the transcoder's shape, activation and hooks,
    the hashes of its files (its identity) and a writer of circuit-tracer's files."""

    kind: str  # "clt" | "plt"
    n_layers: int
    d_model: int
    d_features: int
    activation: Activation
    is_folded: bool | None  # None: nothing to fold (already circuit-tracer's files)
    feature_input_hook: str
    feature_output_hook: str

    def file_hashes(self) -> dict[str, str]: ...

    def write_files(self, out_dir: Path, dtype: torch.dtype) -> None: ...


@dataclass(frozen=True)
class SourceFormat(FolderFormat):
    """A checkpoint format a run starts from: downloaded, checked at the door, then converted.

    ``files(folder)`` are the files that make up the transcoder (their hashes are its identity,
    the download stage fetches ``file_patterns``); ``check(folder)`` the door checks the CLI runs
    before anything starts, raising ``CheckpointError`` (cheap, no torch: a config parse, a
    safetensors header); ``read(folder)`` validates the whole checkpoint for conversion.
    ``dimensions(folder)`` is (n_layers, d_model) read as cheaply as ``check`` reads, for the
    door to compare with the model's; None where only reading the weights would tell.
    """

    files: Callable[[Path], tuple[str, ...]]
    check: Callable[[Path], None]
    read: Callable[[Path], ConvertibleSource]
    dimensions: Callable[[Path], tuple[int, int] | None]
    # Files the folder names in other Hub repos (a circuit-tracer config's ``hf://`` list): the
    # download stage fetches each at its revision and records its commit; None: none ever.
    references: Callable[[Path], list[HubFile]] | None = None
    # Whether a Hub download fetches ``file_patterns`` for this format (False where a repo holds
    # many variants and a config picks among them: GemmaScope's npz files).
    downloadable: bool = True


@dataclass(frozen=True)
class HubFile:
    """One file of a Hub repo a folder names: ``hf://org/repo/path?revision=rev`` as circuit-tracer
    writes it (``revision`` None: the repo's default branch)."""

    uri: str
    repo_id: str
    path: str
    revision: str | None


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, read without torch; ``CheckpointError`` when the
    file is not safetensors (the tensors themselves are checked when converted)."""
    try:
        with path.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            if not 0 < size <= _MAX_HEADER_BYTES:
                raise ValueError(f"header length {size}")
            header = json.loads(handle.read(size))
        if not isinstance(header, dict):
            raise ValueError("header is not a mapping")
    except (struct.error, ValueError, OSError) as error:
        raise CheckpointError(f"{path}: not a safetensors file ({error})") from None
    return header


# safetensors' float dtype codes, and the torch dtype each one is.
SAFETENSORS_FLOATS = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


def check_float_tensor(
    label: str, key: str, info: dict[str, Any], want: list[int], implied_by: str
) -> str:
    """The dtype name of header entry ``info`` of tensor ``key``; ``CheckpointError`` naming
    ``label`` when its shape is not ``want`` (what ``implied_by`` implies) or it is no float."""
    if list(info.get("shape", ())) != want:
        raise CheckpointError(
            f"{label}: tensor '{key}' has shape {list(info.get('shape', ()))}, but {implied_by} "
            f"implies {want}"
        )
    if info.get("dtype") not in SAFETENSORS_FLOATS:
        raise CheckpointError(
            f"{label}: tensor '{key}' has dtype {info.get('dtype')}, not a float type"
        )
    return SAFETENSORS_FLOATS[info["dtype"]]
