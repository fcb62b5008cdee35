"""Typed settings for connecting to Kafka, the Schema Registry and the archive.

Values come from (lowest to highest precedence) defaults, `ARCHIVER_*` environment variables
and command-line flags. Environment lookups happen in `from_env`, never in default arguments.
"""

from __future__ import annotations

import os
import re
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
    def from_env(cls, env: Mapping[str, str] = os.environ, prefix: str = "ARCHIVER_KAFKA_",
                 flag: str = "--bootstrap-servers", **overrides: str | None) -> KafkaSettings:
        values = _collect(env, prefix, cls.__dataclass_fields__, overrides)
        if not values.get("bootstrap_servers"):
            raise ConfigError(f"kafka.bootstrap_servers is not set (flag {flag} or {prefix}BOOTSTRAP_SERVERS)")
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


# --- the sink daemon (`archiver run`) ---------------------------------------------------------


@dataclass(frozen=True)
class TopicSettings:
    """How one topic is decoded, partitioned and rotated ([defaults] and [topics."name"] in TOML)."""

    time_granularity: str = "hour"
    """Time directories: day (dt=), hour (dt=/hour=) or minute (dt=/hour=/minute=)."""
    time_field: str | None = None
    """Top-level value field (timestamp or epoch-ms long) to partition by instead of the record timestamp."""
    key_partitioning: str = "hash"
    """hash (key_bucket=NN from the key bytes), field (a low-cardinality value field) or none."""
    key_buckets: int = 16
    """Number of hash buckets for key_partitioning = hash."""
    key_field: str | None = None
    """Top-level value field for key_partitioning = field."""
    key_field_values: tuple[str, ...] = ()
    """Allowed values of key_field; any other value goes to `<field>=_other` (bounds the directories)."""
    value_format: str = "confluent"
    """confluent (wire format + Schema Registry) or raw (plain Avro binary written with value_schema_file)."""
    value_schema_file: str | None = None
    """The .avsc writer schema for value_format = raw."""
    key_format: str = "bytes"
    """bytes (only _kafka_key), string (also a decoded _key column) or avro (keys in Confluent wire
    format decoded into a _key struct; undecodable keys are treated like undecodable values)."""
    max_records: int = 1_000_000
    """Rotate when one output file reaches this many records."""
    max_bytes: int = 128 * 1024 * 1024
    """Rotate when a partition buffers this many (Arrow) bytes."""
    time_window_s: float = 0.0
    """Rotate when buffered record timestamps span this many seconds (0: never; files are bounded by
    their time partition anyway)."""
    interval_s: float = 60.0
    """Rotate this many wall-clock seconds after the first buffered record (idle partitions flush)."""
    compression: str = "zstd"
    """Parquet compression codec."""
    compression_level: int | None = None
    """Codec level (zstd: 1-22); the codec default when unset."""

    def validate(self, where: str) -> TopicSettings:
        _choice(f"{where}.time_granularity", self.time_granularity, ("day", "hour", "minute"))
        _choice(f"{where}.key_partitioning", self.key_partitioning, ("hash", "field", "none"))
        _choice(f"{where}.value_format", self.value_format, ("confluent", "raw"))
        _choice(f"{where}.key_format", self.key_format, ("bytes", "string", "avro"))
        _choice(f"{where}.compression", self.compression, ("zstd", "snappy", "gzip", "lz4", "none"))
        if not 1 <= self.key_buckets <= 4096:
            raise ConfigError(f"{where}.key_buckets: expected 1..4096, got {self.key_buckets}")
        if self.key_partitioning == "field" and not (self.key_field and self.key_field_values):
            raise ConfigError(f"{where}.key_field and {where}.key_field_values are required when key_partitioning = field")
        if self.value_format == "raw" and not self.value_schema_file:
            raise ConfigError(f"{where}.value_schema_file is required when value_format = raw")
        if self.time_window_s < 0:
            raise ConfigError(f"{where}.time_window_s: must not be negative, got {self.time_window_s}")
        for name in ("max_records", "max_bytes", "interval_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{where}.{name}: must be positive, got {getattr(self, name)}")
        return self


