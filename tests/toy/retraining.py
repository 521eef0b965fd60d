"""The toy's whole training (``python -m tracerflow.toy.train``) rerun in the background, into a
folder of its own, for the reproduction tests in ``test_toy_data.py``.

It takes minutes of one core. Under ``make test`` the xdist controller starts it as soon as a
worker has collected a test that needs it (tests/conftest.py), and those tests run last, so both
workers go on with the other tests meanwhile; without xdist, the toy conftest starts it once the
session's tests are collected. Any process then waits for it through ``running.lock``: the
training holds an exclusive ``flock`` on it for as long as it lives, so a waiter blocks on the lock
instead of polling, and a training killed half-way releases it too (then ``exit-code`` is
missing). This module imports no torch: the controller, which collects no tests, imports it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# Set by the xdist controller for its workers: the folder it retrains into.
FOLDER_VARIABLE = "TRACERFLOW_TEST_RETRAINING"
# The training's exit status, written (then renamed into place) once it has ended.
WRAPPER = (
    '"$0" -m tracerflow.toy.train --out "$1" > "$2" 2>&1; echo $? > "$3.part"; mv "$3.part" "$3"'
)


@dataclass(frozen=True)
class Retraining:
    """A retraining's folder: ``data/`` (what it writes), ``train.log``, ``running.lock`` and,
    once it has ended, ``exit-code``."""

    folder: Path

    @property
    def out(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "train.log"

    @property
    def lock(self) -> Path:
        return self.folder / "running.lock"

    @property
    def exit_code(self) -> Path:
        return self.folder / "exit-code"

    def start(self) -> subprocess.Popen[bytes]:
        """Start the training in its own process group, holding ``running.lock`` from before it
        starts until it has ended (its exit code written)."""
        self.out.mkdir(parents=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
        env.pop(FOLDER_VARIABLE, None)
        with self.lock.open("wb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the child inherits this open file and its lock
            arguments = [sys.executable, str(self.out), str(self.log), str(self.exit_code)]
            return subprocess.Popen(
                ["sh", "-c", WRAPPER, *arguments],
                env=env,
                cwd=self.out,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(lock.fileno(),),
                start_new_session=True,
            )

    def wait(self) -> Path:
        """The retrained data folder, once the training has ended; its log if it failed."""
        if not self.lock.is_file():
            raise RuntimeError(f"no retraining was started in {self.folder}")
        with self.lock.open("rb") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH)  # blocks while the training runs
        status = self.exit_code.read_text().strip() if self.exit_code.is_file() else "killed"
        if status != "0":
            tail = self.log.read_text(errors="replace")[-4000:] if self.log.is_file() else ""
            raise RuntimeError(f"retraining failed (exit {status}):\n{tail}")
        return self.out


def stop(retraining: Retraining, process: subprocess.Popen[bytes]) -> None:
    """End the training if it still runs (its whole process group) and remove its folder."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    shutil.rmtree(retraining.folder, ignore_errors=True)
