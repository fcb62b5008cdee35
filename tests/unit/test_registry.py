"""The registry client's errors: an unreachable registry is transient, never a rejection."""

import socket

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
