"""Attribution graphs on disk without pickle: ``graph.safetensors`` + ``graph.json``.

circuit-tracer's ``Graph.to_pt``/``from_pt`` pickle the whole object, so a planted ``.pt`` file
would run code when read. Here the tensors (shapes as circuit-tracer documents them) go to
safetensors and the rest (prompt, logit targets, model config fields, scan) to JSON, from which
``load_graph`` rebuilds circuit-tracer's ``Graph``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracerflow.errors import StorageError

if TYPE_CHECKING:  # imported where used: circuit-tracer and torch take seconds to import
    from circuit_tracer.graph import Graph

TENSORS_FILE = "graph.safetensors"
METADATA_FILE = "graph.json"
FORMAT_VERSION = 1
_TENSORS = (
    "input_tokens",
    "active_features",
    "selected_features",
    "activation_values",
    "adjacency_matrix",
    "logit_probabilities",
)


def save_graph(graph: Graph, folder: Path) -> None:
    """Write ``graph`` as ``graph.safetensors`` and ``graph.json`` into ``folder``."""
    import torch
    from safetensors.torch import save_file

    tensors = {name: getattr(graph, name).detach().cpu().contiguous() for name in _TENSORS}
    save_file(tensors, str(folder / TENSORS_FILE))
    cfg = {name: value for name, value in vars(graph.cfg).items() if value is not None}
    if isinstance(cfg.get("dtype"), torch.dtype):
        cfg["dtype"] = str(cfg["dtype"]).removeprefix("torch.")
    metadata = {
        "format_version": FORMAT_VERSION,
        "input_string": graph.input_string,
        "logit_targets": [[target.token_str, target.vocab_idx] for target in graph.logit_targets],
        "vocab_size": graph.vocab_size,
        "scan": graph.scan,
        "cfg": cfg,
    }
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=1))


def load_graph(folder: Path) -> Graph:
    """The ``Graph`` that ``save_graph`` wrote into ``folder``, on the CPU."""
    from circuit_tracer.attribution.targets import LogitTarget
    from circuit_tracer.graph import Graph
    from circuit_tracer.utils.tl_nnsight_mapping import UnifiedConfig
    from safetensors.torch import load_file

    try:
        metadata = json.loads((folder / METADATA_FILE).read_text())
        if metadata.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format version {metadata.get('format_version')!r}")
        tensors = load_file(str(folder / TENSORS_FILE))
        missing = set(_TENSORS) - set(tensors)
        if missing:
            raise ValueError(f"no tensor {sorted(missing)}")
        cfg: dict[str, Any] = dict(metadata["cfg"])
        if isinstance(cfg.get("dtype"), str):
            import torch

            dtype = getattr(torch, cfg["dtype"], None)
            cfg["dtype"] = dtype if isinstance(dtype, torch.dtype) else None
        return Graph(
            input_string=metadata["input_string"],
            logit_targets=[LogitTarget(str(s), int(i)) for s, i in metadata["logit_targets"]],
            vocab_size=metadata["vocab_size"],
            scan=metadata["scan"],
            cfg=UnifiedConfig.from_dict(cfg),
            **{name: tensors[name] for name in _TENSORS},
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StorageError(f"{folder}: not a readable tracerflow graph ({error})") from error
