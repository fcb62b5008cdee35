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
    """A failure worth retrying: a timeout, a throttled or unavailable service."""


class TerminalError(ArchiverError):
    """A failure retrying cannot fix."""


class NotFound(TerminalError):
    """The object, topic or schema asked for does not exist."""


class PreconditionFailed(TerminalError):
    """A conditional write lost: the object already exists (If-None-Match: *)."""


class DecodeError(TerminalError):
    """A message that cannot be decoded (bad magic byte, unknown schema, truncated datum)."""
