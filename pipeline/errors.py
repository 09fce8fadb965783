"""The project's exceptions, in one place.

Bad input is never an exception: it is a value (an issues list, a rejection). An exception is
either a bug or an infrastructure failure. Library exceptions (clickhouse-connect, sqlite3, OS
errors) are translated at the edge into one of these:

    FoglampError
     ├── ConfigError        a setting or a file the operator gave is wrong; the node does not start
     ├── RetryableError     infrastructure that may recover: retry with backoff (store down, timeout)
     └── PermanentError     retrying cannot help (schema mismatch, bad SQL, corrupt data)
          └── LinkClosed    the writer link is gone (the writer exited or is draining)
"""

from __future__ import annotations


class FoglampError(Exception):
    """Base of every error the project raises on purpose."""


class ConfigError(FoglampError):
    """A setting, flag or operator-supplied file is invalid. Stops the node at start."""


class RetryableError(FoglampError):
    """A failure that may go away: retry with backoff."""


class PermanentError(FoglampError):
    """A failure that retrying cannot fix."""


class LinkClosed(PermanentError):
    """The link between a front worker and the writer is closed."""
