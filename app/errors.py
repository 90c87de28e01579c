"""pagemill's errors: one hierarchy, split by what the caller should do.

A `TransientError` means a service is down: wait and try again, the work is not at fault
(tasks retry it for as long as the outage lasts, the API answers 503). Any other
`PagemillError` is permanent for the work at hand. Library exceptions are translated into
this hierarchy at the boundary by `translate`, so callers test `isinstance(exc,
TransientError)` instead of keeping lists of library classes.
"""

from __future__ import annotations


class PagemillError(Exception):
    """Base of every error pagemill raises on purpose."""


# -- transient: a service is down, wait -----------------------------------------------


class TransientError(PagemillError):
    """A service needed for the work is unreachable now; the same call may succeed later."""


class StorageError(TransientError):
    """Object storage is unreachable or refused; the operation may succeed if retried."""


class DatabaseUnavailable(TransientError):
    """The database cannot be reached (connection refused, dropped, restarting)."""


class BrokerUnavailable(TransientError):
    """The message broker cannot be reached, so a message could not be sent."""


class EngineUnavailable(TransientError):
    """The engine's server cannot be reached now (after the engine's own retries). The work
    goes back to the queue and is tried again later; nothing is marked failed."""


# -- permanent ---------------------------------------------------------------------------


class DocumentError(PagemillError, ValueError):
    """The document cannot be processed; retrying will not help."""


class SourceError(PagemillError, ValueError):
    """A bulk source (an s3:// prefix or a manifest) cannot be ingested as given: a bucket
    that does not exist or is not open to the tenant, S3 needed but not configured."""


class EngineDead(PagemillError, RuntimeError):
    """The engine stopped working. The worker process exits non-zero so its supervisor
    restarts it; the messages it held go back to the queue."""


class WorkHeld(PagemillError):
    """A duplicate delivery: another live worker holds this page or job. The message is
    dropped without counting an attempt; the holder finishes the work."""


def translate(exc: BaseException) -> BaseException:
    """The pagemill error for a library's exception (a connection-level failure becomes a
    TransientError); anything else is returned unchanged. Only connection-level failures
    are translated: an integrity or data error will not pass by waiting."""
    if isinstance(exc, PagemillError):
        return exc
    from kombu.exceptions import OperationalError as KombuOperationalError
    from sqlalchemy.exc import InterfaceError, OperationalError

    if isinstance(exc, OperationalError | InterfaceError):
        found: BaseException = DatabaseUnavailable(str(exc).splitlines()[0])
    elif isinstance(exc, KombuOperationalError):
        found = BrokerUnavailable(str(exc))
    elif _is_redis_connection_error(exc):
        found = BrokerUnavailable(f"{type(exc).__name__}: {exc}")
    elif isinstance(exc, ConnectionError | TimeoutError):
        found = TransientError(f"{type(exc).__name__}: {exc}")
    else:
        return exc
    found.__cause__ = exc
    return found


def _is_redis_connection_error(exc: BaseException) -> bool:
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # redis is the broker's client; not every install has it
        return False
    return isinstance(exc, RedisConnectionError | RedisTimeoutError)
