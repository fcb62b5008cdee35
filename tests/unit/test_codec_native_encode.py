"""The native encoder gives exactly the bytes the reference encoder (codec.arrow) gives.

Datums are written by fastavro (the producer), decoded by the reference into an Arrow table,
made all-nullable as the archive stores it, and encoded again: both encoders must give back the
original bytes. `_Plan.encode` is also called directly, so a native result is compared even
where `encode_rows` would catch a difference with its spot check and fall back.
"""

import io
import itertools
import json
import re
import struct
from decimal import Decimal
from unittest import mock

import fastavro
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, event, given, note, reject, settings
from hypothesis import strategies as st

from archiver import demo
from archiver.codec import arrow, native_encode
from archiver.errors import ConfigError, TerminalError
from tests.unit.test_codec_arrow import avro, faithfully_written, record, schemas_with_datums

EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def archived(datums: list[bytes | None], schema, parquet: bool = False) -> pa.Table:
    """The table the archive holds for these datums: decoded by the reference, every field nullable.

    `parquet`: also written to Parquet and read back, as replay reads it (a null record then has
    null fields); hypothesis drops the example if Parquet cannot store the schema (empty records).
    """
    batch = arrow.decode_batch(datums, schema, header_size=0)
    assert batch.errors == []
    target = arrow.nullable_schema(batch.table.schema)
    # Not Table.cast: pyarrow 26 corrupts list<null> children when it casts nested arrays.
    table = pa.Table.from_arrays([nullable(column.combine_chunks(), f.type) for column, f
                                  in zip(batch.table.columns, target)], schema=target)
    if not parquet:
        return table
    data = io.BytesIO()
    try:
        pq.write_table(table, data)
        return pq.read_table(data)
    except (pa.ArrowException, OSError):
        reject()  # Parquet has no empty struct nor fixed_size_binary(0)


def nullable(array: pa.Array, kind: pa.DataType) -> pa.Array:
    """`array` (not a slice) as type `kind`, the same type with nullable fields, rebuilt level by level."""
    mask = array.is_null() if array.null_count else None
    if pa.types.is_struct(kind):
        children = [nullable(array.field(i), f.type) for i, f in enumerate(kind)]
        return pa.StructArray.from_arrays(children, fields=list(kind), mask=mask) if children else array
    if pa.types.is_map(kind):
        items = nullable(array.items, kind.item_type)
        return pa.MapArray.from_arrays(array.offsets, array.keys, items, type=kind, mask=mask)
    if pa.types.is_list(kind):
        return pa.ListArray.from_arrays(array.offsets, nullable(array.values, kind.value_type), type=kind,
                                        mask=mask)
    return array


def native_result(table, schema, tombstones=None):
    """What the native path alone gives (no spot check, no fallback), or None where it declines."""
    plan = native_encode._PLANS.get(schema)
    if plan is None:
        return None
    try:
        return plan.encode(table, tombstones)
    except (native_encode._Unfit, native_encode._Unsupported):
        return None


def no_fallback():
    """codec.arrow.encode_rows fails while this is active, except for spot checks (of 3 rows at most).

    For batches of more than 3 rows only: smaller ones are left to the reference by design.
    """
    real = arrow.encode_rows

    def reference(table, schema, *, tombstones=None):
        assert table.num_rows <= 3, "the native encoder fell back to the reference"
        return real(table, schema, tombstones=tombstones)

    return mock.patch.object(native_encode.reference, "encode_rows", reference)


DEMO_EVENTS = [e.value for e in demo.events(500, 1_700_000_000_000, 3_600_000)]
DEMO_DATUMS = [avro(demo.PARSED, value) for value in DEMO_EVENTS]


# --- properties ------------------------------------------------------------------------------