@dataclass(frozen=True)
class RunSettings:
    """Everything `archiver run` needs."""

    kafka: KafkaSettings
    archive_url: str
    """s3://bucket/prefix or file:///path (ARCHIVER_ARCHIVE_URL)."""
    registry: RegistrySettings | None = None
    topics: tuple[str, ...] = ()
    """Topics to archive (ARCHIVER_TOPICS, comma-separated)."""
    topic_pattern: str | None = None
    """Regex of topics to archive instead of a list (ARCHIVER_TOPIC_PATTERN)."""
    group_id: str = "archiver"
    """Consumer group (ARCHIVER_GROUP_ID)."""
    group_instance_id: str | None = None
    """Static group membership id: a restarted daemon with the same id gets its partitions back at
    once instead of after the session timeout (ARCHIVER_GROUP_INSTANCE_ID)."""
    session_timeout_ms: int = 45_000
    """How long the group waits for a silent member before reassigning its partitions
    (ARCHIVER_SESSION_TIMEOUT_MS)."""
    max_buffer_bytes: int = 64 * 1024 * 1024
    """Cap on buffered bytes across all partitions; beyond it the largest buffer is flushed, and
    partitions are paused while the store cannot take it (ARCHIVER_MAX_BUFFER_BYTES)."""
    shutdown_timeout_s: float = 30.0
    """On SIGTERM/SIGINT or the end of --once, how long to keep retrying the final commits
    (ARCHIVER_SHUTDOWN_TIMEOUT_S)."""
    on_decode_error: str = "dlq"
    """dlq (send undecodable records to dlq_topic) or fail (stop with the reason) (ARCHIVER_ON_DECODE_ERROR)."""
    dlq_topic: str = "archiver.dlq"
    """Dead-letter topic (ARCHIVER_DLQ_TOPIC). Checked at start-up, before anything is consumed."""
    dlq_create: bool = True
    """Create the dead-letter topic at start-up when it is missing; when off (or the broker refuses),
    a missing topic stops `run` before it consumes anything (ARCHIVER_DLQ_CREATE)."""
    dlq_partitions: int = -1
    """Partitions of a created dead-letter topic; -1 takes the broker's num.partitions (ARCHIVER_DLQ_PARTITIONS)."""
    dlq_replication_factor: int = -1
    """Replication factor of a created dead-letter topic; -1 takes the broker's default.replication.factor
    (ARCHIVER_DLQ_REPLICATION_FACTOR)."""
    outage_timeout_s: float = 300.0
    """With --once: how long a partition may wait for an outage (schema registry, S3, dead-letter topic)
    to end before the run stops with exit code 1, having committed only what it archived
    (ARCHIVER_OUTAGE_TIMEOUT_S). The streaming daemon waits for as long as it takes."""
    metrics_address: str = ""
    """host:port serving /metrics, /healthz and /readyz; empty disables (ARCHIVER_METRICS_ADDRESS)."""
    log_format: str = "text"
    """text or json (ARCHIVER_LOG_FORMAT)."""
    decoder: str = "auto"
    """auto (batch-native decoder where it supports the schema, fastavro otherwise) or reference
    (always the per-record fastavro decoder) (ARCHIVER_DECODER)."""
    compact_interval_s: float = 0.0
    """Compact the partitions this daemon owns every this many seconds, in a background thread;
    0 disables (ARCHIVER_COMPACT_INTERVAL_S). `archiver compact` runs it once."""
    compact_target_bytes: int = 128 * 1024 * 1024
    """Size merged files grow to (ARCHIVER_COMPACT_TARGET_BYTES)."""
    compact_closed_after_s: float = 3600.0
    """A time partition is compacted this long after its end (ARCHIVER_COMPACT_CLOSED_AFTER_S)."""
    compact_grace_s: float = 900.0
    """Replaced files are deleted this long after compaction (ARCHIVER_COMPACT_GRACE_S)."""
    defaults: TopicSettings = TopicSettings()
    overrides: dict[str, TopicSettings] = field(default_factory=dict)

    def for_topic(self, topic: str) -> TopicSettings:
        return self.overrides.get(topic, self.defaults)

    def masked(self) -> dict:
        """The resolved configuration as TOML-like sections, secrets replaced by ****."""
        def public(obj) -> dict:
            out = {}
            for name, value in vars(obj).items():
                if value in (None, ()):
                    continue
                secret = "password" in name or "user_info" in name
                out[name] = "****" if secret else (list(value) if isinstance(value, tuple) else value)
            return out

        run = {k: v for k, v in public(self).items() if k not in ("kafka", "registry", "defaults", "overrides")}
        doc = {"kafka": public(self.kafka), "run": run, "defaults": public(self.defaults)}
        if self.registry:
            doc["schema_registry"] = public(self.registry)
        doc["topics"] = {t: public(s) for t, s in self.overrides.items()}
        return doc


