"""tracerflow: score sparse transcoders with circuit-tracer, keep every number, browse every graph.

The pipeline, one stage per module under `tracerflow/tasks/`:
download -> convert -> assemble -> attribute -> score -> export -> record.
"""

__version__ = "0.1.0"
