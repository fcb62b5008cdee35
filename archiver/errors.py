"""Errors by type: every failure is transient (retry with backoff) or terminal (one line, exit).

The message of an ArchiverError is written for the user: one line that names the problem.
"""


class ArchiverError(Exception):
    """Base of every error archiver raises on purpose."""

    exit_code = 1


class ConfigError(ArchiverError):
    """Bad configuration or command-line input; names the offending key or option."""

    exit_code = 2


class TransientError(ArchiverError):
    """A failure worth retrying: a timeout, a throttled or unavailable service.

    `dependency` names what is out (metrics label and log lines): an outage of it pauses the
    partitions that need it; it never diverts or drops records.
    """

    dependency = "store"

    @property
    def waiting_for(self) -> str:
        """What is out, in words."""
        return {"store": "object store", "registry": "schema registry", "dlq": "dead-letter topic"}.get(
            self.dependency, self.dependency)


class RegistryUnavailable(TransientError):
    """The schema registry cannot answer now: unreachable, timing out, 5xx, 429, or a 404 that
    is not the registry's own "schema not found"."""

    dependency = "registry"


class DeadLetterUndelivered(TransientError):
    """The dead-letter topic did not take a record (unreachable, refused, missing): the range
    that holds it is consumed again once it recovers."""

    dependency = "dlq"


class TerminalError(ArchiverError):
    """A failure retrying cannot fix."""


class NotFound(TerminalError):
    """The object, topic or schema asked for does not exist."""


class PreconditionFailed(TerminalError):
    """A conditional write lost: the object already exists (If-None-Match: *)."""


class DecodeError(TerminalError):
    """A message that cannot be decoded (bad magic byte, unknown schema, truncated datum)."""
