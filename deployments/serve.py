"""The single-machine route: serve the suite deployments from this process (no work pool).

    python deployments/serve.py          # Ctrl-C to stop; runs are executed here, on schedule

The same deployments as ``deployments/prefect.yaml``; use that route (``tracerflow deploy`` and a
worker) when runs should move to docker or kubernetes work pools.
"""

from tracerflow.settings import configure_prefect_defaults

# Prefect reads its settings when first imported: tracerflow's defaults go first.
configure_prefect_defaults()

from prefect import serve  # noqa: E402

from tracerflow.flows.suite import suite_flow  # noqa: E402

if __name__ == "__main__":
    serve(
        suite_flow.to_deployment(
            name="toy-nightly", cron="0 2 * * *", parameters={"suite": "toy-nightly"}
        ),
        suite_flow.to_deployment(
            name="gpt2-16k-nightly", cron="0 3 * * *", parameters={"suite": "gpt2-16k-nightly"}
        ),
    )
