"""Typed settings for every command: Kafka, the Schema Registry, the archive, `run` and topic layout.

One loader (`load_run_settings`) serves every command. Each setting comes from, highest first:
command-line flags, an environment variable, the TOML file (`-c` / ARCHIVER_CONFIG), the field's
default. Environment names derive from the TOML key in one place (`env_name`). Sizes and
durations accept units (archiver.units). docs/configuration.md is generated from this module.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Annotated

from archiver.errors import ConfigError
from archiver.settings_io import (
    SECRET_MASK,
    Unit,
    client_from_env,
    coerce,
    flatten,
    is_secret,
    read_toml,
)
from archiver.store import ObjectStore, S3Options, open_store

Bytes = Annotated[int, Unit.BYTES]
Seconds = Annotated[float, Unit.SECONDS]
Millis = Annotated[int, Unit.MILLIS]


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"
    OAUTHBEARER = "OAUTHBEARER"
    GSSAPI = "GSSAPI"


class TimeGranularity(StrEnum):
    DAY = "day"
    HOUR = "hour"
    MINUTE = "minute"


class KeyPartitioning(StrEnum):
    HASH = "hash"
    FIELD = "field"
    NONE = "none"


class ValueFormat(StrEnum):
    CONFLUENT = "confluent"
    RAW = "raw"


class KeyFormat(StrEnum):
    BYTES = "bytes"
    STRING = "string"
    AVRO = "avro"


class Compression(StrEnum):
    ZSTD = "zstd"
    SNAPPY = "snappy"
    GZIP = "gzip"
    LZ4 = "lz4"
    NONE = "none"


class OnDecodeError(StrEnum):
    DLQ = "dlq"
    FAIL = "fail"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class Decoder(StrEnum):
    AUTO = "auto"
    REFERENCE = "reference"


class KafkaClient(StrEnum):
    AUTO = "auto"
    NATIVE = "native"
    PYTHON = "python"


def env_name(section: str, key: str) -> str:
    """The environment variable of a TOML key: `ARCHIVER_<SECTION>_<KEY>`, upper case, dots as `_`.

    `[run]` keys have no section part (`ARCHIVER_GROUP_ID`); `[kafka.client]` properties are
    `ARCHIVER_KAFKA_CLIENT_<PROPERTY>` with a property's dots as `_` (its own `_` as `__`).
    """
    prefix = "" if section == "run" else section.replace(".", "_").upper() + "_"
    return "ARCHIVER_" + prefix + key.replace("_", "__" if section.endswith(".client") else "_") \
        .replace(".", "_").upper()


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach a Kafka cluster ([kafka]; replay's target cluster: [target_kafka])."""

    bootstrap_servers: str = ""
    """Comma-separated host:port list."""
    security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    """How to talk to the brokers."""
    sasl_mechanism: SaslMechanism | None = None
    """SASL mechanism for SASL_PLAINTEXT / SASL_SSL."""
    sasl_username: str | None = None
    """SASL user."""
    sasl_password: str | None = field(default=None, repr=False)
    """SASL password; never printed."""
    ssl_ca_location: str | None = None
    """CA bundle for SSL listeners."""
    oauthbearer_provider: str = ""
    """With sasl_mechanism = OAUTHBEARER: aws_msk_iam makes the tokens for Amazon MSK's IAM access
    control from the AWS chain's credentials (the extra archiver[msk-iam]); empty leaves OAUTHBEARER
    to librdkafka's settings ([kafka.client] sasl.oauthbearer.method = oidc, ...)."""
    aws_region: str = ""
    """The MSK cluster's region for aws_msk_iam; empty takes the AWS chain's (AWS_REGION, profile)."""
    client: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Any other librdkafka property, passed to every Kafka client ([kafka.client] table)."""

    def client_config(self) -> dict:
        """The librdkafka properties shared by consumers, producers and admin clients.

        librdkafka's own log lines go to Python logging (logger `librdkafka`), not to stderr.
        """
        conf: dict = {**self.client, "bootstrap.servers": self.bootstrap_servers,
                      "security.protocol": str(self.security_protocol)}
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
            "ssl.ca.location": self.ssl_ca_location,
        }
        conf.update({k: str(v) for k, v in optional.items() if v})
        if self.oauthbearer_provider:
            if self.oauthbearer_provider != "aws_msk_iam":
                raise ConfigError(f"kafka.oauthbearer_provider: expected aws_msk_iam, got {self.oauthbearer_provider!r}")
            if self.sasl_mechanism != SaslMechanism.OAUTHBEARER:
                raise ConfigError("kafka.oauthbearer_provider = aws_msk_iam needs sasl_mechanism = OAUTHBEARER")
            from archiver.source.msk_iam import token_callback

            conf["oauth_cb"] = token_callback(self.aws_region or None)  # confluent-kafka serves it, not the native module
        conf["logger"] = logging.getLogger("librdkafka")
        return conf

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, section: str = "kafka",
                 flag: str = "--bootstrap-servers", **overrides: str | None) -> KafkaSettings:
        """The [kafka] settings from the environment and `overrides` (flags) alone."""
        flags = {f"{section}.{k}": v for k, v in overrides.items()}
        return _kafka({}, env, flags, section, flag, required=True)


@dataclass(frozen=True)
class RegistrySettings:
    """How to reach a Confluent-compatible Schema Registry ([schema_registry]; replay's target:
    [target_schema_registry])."""

    url: str = ""
    """Base URL, e.g. http://127.0.0.1:8081 or Apicurio's .../apis/ccompat/v7."""
    basic_auth_user_info: str | None = field(default=None, repr=False)
    """"user:password" for HTTP basic auth; never printed."""
    ssl_ca_location: str | None = None
    """CA bundle for an https registry."""
    ssl_certificate_location: str | None = None
    """Client certificate (PEM) for a registry that requires one (mutual TLS)."""
    ssl_key_location: str | None = None
    """The client certificate's private key (PEM, unencrypted)."""

    def client_config(self) -> dict[str, str]:
        conf = {"url": self.url}
        if self.basic_auth_user_info:
            conf["basic.auth.user.info"] = self.basic_auth_user_info
        for key in ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location"):
            if getattr(self, key):
                conf[key.replace("_", ".")] = getattr(self, key)
        return conf

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, section: str = "schema_registry",
                 **overrides: str | None) -> RegistrySettings:
        """The [schema_registry] settings from the environment and `overrides` (flags) alone."""
        registry = _registry({}, env, {f"{section}.{k}": v for k, v in overrides.items()}, section)
        if registry is None:
            raise ConfigError(f"{section}.url is not set (flag --schema-registry-url or {env_name(section, 'url')})")
        return registry


