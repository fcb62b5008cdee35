"""The registry client's errors: an unreachable registry is transient, never a rejection."""

import socket
import ssl

import pytest

from archiver.codec.registry import Registry
from archiver.config import RegistrySettings
from archiver.errors import TransientError


@pytest.fixture
def unreachable() -> Registry:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with Registry(RegistrySettings(url=f"http://127.0.0.1:{port}")) as registry:
        yield registry


def test_registering_with_an_unreachable_registry_is_transient(unreachable):
    with pytest.raises(TransientError, match="schema registry unreachable while registering under 'x-value'"):
        unreachable.register("x-value", {"type": "record", "name": "A", "fields": [{"name": "a", "type": "int"}]})


def test_looking_up_in_an_unreachable_registry_is_transient(unreachable):
    with pytest.raises(TransientError, match="schema registry unreachable while looking up schema id 7"):
        unreachable.schema_text(7)


def _registry_error(status: int, code: int):
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    return SchemaRegistryError(status, code, "message")


@pytest.mark.parametrize(("status", "code", "expected"), [
    (404, 40403, "NotFound"),            # the registry's own answer: the id will never decode
    (404, -1, "RegistryUnavailable"),   # a 404 from something else at that URL (wrong path, proxy)
    (500, 50001, "RegistryUnavailable"),
    (503, -1, "RegistryUnavailable"),
    (429, -1, "RegistryUnavailable"),
    (401, 40101, "TerminalError"),
    (403, 40301, "TerminalError"),
    (409, 409, "Rejected"),  # an incompatible schema: the registry's own refusal, with its message
])
def test_only_the_registrys_own_not_found_is_permanent(status, code, expected):
    from archiver.codec.registry import _translate

    error = _translate(_registry_error(status, code), "looking up schema id 7")
    assert type(error).__name__ == expected
    assert "\n" not in str(error)


def test_an_outage_is_never_dead_lettered_only_unknown_ids_are():
    """A lookup the registry cannot answer now raises; an id it does not know is a decode error."""
    from archiver.codec import wire
    from archiver.codec.values import ValueDecoder
    from archiver.errors import NotFound, RegistryUnavailable

    class Registry:
        down = True

        def schema_text(self, schema_id):
            if schema_id == 9:
                raise NotFound("schema id 9")
            if self.down:
                raise RegistryUnavailable("schema registry unreachable")
            return '{"type": "record", "name": "R", "fields": [{"name": "n", "type": "long"}]}'

    registry = Registry()
    decoder = ValueDecoder(registry)
    good = [wire.frame(1, b"\x02"), wire.frame(1, b"\x04")]
    with pytest.raises(RegistryUnavailable):
        decoder.decode(good)
    decoded = decoder.decode([wire.frame(9, b"\x02"), b"\x07junk"])  # unknown id, bad magic byte
    assert sorted(i for i, _ in decoded.errors) == [0, 1] and not decoded.runs
    registry.down = False
    decoded = decoder.decode(good)
    assert not decoded.errors and decoded.runs[0].table.column("n").to_pylist() == [1, 2]


def test_a_proxys_html_page_is_reduced_to_its_title():
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    from archiver.codec.registry import _translate

    page = "Unknown Schema Registry Error: b'<html>\\r\\n<head><title>401 Authorization Required</title></head>\\r\\n'"
    error = _translate(SchemaRegistryError(401, -1, page), "looking up schema id 7")
    assert str(error) == ("schema registry refused the credentials while looking up schema id 7: HTTP 401 "
                          "(not the registry's answer: 401 Authorization Required)")


def _wrapped(cause: BaseException) -> Exception:
    """As httpx raises it: its own exception, caused by the ssl module's."""
    try:
        try:
            raise cause
        except BaseException as e:
            raise ConnectionError(str(e)) from e
    except ConnectionError as outer:
        return outer


@pytest.mark.parametrize(("cause", "expected"), [
    (ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"), "TerminalError"),
    (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), "TerminalError"),  # https to an http port
    (ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required"), "TerminalError"),
    (ssl.SSLEOFError(8, "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF in violation of protocol"), "RegistryUnavailable"),
    (ConnectionRefusedError(111, "Connection refused"), "RegistryUnavailable"),
    (TimeoutError("timed out"), "RegistryUnavailable"),
])
def test_a_tls_refusal_is_terminal_and_a_cut_connection_an_outage(cause, expected):
    """Retrying cannot fix an untrusted certificate or a wrong scheme; a handshake cut short can."""
    from archiver.codec.registry import _unreachable

    error = _unreachable(_wrapped(cause), "https://registry:8443", "looking up schema id 7")
    assert type(error).__name__ == expected
    assert "\n" not in str(error)


def test_a_client_key_without_its_certificate_is_one_line_naming_both():
    from archiver.errors import ConfigError

    with pytest.raises(ConfigError, match="schema_registry.ssl_key_location is set without "
                                            "schema_registry.ssl_certificate_location"):
        RegistrySettings.from_env({"ARCHIVER_SCHEMA_REGISTRY_URL": "https://r:8443",
                                   "ARCHIVER_SCHEMA_REGISTRY_SSL_KEY_LOCATION": "/k.pem"})


def test_an_unreadable_client_certificate_is_a_configuration_error(tmp_path):
    from archiver.errors import ConfigError

    settings = RegistrySettings(url="https://r:8443", ssl_certificate_location=str(tmp_path / "missing.pem"),
                                ssl_key_location=str(tmp_path / "missing.key"))
    with pytest.raises(ConfigError, match=r"^schema registry https://r:8443: FileNotFoundError"):
        Registry(settings)
