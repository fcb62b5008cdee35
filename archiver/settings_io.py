"""How setting values are read: TOML files, type coercion, librdkafka pass-through, secrets.

archiver.config declares the settings; this module turns text from files, environment variables
and flags into their declared types, with one-line errors that name the key.
"""

from __future__ import annotations

import functools
import tomllib
import types
import typing
from collections.abc import Mapping
from enum import Enum, StrEnum

from archiver import units
from archiver.errors import ConfigError

SECRET_MASK = "****"

#: A setting or librdkafka property is secret when its name (dots or underscores) contains one of these.
SECRET_MARKS = ("password", "passphrase", "secret", "credential", "user_info", "key_pem", "private_key",
                "oauthbearer_config", "token")


class Unit(Enum):
    """What a number setting counts, so that text with a unit can be read into it."""

    BYTES = "bytes"
    SECONDS = "seconds"
    MILLIS = "milliseconds"


def is_secret(name: str) -> bool:
    """Whether a setting or property name holds a secret (see SECRET_MARKS)."""
    normal = name.lower().replace(".", "_")
    return any(mark in normal for mark in SECRET_MARKS)


def read_toml(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: {e}") from None


def flatten(table: Mapping, stringify: bool = False, prefix: str = "") -> dict:
    """Nested TOML tables as dotted keys: `ssl.key.location = "x"` in TOML is {"ssl": {"key": ...}}."""
    out = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, stringify, f"{prefix}{key}."))
        elif stringify:
            out[prefix + key] = str(value).lower() if isinstance(value, bool) else str(value)
        else:
            out[prefix + key] = value
    return out


def client_from_env(env: Mapping[str, str], prefix: str) -> dict[str, str]:
    """librdkafka properties from `<prefix><NAME>` variables: `_` is `.`, `__` is `_`, lower case."""
    return {name[len(prefix):].lower().replace("__", "\0").replace("_", ".").replace("\0", "_"): value
            for name, value in env.items() if name.startswith(prefix) and len(name) > len(prefix)}


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls, include_extras=True)


def field_kind(cls, name: str) -> tuple[type, Unit | None, bool]:
    """(base type, unit, optional) of a settings field."""
    hint = _hints(cls)[name]
    unit = None
    if typing.get_origin(hint) is typing.Annotated:
        hint, unit = hint.__origin__, hint.__metadata__[0]
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = True, args[0]
    return hint, unit, optional


def coerce(key: str, cls, name: str, value: object) -> object:
    """`value` (text from the environment or a flag, or a TOML value) as the field's declared type."""
    kind, unit, _ = field_kind(cls, name)
    if unit is Unit.BYTES:
        return units.parse_size(value, key)
    if unit is Unit.SECONDS:
        return units.parse_duration(value, key)
    if unit is Unit.MILLIS:
        return round(units.parse_duration(value, key, bare_unit="ms") * 1000)
    if isinstance(kind, type) and issubclass(kind, StrEnum):
        return _choice(key, kind, value)
    origin = typing.get_origin(kind)
    try:
        if origin is tuple:
            items = value.split(",") if isinstance(value, str) else value
            return tuple(str(v).strip() for v in items if str(v).strip())
        if kind is bool:
            return _bool(value)
        if kind is int:
            if isinstance(value, bool | float):
                raise TypeError(value)
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise TypeError(value)
            return float(value)
        if kind is str:
            if not isinstance(value, str | int):
                raise TypeError(value)
            return str(value)
    except (TypeError, ValueError):
        shown = SECRET_MASK if is_secret(name) else repr(value)
        raise ConfigError(f"{key}: expected {getattr(kind, '__name__', kind)}, got {shown}") from None
    return value


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(value)


def _choice(key: str, kind: type[StrEnum], value: object) -> StrEnum:
    for member in kind:
        if isinstance(value, str) and member.value.lower() == value.strip().lower():
            return member
    raise ConfigError(f"{key}: expected one of {', '.join(m.value for m in kind)}, got {value!r}")
