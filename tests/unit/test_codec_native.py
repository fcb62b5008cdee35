"""The native decoder gives exactly what the reference decoder (codec.arrow) gives.

Datums are generated as Avro bytes by a small encoder here, not by fastavro, so a union value is
written on the branch the test chose and corrupt messages are easy to make. Every comparison runs
the reference on the same messages; `native_only` makes a fallback to it fail the test where the
native path is expected to decode by itself.
"""

import contextlib
import json
import math
import re
import struct
from unittest import mock

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from archiver import demo
from archiver.codec import arrow, native, wire
from archiver.errors import ConfigError

HEADER = b"\x00\x00\x00\x00\x07"
PRIMITIVES = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"]
TEMPORAL = {"int": ["date", "time-millis"],
            "long": ["timestamp-millis", "timestamp-micros", "local-timestamp-millis",
                     "local-timestamp-micros", "time-micros", "timestamp-nanos"]}
EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- a raw Avro encoder ----------------------------------------------------------------------


long = wire.avro_long


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
            return self.define({"type": "fixed", "name": self.name("D"), "size": 12,
                                "logicalType": "duration"})
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
                kinds = ["record", "enum", "fixed"] + (["reference"] if self.done else [])
                kind = self.draw(st.sampled_from(kinds))
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
        entries = st.lists(st.tuples(TEXT, datums(schema["values"], named)), max_size=3,
                           unique_by=lambda e: e[0])  # the reference keeps one value per key
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
                negative = draw(st.booleans())
                out += long(-len(part)) + long(len(body)) + body if negative else long(len(part)) + body
        return out + b"\0"
    return layout()


def decimals(schema) -> st.SearchStrategy[bytes]:
    limit = 10 ** schema["precision"] - 1
    if schema["type"] == "fixed":
        size = schema["size"]
        fitting = st.integers(-limit, limit).filter(lambda n: minimal_size(n) <= size)
        return fitting.map(lambda n: signed(n, size))
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
        return any((f["type"] == "null" and not top) or unsupported(f["type"], top=False)
                   for f in schema["fields"])
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


def same_columns(a, b) -> bool:
    """Column equality, except that NaN equals NaN and a null-type column is only its length.

    The reference's null-type columns get a validity buffer after a tombstone (built from a
    struct with null rows), which ChunkedArray.equals counts as a difference.
    """
    if a.type != b.type:
        return False
    if pa.types.is_null(a.type):
        return len(a) == len(b)
    return a.equals(b) or same_values(a.to_pylist(), b.to_pylist())


def assert_same(messages, schema, *, header_size=5, native_path=False):
    """native.decode_batch gives what arrow.decode_batch gives; `native_path`: without falling back."""
    expected = arrow.decode_batch(messages, schema, header_size=header_size)
    if native_path:
        assert native.supports(schema)  # probes (with the reference) before the reference is blocked
    with native_only() if native_path else contextlib.nullcontext():
        got = native.decode_batch(messages, schema, header_size=header_size)
    assert isinstance(got, arrow.DecodedBatch)
    assert got.table.schema == expected.table.schema == arrow.arrow_schema(schema)
    assert got.table.num_rows == expected.table.num_rows
    assert all(same_columns(a, b) for a, b in zip(got.table.columns, expected.table.columns))
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
    native.supports(schema)
    with mock.patch.object(native, "reference", wraps=arrow) as spy:
        assert_same(messages[:i] + [message] + messages[i + 1:], schema)
    event(f"{how}: {'fell back' if spy.decode_batch.called else 'decoded natively'}")


# --- the demo schema and tombstones ----------------------------------------------------------

DEMO = [demo.encode(e.value, 1) for e in demo.events(3000, 1_700_000_000_000, 3_600_000)]


@pytest.mark.parametrize("schema", [demo.SCHEMA, demo.PARSED, json.dumps(demo.SCHEMA)],
                         ids=["dict", "parsed", "text"])
def test_demo_events_decode_natively(schema):
    assert native.supports(schema)
    assert_same(DEMO, schema, native_path=True)


def test_tombstones_give_all_null_rows_in_place():
    messages = DEMO[:40]
    for at in (0, 7, 8, 43):
        messages.insert(at, None)
    got = assert_same(messages, demo.SCHEMA, native_path=True)
    assert got.rows == list(range(44))
    rows = got.table.to_pylist()
    assert [i for i, row in enumerate(rows) if all(v is None for v in row.values())] == [0, 7, 8, 43]


