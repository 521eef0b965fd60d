"""circuit-tracer Hub configs: a ``config.yaml`` whose ``transcoders:`` list names one file a
layer, ``hf://org/repo/path?revision=rev`` or a local path, as circuit-tracer 0.5.0's
``load_transcoder_from_hub`` / ``resolve_transcoder_paths`` read them
(``mntss/gemma-scope-transcoders`` lists GemmaScope ``params.npz`` files of
``google/gemma-scope-2b-pt-transcoders``).

Like circuit-tracer, each ``hf://`` file is fetched with ``hf_hub_download`` at the entry's
revision (none: the repo's default branch), so the standard HF cache and ``HF_HUB_OFFLINE=1``
work as usual; unlike circuit-tracer 0.5.0, nothing asks the Hub whether a repo is gated first, so
an offline run reads the cache (its ``download_hf_uris`` fails offline). The download stage
fetches the files and records each one's commit sha (``CheckpointSnapshot.file_commits``); the
checks and the reader resolve them through the cache only (``try_to_load_from_cache``), never the
network. A local path is read as is, relative to the config's folder when not absolute.

Each layer file is read by its suffix (``layer_files``): ``.npz`` as GemmaScope's arrays (what
circuit-tracer's ``gemma-scope`` loader reads), ``.safetensors`` as circuit-tracer's layer files.
Per-layer sets only: circuit-tracer 0.5.0 reads a ``transcoders:`` list of a cross-layer
transcoder only for GemmaScope-2 CLTs, which tracerflow does not read yet. Detecting reads the
config only; checking reads it and the cached files' headers (no torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from tracerflow.errors import CheckpointError
from tracerflow.transcoders.formats.base import HubFile, SourceFormat
from tracerflow.transcoders.formats.circuit_tracer import CONFIG_FILE, config_hooks, read_config
from tracerflow.transcoders.formats.layer_files import (
    PerLayerFiles,
    check_layers,
    file_sha256,
    per_layer_activation,
)

TITLE = "circuit-tracer Hub config"
HF_SCHEME = "hf://"


def _config(folder: Path) -> dict[str, Any] | None:
    """The folder's circuit-tracer config when it has a ``transcoders`` key; None otherwise."""
    config = read_config(folder)
    return config if config is not None and "transcoders" in config else None


def detect(folder: Path) -> float:
    try:
        return 1.0 if _config(folder) is not None else 0.0
    except CheckpointError:
        return 0.0


def files(folder: Path) -> tuple[str, ...]:
    """The config and the local files it lists, as it spells them (relative to the folder, or
    absolute); its Hub files are ``references``, fetched and hashed by the download stage."""
    try:
        _, entries = _entries(folder)
    except CheckpointError:
        return (CONFIG_FILE,)  # check() names what is wrong with it
    return (CONFIG_FILE, *(entry for entry in entries if isinstance(entry, str)))


def parse_hf_uri(uri: str, where: str) -> HubFile:
    """``hf://org/repo/path/in/repo?revision=rev`` as circuit-tracer's ``parse_hf_uri`` reads
    it; ``CheckpointError`` naming ``where`` when it is not one."""
    parsed = urlparse(uri)
    repo, _, path = parsed.path.lstrip("/").partition("/")
    if parsed.scheme != "hf" or not parsed.netloc or not repo or not path:
        raise CheckpointError(
            f"{where}: '{uri}' is not a Hub file (hf://org/repo/path/in/repo?revision=rev)"
        )
    revision = parse_qs(parsed.query).get("revision", [None])[0] or None
    return HubFile(uri=uri, repo_id=f"{parsed.netloc}/{repo}", path=path, revision=revision)


def _entries(folder: Path) -> tuple[dict[str, Any], list[str | HubFile]]:
    """The config and its ``transcoders`` list, in layer order: Hub files, or local paths."""
    where = str(folder / CONFIG_FILE)
    config = _config(folder)
    if config is None:
        raise CheckpointError(f"{folder}: no circuit-tracer config.yaml with a transcoders list")
    model_kind = config.get("model_kind", "transcoder_set")
    if model_kind == "cross_layer_transcoder":
        raise CheckpointError(
            f"{where}: lists the files of a cross-layer transcoder under 'transcoders' (the "
            "GemmaScope-2 CLT layout), which tracerflow does not read yet; per-layer sets only"
        )
    if model_kind != "transcoder_set":
        raise CheckpointError(f"{where}: model_kind {model_kind!r} is not transcoder_set")
    listed = config["transcoders"]
    if not isinstance(listed, list) or not listed:
        raise CheckpointError(f"{where}: 'transcoders' must be a list of files, one per layer")
    entries: list[str | HubFile] = []
    for layer, entry in enumerate(listed):
        if not isinstance(entry, str) or not entry:
            raise CheckpointError(
                f"{where}: transcoders[{layer}] must be a file (hf://... or a path), got {entry!r}"
            )
        entries.append(parse_hf_uri(entry, where) if entry.startswith(HF_SCHEME) else entry)
    return config, entries


