"""One module per pipeline stage: a pure function that does the work and a thin Prefect task.

download -> convert -> assemble -> attribute -> score -> export -> record
"""

from tracerflow.settings import configure_prefect_defaults

# Prefect reads its settings when first imported: set tracerflow's defaults before that.
configure_prefect_defaults()