_RUN_ENV = {"archive_url": "ARCHIVER_ARCHIVE_URL", "topics": "ARCHIVER_TOPICS",
            "topic_pattern": "ARCHIVER_TOPIC_PATTERN", "group_id": "ARCHIVER_GROUP_ID",
            "group_instance_id": "ARCHIVER_GROUP_INSTANCE_ID", "session_timeout_ms": "ARCHIVER_SESSION_TIMEOUT_MS",
            "max_buffer_bytes": "ARCHIVER_MAX_BUFFER_BYTES", "shutdown_timeout_s": "ARCHIVER_SHUTDOWN_TIMEOUT_S", "on_decode_error": "ARCHIVER_ON_DECODE_ERROR",
            "dlq_topic": "ARCHIVER_DLQ_TOPIC", "dlq_create": "ARCHIVER_DLQ_CREATE",
            "dlq_partitions": "ARCHIVER_DLQ_PARTITIONS", "dlq_replication_factor": "ARCHIVER_DLQ_REPLICATION_FACTOR",
            "outage_timeout_s": "ARCHIVER_OUTAGE_TIMEOUT_S", "metrics_address": "ARCHIVER_METRICS_ADDRESS",
            "log_format": "ARCHIVER_LOG_FORMAT", "decoder": "ARCHIVER_DECODER",
            "compact_interval_s": "ARCHIVER_COMPACT_INTERVAL_S", "compact_target_bytes": "ARCHIVER_COMPACT_TARGET_BYTES",
            "compact_closed_after_s": "ARCHIVER_COMPACT_CLOSED_AFTER_S", "compact_grace_s": "ARCHIVER_COMPACT_GRACE_S"}


RUN_NEEDS = frozenset({"kafka", "archive", "topics", "registry"})


