"""Persistence: the content-addressed artifact store and the DuckDB score store."""
