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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Registered:
    """One deployment as the server holds it after ``register``."""

    name: str  # flow/deployment, as `prefect deployment run` takes it
    schedules: list[str]  # "cron (timezone)"
    work_pool: str | None
    suite: str | None  # the suite a scheduled run scores, if it is a suite deployment


def register(prefect_file: Path | None = None, api_url: str | None = None) -> list[Registered]:
    """Ensure the work pool exists, deploy every deployment in ``prefect_file``, and return them
    as the server now holds them."""
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
    _check_server_answers(env["PREFECT_API_URL"])
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
    return registered(prefect_file, env["PREFECT_API_URL"])


def _check_server_answers(api_url: str) -> None:
    """``ConfigError`` in one line when no Prefect server answers at ``api_url`` (``prefect
    deploy`` would print about 60 lines of retries and tracebacks)."""
    import httpx

    try:
        httpx.get(f"{api_url.rstrip('/')}/health", timeout=10).raise_for_status()
    except httpx.HTTPError as error:
        raise ConfigError(
            f"no Prefect server answers at {api_url} ({type(error).__name__}): start one with "
            "`tracerflow server up`, or pass --api-url"
        ) from None


def registered(prefect_file: Path, api_url: str) -> list[Registered]:
    """The deployments ``prefect_file`` names, read back from the server at ``api_url``."""
    import httpx
    import yaml

    names = [d["name"] for d in yaml.safe_load(prefect_file.read_text())["deployments"]]
    api = api_url.rstrip("/")
    found = httpx.post(
        f"{api}/deployments/filter", json={"deployments": {"name": {"any_": names}}}, timeout=30
    )
    found.raise_for_status()
    flows = {
        flow["id"]: flow["name"]
        for flow in httpx.post(f"{api}/flows/filter", json={}, timeout=30).json()
    }
    result = []
    for deployment in sorted(found.json(), key=lambda d: names.index(d["name"])):
        schedules = [
            f"{s['schedule']['cron']} ({s['schedule'].get('timezone') or 'UTC'})"
            for s in deployment["schedules"]
            if "cron" in s["schedule"]
        ]
        result.append(
            Registered(
                name=f"{flows.get(deployment['flow_id'], '?')}/{deployment['name']}",
                schedules=schedules,
                work_pool=deployment.get("work_pool_name"),
                suite=(deployment.get("parameters") or {}).get("suite"),
            )
        )
    return result


def suite_readiness(deployment: Registered) -> str | None:
    """Why the scheduled runs of a suite deployment would fail on a worker like this machine:
    its suite, a model offline and not in the Hugging Face cache, a missing transcoder folder
    (the run's own door checks). None when they can run, or it is no scheduled suite."""
    if deployment.suite is None or not deployment.schedules:
        return None
    from tracerflow.flows.validation import suite_request, validate_run_request
    from tracerflow.suites import load_suite

    try:
        validate_run_request(suite_request(load_suite(deployment.suite)))
    except TracerflowError as error:
        return str(error)
    return None