@EXAMPLES
@given(schemas_with_datums(), st.data())
def test_random_schemas_encode_to_the_original_bytes(case, data):
    schema, values = case
    originals = [faithfully_written(schema, value) for value in values]
    assume(None not in originals)
    note(json.dumps(schema))
    # A tombstone (None) after the datums, and some datums flagged as tombstones too.
    flags = data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values))) + [True]
    table = archived(originals + [None], schema, parquet=data.draw(st.booleans()))
    for tombstones in ([False] * len(values) + [True], flags):
        want = [None if flag else datum for datum, flag in zip(originals + [None], tombstones)]
        assert arrow.encode_rows(table, schema, tombstones=tombstones) == want
        assert native_encode.encode_rows(table, schema, tombstones=tombstones) == want
        native = native_result(table, schema, tombstones)
        assert native is None or native == want
    assert native_encode.encode_rows(table.slice(0, len(values)), schema) == originals
    header = data.draw(st.sampled_from([b"", b"\x00\x00\x00\x00\x07"]))
    assert native_encode.encode_column(table.slice(0, len(values)), schema, header).to_pylist() == [
        header + datum for datum in originals]
    native = native_result(table.slice(0, len(values)), schema)
    event("native" if native is not None else "fallback" if native_encode.supports(schema) else "unsupported")
    assert native is None or native == originals


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schemas_with_datums(), st.data())
def test_slices_chunks_and_record_batches_encode_like_the_whole_table(case, data):
    schema, values = case
    originals = [faithfully_written(schema, value) for value in values]
    assume(None not in originals)
    table = archived(originals, schema)
    cut = data.draw(st.integers(0, table.num_rows))
    chunked = pa.concat_tables([table.slice(0, cut), table.slice(cut)])
    for got, want in [(chunked, originals), (table.slice(cut), originals[cut:]),
                      (table.to_batches()[0].slice(cut), originals[cut:])]:
        assert native_encode.encode_rows(got, schema) == want
        native = native_result(got, schema)
        assert native is None or native == want


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schemas_with_datums(), st.integers(50, 400))
def test_larger_batches_encode_to_the_original_bytes(case, copies):
    schema, values = case
    originals = [faithfully_written(schema, value) for value in values]
    assume(None not in originals)
    table = archived(originals * copies, schema)
    assert native_encode.encode_rows(table, schema) == originals * copies
    column = native_encode.encode_column(table, schema, b"\x00\x00\x00\x01\x00")
    assert column.to_pylist() == [b"\x00\x00\x00\x01\x00" + datum for datum in originals * copies]
    native = native_result(table, schema)
    assert native is None or native == originals * copies


def test_slices_of_records_holding_records():
    """arrow-rs panics on importing a sliced struct that holds a struct, unless it is copied first."""
    inner = record(("x", "int"), name="In")
    schema = record(("r", record(("i", inner), name="Mid")),
                    ("u", ["null", "string", record(("j", "In"), name="U")]),
                    ("l", {"type": "array", "items": record(("k", "In"), name="L")}),
                    ("w", record(("m", "Mid"), name="W")))
    values = [{"r": {"i": {"x": i}}, "u": ("U", {"j": {"x": i}}) if i % 2 else "s",
               "l": [{"k": {"x": i}}] * (i % 3), "w": {"m": {"i": {"x": -i}}}} for i in range(6)]
    datums = [avro(schema, value) for value in values]
    table = archived(datums, schema)
    for cut in range(1, 6):
        assert native_result(table.slice(cut), schema) == datums[cut:]
        assert native_result(table.to_batches()[0].slice(cut, 3), schema) == datums[cut:cut + 3]
    # A record not sliced itself, holding a sliced one that holds a record (from_arrays makes those).
    column = table.column("w").chunk(0)
    sliced_inside = pa.StructArray.from_arrays([column.field(0).slice(2)], fields=list(column.type))
    assert native_result(table.slice(2).set_column(3, "w", sliced_inside), schema) == datums[2:]


# --- the demo schema takes the native path ------------------------------------------------------


@pytest.mark.parametrize("schema", [demo.SCHEMA, demo.PARSED, json.dumps(demo.SCHEMA)],
                         ids=["dict", "parsed", "json"])
def test_demo_events_encode_natively(schema):
    table = archived(DEMO_DATUMS, demo.SCHEMA)
    assert native_encode.supports(schema)
    with no_fallback():
        assert native_encode.encode_rows(table, schema) == DEMO_DATUMS


def test_demo_events_through_polars_encode_natively():
    """pl.from_arrow turns strings into string views and so on: the bytes stay the same."""
    table = pl.from_arrow(archived(DEMO_DATUMS, demo.SCHEMA)).to_arrow()
    assert table.schema != arrow.nullable_schema(arrow.arrow_schema(demo.SCHEMA))
    with no_fallback():
        assert native_encode.encode_rows(table, demo.SCHEMA) == DEMO_DATUMS
    large = table.cast(pa.schema([f.with_type(pa.large_string()) if pa.types.is_string_view(f.type) else f
                                  for f in table.schema]))
    with no_fallback():
        assert native_encode.encode_rows(large, demo.SCHEMA) == DEMO_DATUMS


