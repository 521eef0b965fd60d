"""Register tracerflow's scheduled deployments with a Prefect server, idempotently.

The shipped route is ``deployments/prefect.yaml`` + ``prefect deploy --all`` + a ``process`` work
pool + ``prefect worker start``; re-running ``register`` upserts the same deployments and
schedules. No checkout's path is baked in: the pull step ``use_installed_package`` moves a worker
to wherever tracerflow is installed on its machine (docs/operations.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import tracerflow
from tracerflow.errors import ConfigError, TracerflowError

WORK_POOL = "tracerflow-process"


def package_root() -> Path:
    """The folder that contains the ``tracerflow`` package (site-packages, or a checkout)."""
    return Path(tracerflow.__file__).resolve().parent.parent


def use_installed_package() -> dict[str, Any]:
    """A Prefect pull step: run the flow from the installed tracerflow package."""
    directory = package_root()
    os.chdir(directory)
    return {"directory": str(directory)}


def default_prefect_file() -> Path:
    path = Path.cwd() / "deployments" / "prefect.yaml"
    if not path.is_file():
        path = package_root() / "deployments" / "prefect.yaml"
    return path


def _prefect(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def register(prefect_file: Path | None = None, api_url: str | None = None) -> str:
    """Ensure the work pool exists and deploy every deployment in ``prefect_file``."""
    prefect_file = (prefect_file or default_prefect_file()).resolve()
    if not prefect_file.is_file():
        raise ConfigError(f"{prefect_file}: no prefect.yaml here; pass --prefect-file")
    env = {**os.environ}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    if not env.get("PREFECT_API_URL"):
        raise ConfigError(
            "no Prefect server configured: start one with `tracerflow server up` and set "
            "PREFECT_API_URL (it prints the value), or pass --api-url"
        )
    pool = _prefect("work-pool", "inspect", WORK_POOL, env=env)
    if pool.returncode != 0:
        created = _prefect("work-pool", "create", WORK_POOL, "--type", "process", env=env)
        if created.returncode != 0:
            raise TracerflowError(f"could not create work pool {WORK_POOL}: {created.stderr}")
    # `prefect deploy` resolves entrypoints relative to the folder of prefect.yaml's project:
    # run it from the package root, which is what the pull step moves workers to as well.
    deployed = subprocess.run(
        [
            sys.executable,
            "-m",
            "prefect",
            "--no-prompt",
            "deploy",
            "--all",
            "--prefect-file",
            str(prefect_file),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=package_root(),
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    if deployed.returncode != 0:
        raise TracerflowError(
            f"prefect deploy failed:\n{deployed.stdout[-2000:]}\n{deployed.stderr[-2000:]}"
        )
    return deployed.stdout
