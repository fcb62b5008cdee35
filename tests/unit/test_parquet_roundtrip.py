"""Avro → Parquet → Avro gives back the datum bytes, through the path the sink takes.

Values are framed in the Confluent wire format, decoded by `ValueDecoder` (the native decoder
when it takes the schema, the reference when `native_allowed=False`), joined to the Kafka
metadata columns by `writer.rows.archived_rows` (what the sink's rows stage calls), written by
`writer.parquet.encode` and read back with pyarrow. The writer schema recovered from the file
must re-encode every row to the bytes the producer wrote, and the metadata columns must hold
what went in.

The random schemas leave out the features of the known failures at the end of this module;
those are pinned there as strict xfails, one minimal schema and datum each, next to the edge
cases that failed before and now pass.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from archiver import demo
from archiver.codec import native, wire
from archiver.codec.arrow import encode_rows
from archiver.codec.values import Run, ValueDecoder
from archiver.errors import NotFound
from archiver.writer.rows import archived_rows, in_offset_order
from archiver.writer import parquet
from tests.unit.test_codec_arrow import avro, datums, faithfully_written, record, schemas

EXAMPLES = settings(max_examples=100, deadline=None)
PATHS = pytest.mark.parametrize("native_allowed", [True, False], ids=["native", "reference"])
TIMESTAMP_TYPES = [None, "CreateTime", "LogAppendTime"]  # confluent-kafka's 0, 1, 2


class FakeRegistry:
    """The one method ValueDecoder asks of a schema registry."""

    def __init__(self, schemas: dict[int, dict]):
        self.schemas = schemas

    def schema_text(self, schema_id: int) -> str:
        if schema_id not in self.schemas:
            raise NotFound(f"schema id {schema_id}")
        return json.dumps(self.schemas[schema_id])


# --- generated schemas, datums and Kafka metadata --------------------------------------------


def known_failures(schema, named: dict) -> set[str]:
    """The features of `schema` that hit a known failure (see the xfails at the end)."""
    found = set()
    for sub in _nested(schema, named):
        kind = sub["type"] if isinstance(sub, dict) else None
        if kind == "map" and sub.get("values") == "null":
            found.add("map of null, next to fields that need a cast")
        if kind == "fixed" and sub["size"] == 0:
            found.add("fixed of size 0")
        if kind == "record" and not sub["fields"]:
            found.add("nested record without fields")
    return found


def _nested(schema, named: dict, path: frozenset = frozenset()):
    """Every sub-schema below the top-level record, named types resolved where they are used."""
    if isinstance(schema, str):
        if schema not in named or schema in path:
            return
        path, schema = path | {schema}, named[schema]
    if path:
        yield schema
    if isinstance(schema, list):
        children = schema
    elif schema["type"] == "record":
        path, children = path | {schema["name"]}, [f["type"] for f in schema["fields"]]
    else:
        children = [schema[k] for k in ("items", "values") if k in schema]
    for child in children:
        yield from _nested(child, named, path)


@st.composite
def cases(draw):
    """(schema, datum bytes) for a random schema, without the known failures' features."""
    schema, named = draw(schemas())
    assume(not known_failures(schema, named))
    values = draw(st.lists(datums(schema, named), min_size=1, max_size=3))
    originals = [faithfully_written(schema, value) for value in values]
    assume(None not in originals)
    return schema, originals


@st.composite
def kafka_fields(draw, n: int) -> dict:
    """Per-message metadata as confluent-kafka gives it, for `n` messages of one partition."""
    first = draw(st.integers(0, 2**62))
    gaps = draw(st.lists(st.integers(1, 1000), min_size=n, max_size=n))  # compacted topics skip offsets
    stamp = st.tuples(st.sampled_from([0, 1, 2]), st.integers(-(2**63), 2**63 - 1))
    header = st.tuples(st.text(alphabet="ab-é", max_size=2), st.none() | st.binary(max_size=4))
    return {
        "partition": draw(st.integers(0, 2**31 - 1)),
        "offsets": [first + sum(gaps[:i]) for i in range(n)],
        "stamps": draw(st.lists(stamp, min_size=n, max_size=n)),
        "keys": draw(st.lists(st.none() | st.binary(max_size=6), min_size=n, max_size=n)),
        "headers": draw(st.lists(st.none() | st.lists(header, max_size=4), min_size=n, max_size=n)),
    }