def test_demo_events_with_tombstones_and_extra_columns():
    table = archived(DEMO_DATUMS[:200] + [None] * 3, demo.SCHEMA)
    table = table.append_column("offset", pa.array(range(203)))
    flags = [i % 7 == 0 for i in range(200)] + [True] * 3
    expected = [None if f else d for d, f in zip(DEMO_DATUMS[:200] + [None] * 3, flags)]
    with no_fallback():
        assert native_encode.encode_rows(table, demo.SCHEMA, tombstones=flags) == expected
        assert native_encode.encode_rows(table, demo.SCHEMA, tombstones=[True] * 203) == [None] * 203


def test_small_batches_are_left_to_the_reference():
    """Under 100 rows the reference is as fast as the native path with its fixed costs."""
    table = archived(DEMO_DATUMS[:99], demo.SCHEMA)
    with mock.patch.object(native_encode, "AvroBuffSink", side_effect=AssertionError("native path taken")):
        assert native_encode.encode_rows(table, demo.SCHEMA) == DEMO_DATUMS[:99]


def test_an_empty_table_gives_no_datums():
    table = archived(DEMO_DATUMS, demo.SCHEMA).slice(0, 0)
    assert native_encode.encode_rows(table, demo.SCHEMA) == []


# --- what the native path checks before writing ----------------------------------------------

ENUM = {"type": "enum", "name": "E", "symbols": ["A", "B"]}
SIGNALLING_NAN = struct.pack("<I", 0x7F800001)  # float32; the reference writes it quieted
INNER = record(("x", "int"), name="Inner")


def assert_like_the_reference(table, schema, tombstones=None):
    """Same datums, or the same error, as the reference; the native path must decline it alone.

    The table is repeated to 100 rows or more, so that encode_rows does try the native path.
    """
    table = pa.concat_tables([table] * 100)
    assert native_encode.supports(schema)
    assert native_result(table, schema, tombstones) is None
    try:
        expected = arrow.encode_rows(table, schema, tombstones=tombstones)
    except (ConfigError, TerminalError) as exc:
        with pytest.raises(type(exc), match=f"^{re.escape(str(exc))}$"):
            native_encode.encode_rows(table, schema, tombstones=tombstones)
    else:
        assert native_encode.encode_rows(table, schema, tombstones=tombstones) == expected


@pytest.mark.parametrize(("schema", "column"), [
    (record(("a", "int")), pa.array([1, None], pa.int32())),
    (record(("r", INNER)), pa.array([{"x": 1}, None], pa.struct([("x", pa.int32())]))),
    (record(("r", ["null", INNER])), pa.array([{"x": 1}, {"x": None}], pa.struct([("x", pa.int32())]))),
    (record(("l", {"type": "array", "items": "long"})), pa.array([[1, None]], pa.list_(pa.int64()))),
    (record(("m", {"type": "map", "values": "long"})),
     pa.array([[("k", None)]], pa.map_(pa.string(), pa.int64()))),
    (record(("e", ENUM)), pa.array(["A", None])),
], ids=["top", "record", "in-a-record", "item", "map-value", "enum"])
def test_a_null_where_the_avro_type_has_none(schema, column):
    assert_like_the_reference(pa.table({schema["fields"][0]["name"]: column}), schema)


def test_a_null_under_a_null_parent_is_not_written():
    schema = record(("r", ["null", INNER]), ("l", ["null", {"type": "array", "items": "int"}]))
    datums = [avro(schema, {"r": None, "l": None}), avro(schema, {"r": {"x": 3}, "l": [1, 2]})]
    table = archived(datums, schema, parquet=True)
    assert table.column("r").chunk(0).field(0).null_count == 1  # Parquet: the child of a null record is null
    assert native_result(table, schema) == datums


