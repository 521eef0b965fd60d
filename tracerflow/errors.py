"""Error types a user can act on. The CLI turns each into one ``error: <message>`` line on stderr
and exits with the error's ``exit_code``:

=====================  =====  ==========================================================
error                  exit   meaning
=====================  =====  ==========================================================
ConfigError            2      a preset, suite file, setting or parameter is invalid
UsageError             2      a bad run input (prompt, source, number, device, dtype)
CheckpointError        2      a checkpoint or converted folder is missing or malformed
SourceError            2      a source that cannot be resolved (no such repo, no access)
SourceError retryable  1      network trouble: the attempt failed, a later one may not
StorageError           2      the database, query or ``--out`` file named cannot be used
StoreUnreachableError  1      a lake's PostgreSQL catalog cannot be reached right now
StoreBusyError         1      another process has held the score database too long
RunNotRecordedError    1      a run finished but its write to the database failed
AttributionError       1      attribution failed on an input
TracerflowError        1      any other failure, e.g. a run that failed
=====================  =====  ==========================================================

2 is what click gives a wrong command-line option: the input must change before a retry helps.
1 is a run that failed: the same command may succeed later. An error inside a run that has
started (any of the above) fails the run, so the command exits 1.
"""


class TracerflowError(Exception):
    """Base class of every error tracerflow raises on purpose."""

    exit_code: int = 1
    # Where the full log of the command that failed is (a run's: tracebacks and all), named on
    # its `error:` line; None when the command keeps no log.
    log_path: str | None = None


class CheckpointError(TracerflowError):
    """A transcoder checkpoint (or a converted folder) is missing, malformed or unsupported."""

    exit_code = 2


class SourceError(TracerflowError):
    """A transcoder or model source cannot be resolved or downloaded.

    ``retryable`` is True for network trouble that a later attempt may not meet again.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.exit_code = 1 if retryable else 2


class ConfigError(TracerflowError):
    """A preset, suite file, setting or parameter is invalid."""

    exit_code = 2


class AttributionError(TracerflowError):
    """Attribution cannot run on this input (prompt too long, no active features, ...)."""


class StorageError(TracerflowError):
    """The artifact store or the score database cannot be read or written."""

    exit_code = 2


class StoreBusyError(StorageError):
    """Another process has held the score database's file lock too long: a later try may work."""

    exit_code = 1


class StoreUnreachableError(StorageError):
    """A lake's PostgreSQL catalog cannot be reached: the store is fine, a later try may work."""

    exit_code = 1


class UsageError(ConfigError):
    """A run was asked with a bad input (a prompt, source, number, device or dtype); caught
    before anything starts."""


class RunNotRecordedError(StorageError):
    """A run's items finished but its one write to the score database failed. ``rows`` are the
    items' results as computed (not in the database)."""

    exit_code = 1
    rows: list[dict[str, object]]

    def __init__(self, message: str, rows: list[dict[str, object]] | None = None) -> None:
        super().__init__(message)
        self.rows = rows or []
