"""Fixtures of the toy-preset tests: the shipped transcoders converted once, models on CPU, and
the toy's whole training rerun in the background from the start of the session.

Everything here runs offline: ``HF_HUB_OFFLINE=1`` is forced before any Hugging Face library is
imported by a test.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.conftest import under_xdist
from tracerflow import toy
from tracerflow.models import ReplacementModel, load_replacement_model
from tracerflow.transcoders import convert, load_converted

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Retraining:
    """``python -m tracerflow.toy.train`` running in a subprocess, writing into ``out``."""

    out: Path
    log: Path
    process: subprocess.Popen[bytes]

    def wait(self) -> Path:
        """The retrained data folder, once the training has finished; its log if it failed."""
        if self.process.wait() != 0:
            tail = self.log.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"retraining failed (exit {self.process.returncode}):\n{tail}")
        return self.out

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.out.parent, ignore_errors=True)


RETRAINING = pytest.StashKey[Retraining]()


def start_retraining() -> Retraining:
    folder = Path(tempfile.mkdtemp(prefix="tracerflow-retrained-"))
    out, log = folder / "data", folder / "train.log"
    out.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "tracerflow.toy.train", "--out", str(out)],
            env=env,
            cwd=out,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return Retraining(out=out, log=log, process=process)


def pytest_collection_finish(session: pytest.Session) -> None:
    """The retraining takes minutes on one core, and the tests run on one core (torch at one
    thread): when a selected test needs it, start it now, so it runs beside the tests before.
    Under xdist the other worker is that second core: the fixture starts it when first asked."""
    if session.config.option.collectonly or under_xdist(session.config):
        return
    if any("retrained" in getattr(item, "fixturenames", ()) for item in session.items):
        session.config.stash[RETRAINING] = start_retraining()


def pytest_sessionfinish(session: pytest.Session) -> None:
    retraining = session.config.stash.get(RETRAINING, None)
    if retraining is not None:
        retraining.stop()


@pytest.fixture(scope="session")
def retrained(request: pytest.FixtureRequest) -> Path:
    """The whole toy training, rerun into a temporary folder (a few minutes on one core),
    started when the session's tests were collected."""
    retraining = request.config.stash.get(RETRAINING, None)
    if retraining is None:  # selected in a way collection did not see
        retraining = request.config.stash[RETRAINING] = start_retraining()
    return retraining.wait()


@pytest.fixture(scope="session")
def converted_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each shipped checkpoint (clt, plt, jumprelu-clt) converted to circuit-tracer files."""
    root = tmp_path_factory.mktemp("converted")
    return {name: convert(toy.transcoder_dir(name), root / name) for name in toy.TRANSCODER_FOLDERS}


@pytest.fixture(scope="session")
def toy_clt_model(converted_dirs: dict[str, Path]) -> ReplacementModel:
    """The toy model with its trained CLT, on CPU."""
    return load_replacement_model("toy-gpt2", load_converted(converted_dirs["clt"], "cpu"), "cpu")
