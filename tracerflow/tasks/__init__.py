"""One module per pipeline stage: a pure function that does the work and a thin Prefect task.

download -> convert -> assemble -> attribute -> score -> export -> record

Importing this package changes nothing: the entry points set Prefect's defaults
(``tracerflow.settings.configure_prefect_defaults`` says which).
"""