@dataclass(frozen=True)
class TopicSettings:
    """How one topic is decoded, partitioned and rotated ([defaults] and [topics."name"] in TOML)."""

    time_granularity: TimeGranularity = TimeGranularity.HOUR
    """Time directories: day (dt=), hour (dt=/hour=) or minute (dt=/hour=/minute=)."""
    time_field: str | None = None
    """Top-level value field (timestamp or epoch-ms long) to partition by instead of the record timestamp."""
    key_partitioning: KeyPartitioning = KeyPartitioning.HASH
    """hash (key_bucket=NN from the key bytes), field (a low-cardinality value field) or none."""
    key_buckets: int = 16
    """Number of hash buckets for key_partitioning = hash (1-4096)."""
    key_field: str | None = None
    """Top-level value field for key_partitioning = field."""
    key_field_values: tuple[str, ...] = ()
    """Allowed values of key_field; any other value goes to `<field>=_other` (bounds the directories)."""
    value_format: ValueFormat = ValueFormat.CONFLUENT
    """confluent (wire format + Schema Registry) or raw (plain Avro binary written with value_schema_file)."""
    value_schema_file: str | None = None
    """The .avsc writer schema for value_format = raw."""
    key_format: KeyFormat = KeyFormat.BYTES
    """bytes (only _kafka_key), string (also a decoded _key column) or avro (keys in Confluent wire
    format decoded into a _key struct; undecodable keys are treated like undecodable values)."""
    max_records: int = 1_000_000
    """Rotate when one output file reaches this many records."""
    max_bytes: Bytes = 128 * 1024 * 1024
    """Rotate when a partition buffers this many (Arrow) bytes."""
    time_window_s: Seconds = 0.0
    """Rotate when buffered record timestamps span this long (0: never; files are bounded by
    their time partition anyway)."""
    interval_s: Seconds = 60.0
    """Rotate this long (wall clock) after the first buffered record (idle partitions flush)."""
    compression: Compression = Compression.ZSTD
    """Parquet compression codec."""
    compression_level: int | None = None
    """Codec level (zstd: 1-22); the codec default when unset."""
    small_file_rows: int = 1_000
    """A file of fewer records is written with snappy where `compression` is zstd or gzip: their
    set-up costs about 1 ms of CPU per file, and a small file gains little from them. Compaction
    (on by default) rewrites small files with zstd. 0 writes every file with `compression`."""

    def validate(self, where: str) -> TopicSettings:
        if not 1 <= self.key_buckets <= 4096:
            raise ConfigError(f"{where}.key_buckets: expected 1..4096, got {self.key_buckets}")
        if self.key_partitioning == "field" and not (self.key_field and self.key_field_values):
            raise ConfigError(f"{where}.key_field and {where}.key_field_values are required when key_partitioning = field")
        if self.value_format == "raw" and not self.value_schema_file:
            raise ConfigError(f"{where}.value_schema_file is required when value_format = raw")
        for name in ("max_records", "max_bytes", "interval_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{where}.{name}: must be positive, got {getattr(self, name)}")
        if self.small_file_rows < 0:
            raise ConfigError(f"{where}.small_file_rows: must be 0 or more, got {self.small_file_rows}")
        return self


