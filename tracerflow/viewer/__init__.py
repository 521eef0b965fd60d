"""The attribution-graph viewer, served offline: an index of every exported graph and the
circuit-tracer frontend with all of its scripts local.

- ``slugs``: the one validator every graph slug and file name passes before it touches a path.
- ``graph_ids``: circuit-tracer's node-id collision, detected and avoided at export.
- ``index``: the list of graphs, from the graph files plus scores from DuckDB when there are any.
- ``server``: a stdlib HTTP server that serves only the static files and the graph-files folder.
- ``cli``: ``tracerflow view``.
"""

from tracerflow.viewer.slugs import InvalidSlugError, validate_slug

__all__ = ["InvalidSlugError", "validate_slug"]
