"""The project's exceptions, in one place.

Bad input is never an exception: it is a value (an issues list, a rejection). An exception is
either a bug or an infrastructure failure. Library exceptions (clickhouse-connect, sqlite3, OS
errors) are translated at the edge into one of these; anything else is a bug and is not caught:
it crashes the process loudly, and the supervisor restarts it.

    FoglampError
     ├── ConfigError          a setting or a file the operator gave is wrong; the node does not start
     ├── ControlPlaneError    an operator's command names an unknown org or key, or a bad value
     ├── RetryableError       infrastructure that may recover: retry with backoff (store down, timeout)
     │    └── ControlPlaneUnavailable  PostgreSQL unreachable and the key not in the cache
     └── PermanentError       retrying cannot help (bad SQL, data the store refuses, a torn frame)

Where each is raised and handled:

    ConfigError        pipeline.config, stages.price_file        → run.py prints it, exits 2
    ControlPlaneError  pipeline.controlplane                     → run.py prints it, exits 2
    RetryableError     pipeline.store, pipeline.spool            → stages.flush retries; the spool stage answers 503
    ControlPlaneUnavailable  pipeline.controlplane_pg            → the front answers 503 overloaded (Retry-After)
    PermanentError     pipeline.store, pipeline.frames           → stages.flush dead-letters; a link reconnects
"""

from __future__ import annotations


class FoglampError(Exception):
    """Base of every error the project raises on purpose."""


class ConfigError(FoglampError):
    """A setting, flag or operator-supplied file is invalid. Stops the node at start."""


class ControlPlaneError(FoglampError):
    """An operator's mistake: unknown org or key, duplicate org name, ambiguous prefix, bad value."""


class RetryableError(FoglampError):
    """A failure that may go away: retry with backoff."""


class PermanentError(FoglampError):
    """A failure that retrying cannot fix."""


class ControlPlaneUnavailable(RetryableError):
    """The shared control plane (PostgreSQL) cannot be reached and the key is not in the cache: the
    key may be valid, so the request is refused as overloaded (503), never as unauthorized."""