@dataclass(frozen=True)
class CatalogSettings:
    """The Iceberg catalog ([catalog]): pyiceberg's own property names, and archiver's namespace.

    Environment: `ARCHIVER_CATALOG_<PROPERTY>` with pyiceberg's convention, `__` for `.` and `_`
    for `-` (ARCHIVER_CATALOG_S3__ENDPOINT is s3.endpoint).
    """

    properties: Mapping[str, str] = field(default_factory=dict)
    """type, uri, warehouse, ... as pyiceberg's load_catalog takes them."""
    namespace: str = "archiver"
    """The namespace (Glue database) of archiver's tables."""

    @property
    def configured(self) -> bool:
        return bool(self.properties.get("type") or self.properties.get("uri"))

    @property
    def kind(self) -> str:
        return self.properties.get("type") or self.properties.get("uri", "?").split(":", 1)[0]


@dataclass(frozen=True)
class RunSettings:
    """Everything a command may need: `run` reads all of it, other commands what they use."""

    kafka: KafkaSettings
    archive_url: str = field(default="", metadata={"key": "archive.url"})
    """s3://bucket/prefix or file:///path."""
    archive_sse: str = field(default="", metadata={"key": "archive.sse"})
    """Server-side encryption of every object archiver writes to an s3:// archive (data files,
    ledger entries, intents, checkpoints, compacted files): AES256 (SSE-S3) or aws:kms (SSE-KMS);
    empty leaves it to the bucket's default encryption."""
    archive_sse_kms_key_id: str = field(default="", metadata={"key": "archive.sse_kms_key_id"})
    """With sse = aws:kms: the KMS key (id, ARN or alias/NAME); empty takes the AWS managed key
    aws/s3 (or the bucket's default key)."""
    archive_expected_bucket_owner: str = field(default="", metadata={"key": "archive.expected_bucket_owner"})
    """The 12-digit AWS account id that must own the archive bucket: every request names it, and S3
    refuses the request (403, nothing read or written) when another account owns the bucket."""
    registry: RegistrySettings | None = None
    topics: tuple[str, ...] = ()
    """Topics to archive (comma-separated in the environment)."""
    topic_pattern: str | None = None
    """Regex of topics to archive instead of a list."""
    group_id: str = "archiver"
    """Consumer group."""
    group_instance_id: str | None = None
    """Static group membership id: a restarted daemon with the same id gets its partitions back at
    once instead of after the session timeout."""
    session_timeout_ms: Millis = 45_000
    """How long the group waits for a silent member before reassigning its partitions (a bare
    number is milliseconds)."""
    max_buffer_bytes: Bytes = 64 * 1024 * 1024
    """Cap on buffered bytes across all partitions; beyond it the largest buffer is flushed, and
    partitions are paused while the store cannot take it."""
    shutdown_timeout_s: Seconds = 30.0
    """On SIGTERM/SIGINT or the end of --once, how long to keep retrying the final commits."""
    on_decode_error: OnDecodeError = OnDecodeError.DLQ
    """dlq (send undecodable records to dlq_topic) or fail (stop with the reason)."""
    dlq_topic: str = "archiver.dlq"
    """Dead-letter topic. Checked at start-up, before anything is consumed."""
    dlq_create: bool = True
    """Create the dead-letter topic at start-up when it is missing; when off (or the broker refuses),
    a missing topic stops `run` before it consumes anything."""
    dlq_partitions: int = -1
    """Partitions of a created dead-letter topic; -1 takes the broker's num.partitions."""
    dlq_replication_factor: int = -1
    """Replication factor of a created dead-letter topic; -1 takes the broker's default.replication.factor."""
    outage_timeout_s: Seconds = 300.0
    """With --once: how long a partition may wait for an outage (schema registry, S3, dead-letter
    topic) to end before the run stops with exit code 1, having committed only what it archived.
    The streaming daemon waits for as long as it takes."""
    kafka_refused_timeout_s: Seconds = 120.0
    """How long a running daemon waits for Kafka to accept it again after a broker refused its
    credentials, its TLS handshake or its authorization (revoked, rotated, expired) before it
    stops with exit code 1 (a restart reads the configuration and secrets again). Meanwhile
    /readyz answers 503; anything buffered is committed before it stops."""
    metrics_address: str = ""
    """host:port serving /metrics, /healthz and /readyz; empty disables."""
    log_format: LogFormat = LogFormat.TEXT
    """text or json log lines on stderr."""
    decoder: Decoder = Decoder.AUTO
    """auto (batch-native decoder where it supports the schema, fastavro otherwise) or reference
    (always the per-record fastavro decoder)."""
    kafka_client: KafkaClient = KafkaClient.AUTO
    """The Kafka client of the record path (`run`'s consumer, `replay`'s producer): auto (the native
    module archiver_native where it is installed and serves the Kafka settings, confluent-kafka
    otherwise, with a log line saying why), native (an error instead of falling back) or python
    (always confluent-kafka). Both are librdkafka: same settings, same group protocol."""
    compact_interval_s: Seconds = 3600.0
    """`run` compacts the partitions it owns this often, in a background thread (merging closed
    directories across them); 0 disables. Hourly: an hour's directories become one file each about
    an hour after they close (`compact_closed_after_s`), at one pass over each byte."""
    compact_target_bytes: Bytes = 128 * 1024 * 1024
    """Size merged files grow to (`run` and `compact --target-size`)."""
    compact_closed_after_s: Seconds = 3600.0
    """A time partition is compacted this long after its end (`compact --closed-after`)."""
    compact_grace_s: Seconds = 900.0
    """Replaced files are deleted this long after compaction (`compact --grace`), and no sooner
    than every retained Iceberg snapshot has moved past them; table snapshots older than this
    expire when a compaction runs."""
    publish_interval_s: Seconds = 60.0
    """With a [catalog]: `run` publishes newly committed files to each topic's Iceberg table this
    often, one table commit per topic; 0 disables (then `archiver catalog publish` does it)."""
    defaults: TopicSettings = TopicSettings()
    overrides: dict[str, TopicSettings] = field(default_factory=dict)
    target_kafka: KafkaSettings | None = None
    target_registry: RegistrySettings | None = None
    catalog: CatalogSettings = CatalogSettings()

    def for_topic(self, topic: str) -> TopicSettings:
        return self.overrides.get(topic, self.defaults)

    @property
    def s3_options(self) -> S3Options:
        """What `[archive]` asks of every S3 request."""
        return S3Options(self.archive_sse, self.archive_sse_kms_key_id, self.archive_expected_bucket_owner)

    def open_store(self) -> ObjectStore:
        """The archive's store (a new client each call)."""
        return open_store(self.archive_url, self.s3_options)

    def secrets(self) -> list[str]:
        """Every configured secret value (to mask wherever text is printed)."""
        found = []
        for values in self.masked(mask=False).values():
            for key, value in flatten(values).items():
                if is_secret(key) and isinstance(value, str) and value:
                    found.append(value)
        return found

    def masked(self, mask: bool = True) -> dict:
        """The resolved configuration as TOML sections, secrets replaced by ****."""
        def public(obj) -> dict:
            out = {}
            for f in fields(obj):
                value = getattr(obj, f.name)
                if value in (None, (), {}) or isinstance(value, KafkaSettings | RegistrySettings | TopicSettings
                                                                 | CatalogSettings):
                    continue
                if isinstance(value, Mapping):
                    value = {k: SECRET_MASK if mask and is_secret(k) else v for k, v in value.items()}
                elif mask and is_secret(f.name):
                    value = SECRET_MASK
                out[f.name] = list(value) if isinstance(value, tuple) else value
            return out

        archive = {f.name.removeprefix("archive_"): getattr(self, f.name) for f in fields(self)
                   if key_of("run", f).startswith("archive.") and (getattr(self, f.name) or f.name == "archive_url")}
        run = {k: v for k, v in public(self).items() if not k.startswith("archive_") and k != "overrides"}
        doc = {"kafka": public(self.kafka), "archive": archive, "run": run, "defaults": public(self.defaults)}
        if self.registry:
            doc["schema_registry"] = public(self.registry)
        if self.target_kafka:
            doc["target_kafka"] = public(self.target_kafka)
        if self.target_registry:
            doc["target_schema_registry"] = public(self.target_registry)
        if self.catalog.configured:
            doc["catalog"] = {k: SECRET_MASK if mask and is_secret(k) else v
                              for k, v in self.catalog.properties.items()} | {"namespace": self.catalog.namespace}
        doc["topics"] = {t: public(s) for t, s in self.overrides.items()}
        return doc


