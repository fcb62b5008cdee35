"""Logging set-up for every command: levels, text or JSON lines, repeats collapsed, secrets masked.

librdkafka's own log lines arrive through Python logging (logger `librdkafka`, see
KafkaSettings.client_config), so they obey the level and are collapsed like any other line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

#: Third-party loggers whose INFO lines (credentials found, each HTTP request) are noise for users.
QUIET_LIBRARIES = ("botocore", "boto3", "s3transfer", "urllib3", "httpx", "httpx2", "httpcore", "httpcore2", "schedule")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SECRET_MASK = "****"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


# librdkafka repeats a failure with a changing tail: "(after 0ms in state CONNECT, 3 identical
# error(s) suppressed)". Lines equal but for it are the same line.
_VARYING_TAIL = re.compile(r"\s*\(after \d+ms in state \w+(?:, \d+ identical error\(s\) suppressed)?\)\s*$")


class RepeatFilter(logging.Filter):
    """Lets a line through once per `interval_s`; repeats in between are counted, not shown.

    The next time the line is let through it says how many repeats were held back. Lines are
    identical when their logger, level and message are (librdkafka's changing tails ignored).
    """

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 max_lines: int = 1024):
        super().__init__()
        self.interval_s, self.clock, self.max_lines = interval_s, clock, max_lines
        self._seen: dict[tuple, list] = {}  # key -> [shown at, repeats held back]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        key = (record.name, record.levelno, _VARYING_TAIL.sub("", message))
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.interval_s:
            seen[1] += 1
            return False
        if seen is not None and seen[1]:
            record.msg, record.args = f"{message} ({seen[1]} more like it in the last {now - seen[0]:.0f}s)", None
        if len(self._seen) >= self.max_lines:
            self._seen.clear()  # bounded memory: a flood of distinct lines just shows them again
        self._seen[key] = [now, 0]
        return True


class SecretFilter(logging.Filter):
    """Replaces configured secret values with **** in every line."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        self.secrets: set[str] = {s for s in secrets if s}

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            masked = mask(message, self.secrets)
            if masked != message:
                record.msg, record.args = masked, None
        return True


_secrets = SecretFilter()


def mask(text: str, secrets: Iterable[str] | None = None) -> str:
    """`text` with every configured secret (see `add_secrets`) replaced by ****."""
    for secret in sorted(_secrets.secrets if secrets is None else secrets, key=len, reverse=True):
        text = text.replace(secret, SECRET_MASK)
    return text


def add_secrets(secrets: Iterable[str]) -> None:
    """Secret values that must never appear in log lines or error messages."""
    _secrets.secrets.update(s for s in secrets if s)


def level_of(verbose: int, quiet: int, level: str | None, default: int = logging.WARNING) -> int:
    """The root level: `--log-level` wins; else -v is INFO and -vv DEBUG, -q ERROR and -qq CRITICAL
    (whatever the command's default); else the command's default."""
    if level:
        return logging.getLevelNamesMapping()[level.upper()]
    if not (verbose or quiet):
        return default
    return min(logging.CRITICAL, max(logging.DEBUG, logging.WARNING - 10 * verbose + 10 * quiet))


def configure(level: int, fmt: str = "text") -> None:
    """One stderr handler on the root logger, with the filters above; callable again to change it."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "archiver", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.archiver = True
        handler.addFilter(_secrets)
        handler.addFilter(RepeatFilter())
        root.addHandler(handler)
    handler.setStream(sys.stderr)  # the current one (tests and click's runner swap it)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root.setLevel(level)
    for name in QUIET_LIBRARIES:  # their INFO lines only when debugging
        logging.getLogger(name).setLevel(logging.NOTSET if level <= logging.DEBUG else max(level, logging.WARNING))
