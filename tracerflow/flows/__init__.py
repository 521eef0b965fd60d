"""The Prefect flows that wire the stages: score one set of transcoders × prompts, score a suite.

Importing this package changes nothing: the entry points set Prefect's defaults
(``tracerflow.settings.configure_prefect_defaults`` says which).
"""