# --- loading ----------------------------------------------------------------------------------

RUN_NEEDS = frozenset({"kafka", "archive", "topics", "registry"})

#: The TOML tables and the settings class each holds (order: as in the reference).
SECTIONS = {"kafka": KafkaSettings, "schema_registry": RegistrySettings, "archive": None, "run": RunSettings,
            "defaults": TopicSettings, "topics": None, "target_kafka": KafkaSettings,
            "target_schema_registry": RegistrySettings, "catalog": None}

#: Flags given by their old flat names (`--bootstrap-servers` -> kafka.bootstrap_servers).
_FLAG_KEYS = {"bootstrap_servers": "kafka.bootstrap_servers", "schema_registry_url": "schema_registry.url",
              "archive_url": "archive.url", "target_bootstrap_servers": "target_kafka.bootstrap_servers",
              "target_schema_registry_url": "target_schema_registry.url"}


def key_of(section: str, f) -> str:
    """The TOML key of a dataclass field: `section.name`, unless the field says otherwise."""
    return f.metadata.get("key", f"{section}.{f.name}")


def load_run_settings(path: str | None, env: Mapping[str, str] = os.environ,
                      flags: Mapping[str, object] | None = None, needs: frozenset[str] = RUN_NEEDS) -> RunSettings:
    """Defaults < TOML file < ARCHIVER_* environment < flags; validated, errors name the key.

    `needs` names what the command must have: `archiver run` needs everything; `status` reads
    the archive and Kafka, `ddl` and `query` only the archive and layout settings.

    Args:
        path: the TOML file, if any.
        env: the environment.
        flags: values from the command line, by field name (`group_id`) or TOML key
            (`kafka.bootstrap_servers`); None and () mean not given.
        needs: what must be set: kafka, archive, topics, registry.
    """
    flags = {_FLAG_KEYS.get(k, k if "." in k else f"run.{k}"): v for k, v in (flags or {}).items()
             if v not in (None, ())}
    doc = read_toml(path) if path else {}
    _check_keys(doc)
    kafka = _kafka(doc, env, flags, "kafka", "--bootstrap-servers", required="kafka" in needs)
    registry = _registry(doc, env, flags, "schema_registry")
    run = _run(doc, env, flags, needs)
    defaults, overrides = _topics(doc, env)
    if "registry" in needs and registry is None and any(s.value_format == "confluent" or s.key_format == "avro"
                                                        for s in [defaults, *overrides.values()]):
        raise ConfigError("schema_registry.url is not set (flag --schema-registry-url or "
                          "ARCHIVER_SCHEMA_REGISTRY_URL); it is needed for value_format = confluent and key_format = avro")
    target = _kafka(doc, env, flags, "target_kafka", "--target-bootstrap-servers", required=False)
    return RunSettings(kafka=kafka, registry=registry, defaults=defaults, overrides=overrides,
                       target_kafka=target if target.bootstrap_servers else None,
                       target_registry=_registry(doc, env, flags, "target_schema_registry"),
                       catalog=_catalog(doc, env), **run)