def schema_ids():
    return st.integers(0, 2**31 - 1)  # Confluent ids are Java ints; _schema_id is int32


def plain_fields(n: int, keys=None) -> dict:
    return {"partition": 0, "offsets": list(range(n)), "stamps": [(1, 0)] * n,
            "keys": keys or [None] * n, "headers": [None] * n}


# --- the sink's path, from message values to a Parquet file and back ----------------------------


def with_metadata(run: Run, fields: dict, rows: list[int] | None, key_format: str) -> pa.Table:
    """What `Sink._with_metadata` gives, with the message fields as lists."""
    def pick(values):
        return values if rows is None else [values[i] for i in rows]

    return archived_rows(run, fields["partition"], pick(fields["offsets"]), pick(fields["stamps"]),
                         pick(fields["keys"]), pick(fields["headers"]), key_format)


def archive(values: list[bytes | None], fields: dict, decoder: ValueDecoder, key_format: str) -> bytes:
    """The Parquet file the sink writes for one segment of messages (`Sink._table`, `_build`)."""
    decoded = decoder.decode(values)
    assert decoded.errors == []
    if len(decoded.runs) == 1 and len(decoded.runs[0].rows) == len(values):
        table = with_metadata(decoded.runs[0], fields, None, key_format)
    else:
        table = in_offset_order([with_metadata(run, fields, run.rows, key_format) for run in decoded.runs])
    ids = {run.schema_id for run in decoded.runs if run.schema_id is not None}
    return parquet.encode(table, {i: decoder.schema_text(i) for i in ids})


def restore(data: bytes) -> tuple[list[bytes | None], pa.Table]:
    """The datums (None for tombstones) and the metadata columns of an archived file, read as
    replay reads it; the file itself stores every timestamp in microseconds (Iceberg readers)."""
    stored = pq.read_table(io.BytesIO(data)).schema
    table = parquet.read_table(data)
    if parquet.micros_fit(table):  # else (a timestamp beyond ±292,000 years) it keeps milliseconds
        assert not [f for f in _leaves(stored) if pa.types.is_timestamp(f.type) and f.type.unit != "us"]
    table.validate(full=True)
    writer_schemas = parquet.writer_schemas_of(pq.read_metadata(io.BytesIO(data)).metadata)
    assert writer_schemas == parquet.writer_schemas_of(table.schema.metadata)
    extra = [c for c in ("_key",) if c in table.column_names]
    meta = table.select(list(parquet.METADATA_COLUMNS) + extra)
    values = table.drop_columns(list(parquet.METADATA_COLUMNS) + extra)
    ids = meta["_schema_id"].to_pylist()
    present = {i for i in ids if i is not None}
    assert present <= set(writer_schemas)
    if not present:
        return [None] * table.num_rows, meta
    (schema_id,) = present  # the sink writes one writer schema per segment
    return encode_rows(values, writer_schemas[schema_id], tombstones=[i is None for i in ids]), meta


def _leaves(schema: pa.Schema) -> list[pa.Field]:
    out, todo = [], list(schema)
    while todo:
        f = todo.pop()
        t = f.type
        if pa.types.is_struct(t):
            todo += list(t)
        elif pa.types.is_map(t):
            todo += [t.key_field, t.item_field]
        elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            todo.append(t.value_field)
        else:
            out.append(f)
    return out


def roundtrip(schema: dict, schema_id: int, originals: list[bytes | None], fields: dict,
              native_allowed: bool, key_format: str = "bytes") -> tuple[list[bytes | None], pa.Table]:
    """Frame, decode (checking the decoder the schema got), archive and restore `originals`."""
    values = [None if o is None else wire.frame(schema_id, o) for o in originals]
    decoder = ValueDecoder(FakeRegistry({schema_id: schema}), native_allowed=native_allowed)
    with decoder_log() as lines:
        data = archive(values, fields, decoder, key_format)
    expect_native = native_allowed and native.supports(schema)
    if any(v is not None for v in values):
        assert f"schema id {schema_id}: {'native' if expect_native else 'reference'} decoder" in lines
    assert not any("using the reference decoder" in line for line in lines)  # no native fallback
    return restore(data)


