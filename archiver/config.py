"""Typed settings for connecting to Kafka, the Schema Registry and the archive.

Values come from (lowest to highest precedence) defaults, `ARCHIVER_*` environment variables
and command-line flags. Environment lookups happen in `from_env`, never in default arguments.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

from archiver.errors import ConfigError


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach a Kafka cluster."""

    bootstrap_servers: str
    """Comma-separated host:port list (ARCHIVER_KAFKA_BOOTSTRAP_SERVERS)."""
    security_protocol: str = "PLAINTEXT"
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (ARCHIVER_KAFKA_SECURITY_PROTOCOL)."""
    sasl_mechanism: str | None = None
    """PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (ARCHIVER_KAFKA_SASL_MECHANISM)."""
    sasl_username: str | None = None
    """SASL user (ARCHIVER_KAFKA_SASL_USERNAME)."""
    sasl_password: str | None = field(default=None, repr=False)
    """SASL password (ARCHIVER_KAFKA_SASL_PASSWORD); never printed."""
    ssl_ca_location: str | None = None
    """CA bundle for SSL listeners (ARCHIVER_KAFKA_SSL_CA_LOCATION)."""

    def client_config(self) -> dict[str, str]:
        """The librdkafka properties shared by consumers, producers and admin clients."""
        conf = {"bootstrap.servers": self.bootstrap_servers, "security.protocol": self.security_protocol}
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
            "ssl.ca.location": self.ssl_ca_location,
        }
        conf.update({k: v for k, v in optional.items() if v})
        return conf

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, **overrides: str | None) -> KafkaSettings:
        values = _collect(env, "ARCHIVER_KAFKA_", cls.__dataclass_fields__, overrides)
        if not values.get("bootstrap_servers"):
            raise ConfigError("kafka.bootstrap_servers is not set (flag --bootstrap-servers or "
                              "ARCHIVER_KAFKA_BOOTSTRAP_SERVERS)")
        protocol = values.get("security_protocol", "PLAINTEXT").upper()
        if protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise ConfigError(f"kafka.security_protocol: unknown protocol {protocol!r}")
        values["security_protocol"] = protocol
        return cls(**values)


@dataclass(frozen=True)
class RegistrySettings:
    """How to reach a Confluent-compatible Schema Registry."""

    url: str
    """Base URL, e.g. http://127.0.0.1:8081 or Apicurio's .../apis/ccompat/v7 (ARCHIVER_SCHEMA_REGISTRY_URL)."""
    basic_auth_user_info: str | None = field(default=None, repr=False)
    """"user:password" for HTTP basic auth (ARCHIVER_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO); never printed."""
    ssl_ca_location: str | None = None
    """CA bundle for an https registry (ARCHIVER_SCHEMA_REGISTRY_SSL_CA_LOCATION)."""

    def client_config(self) -> dict[str, str]:
        conf = {"url": self.url}
        if self.basic_auth_user_info:
            conf["basic.auth.user.info"] = self.basic_auth_user_info
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        return conf

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, **overrides: str | None) -> RegistrySettings:
        values = _collect(env, "ARCHIVER_SCHEMA_REGISTRY_", cls.__dataclass_fields__, overrides)
        url = values.get("url")
        if not url:
            raise ConfigError("schema_registry.url is not set (flag --schema-registry-url or "
                              "ARCHIVER_SCHEMA_REGISTRY_URL)")
        if urlparse(url).scheme not in ("http", "https"):
            raise ConfigError(f"schema_registry.url: expected an http:// or https:// URL, got {url!r}")
        return cls(**values)


def _collect(env: Mapping[str, str], prefix: str, fields: Mapping, overrides: Mapping) -> dict:
    """Field values from overrides (flags) first, then prefixed environment variables."""
    values = {}
    for name in fields:
        value = overrides.get(name)
        if value is None:
            value = env.get(prefix + name.upper())
        if value not in (None, ""):
            values[name] = value
    return values