def _layer(doc: dict, env: Mapping[str, str], flags: Mapping[str, object], section: str, cls,
           exclude: frozenset[str] = frozenset()) -> dict:
    """Typed values of one settings class: flags, else environment, else file; unset ones left out."""
    values = {}
    for f in fields(cls):
        if f.name in exclude or f.name == "client":
            continue
        key = key_of(section, f)
        sec, name = key.rsplit(".", 1)
        raw = flags.get(key)
        if raw is None:
            raw = env.get(env_name(sec, name)) or None
        if raw is None:
            raw = _table(doc, sec).get(name)
        if raw is not None:
            values[f.name] = coerce(key, cls, f.name, raw)
    return values


def _kafka(doc, env, flags, section: str, flag: str, required: bool) -> KafkaSettings:
    values = _layer(doc, env, flags, section, KafkaSettings)
    client_table = _table(doc, section).get("client", {})
    if not isinstance(client_table, dict):
        raise ConfigError(f"{section}.client: expected a table of librdkafka properties")
    client = {**flatten(client_table, stringify=True), **client_from_env(env, env_name(f"{section}.client", ""))}
    if not values.get("bootstrap_servers"):
        if required:
            raise ConfigError(f"{section}.bootstrap_servers is not set (flag {flag} or "
                              f"{env_name(section, 'bootstrap_servers')})")
        values.pop("bootstrap_servers", None)
    return KafkaSettings(client=client, **values)


