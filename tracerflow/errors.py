"""Error types a user can act on. The CLI turns each into one line and a non-zero exit."""


class TracerflowError(Exception):
    """Base class of every error tracerflow raises on purpose."""


class CheckpointError(TracerflowError):
    """A transcoder checkpoint (or a converted folder) is missing, malformed or unsupported."""


class SourceError(TracerflowError):
    """A transcoder or model source cannot be resolved or downloaded.

    ``retryable`` is True for network trouble that a later attempt may not meet again.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class ConfigError(TracerflowError):
    """A preset, suite file, setting or parameter is invalid."""


class AttributionError(TracerflowError):
    """Attribution cannot run on this input (prompt too long, no active features, ...)."""


class StorageError(TracerflowError):
    """The artifact store or the score database cannot be read or written."""


class UsageError(ConfigError):
    """A run was asked with a bad input (a prompt, source, number, device or dtype); caught
    before anything starts. The CLI exits 2 for it, like a wrong command-line option."""

    exit_code = 2


class RunNotRecordedError(StorageError):
    """A run's items finished but its one write to the score database failed. ``rows`` are the
    items' results as computed (not in the database)."""

    rows: list[dict[str, object]]

    def __init__(self, message: str, rows: list[dict[str, object]] | None = None) -> None:
        super().__init__(message)
        self.rows = rows or []
