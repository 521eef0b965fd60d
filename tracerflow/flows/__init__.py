"""The Prefect flows that wire the stages: score one set of transcoders × prompts, score a suite."""

from tracerflow.settings import configure_prefect_defaults

# Prefect reads its settings when first imported: set tracerflow's defaults before that.
configure_prefect_defaults()