def _catalog(doc, env) -> CatalogSettings:
    """[catalog]: a free-form table of pyiceberg properties (nested TOML tables as dotted names)."""
    table = _table(doc, "catalog")
    props = flatten(table, stringify=True)
    prefix = "ARCHIVER_CATALOG_"
    props |= {name[len(prefix):].lower().replace("__", "\0").replace("_", "-").replace("\0", "."): value
              for name, value in env.items() if name.startswith(prefix) and len(name) > len(prefix) and value}
    namespace = props.pop("namespace", None) or "archiver"
    if not re.match(r"^[a-z0-9_]{1,255}$", namespace):
        raise ConfigError(f"catalog.namespace: {namespace!r} is not a valid namespace (a-z, 0-9 and _)")
    return CatalogSettings(props, namespace)


def _registry(doc, env, flags, section: str) -> RegistrySettings | None:
    values = _layer(doc, env, flags, section, RegistrySettings)
    url = values.get("url")
    if not url:
        return None
    if not re.match(r"^https?://", url):
        raise ConfigError(f"{section}.url: expected an http:// or https:// URL, got {url!r}")
    if values.get("ssl_key_location") and not values.get("ssl_certificate_location"):
        raise ConfigError(f"{section}.ssl_key_location is set without {section}.ssl_certificate_location "
                          "(the client certificate it belongs to)")
    return RegistrySettings(**values)


