"""A cached Schema Registry client speaking the Confluent REST protocol.

Works with Confluent Schema Registry, Apicurio's ccompat API, Karapace and Redpanda. Schemas are
immutable per id, so a parsed schema is fetched once per process.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
from typing import TYPE_CHECKING, Any, Self

import fastavro

from archiver.config import RegistrySettings
from archiver.errors import ConfigError, NotFound, RegistryUnavailable, TerminalError

if TYPE_CHECKING:
    from confluent_kafka.schema_registry.error import SchemaRegistryError


class Registry:
    """Looks up writer schemas by id and registers schemas under subjects."""

    def __init__(self, settings: RegistrySettings):
        # Imported where used: confluent_kafka.schema_registry pulls in httpx, authlib and
        # cryptography (~0.15 s of CPU), which commands and runs without a registry never need.
        from confluent_kafka.schema_registry import SchemaRegistryClient

        # A lookup blocks the poll loop: bound it, and leave retrying to the daemon's backoff
        # (a partition waiting on the registry pauses; it does not spin here).
        try:
            self._client = SchemaRegistryClient({"timeout": 10, "max.retries": 1} | settings.client_config())
        except (ValueError, OSError) as e:  # an unreadable certificate or key, a setting it refuses
            raise ConfigError(f"schema registry {settings.url}: {_describe(e)}") from None
        self._url = settings.url
        self._parsed: dict[int, tuple[str, Any]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def register(self, subject: str, schema: str | dict) -> int:
        """Register `schema` (Avro JSON) under `subject`; returns its id (existing id if known)."""
        from confluent_kafka.schema_registry import Schema
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        text = schema if isinstance(schema, str) else json.dumps(schema)
        try:
            return self._client.register_schema(subject, Schema(text, "AVRO"))
        except SchemaRegistryError as e:
            raise _translate(e, f"registering a schema under subject {subject!r}") from e
        except Exception as e:  # httpx connection errors and timeouts
            raise _unreachable(e, self._url, f"registering under {subject!r}") from e

    def schema_text(self, schema_id: int) -> str:
        """The writer schema's JSON text for `schema_id`."""
        return self._lookup(schema_id)[0]

    def parsed(self, schema_id: int) -> Any:
        """The fastavro-parsed writer schema for `schema_id`."""
        return self._lookup(schema_id)[1]

    def _lookup(self, schema_id: int) -> tuple[str, Any]:
        cached = self._parsed.get(schema_id)
        if cached is not None:
            return cached
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            text = self._client.get_schema(schema_id).schema_str
        except SchemaRegistryError as e:
            raise _translate(e, f"looking up schema id {schema_id}") from e
        except Exception as e:  # httpx connection errors and timeouts
            raise _unreachable(e, self._url, f"looking up schema id {schema_id}") from e
        entry = (text, fastavro.parse_schema(json.loads(text)))
        with self._lock:
            self._parsed[schema_id] = entry
        return entry


SCHEMA_NOT_FOUND = 40403  # the Confluent error code of "schema id unknown"; Apicurio's ccompat sends it too


def _translate(error: SchemaRegistryError, doing: str) -> Exception:
    """A registry answer as archiver's error: only the registry's own "not found" is permanent.

    A 404 without the error code comes from something else at that URL (a wrong path, a proxy
    mid-deploy), so it is an outage like a 5xx or a 429, not proof that the schema is unknown.
    Authorization and other client errors are terminal: retrying cannot fix the configuration.
    """
    status, message = error.http_status_code, _message(error)
    if status == 404 and error.error_code in (SCHEMA_NOT_FOUND, 40401):
        return NotFound(f"schema registry: not found while {doing}: {message}")
    if status is None or status >= 500 or status in (404, 408, 429):
        return RegistryUnavailable(f"schema registry unavailable while {doing}: HTTP {status} {message}")
    if status in (401, 403):
        return TerminalError(f"schema registry refused the credentials while {doing}: HTTP {status} {message}")
    return Rejected(f"schema registry rejected it while {doing}: HTTP {status} {message}", message)


def _message(error: SchemaRegistryError) -> str:
    """The registry's error message on one line. An answer that is not the registry's JSON (a
    proxy's or load balancer's HTML page) is reduced to its title."""
    text = str(error.error_message)
    title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
    if title:
        text = f"(not the registry's answer: {title.group(1)})"
    return " ".join(text.split())[:200]


# TLS failures no retry can fix: the server's certificate is not trusted (or not for this host),
# or the server refused ours. Other TLS errors (a connection cut mid-handshake) are outages.
_TLS_REFUSALS = ("CERTIFICATE_VERIFY_FAILED", "WRONG_VERSION_NUMBER", "ALERT_BAD_CERTIFICATE",
                 "ALERT_CERTIFICATE_REQUIRED", "ALERT_UNKNOWN_CA", "ALERT_HANDSHAKE_FAILURE")


def _unreachable(error: Exception, url: str, doing: str) -> Exception:
    """An HTTP client failure as archiver's error: a TLS refusal is terminal (the configuration
    must change: ssl_ca_location, the URL's scheme, a client certificate), anything else an outage."""
    cause: BaseException | None = error
    while cause is not None:
        text = str(cause)
        if isinstance(cause, ssl.SSLCertVerificationError) or ("[SSL" in text
                                                               and any(r in text for r in _TLS_REFUSALS)):
            return TerminalError(f"schema registry at {url}: TLS handshake failed while {doing}: {_describe(cause)}")
        cause = cause.__cause__ or cause.__context__
    return RegistryUnavailable(f"schema registry unreachable while {doing}: {_describe(error)}")


class Rejected(ConfigError):
    """The registry refused a request (a 4xx other than not found or credentials): an invalid or
    incompatible schema. `detail` is the registry's own message."""

    def __init__(self, message: str, detail: str):
        super().__init__(message)
        self.detail = detail


def _describe(error: Exception) -> str:
    """One line for an HTTP client error (httpx's messages may be empty or span lines)."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
