"""One module per pipeline stage: a pure function that does the work and a thin Prefect task.

download -> convert -> assemble -> attribute -> score -> export -> record
"""