@contextlib.contextmanager
def decoder_log():
    """The codec's log lines: which decoder each schema got, and any native fallback."""
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    log = logging.getLogger("archiver.codec")
    level = log.level
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        yield lines
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def assert_metadata(meta: pa.Table, fields: dict, ids: list[int | None]) -> None:
    assert meta.select(list(parquet.METADATA_COLUMNS)).schema == parquet.METADATA_SCHEMA
    n = len(fields["offsets"])
    assert meta["_kafka_partition"].to_pylist() == [fields["partition"]] * n
    assert meta["_kafka_offset"].to_pylist() == fields["offsets"]
    # As int64: the full range of Kafka's long does not fit a Python datetime.
    assert meta["_kafka_timestamp"].cast(pa.int64()).to_pylist() == [
        ms if kind else None for kind, ms in fields["stamps"]]
    assert meta["_kafka_timestamp_type"].to_pylist() == [TIMESTAMP_TYPES[kind] for kind, _ in fields["stamps"]]
    assert meta["_kafka_key"].to_pylist() == fields["keys"]
    # Kafka does not tell no headers from an empty list of them: None is archived as [].
    assert [[(h["key"], h["value"]) for h in row] for row in meta["_kafka_headers"].to_pylist()] == [
        list(h or []) for h in fields["headers"]]
    assert meta["_schema_id"].to_pylist() == ids


def note_decoder(schema: dict, native_allowed: bool) -> None:
    event("native decoder" if native_allowed and native.supports(schema) else "reference decoder")


# --- properties ------------------------------------------------------------------------------


@PATHS
@EXAMPLES
@given(cases(), schema_ids(), st.data())
def test_random_datums_come_back_byte_for_byte(native_allowed, case, schema_id, data):
    schema, originals = case
    note_decoder(schema, native_allowed)
    fields = data.draw(kafka_fields(len(originals)))
    restored, meta = roundtrip(schema, schema_id, originals, fields, native_allowed)
    assert restored == originals
    assert_metadata(meta, fields, [schema_id] * len(originals))


@PATHS
@EXAMPLES
@given(cases(), schema_ids(), st.integers(1, 3), st.data())
def test_tombstones_interleaved_come_back_as_none(native_allowed, case, schema_id, tombstones, data):
    schema, originals = case
    note_decoder(schema, native_allowed)
    originals = originals + [None] * tombstones
    originals = [originals[i] for i in data.draw(st.permutations(range(len(originals))))]
    fields = data.draw(kafka_fields(len(originals)))
    restored, meta = roundtrip(schema, schema_id, originals, fields, native_allowed)
    assert restored == originals
    assert_metadata(meta, fields, [None if o is None else schema_id for o in originals])


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 4), st.data())
def test_a_file_of_tombstones_only_has_the_metadata_columns(count, data):
    fields = data.draw(kafka_fields(count))
    restored, meta = roundtrip(record(("a", "int")), 3, [None] * count, fields, True)
    assert restored == [None] * count
    assert meta.column_names == list(parquet.METADATA_COLUMNS)
    assert_metadata(meta, fields, [None] * count)


@PATHS
@pytest.mark.parametrize("key_format", ["bytes", "string"])
@pytest.mark.parametrize("with_tombstones", [False, True], ids=["values", "tombstones"])
def test_demo_events_come_back_byte_for_byte(native_allowed, key_format, with_tombstones):
    schema_id = 12
    events = list(demo.events(300, 1_764_000_000_000, 3 * 3600_000, seed=11))
    values = [demo.encode(e.value, schema_id) for e in events]
    if with_tombstones:
        values = [None if i % 7 == 3 else v for i, v in enumerate(values)]
    originals = [None if v is None else v[wire.HEADER_SIZE:] for v in values]
    fields = {"partition": 5, "offsets": list(range(1000, 1000 + 2 * len(events), 2)),
              "stamps": [(1, e.timestamp_ms) for e in events], "keys": [e.key for e in events],
              "headers": [e.headers for e in events]}
    assert native.supports(demo.SCHEMA)  # so the native variant decodes natively
    restored, meta = roundtrip(demo.SCHEMA, schema_id, originals, fields, native_allowed, key_format)
    assert restored == originals
    assert_metadata(meta, fields, [None if v is None else schema_id for v in values])
    if key_format == "string":
        assert meta["_key"].to_pylist() == [e.key.decode() for e in events]


