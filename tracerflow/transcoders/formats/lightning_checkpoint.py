"""crosslayer-transcoder's Lightning checkpoints: the ``clt.ckpt`` its training writes
(``trainer.save_checkpoint``), read with torch's weights-only loader and nothing else.

The file is a torch zip archive of a pickled dict: ``state_dict`` holds the LightningModule's
tensors, the transcoder's under the module's attribute (``model.encoder.W``, ...), beside the
module's own (``last_active``) and the training state (optimizer moments, loops); the transcoder's
config is ``hyper_parameters["model"]`` (a ``class_path``/``init_args`` tree) when the module
saved it, else the training run's ``config.yaml`` (LightningCLI's) beside the file. The library's
own module leaves ``model`` out of its hyper_parameters (``save_hyperparameters(ignore=["model",
...])``), so its checkpoints need that config.yaml. A checkpoint that needs any class torch's
weights-only loader refuses is refused in one line saying how to export it with ``save_pretrained``;
it is never unpickled otherwise, and no class it names is imported. Detecting and checking read
the archive's pickle opcodes without executing them (no torch); reading the tensors is
``torch.load(weights_only=True)``. The tensors then go through the same reader as a
``save_pretrained`` folder: docs/checkpoints.md.
"""

from __future__ import annotations

import pickle
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any

from tracerflow.errors import CheckpointError
from tracerflow.transcoders.checkpoint import (
    CONFIG_FILE,
    Checkpoint,
    check_tensors,
    load_config,
    parse_config,
)
from tracerflow.transcoders.formats.base import SourceFormat
from tracerflow.transcoders.formats.crosslayer_transcoder import checkpoint_fields

TITLE = "crosslayer-transcoder Lightning checkpoint"
CKPT_FILE = "clt.ckpt"
# The library's LightningModule holds the transcoder as `self.model`.
STATE_PREFIX = "model."
_DTYPES = {"torch.float32": "float32", "torch.float16": "float16", "torch.bfloat16": "bfloat16"}
# The globals torch's weights-only unpickler allows (torch/_weights_only_unpickler.py), by module:
# everything else a pickle names is refused at the door. torch.load is the final word.
_SAFE_MODULES = {
    "torch",
    "torch._utils",
    "torch._tensor",
    "torch.storage",
    "torch.serialization",
    "torch.nn.parameter",
}
_SAFE_GLOBALS = {
    "collections.OrderedDict",
    "collections.Counter",
    "_codecs.encode",
    "builtins.bytearray",
    "builtins.set",
    "builtins.complex",
}
_MAX_PICKLE_BYTES = 2**28  # the pickled structure, not the tensors (those are separate entries)


def needs_classes(path: Path, name: str) -> CheckpointError:
    """The one line for a checkpoint torch's weights-only loader will not read."""
    return CheckpointError(
        f"{path}: needs {name}, which torch's weights-only loader refuses, and tracerflow never "
        "unpickles anything else; export the transcoder with crosslayer-transcoder's "
        "save_pretrained where you trust the file (load the Lightning module from the "
        "checkpoint, then `module.model.save_pretrained(DIR)`) and give DIR"
    )


def detect(folder: Path) -> float:
    return float((folder / CKPT_FILE).is_file())


def files(folder: Path) -> tuple[str, ...]:
    """``clt.ckpt``, and the config.yaml beside it where there (it may be the transcoder's
    config, so it is part of the identity)."""
    return (CKPT_FILE, CONFIG_FILE) if (folder / CONFIG_FILE).is_file() else (CKPT_FILE,)


