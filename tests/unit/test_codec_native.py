"""The native decoder gives exactly what the reference decoder (codec.arrow) gives.

Datums are generated as Avro bytes by a small encoder here, not by fastavro, so a union value is
written on the branch the test chose and corrupt messages are easy to make. Every comparison runs
the reference on the same messages; `native_only` makes a fallback to it fail the test where the
native path is expected to decode by itself.
"""

import contextlib
import math
import re
import struct
from unittest import mock

import fastavro
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from archiver import demo
from archiver.codec import arrow, native

HEADER = b"\x00\x00\x00\x00\x07"
PRIMITIVES = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"]
TEMPORAL = {"int": ["date", "time-millis"],
            "long": ["timestamp-millis", "timestamp-micros", "local-timestamp-millis",
                     "local-timestamp-micros", "time-micros", "timestamp-nanos"]}
EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- a raw Avro encoder ----------------------------------------------------------------------


def long(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def sized(data: bytes) -> bytes:
    return long(len(data)) + data


def record(*fields, name="R", namespace=None):
    schema = {"type": "record", "name": name, "fields": [{"name": n, "type": t} for n, t in fields]}
    if namespace:
        schema["namespace"] = namespace
    return schema


def signed(n: int, size: int) -> bytes:
    return n.to_bytes(size, "big", signed=True)


def minimal_size(n: int) -> int:
    return n.bit_length() // 8 + 1


# --- random schemas --------------------------------------------------------------------------


class SchemaGen:
    """Draws a record schema; `named` maps each named type's full name to its definition."""

    def __init__(self, draw):
        self.draw = draw
        self.named: dict[str, dict] = {}
        self.done: list[str] = []  # named types complete, so a reference to one is not recursive

    def name(self, prefix: str) -> str:
        return f"ns{len(self.named) % 2}.{prefix}{len(self.named)}"

    def define(self, schema: dict) -> dict:
        self.named[schema["name"]] = schema
        self.done.append(schema["name"])
        return schema

    def record(self, depth: int) -> dict:
        schema = {"type": "record", "name": self.name("R"), "fields": []}
        self.named[schema["name"]] = schema
        for i in range(self.draw(st.integers(1, 4))):
            schema["fields"].append({"name": f"f{i}", "type": self.any(depth + 1)})
        self.done.append(schema["name"])
        return schema

    def any(self, depth: int):
        kinds = ["primitive", "primitive", "logical", "logical", "enum", "fixed", "nullable"]
        kinds += ["record", "array", "map", "union", "union"] if depth < 3 else []
        kinds += ["reference"] if self.done else []
        kind = self.draw(st.sampled_from(kinds))
        if kind == "nullable":
            inner = self.any(depth)
            if isinstance(inner, list) or inner == "null":
                return inner
            return self.draw(st.sampled_from([["null", inner], [inner, "null"]]))
        if kind == "union":
            return self.union(depth)
        return self.of_kind(kind, depth)

    def of_kind(self, kind: str, depth: int):
        draw = self.draw
        if kind == "primitive":
            return draw(st.sampled_from(PRIMITIVES))
        if kind == "logical":
            return self.logical()
        if kind == "record":
            return self.record(depth)
        if kind == "array":
            return {"type": "array", "items": self.item(depth)}
        if kind == "map":
            return {"type": "map", "values": self.item(depth)}
        if kind == "enum":
            symbols = draw(st.lists(st.sampled_from("ABCDEFG"), min_size=1, max_size=4, unique=True))
            return self.define({"type": "enum", "name": self.name("E"), "symbols": symbols})
        if kind == "fixed":
            return self.define({"type": "fixed", "name": self.name("F"), "size": draw(st.integers(0, 6))})
        return draw(st.sampled_from(self.done))

    def item(self, depth: int):
        """Array items and map values: not null (the native path does not take those, tested apart)."""
        item = self.any(depth + 1)
        return "string" if item == "null" or item == ["null"] else item

    def logical(self):
        draw = self.draw
        base = draw(st.sampled_from(["int", "long", "bytes", "string", "fixed", "fixed"]))
        if base in TEMPORAL:  # sometimes on the wrong base, where the reference ignores it
            return {"type": base, "logicalType": draw(st.sampled_from(TEMPORAL["int"] + TEMPORAL["long"]))}
        if base == "string":
            return {"type": "string", "logicalType": draw(st.sampled_from(["uuid", "made-up"]))}
        if base == "bytes":
            precision = draw(st.integers(1, 76))
            return {"type": "bytes", "logicalType": "decimal", "precision": precision,
                    "scale": draw(st.integers(0, precision))}
        if draw(st.booleans()):
            return self.define({"type": "fixed", "name": self.name("D"), "size": 12, "logicalType": "duration"})
        size = draw(st.integers(1, 20))
        precision = draw(st.integers(1, min(76, math.floor(math.log10(2 ** (8 * size - 1) - 1)))))
        return self.define({"type": "fixed", "name": self.name("D"), "size": size, "logicalType": "decimal",
                            "precision": precision, "scale": draw(st.integers(0, precision))})

    def union(self, depth: int) -> list:
        slots = self.draw(st.lists(st.sampled_from(["boolean", "int", "long", "float", "double", "bytes",
                                                    "string", "array", "map", "named", "named", "named"]),
                                   min_size=2, max_size=3, unique=True))
        branches = []
        for slot in slots:
            if slot == "named":
                kind = self.draw(st.sampled_from(["record", "enum", "fixed"] + (["reference"] if self.done else [])))
                branch = self.of_kind(kind, depth)
                if branch in branches:
                    continue  # the same reference twice
            elif slot in ("array", "map"):
                branch = self.of_kind(slot, depth)
            elif slot in TEMPORAL and self.draw(st.booleans()):
                branch = {"type": slot, "logicalType": self.draw(st.sampled_from(TEMPORAL[slot]))}
            else:
                branch = slot
            branches.append(branch)
        if self.draw(st.booleans()):
            branches.insert(self.draw(st.integers(0, len(branches))), "null")
        return branches


@st.composite
def schemas(draw):
    gen = SchemaGen(draw)
    return gen.record(0), gen.named


# --- random datums, as Avro bytes ------------------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=6)


def datums(schema, named) -> st.SearchStrategy[bytes]:
    """Valid encodings of `schema`: varied block layouts, union branches and decimal widths."""
    if isinstance(schema, list):
        return st.integers(0, len(schema) - 1).flatmap(
            lambda i: datums(schema[i], named).map(lambda data: long(i) + data))
    if isinstance(schema, str):
        return datums(named[schema], named) if schema in named else PRIMITIVE_DATUMS[schema]
    kind, logical = schema["type"], schema.get("logicalType")
    if isinstance(kind, (dict, list)) or (isinstance(kind, str) and kind in named):
        return datums(kind, named)
    if logical == "decimal" and kind in ("bytes", "fixed"):
        return decimals(schema)
    if kind == "record":
        return st.tuples(*[datums(f["type"], named) for f in schema["fields"]]).map(b"".join)
    if kind == "array":
        return blocks(st.lists(datums(schema["items"], named), max_size=3))
    if kind == "map":
        entries = st.lists(st.tuples(TEXT, datums(schema["values"], named)), max_size=3, unique_by=lambda e: e[0])
        return blocks(entries.map(lambda kvs: [sized(k.encode()) + v for k, v in kvs]))
    if kind == "enum":
        return st.integers(0, len(schema["symbols"]) - 1).map(long)
    if kind == "fixed":
        return st.binary(min_size=schema["size"], max_size=schema["size"])
    return PRIMITIVE_DATUMS[kind]


def blocks(items: st.SearchStrategy[list[bytes]]) -> st.SearchStrategy[bytes]:
    """Array or map blocks: one or two, sometimes with a negative count and a byte size."""
    @st.composite
    def layout(draw):
        values = draw(items)
        if not values:
            return b"\0"
        cut = draw(st.integers(1, len(values)))
        out = b""
        for part in (values[:cut], values[cut:]):
            if part:
                body = b"".join(part)
                out += long(-len(part)) + long(len(body)) + body if draw(st.booleans()) else long(len(part)) + body
        return out + b"\0"
    return layout()


def decimals(schema) -> st.SearchStrategy[bytes]:
    limit = 10 ** schema["precision"] - 1
    if schema["type"] == "fixed":
        size = schema["size"]
        return st.integers(-limit, limit).filter(lambda n: minimal_size(n) <= size).map(lambda n: signed(n, size))
    return st.tuples(st.integers(-limit, limit), st.integers(0, 2)).map(
        lambda v: sized(b"" if v[0] == 0 and v[1] == 0 else signed(v[0], minimal_size(v[0]) + v[1])))


PRIMITIVE_DATUMS = {
    "null": st.just(b""),
    "boolean": st.sampled_from([b"\0", b"\1"]),
    "int": st.integers(-(2**31), 2**31 - 1).map(long),
    "long": st.integers(-(2**63), 2**63 - 1).map(long),
    "float": st.floats(width=32, allow_nan=False).map(lambda x: struct.pack("<f", x)),
    "double": st.floats(allow_nan=False).map(lambda x: struct.pack("<d", x)),
    "bytes": st.binary(max_size=6).map(sized),
    "string": TEXT.map(lambda s: sized(s.encode())),
}


@st.composite
def batches(draw, max_size=6):
    """A schema and a batch of valid messages for it, with tombstones here and there."""
    schema, named = draw(schemas())
    messages = draw(st.lists(datums(schema, named).map(lambda d: HEADER + d), min_size=1, max_size=max_size))
    for _ in range(draw(st.integers(0, 2))):
        messages.insert(draw(st.integers(0, len(messages))), None)
    return schema, messages


def unsupported(schema, top=True) -> bool:
    """What `supports` rejects among generated schemas: fixed(0), null as a nested record's field."""
    if isinstance(schema, list):
        return any(unsupported(branch, top=False) for branch in schema if branch != "null")
    if not isinstance(schema, dict):
        return False
    if schema["type"] == "fixed":
        return schema["size"] == 0
    if schema["type"] == "record":
        return any((f["type"] == "null" and not top) or unsupported(f["type"], top=False) for f in schema["fields"])
    return unsupported(schema.get("items") or schema.get("values"), top=False)


# --- comparing both paths --------------------------------------------------------------------


class _Reference:
    """codec.arrow for everything but decode_batch, which fails: the native path must not fall back."""

    def __getattr__(self, name):
        return getattr(arrow, name)

    @staticmethod
    def decode_batch(*args, **kwargs):
        raise AssertionError("the native decoder fell back to the reference decoder")


def native_only():
    return mock.patch.object(native, "reference", _Reference())


def same_values(a, b) -> bool:
    """Equality of Python values that takes NaN as equal to NaN."""
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same_values(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_values(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def assert_same(messages, schema, *, header_size=5, native_path=False):
    """native.decode_batch gives what arrow.decode_batch gives; `native_path`: without falling back."""
    expected = arrow.decode_batch(messages, schema, header_size=header_size)
    with native_only() if native_path else contextlib.nullcontext():
        got = native.decode_batch(messages, schema, header_size=header_size)
    assert isinstance(got, arrow.DecodedBatch)
    assert got.table.schema == expected.table.schema == arrow.arrow_schema(schema)
    assert got.table.equals(expected.table) or same_values(got.table.to_pylist(), expected.table.to_pylist())
    assert (got.rows, without_addresses(got.errors)) == (expected.rows, without_addresses(expected.errors))
    return got


def without_addresses(errors):
    """Reasons without the object addresses fastavro's messages can hold ("<_io.BytesIO ... at 0x…>")."""
    return [(i, re.sub(r" at 0x[0-9a-f]+", "", reason)) for i, reason in errors]


# --- properties ------------------------------------------------------------------------------


@EXAMPLES
@given(batches())
def test_random_schemas_decode_natively_exactly_like_the_reference(case):
    schema, messages = case
    note(repr(schema))
    assert native.supports(schema) != unsupported(schema)
    assert_same(messages, schema, native_path=native.supports(schema))


@EXAMPLES
@given(batches(), st.data())
def test_a_corrupt_message_gives_what_the_reference_gives(case, data):
    schema, messages = case
    note(repr(schema))
    present = [i for i, m in enumerate(messages) if m is not None]
    i = data.draw(st.sampled_from(present))
    message = messages[i]
    how = data.draw(st.sampled_from(["append", "truncate", "flip", "header"]))
    if how == "append":
        message += data.draw(st.binary(min_size=1, max_size=2))
    elif how == "truncate" and len(message) > 5:
        message = message[: data.draw(st.integers(5, len(message) - 1))]
    elif how == "flip" and len(message) > 5:
        at = data.draw(st.integers(5, len(message) - 1))
        message = message[:at] + bytes([message[at] ^ data.draw(st.integers(1, 255))]) + message[at + 1:]
    else:
        message = b"\x00\x00\x00\x00\x08" + message[5:]
    note(f"{how} message {i}: {message!r}")
    assert_same(messages[:i] + [message] + messages[i + 1:], schema)