@pytest.mark.parametrize(("schema", "column"), [
    (record(("e", ENUM)), pa.array(["A", "C"])),
    (record(("u", ["int", "string"])), pa.array([{"int": 1, "string": "x"}],
                                                pa.struct([("int", pa.int32()), ("string", pa.string())]))),
    (record(("u", ["null", "int", "string"])),
     pa.array([{"int": None, "string": None}], pa.struct([("int", pa.int32()), ("string", pa.string())]))),
    (record(("m", {"type": "map", "values": "int"})),
     pa.array([[("k", 1), ("k", 2)]], pa.map_(pa.string(), pa.int32()))),
    (record(("d", {"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 1})),
     pa.array([Decimal("-12.8"), Decimal(1)], pa.decimal128(5, 1))),
    (record(("d", {"type": "bytes", "logicalType": "decimal", "precision": 50, "scale": 0})),
     pa.array([Decimal(-(2**127))], pa.decimal256(50, 0))),
    (record(("f", "float")), pa.Array.from_buffers(pa.float32(), 1, [None, pa.py_buffer(SIGNALLING_NAN)])),
], ids=["not-a-symbol", "two-branches", "no-branch", "key-twice", "decimal-128", "decimal256",
        "signalling-nan"])
def test_values_the_writer_would_write_otherwise(schema, column):
    assert_like_the_reference(pa.table({schema["fields"][0]["name"]: column}), schema)


def test_a_decimal_wider_than_its_precision():
    schema = record(("d", {"type": "fixed", "name": "D", "size": 8, "logicalType": "decimal",
                           "precision": 3}))
    buffers = [None, pa.py_buffer((12345).to_bytes(16, "little"))]
    column = pa.Array.from_buffers(pa.decimal128(3, 0), 1, buffers)
    assert_like_the_reference(pa.table({"d": column}), schema)


def test_invalid_utf8():
    schema = record(("s", "string"))
    column = pa.Array.from_buffers(pa.string(), 1, [None, pa.array([0, 2], pa.int32()).buffers()[1],
                                                    pa.py_buffer(b"\xff\xfe")])
    table = pa.table({"s": pa.chunked_array([column] * 100)})
    with pytest.raises(UnicodeDecodeError):
        arrow.encode_rows(table, schema)
    assert native_result(table, schema) is None
    with pytest.raises(UnicodeDecodeError):
        native_encode.encode_rows(table, schema)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=6) | st.text(max_size=3).map(str.encode), max_size=12), st.data())
def test_the_native_utf8_check_agrees_with_arrows(pieces, data):
    """Byte strings that may split a character or hold invalid bytes, in a possibly sliced array."""
    check = pytest.importorskip("archiver_native").utf8_valid
    offsets = pa.array([0, *itertools.accumulate(map(len, pieces))], pa.int32())
    column = pa.Array.from_buffers(pa.string(), len(pieces), [None, offsets.buffers()[1], pa.py_buffer(b"".join(pieces))])
    begin = data.draw(st.integers(0, len(pieces)))
    column = column.slice(begin, data.draw(st.integers(0, len(pieces) - begin)))
    try:
        column.validate(full=True)
        arrows = True
    except pa.ArrowInvalid:
        arrows = False
    _, offsets, values = column.buffers()
    values = None if values is None else memoryview(values).cast("B")
    assert check(memoryview(offsets).cast("B"), values, column.offset, len(column)) == arrows


def test_ambiguous_union_branches_keep_their_branch():
    schema = record(("u", ["null", "int", "long", ENUM, "string"]))
    datums = [avro("long", 1) + avro("int", 5), avro("long", 2) + avro("long", 5),
              avro("long", 3) + avro("int", 1), avro("long", 4) + avro("string", "B"), b"\0"]
    assert native_result(archived(datums, schema), schema) == datums


def test_a_table_without_the_schema_columns_is_refused_like_the_reference():
    with pytest.raises(ConfigError, match="no column for the Avro field"):
        native_encode.encode_rows(pa.table({"other": [1]}), record(("a", "int")))


def test_tombstone_flags_must_match_the_rows():
    table = archived(DEMO_DATUMS[:2], demo.SCHEMA)
    with pytest.raises(ConfigError, match="3 tombstone flags for a table of 2 rows"):
        native_encode.encode_rows(table, demo.SCHEMA, tombstones=[True, False, True])


# --- framing ---------------------------------------------------------------------------------


def test_markers_cannot_overlap_themselves():
    for _ in range(1000):
        marker = native_encode._new_marker()
        assert len(marker) == 8 and marker[0] not in marker[1:]