def references(folder: Path) -> list[HubFile]:
    """The Hub files the config lists, in layer order (what the download stage fetches)."""
    return [entry for entry in _entries(folder)[1] if isinstance(entry, HubFile)]


def cached_file(hub_file: HubFile) -> Path | None:
    """Where ``hub_file`` is in the HF cache at its revision; None when it is not there. Reads
    the cache only (no network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub_file.repo_id, hub_file.path, revision=hub_file.revision)
    return Path(found) if isinstance(found, str) else None


def snapshot_commit(local_path: Path, path_in_repo: str) -> str:
    """The commit a cached file belongs to: its ``snapshots/<sha>`` folder."""
    snapshot = local_path
    for _ in Path(path_in_repo).parts:
        snapshot = snapshot.parent
    return snapshot.name


def _local(folder: Path, entry: str | HubFile) -> tuple[Path | None, str]:
    """(the file on this machine or None when not cached, its name in the identity)."""
    if isinstance(entry, HubFile):
        return cached_file(entry), entry.uri
    path = Path(entry).expanduser()
    path = path if path.is_absolute() else folder / path
    return (path if path.is_file() else None), entry


def read_folder(folder: str | Path) -> PerLayerFiles:
    """The per-layer transcoder the config lists, every file checked from its header;
    ``CheckpointError`` naming a file that is not in the HF cache (or not on disk), or what is
    wrong with one."""
    folder = Path(folder).expanduser()
    config, entries = _entries(folder)
    located = [_local(folder, entry) for entry in entries]
    missing = [name for path, name in located if path is None]
    if missing:
        raise CheckpointError(
            f"{folder / CONFIG_FILE}: {missing[0]} is not in the Hugging Face cache or on disk"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + "; run with network once (tracerflow downloads every file the config lists)"
        )
    paths = [(path, name) for path, name in located if path is not None]
    shape = check_layers(paths, str(folder / CONFIG_FILE))
    hooks = config_hooks(folder / CONFIG_FILE, config, None)
    hashes = {CONFIG_FILE: file_sha256(folder / CONFIG_FILE)}
    hashes |= {name: file_sha256(path) for path, name in paths}
    return PerLayerFiles(
        kind="plt",
        n_layers=len(paths),
        d_model=shape.d_model,
        d_features=shape.d_features,
        activation=per_layer_activation(shape, config, str(folder / CONFIG_FILE)),
        layer_paths=tuple(path for path, _ in paths),
        hashes=hashes,
        is_folded=None,
        feature_input_hook=hooks[0],
        feature_output_hook=hooks[1],
        tensor_dtype=shape.dtype,
        skip_connection=shape.skip,
    )


def check(folder: Path) -> None:
    """The config, and the headers of the listed files already here: a Hub file not yet in the
    cache is the download stage's to fetch, and is checked when the transcoder is read."""
    config, entries = _entries(folder)
    config_hooks(folder / CONFIG_FILE, config, None)
    located = [_local(folder, entry) for entry in entries]
    for entry, (path, name) in zip(entries, located, strict=True):
        if path is None and not isinstance(entry, HubFile):
            raise CheckpointError(f"{folder / CONFIG_FILE}: lists {name}, which does not exist")
    present = [(path, name) for path, name in located if path is not None]
    if present:
        check_layers(present, str(folder / CONFIG_FILE))


def dimensions(folder: Path) -> tuple[int, int] | None:
    """(layers listed, d_model of the first listed file) when that file is here; else None."""
    _, entries = _entries(folder)
    path, name = _local(folder, entries[0])
    if path is None:
        return None
    return len(entries), check_layers([(path, name)], str(folder / CONFIG_FILE)).d_model


def describe(folder: Path) -> dict[str, Any]:
    """What the config says and its files are: kind, layers, features, activation, hooks, the
    repos the files come from with the commit each resolved to in the cache, sizes."""
    checked = read_folder(folder)
    config, entries = _entries(folder)
    commits: dict[str, str] = {}
    for entry, path in zip(entries, checked.layer_paths, strict=True):
        if isinstance(entry, HubFile):
            commits.setdefault(entry.repo_id, snapshot_commit(path, entry.path))
    first = entries[0]
    model_name = config.get("model_name")
    return checked.fields(
        folder,
        TITLE,
        model_name=model_name if isinstance(model_name, str) else None,
        layer_0_file=first.uri if isinstance(first, HubFile) else first,
        file_commits=", ".join(f"{repo}@{sha}" for repo, sha in commits.items()) or None,
    )


FORMAT = SourceFormat(
    name="circuit-tracer-hub-config",
    title=TITLE,
    file_patterns=(CONFIG_FILE,),
    detect=detect,
    describe=describe,
    files=files,
    check=check,
    read=read_folder,
    dimensions=dimensions,
    references=references,
)
