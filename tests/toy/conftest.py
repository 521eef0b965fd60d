"""Fixtures of the toy-preset tests: the shipped transcoders converted once, models on CPU, and
the toy's whole training rerun in the background from the start of the session.

Everything here runs offline: ``HF_HUB_OFFLINE=1`` is forced before any Hugging Face library is
imported by a test.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

from tests.conftest import under_xdist
from tests.toy.retraining import FOLDER_VARIABLE, Retraining, stop
from tracerflow import toy
from tracerflow.models import ReplacementModel, load_replacement_model
from tracerflow.transcoders import convert, load_converted

torch.set_num_threads(1)


RETRAINING = pytest.StashKey[tuple[Retraining, subprocess.Popen[bytes]]]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """The retraining takes minutes on one core, and the tests run on one core (torch at one
    thread): when a selected test needs it, start it now, so it runs beside the tests before.
    Under xdist the controller starts it (tests/conftest.py) and those tests run last."""
    if session.config.option.collectonly or under_xdist(session.config):
        return
    if any("retrained" in getattr(item, "fixturenames", ()) for item in session.items):
        retraining = Retraining(Path(tempfile.mkdtemp(prefix="tracerflow-retrained-")))
        session.config.stash[RETRAINING] = (retraining, retraining.start())


def pytest_sessionfinish(session: pytest.Session) -> None:
    started = session.config.stash.get(RETRAINING, None)
    if started is not None:
        stop(*started)


@pytest.fixture(scope="session")
def retrained(request: pytest.FixtureRequest) -> Path:
    """The whole toy training, rerun into a temporary folder (a few minutes on one core),
    started when the session's tests were collected (tests/toy/retraining.py)."""
    folder = os.environ.get(FOLDER_VARIABLE)
    if folder is not None:  # an xdist worker: the controller retrains
        return Retraining(Path(folder)).wait()
    started = request.config.stash.get(RETRAINING, None)
    if started is None:  # selected in a way collection did not see
        retraining = Retraining(Path(tempfile.mkdtemp(prefix="tracerflow-retrained-")))
        started = request.config.stash[RETRAINING] = (retraining, retraining.start())
    return started[0].wait()


@pytest.fixture(scope="session")
def converted_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each shipped checkpoint (clt, plt, jumprelu-clt) converted to circuit-tracer files."""
    root = tmp_path_factory.mktemp("converted")
    return {name: convert(toy.transcoder_dir(name), root / name) for name in toy.TRANSCODER_FOLDERS}


@pytest.fixture(scope="session")
def toy_clt_model(converted_dirs: dict[str, Path]) -> ReplacementModel:
    """The toy model with its trained CLT, on CPU."""
    return load_replacement_model("toy-gpt2", load_converted(converted_dirs["clt"], "cpu"), "cpu")