def test_a_marker_inside_a_datum_sends_the_batch_to_the_reference():
    schema = record(("s", "string"))
    marker = b"\x01ABCDEFG"
    datums = [avro(schema, {"s": s}) for s in ("x", "ABCDEFG", "\x01ABCDEFGH")] * 50
    table = archived(datums, schema)
    with mock.patch.object(native_encode, "_new_marker", return_value=marker):
        assert native_result(table, schema) is None
        assert native_encode.encode_rows(table, schema) == datums


def test_container_blocks_are_parsed_and_checked():
    marker = native_encode._new_marker()
    sync = bytes(range(16))
    header = b"Obj\x01" + b"\x04" + b"\x16avro.schema\x04{}" + b"\x14avro.codec\x08null" + b"\x00" + sync
    block = marker + b"\x02" + marker + b""
    data = header + b"\x04" + bytes([len(block) * 2]) + block + sync + b"\x02\x10" + marker + sync
    assert native_encode._datums(data, marker, 3) == [b"\x02", b"", b""]
    for bad, count in [(data, 2), (data[:-1], 3), (data.replace(b"null", b"zstd"), 3)]:
        with pytest.raises(native_encode._Unfit):
            native_encode._datums(bad, marker, count)
    if native_encode.frame_datums is not None:  # the native framing parses and checks alike
        framed, offsets = native_encode.frame_datums(data, marker, 3, b"h")
        column = pa.Array.from_buffers(pa.binary(), 3, [None, pa.py_buffer(offsets), pa.py_buffer(framed)])
        assert column.to_pylist() == [b"h\x02", b"h", b"h"]
        for bad, count in [(data, 2), (data[:-1], 3), (data.replace(b"null", b"zstd"), 3), (data[1:], 3)]:
            with pytest.raises(ValueError, match="writer's output"):
                native_encode.frame_datums(bad, marker, count, b"")


# --- failures and unsupported schemas ---------------------------------------------------------


class FakePanic(BaseException):
    """Like pyo3's PanicException: not an Exception."""


@pytest.mark.parametrize("error", [FakePanic("panicked at src/writer.rs"), RuntimeError("boom")])
def test_any_failure_of_the_native_writer_falls_back(error):
    table = archived(DEMO_DATUMS[:200], demo.SCHEMA)
    assert native_encode.supports(demo.SCHEMA)  # probed before the writer breaks
    with mock.patch.object(native_encode, "AvroBuffSink", side_effect=error):
        assert native_encode.encode_rows(table, demo.SCHEMA) == DEMO_DATUMS[:200]


def test_keyboard_interrupt_is_not_swallowed():
    table = archived(DEMO_DATUMS[:200], demo.SCHEMA)
    assert native_encode.supports(demo.SCHEMA)
    with mock.patch.object(native_encode, "AvroBuffSink", side_effect=KeyboardInterrupt), \
            pytest.raises(KeyboardInterrupt):
        native_encode.encode_rows(table, demo.SCHEMA)


def test_a_spot_check_difference_falls_back_and_retires_the_schema():
    schema = record(("a", "long"), name="Spot")
    datums = [avro(schema, {"a": i}) for i in range(200)]
    table = archived(datums, schema)
    assert native_encode.supports(schema)
    wrong = mock.patch.object(native_encode, "_split", lambda data, marker, count: [b"\x00"] * count)
    with wrong:
        assert native_encode.encode_rows(table, schema) == datums
    assert not native_encode.supports(schema)
    native_encode._PLANS.clear()


@pytest.mark.parametrize("schema", [
    record(("u", ["int"])),
    record(("u", ["null"])),
    record(("r", record(("u", ["string"]), name="In"))),
], ids=["one-branch", "only-null", "nested-one-branch"])
def test_schemas_the_native_path_leaves_to_the_reference(schema):
    assert not native_encode.supports(schema)
    value = fastavro.schemaless_reader(io.BytesIO(b"\0" * 4), fastavro.parse_schema(schema), None)
    datum = avro(schema, value)
    table = archived([datum], schema)
    assert native_encode.encode_rows(table, schema) == [datum]


