"""Files planted in a home run no code: graphs are never unpickled, and Prefect reads no result
file (the artifact store is the only cache)."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch

from tests.reliability.harness import PROMPTS, assert_reproduces, run, stage_folder
from tracerflow.errors import StorageError
from tracerflow.storage.graphs import TENSORS_FILE, load_graph


class Canary:
    """Unpickling this creates the file ``path``: proof that a pickle was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def test_a_pickle_in_place_of_a_graph_runs_nothing(tmp_path):
    canary = tmp_path / "canary"
    folder = tmp_path / "graph"
    folder.mkdir()
    (folder / TENSORS_FILE).write_bytes(pickle.dumps(Canary(canary)))
    torch.save(Canary(canary), folder / "graph.pt")
    with pytest.raises(StorageError, match="not a readable tracerflow graph"):
        load_graph(folder)
    assert not canary.exists()


def test_a_planted_pickle_graph_runs_nothing_and_is_recomputed(tmp_path, prefect_api, monkeypatch):
    home, canary = tmp_path / "home", tmp_path / "canary"
    run(home, PROMPTS[:1], monkeypatch)
    graph_folder = stage_folder(home, "attribute")
    for name in ("graph.pt", TENSORS_FILE):  # torch's format: what circuit-tracer's from_pt reads
        torch.save(Canary(canary), graph_folder / name)
    # The later stages must read the graph again.
    for stage in ("score", "export"):
        shutil.rmtree(stage_folder(home, stage))

    (row,) = run(home, PROMPTS[:1], monkeypatch).values()

    assert not canary.exists()
    assert_reproduces(row, home)


def test_a_planted_prefect_result_runs_nothing(tmp_path, prefect_api, monkeypatch):
    """A ``_prefect_result`` naming Prefect's pickle serializer in every stage folder, as the old
    cache wrote them: a fully cached run must not read one."""
    from prefect.results import ResultRecord, ResultRecordMetadata
    from prefect.serializers import PickleSerializer

    home, canary = tmp_path / "home", tmp_path / "canary"
    run(home, PROMPTS[:1], monkeypatch)
    for folder in (home / "artifacts").glob("*/*"):
        record = ResultRecord(
            metadata=ResultRecordMetadata(
                storage_key=str(folder / "_prefect_result"),
                expiration=None,
                serializer=PickleSerializer(),
            ),
            result=Canary(canary),
        )
        (folder / "_prefect_result").write_bytes(record.serialize())

    (row,) = run(home, PROMPTS[:1], monkeypatch).values()

    assert not canary.exists()
    assert_reproduces(row, home)