def test_a_string_key_column_holds_the_decoded_keys():
    keys = [b"s-1", None, "clé".encode(), b""]
    schema = record(("a", "int"))
    originals = [avro(schema, {"a": i}) for i in range(len(keys))]
    restored, meta = roundtrip(schema, 1, originals, plain_fields(len(keys), keys), True, "string")
    assert restored == originals
    assert meta["_key"].to_pylist() == ["s-1", None, "clé", ""]


# --- edge schemas: fixed failures and known ones ---------------------------------------------

INNER = record(("x", "int"), name="Inner")
WRITE_FAILS = "the sink cannot write the file"


def known_failure(raises, reason: str):
    return pytest.mark.xfail(strict=True, raises=raises, reason=reason)


@PATHS
@pytest.mark.parametrize("schema, values", [
    pytest.param(record(("f", {"type": "fixed", "name": "Empty", "size": 0})), [{"f": b""}],
                 id="fixed of size 0",
                 marks=known_failure(OSError, f"{WRITE_FAILS}: Parquet has no FIXED_LEN_BYTE_ARRAY of length 0")),
    pytest.param(record(("f", record(name="Nothing"))), [{"f": {}}], id="nested record without fields",
                 marks=known_failure(pa.ArrowNotImplementedError,
                                     f"{WRITE_FAILS}: Parquet cannot write a struct with no child field")),
    # Casting these to the nullable schema (a no-op) broke the null children: the sink skips such casts.
    pytest.param(record(("a", {"type": "array", "items": "null"})), [{"a": [None, None]}],
                 id="array of null, two items"),
    pytest.param(record(("m", {"type": "map", "values": "null"})), [{"m": {"a": None, "b": None}}],
                 id="map of null, two entries"),
    pytest.param(record(("m", {"type": "map", "values": ["null", record(("a", "null"), ("b", "null"), name="Nulls")]})),
                 [{"m": {"": None, "0": {"a": None, "b": None}}}], id="map of optional records of null fields"),
    pytest.param(record(("a", {"type": "array", "items": "null"}), ("b", {"type": "array", "items": "boolean"})),
                 [{"a": [None, None], "b": []}], id="array of null next to an array to cast"),
    # Read back, the timestamp makes the whole struct cast to milliseconds: pyarrow's cast gave its
    # list of null records null-typed children shorter than the list (parquet.cast rebuilds them).
    pytest.param(record(("r", record(("a", {"type": "array", "items": ["null", record(("n", "null"), name="N")]}),
                                     ("t", {"type": "long", "logicalType": "timestamp-millis"}), name="Outer"))),
                 [{"r": {"a": [None, {"n": None}, None], "t": 1_764_000_000_000}}],
                 id="array of optional records of null, next to a timestamp"),
    # A null struct over non-nullable fields: Parquet gives its children back null.
    pytest.param(record(("r", ["null", INNER])), [{"r": None}], id="optional record, null"),
    pytest.param(record(("u", [INNER, "string"])), [{"u": "s"}], id="union of a record, other branch"),
    pytest.param(record(("a", {"type": "array", "items": ["null", INNER]})), [{"a": [None]}],
                 id="array of optional records, a null item"),
    pytest.param(record(("r", INNER)), [None, {"r": {"x": 1}}], id="nested record, tombstone"),
])
def test_edge_schemas(native_allowed, schema, values):
    originals = [None if v is None else avro(schema, v) for v in values]
    restored, _ = roundtrip(schema, 1, originals, plain_fields(len(values)), native_allowed)
    assert restored == originals


def test_a_key_that_is_not_utf8_with_key_format_string():
    schema = record(("a", "int"))
    originals = [avro(schema, {"a": 1}), avro(schema, {"a": 2})]
    restored, meta = roundtrip(schema, 1, originals, plain_fields(2, [b"\xff", b"ok"]), True, "string")
    assert restored == originals
    assert meta["_key"].to_pylist() == [None, "ok"]  # not text: null, its bytes stay in _kafka_key
    assert meta["_kafka_key"].to_pylist() == [b"\xff", b"ok"]
