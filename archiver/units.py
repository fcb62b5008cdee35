"""Sizes, durations and points in time, as every command and the configuration read them.

Sizes: a number of bytes, or a number with a decimal (`kB`, `MB`, `GB`, `TB`: powers of 1000) or
binary (`KiB`, `MiB`, `GiB`, `TiB`: powers of 1024) unit, case-insensitive (`128MB`, `1.5GiB`).
A bare `k`/`m`/`g` is refused rather than guessed: it meant 1024-based units in the configuration
once, and 1000-based ones elsewhere.
Durations: a number of seconds, or a number with `ms`, `s`, `m`, `h`, `d` or `w` (`90s`, `15m`).
Times: ISO-8601 (UTC unless it says otherwise), `now`, or a duration before now (`-2h`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from archiver.errors import ConfigError

SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
              "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}

_NUMBER = r"(\d+(?:\.\d+)?|\.\d+)"
_SIZE = re.compile(rf"\s*{_NUMBER}\s*([a-z]*)\s*")
_DURATION = re.compile(rf"\s*{_NUMBER}\s*([a-z]*)\s*")


def parse_size(value: str | int, what: str) -> int:
    """Bytes of `1048576`, `128MB` (10^6) or `64MiB` (2^20).

    Args:
        value: the text, or an integer number of bytes (a TOML integer).
        what: the option or key named in the error.

    Raises:
        ConfigError: not a size, negative, or a bare k/m/g suffix.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected a size such as 128MB or 64MiB, got {value!r}")
    if isinstance(value, int | float):
        if value < 0 or value != int(value):
            raise ConfigError(f"{what}: expected a whole, non-negative number of bytes, got {value!r}")
        return int(value)
    m = _SIZE.fullmatch(str(value).lower())
    if m and m[2] in ("k", "m", "g", "t"):
        raise ConfigError(f"{what}: {value!r} is ambiguous: write {m[1]}{m[2].upper()}iB (powers of 1024) "
                          f"or {m[1]}{m[2].upper()}B (powers of 1000)")
    if not m or m[2] not in SIZE_UNITS:
        raise ConfigError(f"{what}: expected a size such as 128MB or 64MiB, got {value!r}")
    return int(float(m[1]) * SIZE_UNITS[m[2]])


def parse_duration(value: str | float, what: str, bare_unit: str = "s") -> float:
    """Seconds of `90`, `500ms`, `30s`, `15m`, `1h`, `2d` or `1w`.

    Args:
        value: the text, or a number in `bare_unit` (a TOML number).
        what: the option or key named in the error.
        bare_unit: the unit of a number without one (`ms` for settings counted in milliseconds).

    Raises:
        ConfigError: not a duration, or negative.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected a duration such as 90s, 15m, 1h or 2d, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigError(f"{what}: must not be negative, got {value!r}")
        return float(value) * DURATION_UNITS[bare_unit]
    m = _DURATION.fullmatch(str(value).lower())
    if not m or m[2] not in DURATION_UNITS and m[2] != "":
        raise ConfigError(f"{what}: expected a duration such as 90s, 15m, 1h or 2d, got {value!r}")
    return float(m[1]) * DURATION_UNITS[m[2] or bare_unit]


def parse_time(text: str, now_ms: int, what: str) -> int:
    """Epoch milliseconds of an ISO-8601 time (UTC unless it says otherwise), `now`, or `-2h`.

    Raises:
        ConfigError: none of these, naming `what`.
    """
    text = text.strip()
    if text == "now":
        return now_ms
    if text.startswith("-"):
        try:
            return now_ms - round(parse_duration(text[1:], what) * 1000)
        except ConfigError:
            pass  # an ISO-8601 time never starts with "-": the error below says what is accepted
    else:
        try:
            parsed = datetime.fromisoformat(text)  # "Z" included, since Python 3.11
        except ValueError:
            parsed = None
        if parsed is not None:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return int(parsed.timestamp() * 1000)
    raise ConfigError(f"{what}: {text!r} is not an ISO-8601 time, 'now' or a relative time such as -2h")


def format_size(n: int) -> str:
    """The shortest exact spelling of `n` bytes (`128MiB`, `64MB`, `1000001`); parse_size inverts it."""
    for unit in ("tib", "tb", "gib", "gb", "mib", "mb", "kib", "kb"):
        factor = SIZE_UNITS[unit]
        if n and n % factor == 0:
            return f"{n // factor}{unit[0].upper()}{unit[1:].replace('b', 'B')}"
    return str(n)


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration (`1h`, `90s`, `1.5s`); parse_duration inverts it."""
    if seconds and seconds == int(seconds):
        for unit in ("w", "d", "h", "m"):
            if int(seconds) % DURATION_UNITS[unit] == 0:
                return f"{int(seconds) // DURATION_UNITS[unit]}{unit}"
        return f"{int(seconds)}s"
    return f"{seconds:g}s"