@pytest.mark.parametrize("messages", [[], [None], [None, None, None]], ids=["empty", "one", "three"])
def test_batches_without_values(messages):
    assert_same(messages, demo.SCHEMA)


def test_raw_values_without_a_header():
    assert_same([None if i % 50 == 3 else m[5:] for i, m in enumerate(DEMO[:500])], demo.SCHEMA,
                header_size=0, native_path=True)


def test_top_level_fields_named_like_the_framing_fields():
    schema = record(("_start", "long"), ("_hdr", "string"), ("x", ["null", "int"]))
    assert native.supports(schema)
    messages = [HEADER + long(1) + sized(b"a") + b"\x02" + long(5), None,
                HEADER + long(2) + sized(b"") + b"\0"]
    assert_same(messages, schema, native_path=True)


# --- logical types, unions and the schemas the native path leaves alone ----------------------

LOGICAL = [
    ({"type": "long", "logicalType": "timestamp-millis"}, [long(0), long(-1), long(2**62), long(-(2**63))]),
    ({"type": "long", "logicalType": "timestamp-micros"}, [long(1_700_000_000_000_000), long(2**63 - 1)]),
    ({"type": "long", "logicalType": "local-timestamp-millis"}, [long(0), long(253_402_300_800_000)]),
    ({"type": "long", "logicalType": "local-timestamp-micros"}, [long(-5), long(2**60)]),
    ({"type": "long", "logicalType": "timestamp-nanos"}, [long(7)]),  # the reference ignores it
    ({"type": "int", "logicalType": "date"}, [long(0), long(-(2**31)), long(2**31 - 1)]),
    ({"type": "int", "logicalType": "time-millis"}, [long(0), long(86_399_999), long(-1)]),
    ({"type": "long", "logicalType": "time-micros"}, [long(0), long(86_399_999_999), long(2**40)]),
    ({"type": "long", "logicalType": "time-millis"}, [long(3)]),  # on the wrong base: ignored
    ({"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2},
     [sized(b""), sized(signed(12345, 2)), sized(signed(-9_999_999_999, 5)), sized(signed(1, 9))]),
    ({"type": "bytes", "logicalType": "decimal", "precision": 38, "scale": 0},
     [sized(signed(10**38 - 1, 16)), sized(signed(-(10**38) + 1, 20))]),
    ({"type": "bytes", "logicalType": "decimal", "precision": 50, "scale": 10},
     [sized(signed(-(10**49), 21))]),
    ({"type": "fixed", "name": "Money", "size": 8, "logicalType": "decimal", "precision": 18, "scale": 3},
     [signed(-(10**18) + 1, 8), signed(0, 8)]),
    ({"type": "string", "logicalType": "uuid"},
     [sized(b"1b4e28ba-2fa1-11d2-883f-0016d3cca427"), sized(b"1B4E28BA-2FA1-11D2-883F-0016D3CCA427"),
      sized(b"not-a-uuid"), sized(b"")]),
    ({"type": "fixed", "name": "Dur", "size": 12, "logicalType": "duration"}, [b"\xff" * 12, bytes(12)]),
    ({"type": "string", "logicalType": "made-up"}, [sized(b"x")]),
]


@pytest.mark.parametrize(("kind", "values"), LOGICAL,
                         ids=[f"{t['type']}-{t['logicalType']}" for t, _ in LOGICAL])
def test_logical_types(kind, values):
    again = kind["name"] if "name" in kind else kind
    schema = record(("v", kind), ("n", ["null", again]), ("a", {"type": "array", "items": again}))
    messages = [HEADER + v + b"\x02" + v + long(1) + v + b"\0" for v in values]
    messages.append(HEADER + values[0] + b"\0\0")
    assert native.supports(schema)
    assert_same(messages, schema, native_path=True)


SUB = record(("a", "int"), name="Sub", namespace="other")
UNIONS = [
    (["null", "string"], [b"\0", b"\x02" + sized(b"x")]),
    (["string", "null"], [b"\x02", b"\0" + sized(b"x")]),
    (["null", SUB], [b"\0", b"\x02" + long(4)]),
    (["null", {"type": "enum", "name": "E", "symbols": ["A", "B"]}], [b"\0", b"\x02\x02"]),
    (["null", {"type": "array", "items": "long"}], [b"\0", b"\x02\x02\x06\0"]),
    (["string", "null", "long"], [b"\0" + sized(b"s"), b"\x02", b"\x04" + long(-3)]),
    (["int", "long", "float", "double"], [b"\0\x02", b"\x02\x02", b"\x04" + struct.pack("<f", 1.5),
                                          b"\x06" + struct.pack("<d", -2.5)]),
    (["boolean", SUB, {"type": "array", "items": "int"}, {"type": "map", "values": "string"},
      {"type": "enum", "name": "E", "symbols": ["A"]}, {"type": "fixed", "name": "F", "size": 2}],
     [b"\0\x01", b"\x02" + long(9), b"\x04\x04\x02\x04\0", b"\x06\x02" + sized(b"k") + sized(b"v") + b"\0",
      b"\x08\0", b"\x0aab"]),
    (["long"], [b"\0\x08"]),
    (["null"], [b"\0"]),
]


@pytest.mark.parametrize(("union", "values"), UNIONS, ids=[str(i) for i in range(len(UNIONS))])
def test_unions(union, values):
    schema = record(("u", union), ("a", {"type": "array", "items": "int"}))
    assert native.supports(schema)
    assert_same([HEADER + v + b"\x02\x02\0" for v in values] + [None], schema, native_path=True)


@pytest.mark.parametrize("schema", [
    record(("r", {"type": "record", "name": "Node", "fields": [{"name": "next", "type": ["null", "Node"]}]})),
    record(("e", {"type": "record", "name": "Empty", "fields": []})),
    record(("f", {"type": "fixed", "name": "Nothing", "size": 0})),
    record(("r", record(("n", "null"), ("i", "int"), name="Inner"))),
    record(("a", {"type": "array", "items": "null"})),
    record(("m", {"type": "map", "values": "null"})),
], ids=["recursive", "empty-record", "fixed-0", "nested-null", "array-of-null", "map-of-null"])
def test_schemas_the_native_path_leaves_to_the_reference(schema):
    assert not native.supports(schema)


@pytest.mark.parametrize("items", [["null"], ["null", "int"], ["int", "null"]],
                         ids=["null", "null-int", "int-null"])
def test_nullable_array_items_and_map_values(items):
    schema = record(("a", {"type": "array", "items": items}), ("m", {"type": "map", "values": items}))
    value = b"\0" if items == ["null"] else b"\x02\x04" if items[0] == "null" else b"\0\x04"
    none = b"\0" if items[0] == "null" else b"\x02"
    message = HEADER + b"\x04" + value + none + b"\0" + b"\x02" + sized(b"k") + value + b"\0"
    assert native.supports(schema)
    assert_same([message, HEADER + b"\0\0"], schema, native_path=True)


def test_a_top_level_null_field_decodes_natively():
    schema = record(("n", "null"), ("i", "int"))
    assert native.supports(schema)
    assert_same([HEADER + long(1), None, HEADER + long(2)], schema, native_path=True)


def test_a_schema_the_reference_rejects_is_rejected_alike():
    assert not native.supports({"type": "array", "items": "int"})
    with pytest.raises(ConfigError):
        native.decode_batch([HEADER + b"\0"], {"type": "array", "items": "int"})


# --- traps: bad messages among good ones -----------------------------------------------------

TRAP_SCHEMA = record(("s", "string"), ("n", ["null", "string"]), ("t", ["string", "null"]),
                     ("u", ["null", "long", "string"]),
                     ("e", {"type": "enum", "name": "E", "symbols": ["A", "B"]}),
                     ("m", {"type": "map", "values": "long"}),
                     ("d", {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}))


def trap_message(s=sized(b"ok"), n=b"\x02" + sized(b"x"), t=b"\0" + sized(b"y"), u=b"\x02" + long(5),
                 e=b"\x02", m=b"\x02" + sized(b"k") + long(1) + b"\0", d=sized(signed(12345, 3))) -> bytes:
    return HEADER + s + n + t + u + e + m + d


GOOD = [trap_message(), trap_message(s=sized("é".encode()), n=b"\0", t=b"\x02", u=b"\0"),
        trap_message(u=b"\x04" + sized(b"str"), m=b"\0", d=sized(b"")), trap_message(e=b"\0"),
        trap_message(m=long(-2) + long(6) + sized(b"a") + long(1) + sized(b"b") + long(2) + b"\0")]
TRAPS = {  # name: (message, whether the reference rejects it, None: not asserted)
    "trailing-byte": (GOOD[0] + b"\0", True),
    "trailing-bytes": (GOOD[0] + b"\x02\x02", True),
    "truncated": (GOOD[0][:-1], True),
    "header-only": (HEADER, True),
    "shorter-than-header": (b"\0\0", True),
    "empty": (b"", True),
    "invalid-utf8": (trap_message(s=sized(b"\xff\xfe")), True),
    "invalid-utf8-map-key": (trap_message(m=b"\x02" + sized(b"\xc3") + long(1) + b"\0"), True),
    "nullable-index-2": (trap_message(n=b"\x04" + sized(b"x")), True),
    # fastavro takes a negative union index as Python does a list index: -1 is the last branch.
    "nullable-index-negative": (trap_message(n=long(-1) + sized(b"x")), None),
    "null-second-index-2": (trap_message(t=b"\x04" + sized(b"y")), True),
    "union-index-3": (trap_message(u=b"\x06" + long(5)), True),
    "union-index-negative": (trap_message(u=long(-1) + long(5)), None),
    "enum-index": (trap_message(e=b"\x04"), True),
    "enum-index-negative": (trap_message(e=long(-1)), True),
    "decimal-beyond-precision": (trap_message(d=sized(signed(1_000_000, 3))), True),
    "duplicate-map-key": (trap_message(m=b"\x04" + (sized(b"k") + long(1)) * 2 + b"\0"), False),
    "other-schema-id": (b"\0\0\0\0\x08" + GOOD[0][5:], False),
}


def test_the_good_trap_messages_decode_natively():
    assert_same(GOOD, TRAP_SCHEMA, native_path=True)


@pytest.mark.timeout(60)  # the native reader loops forever on leftover bytes if read twice
@pytest.mark.parametrize("at", [0, 2, 4], ids=["first", "middle", "last"])
@pytest.mark.parametrize("trap", list(TRAPS))
def test_a_bad_message_is_reported_like_the_reference_does(trap, at):
    message, rejected = TRAPS[trap]
    messages = GOOD[:at] + [message] + GOOD[at + 1:]
    got = assert_same(messages, TRAP_SCHEMA)
    if rejected is None:
        return
    assert [i for i, _ in got.errors] == ([at] if rejected else [])
    assert got.rows == [i for i in range(len(GOOD)) if i != at or not rejected]


class FakePanic(BaseException):
    """Like pyo3's PanicException: not an Exception."""


@pytest.mark.parametrize("error", [FakePanic("panicked at src/reader.rs"), RuntimeError("boom")])
def test_any_failure_of_the_native_reader_falls_back(monkeypatch, error):
    assert native.supports(demo.SCHEMA)  # probed before the reader breaks

    def broken(*args):
        raise error

    monkeypatch.setattr(native, "_read_block", broken)
    assert_same(DEMO[:20], demo.SCHEMA)


def test_keyboard_interrupt_is_not_swallowed(monkeypatch):
    assert native.supports(demo.SCHEMA)

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(native, "_read_block", interrupted)
    with pytest.raises(KeyboardInterrupt):
        native.decode_batch(DEMO[:20], demo.SCHEMA)


def test_small_batches_go_to_fastavro_and_large_ones_to_the_batch_decoder(monkeypatch):
    import json as _json

    from archiver import demo
    from archiver.codec import native as native_mod
    from archiver.codec import values as values_mod

    class Schemas:
        def schema_text(self, schema_id):
            return _json.dumps(demo.SCHEMA)

    calls = []
    real = native_mod.decode_batch
    monkeypatch.setattr(native_mod, "decode_batch", lambda *a, **k: calls.append(len(a[0])) or real(*a, **k))
    decoder = values_mod.ValueDecoder(Schemas())
    events = list(demo.events(200, 1_764_000_000_000, 3_600_000))
    messages = [demo.encode(e.value, 1) for e in events]
    small = values_mod.NATIVE_MIN_RECORDS - 1

    few = decoder.decode(messages[:small])
    many = decoder.decode(messages)

    assert calls == [200]  # the small batch never reached the batch decoder
    assert few.runs[0].table.equals(many.runs[0].table.slice(0, small))  # and decoded to the same table
