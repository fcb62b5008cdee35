"""The Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then the Avro datum."""

from __future__ import annotations

import struct

from archiver.errors import DecodeError

MAGIC = 0
HEADER_SIZE = 5
_HEADER = struct.Struct(">bI")


def frame(schema_id: int, datum: bytes) -> bytes:
    """Prefix an Avro-encoded datum with the wire-format header for `schema_id`."""
    return _HEADER.pack(MAGIC, schema_id) + datum


def schema_id_of(message: bytes) -> int:
    """The schema id a wire-format message was written with.

    Raises:
        DecodeError: the message is shorter than the header or does not start with magic byte 0.
    """
    if len(message) < HEADER_SIZE:
        raise DecodeError(f"message of {len(message)} bytes is shorter than the 5-byte wire-format header")
    magic, schema_id = _HEADER.unpack_from(message)
    if magic != MAGIC:
        raise DecodeError(f"unknown magic byte {magic & 0xFF:#04x} (expected 0x00, Confluent wire format)")
    return schema_id


def avro_long(n: int) -> bytes:
    """Avro's zig-zag varint encoding of a long (as in block counts and sizes of a container)."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
