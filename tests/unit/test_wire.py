import pytest
from hypothesis import given
from hypothesis import strategies as st

from archiver.codec import wire
from archiver.errors import DecodeError


@given(st.integers(min_value=0, max_value=2**32 - 1), st.binary())
def test_frame_then_schema_id_gives_the_id_and_keeps_the_datum(schema_id, datum):
    message = wire.frame(schema_id, datum)
    assert wire.schema_id_of(message) == schema_id
    assert message[wire.HEADER_SIZE:] == datum


@given(st.binary(max_size=4))
def test_messages_shorter_than_the_header_are_rejected(message):
    with pytest.raises(DecodeError, match="shorter than the 5-byte"):
        wire.schema_id_of(message)


@given(st.integers(min_value=1, max_value=255), st.binary(min_size=4))
def test_a_wrong_magic_byte_is_named(magic, rest):
    with pytest.raises(DecodeError, match=f"magic byte {magic:#04x}"):
        wire.schema_id_of(bytes([magic]) + rest)