def load_run_settings(path: str | None, env: Mapping[str, str] = os.environ,
                      flags: Mapping[str, object] | None = None, needs: frozenset[str] = RUN_NEEDS) -> RunSettings:
    """Defaults < TOML file < ARCHIVER_* environment < flags; validated, errors name the key.

    `needs` names what the command must have: `archiver run` needs everything; `status` reads
    the archive and Kafka, `ddl` and `query` only the archive's layout settings.
    """
    import tomllib

    flags = {k: v for k, v in (flags or {}).items() if v not in (None, ())}
    doc: dict = {}
    if path:
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"config file {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path}: {e}") from None
    _no_unknown("", doc, {"kafka", "schema_registry", "archive", "run", "defaults", "topics"})
    kafka_file = _section(doc, "kafka", KafkaSettings)
    kafka_env = {**_as_env("ARCHIVER_KAFKA_", kafka_file), **env}
    if "kafka" in needs or flags.get("bootstrap_servers") or kafka_env.get("ARCHIVER_KAFKA_BOOTSTRAP_SERVERS"):
        kafka = KafkaSettings.from_env(kafka_env, bootstrap_servers=flags.get("bootstrap_servers"))
    else:
        kafka = KafkaSettings(bootstrap_servers="")  # not needed by this command, and not set
    registry_file = _section(doc, "schema_registry", RegistrySettings)
    registry_env = {**_as_env("ARCHIVER_SCHEMA_REGISTRY_", registry_file), **env}
    registry = None
    if flags.get("schema_registry_url") or registry_env.get("ARCHIVER_SCHEMA_REGISTRY_URL"):
        registry = RegistrySettings.from_env(registry_env, url=flags.get("schema_registry_url"))

    run = _section(doc, "run", RunSettings, exclude={"kafka", "registry", "defaults", "overrides", "archive_url"})
    archive = doc.get("archive", {})
    _no_unknown("archive", archive, {"url"})
    if "url" in archive:
        run["archive_url"] = archive["url"]
    for name, var in _RUN_ENV.items():
        if env.get(var):
            run[name] = env[var]
    run.update({k: v for k, v in flags.items() if k in _RUN_ENV})
    run = _typed("run", RunSettings, run)
    if not run.get("archive_url"):
        if "archive" in needs:
            raise ConfigError("archive.url is not set (flag --archive-url or ARCHIVER_ARCHIVE_URL)")
        run["archive_url"] = ""
    if "topics" in needs and not run.get("topics") and not run.get("topic_pattern"):
        raise ConfigError("run.topics is empty: name topics (--topics or ARCHIVER_TOPICS) or a run.topic_pattern")
    _choice("run.on_decode_error", run.get("on_decode_error", "dlq"), ("dlq", "fail"))
    _choice("run.log_format", run.get("log_format", "text"), ("text", "json"))
    _choice("run.decoder", run.get("decoder", "auto"), ("auto", "reference"))
    if run.get("topic_pattern"):
        try:
            re.compile(run["topic_pattern"])
        except re.error as e:
            raise ConfigError(f"run.topic_pattern: invalid regular expression: {e}") from None

    base = _section(doc, "defaults", TopicSettings)
    defaults = TopicSettings(**_typed("defaults", TopicSettings, base)).validate("defaults")
    overrides = {}
    for topic, section in doc.get("topics", {}).items():
        where = f'topics."{topic}"'
        _no_unknown(where, section, set(TopicSettings.__dataclass_fields__))
        merged = {**base, **section}
        overrides[topic] = TopicSettings(**_typed(where, TopicSettings, merged)).validate(where)
    if "registry" in needs and registry is None and any(s.value_format == "confluent" or s.key_format == "avro"
                                                        for s in [defaults, *overrides.values()]):
        raise ConfigError("schema_registry.url is not set (flag --schema-registry-url or "
                          "ARCHIVER_SCHEMA_REGISTRY_URL); it is needed for value_format = confluent and key_format = avro")
    return RunSettings(kafka=kafka, registry=registry, defaults=defaults, overrides=overrides, **run)


def _section(doc: dict, name: str, cls, exclude: set[str] = frozenset()) -> dict:
    section = doc.get(name, {})
    if not isinstance(section, dict):
        raise ConfigError(f"{name}: expected a table")
    _no_unknown(name, section, set(cls.__dataclass_fields__) - set(exclude))
    return dict(section)


def _no_unknown(where: str, section: dict, known: set[str]) -> None:
    for key in section:
        if key not in known:
            raise ConfigError(f"{where + '.' if where else ''}{key}: unknown setting")


def _as_env(prefix: str, section: dict) -> dict[str, str]:
    return {prefix + k.upper(): str(v) for k, v in section.items()}


def _typed(where: str, cls, values: dict) -> dict:
    """Coerce strings from the environment or flags to each field's declared type."""
    out = {}
    for name, value in values.items():
        kind = str(cls.__dataclass_fields__[name].type)
        try:
            if kind.startswith("tuple"):
                out[name] = tuple(v.strip() for v in value.split(",") if v.strip()) if isinstance(value, str) \
                    else tuple(value)
            elif kind.startswith("bool"):
                out[name] = _bool(value)
            elif kind.startswith("int"):
                out[name] = _int(value)
            elif kind.startswith("float"):
                out[name] = float(value)
            else:
                out[name] = value if value is None else str(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}.{name}: expected {kind.split(' ')[0]}, got {value!r}") from None
    return out


def _bool(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(value)


def _int(value) -> int:
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, str):
        units = {"k": 1024, "m": 1024**2, "g": 1024**3}
        v = value.strip().lower().removesuffix("b")
        if v and v[-1] in units:
            return int(float(v[:-1]) * units[v[-1]])
    return int(value)


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: expected one of {', '.join(allowed)}, got {value!r}")
