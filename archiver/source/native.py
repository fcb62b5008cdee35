"""What the native consumer and producer (the archiver_native module) share: whether they can
serve a configuration, and how their settings, errors and log lines cross into Python."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException

librdkafka_logger = logging.getLogger("librdkafka")

# librdkafka's syslog levels as Python's
_LEVELS = {0: logging.CRITICAL, 1: logging.CRITICAL, 2: logging.CRITICAL, 3: logging.ERROR, 4: logging.WARNING,
           5: logging.INFO, 6: logging.INFO, 7: logging.DEBUG}


def unsupported(config: dict) -> str | None:
    """Why the native module cannot serve `config` (confluent-kafka's dict), or None when it can."""
    try:
        import archiver_native  # noqa: F401
    except ImportError:
        return "the native module archiver_native is not built (pip install ./native)"
    callables = sorted(k for k, v in config.items() if callable(v) and k != "logger")
    if callables:
        return f"the native module takes no Python callbacks ({', '.join(callables)})"
    if str(config.get("sasl.oauthbearer.method", "")).lower() == "oidc":
        return "the native module is built without libcurl, which OAUTHBEARER OIDC needs"
    return None


def settings(config: dict) -> dict[str, str]:
    """confluent-kafka's configuration as librdkafka's strings (its `logger` is served by `forward_logs`)."""
    return {k: ("true" if v else "false") if isinstance(v, bool) else str(v) for k, v in config.items()
            if k != "logger"}


def open_client(kind: str, config: dict):
    """An `archiver_native.Consumer` or `.Producer` (`kind`) for confluent-kafka's `config`."""
    import archiver_native

    try:
        return getattr(archiver_native, kind)(settings(config))
    except archiver_native.KafkaError as e:
        raise exception(e) from None


def call(client, method: str, *args):
    """`client.method(*args)` of a native client: its KafkaError raised as confluent-kafka's
    KafkaException, its log lines forwarded (whatever the outcome)."""
    import archiver_native

    try:
        return getattr(client, method)(*args)
    except archiver_native.KafkaError as e:
        raise exception(e) from None
    finally:
        forward_logs(client.logs())


def exception(error) -> KafkaException:
    """An archiver_native.KafkaError as the KafkaException confluent-kafka would raise."""
    code, _name, reason, fatal = error.args
    return KafkaException(KafkaError(code, reason, fatal=fatal))


def forward_logs(lines: list[tuple[int, str, str]]) -> None:
    """librdkafka's log lines to Python logging (logger `librdkafka`), as confluent-kafka's `logger` does."""
    for level, facility, message in lines:
        librdkafka_logger.log(_LEVELS.get(level, logging.INFO), "%s: %s", facility, message)