def _pickle_bytes(path: Path) -> bytes:
    """The pickle of a torch zip archive (``<name>/data.pkl``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = [info for info in archive.infolist() if info.filename.endswith("data.pkl")]
            if not entries:
                raise zipfile.BadZipFile("no data.pkl in the archive")
            if entries[0].file_size > _MAX_PICKLE_BYTES:
                raise zipfile.BadZipFile(f"data.pkl is {entries[0].file_size} bytes")
            return archive.read(entries[0])
    except (zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(
            f"{path}: not a torch checkpoint archive ({error}); Lightning's save_checkpoint "
            "writes torch's zip format"
        ) from None


def _refused_global(path: Path, data: bytes) -> str | None:
    """The first class or function the pickle names that the weights-only loader would refuse,
    found by reading its opcodes (nothing is executed); None when it names none. Protocol 2
    (torch.save's) names them in GLOBAL opcodes; STACK_GLOBAL's names are the last two strings
    pushed, where they can be followed. ``CheckpointError`` for a pickle that cannot be read."""
    strings: list[str] = []
    memo: dict[Any, str] = {}
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name == "GLOBAL":
                module, _, name = str(arg).partition(" ")
            elif opcode.name == "STACK_GLOBAL":
                if len(strings) < 2:
                    continue
                module, name = strings[-2], strings[-1]
            else:
                if isinstance(arg, str) and "UNICODE" in opcode.name:
                    strings.append(arg)
                elif opcode.name in ("BINPUT", "LONG_BINPUT", "PUT") and strings:
                    memo[arg] = strings[-1]
                elif opcode.name == "MEMOIZE" and strings:
                    memo[len(memo)] = strings[-1]
                elif opcode.name in ("BINGET", "LONG_BINGET", "GET") and arg in memo:
                    strings.append(memo[arg])
                continue
            if module not in _SAFE_MODULES and f"{module}.{name}" not in _SAFE_GLOBALS:
                return f"{module}.{name}"
    except (ValueError, pickle.UnpicklingError) as error:
        raise CheckpointError(f"{path}: its pickled data cannot be read ({error})") from None
    return None


_INT_OPCODES = ("BININT", "BININT1", "BININT2", "LONG1", "INT", "LONG")
_MEMO_OPCODES = ("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE")


def recorded_step(folder: Path) -> int | None:
    """The ``global_step`` Lightning saved in ``clt.ckpt`` (the optimizer steps taken when it
    was written), read from the pickle's opcodes without executing them (no torch): the first
    whole number pushed right after the string ``global_step``. Lightning's ``dump_checkpoint``
    writes it at the dict's top, before the state and the loops. None when there is none."""
    path = folder / CKPT_FILE
    after_key = False
    try:
        for opcode, arg, _ in pickletools.genops(_pickle_bytes(path)):
            if after_key and opcode.name in _INT_OPCODES and isinstance(arg, int):
                return arg
            if opcode.name in _MEMO_OPCODES:
                continue
            after_key = "UNICODE" in opcode.name and arg == "global_step"
    except (ValueError, pickle.UnpicklingError) as error:
        raise CheckpointError(f"{path}: its pickled data cannot be read ({error})") from None
    return None


def check(folder: Path) -> None:
    """The door: a torch zip archive whose pickle names nothing the weights-only loader refuses,
    and a readable transcoder config beside it where there is one. No torch; the tensors and
    their shapes are checked when converted."""
    path = folder / CKPT_FILE
    refused = _refused_global(path, _pickle_bytes(path))
    if refused is not None:
        raise needs_classes(path, refused)
    if (folder / CONFIG_FILE).is_file():
        parse_config(load_config(folder), folder / CONFIG_FILE)


def _load(folder: Path) -> tuple[Checkpoint, dict[str, Any]]:
    """The checkpoint (its tensors held, memory-mapped) and what else ``inspect`` shows."""
    import torch

    path = folder / CKPT_FILE
    _pickle_bytes(path)  # a clear line for a file that is no torch archive
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu", mmap=True)
    except pickle.UnpicklingError as error:
        match = re.search(r"GLOBAL (\S+)", str(error))
        raise needs_classes(path, match.group(1) if match else "an object") from None
    except Exception as error:  # torch raises RuntimeError and others for damaged archives
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint ({type(error).__name__}: {error})"
        ) from None
    state = payload.get("state_dict") if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: no 'state_dict' (not a Lightning checkpoint)")
    hyper_parameters = payload.get("hyper_parameters")
    tree = hyper_parameters.get("model") if isinstance(hyper_parameters, dict) else None
    if isinstance(tree, dict) and "class_path" in tree:
        config, config_source = {"model": tree}, "hyper_parameters"
        config_label: str | Path = f"{path} hyper_parameters"
    elif (folder / CONFIG_FILE).is_file():
        config, config_source = load_config(folder), CONFIG_FILE
        config_label = folder / CONFIG_FILE
    else:
        raise CheckpointError(
            f"{path}: its hyper_parameters hold no transcoder config (a 'model' with a "
            f"class_path) and there is no {CONFIG_FILE} beside it; put the training run's "
            f"{CONFIG_FILE} (LightningCLI's) next to {CKPT_FILE}, or export the transcoder with "
            "save_pretrained"
        )
    parsed = parse_config(config, config_label)
    tensors = {
        key.removeprefix(STATE_PREFIX): value
        for key, value in state.items()
        if isinstance(key, str) and key.startswith(STATE_PREFIX)
    }
    for key, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: state_dict '{STATE_PREFIX}{key}' is not a tensor")
    shapes = {key: tuple(value.shape) for key, value in tensors.items()}
    check_tensors(parsed, shapes, f"{path} state_dict['{STATE_PREFIX}*']")
    dtypes = {str(value.dtype) for value in tensors.values()}
    dtype = "float32" if "torch.float32" in dtypes else _DTYPES.get(min(dtypes, default=""), "?")
    checkpoint = Checkpoint(
        path=folder,
        **vars(parsed),
        tensor_shapes=shapes,
        tensor_dtype=dtype,
        files=files(folder),
        weights_file=CKPT_FILE,
        tensors=tensors,
    )
    extra = {
        "config": config_source,
        "lightning_version": payload.get("pytorch-lightning_version"),
        "epoch": payload.get("epoch"),
        "global_step": payload.get("global_step"),
    }
    return checkpoint, extra


def read(folder: Path) -> Checkpoint:
    """The checkpoint, validated against its config, its tensors held for conversion."""
    return _load(Path(folder).expanduser())[0]


def describe(folder: Path) -> dict[str, Any]:
    checkpoint, extra = _load(folder)
    return checkpoint_fields(checkpoint, TITLE) | extra


FORMAT = SourceFormat(
    name="crosslayer-transcoder-lightning",
    title=TITLE,
    file_patterns=(CKPT_FILE, CONFIG_FILE),
    detect=detect,
    describe=describe,
    files=files,
    check=check,
    read=read,
    dimensions=lambda folder: None,  # only torch.load tells, when converted
)