_NOT_RUN = frozenset({"kafka", "registry", "defaults", "overrides", "target_kafka", "target_registry", "catalog"})


def _run(doc, env, flags, needs: frozenset[str]) -> dict:
    run = _layer(doc, env, flags, "run", RunSettings, exclude=_NOT_RUN)
    if not run.get("archive_url") and "archive" in needs:
        raise ConfigError("archive.url is not set (flag --archive-url or ARCHIVER_ARCHIVE_URL)")
    _check_s3_options(run)
    if "topics" in needs and not run.get("topics") and not run.get("topic_pattern"):
        raise ConfigError("run.topics is empty: name topics (--topics or ARCHIVER_TOPICS) or a run.topic_pattern")
    if run.get("topic_pattern"):
        try:
            re.compile(run["topic_pattern"])
        except re.error as e:
            raise ConfigError(f"run.topic_pattern: invalid regular expression: {e}") from None
    return run


_SSE = {"aes256": "AES256", "sse-s3": "AES256", "aws:kms": "aws:kms", "sse-kms": "aws:kms"}


def _check_s3_options(run: dict) -> None:
    sse = run.get("archive_sse", "")
    if sse:
        if sse.lower() not in _SSE:
            raise ConfigError(f"archive.sse: expected AES256 (SSE-S3) or aws:kms (SSE-KMS), got {sse!r}")
        run["archive_sse"] = _SSE[sse.lower()]
    if run.get("archive_sse_kms_key_id") and run.get("archive_sse") != "aws:kms":
        raise ConfigError("archive.sse_kms_key_id is set but archive.sse is not aws:kms")
    owner = run.get("archive_expected_bucket_owner", "")
    if owner and not re.fullmatch(r"\d{12}", owner):
        raise ConfigError(f"archive.expected_bucket_owner: expected a 12-digit AWS account id, got {owner!r}")


def _topics(doc, env) -> tuple[TopicSettings, dict[str, TopicSettings]]:
    base = _layer(doc, env, {}, "defaults", TopicSettings)
    defaults = TopicSettings(**base).validate("defaults")
    overrides = {}
    topics = doc.get("topics", {})
    if not isinstance(topics, dict):
        raise ConfigError("topics: expected tables [topics.\"name\"]")
    for topic, section in topics.items():
        where = f'topics."{topic}"'
        own = {name: coerce(f"{where}.{name}", TopicSettings, name, value) for name, value in section.items()}
        overrides[topic] = TopicSettings(**{**base, **own}).validate(where)
    return defaults, overrides


def _check_keys(doc: dict) -> None:
    """Every key of the file is a known setting (before any is read: the first error is the typo)."""
    _no_unknown("", doc, set(SECTIONS))
    for section, cls in SECTIONS.items():
        table = _table(doc, section)
        if cls is None:
            continue
        known = {f.name for f in fields(cls) if key_of(section, f).startswith(section + ".")} - _NOT_RUN
        _no_unknown(section, table, known)
    _no_unknown("archive", _table(doc, "archive"), {key_of("run", f).split(".", 1)[1] for f in fields(RunSettings)
                                                    if key_of("run", f).startswith("archive.")})
    for topic, section in _table(doc, "topics").items():
        if not isinstance(section, dict):
            raise ConfigError(f'topics."{topic}": expected a table')
        _no_unknown(f'topics."{topic}"', section, {f.name for f in fields(TopicSettings)})


def _table(doc: dict, name: str) -> dict:
    section = doc
    for part in name.split("."):
        section = section.get(part, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{name}: expected a table")
    return section


def _no_unknown(where: str, section: dict, known: set[str]) -> None:
    for key in section:
        if key not in known:
            raise ConfigError(f"{where + '.' if where else ''}{key}: unknown setting")