def test_a_column_is_encoded_natively_in_one_buffer():
    table = archived(DEMO_DATUMS, demo.SCHEMA)
    header = b"\x00\x00\x00\x00\x2a"
    with no_fallback():
        column = native_encode.encode_column(table, demo.SCHEMA, header)
    assert column.type == pa.binary() and column.null_count == 0
    assert column.to_pylist() == [header + datum for datum in DEMO_DATUMS]
    order = np.random.default_rng(5).permutation(len(DEMO_DATUMS))
    with no_fallback():
        column = native_encode.encode_column(table, demo.SCHEMA, header, order)
    assert column.to_pylist() == [header + DEMO_DATUMS[i] for i in order]
    small = archived(DEMO_DATUMS[:5], demo.SCHEMA)  # the reference's batch size: the same order
    assert native_encode.encode_column(small, demo.SCHEMA, header, order[order < 5]).to_pylist() == [
        header + DEMO_DATUMS[i] for i in order[order < 5]]


def container(*blocks: bytes, marker: bytes = b"\x01ABCDEFG", sync: bytes = bytes(range(16))) -> bytes:
    """An Avro container file (null codec) of one block per argument, counting its markers as records."""
    header = b"Obj\x01" + b"\x02" + b"\x14avro.codec\x08null" + b"\x00" + sync
    return header + b"".join(native_encode._long(b.count(marker)) + native_encode._long(len(b)) + b + sync
                             for b in blocks)


def test_frame_datums_cuts_at_each_marker_and_refuses_a_marker_inside_a_datum():
    frame = pytest.importorskip("archiver_native").frame_datums
    marker = b"\x01ABCDEFG"
    data, offsets = frame(container(marker + b"xy" + marker, marker + b"z"), marker, 3, b"H")
    column = pa.Array.from_buffers(pa.binary(), 3, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    assert column.to_pylist() == [b"Hxy", b"H", b"Hz"]
    for blocks, count in [((marker + b"x" + marker,), 1), ((b"x" + marker,), 1), ((marker, marker + b"y"), 3)]:
        with pytest.raises(ValueError, match="marker occurs|records instead"):
            frame(container(*blocks), marker, count, b"")
    one = marker + b"x" + marker + b"y"  # the writer says it is 1 record: its datum holds the marker
    with pytest.raises(ValueError, match="marker occurs 2 times where 1"):
        frame(container(one)[:-16 - len(one) - 2] + b"\x02" + native_encode._long(len(one)) + one + bytes(range(16)),
              marker, 1, b"")
    with pytest.raises(ValueError, match="first byte"):
        frame(container(marker), b"\x01\x01", 1, b"")
    data, offsets = frame(container(marker + b"xy" + marker, marker + b"z"), marker, 3, b"H", struct.pack("<3q", 2, 0, 1))
    column = pa.Array.from_buffers(pa.binary(), 3, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    assert column.to_pylist() == [b"Hz", b"Hxy", b"H"]
    for order in [(0, 0, 1), (0, 1, 3), (0, 1)]:
        with pytest.raises(ValueError, match="permutation"):
            frame(container(marker + b"xy" + marker, marker + b"z"), marker, 3, b"H", struct.pack(f"<{len(order)}q", *order))


def test_a_marker_inside_a_datum_makes_the_column_fall_back():
    schema = record(("s", "string"), name="Inside")
    marker = b"\x01ABCDEFG"
    datums = [avro(schema, {"s": s}) for s in ("x", "ABCDEFG", "\x01ABCDEFGH")] * 50
    table = archived(datums, schema)
    with mock.patch.object(native_encode, "_new_marker", return_value=marker):
        assert native_encode.encode_column(table, schema, b"h").to_pylist() == [b"h" + d for d in datums]


def test_a_spot_check_difference_in_a_column_falls_back_and_retires_the_schema():
    pytest.importorskip("archiver_native")
    schema = record(("a", "long"), name="SpotColumn")
    datums = [avro(schema, {"a": i}) for i in range(200)]
    table = archived(datums, schema)
    assert native_encode.supports(schema)
    wrong = mock.patch.object(native_encode, "frame_datums",
                              lambda block, marker, count, header, order: (b"\x00" * count, struct.pack(f"<{count + 1}i", *range(count + 1))))
    with wrong:
        assert native_encode.encode_column(table, schema).to_pylist() == datums
    assert not native_encode.supports(schema)
    native_encode._PLANS.clear()


def test_a_schema_the_reference_rejects_is_rejected_alike():
    schema = record(("a", "NoSuchType"))
    assert not native_encode.supports(schema)
    with pytest.raises(ConfigError, match="invalid Avro schema"):
        native_encode.encode_rows(pa.table({"a": [1]}), schema)
