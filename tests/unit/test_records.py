"""Batches of records as columns, and the choice between the native and confluent-kafka consumers."""

import logging
import sys

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archiver.errors import TerminalError
from archiver.source import consumer as consumers
from archiver.source import native
from archiver.source.records import HEADER_TYPE, Batch, Record, blob_list, blob_size
from archiver.writer import parquet

pytestmark = pytest.mark.unit

blobs = st.none() | st.binary(max_size=20)
headers = st.none() | st.lists(st.tuples(st.text(max_size=8), blobs), max_size=4)
stamps = st.one_of(st.tuples(st.just(0), st.just(-1)),
                   st.tuples(st.sampled_from([1, 2]), st.integers(-(2**62), 2**62)))
records = st.lists(st.tuples(blobs, blobs, headers, stamps), max_size=30)


def batch_of(rows, first_offset=100) -> tuple[Batch, list[Record]]:
    messages = [Record("t", 3, first_offset + i, stamp, key, value, header)
                for i, (key, value, header, stamp) in enumerate(rows)]
    return Batch.of(messages), messages


@settings(max_examples=200, deadline=None)
@given(records, st.data())
def test_a_batch_gives_back_every_record_as_it_came(rows, data):
    batch, messages = batch_of(rows)
    assert len(batch) == len(messages)
    assert [batch.record(i) for i in range(len(batch))] == [
        Record(m.topic(), m.partition(), m.offset(), m.timestamp(), m.key(), m.value(), m.headers() or None)
        for m in messages]
    if rows:
        begin = data.draw(st.integers(0, len(rows) - 1))
        end = data.draw(st.integers(begin, len(rows)))
        part = batch.slice(begin, end)
        assert [part.record(i) for i in range(len(part))] == [batch.record(i) for i in range(begin, end)]
        rows_taken = data.draw(st.lists(st.integers(0, len(rows) - 1), max_size=10))
        taken = batch.take(rows_taken)
        assert [taken.record(i) for i in range(len(taken))] == [batch.record(i) for i in rows_taken]
        assert batch.from_offset(100 + begin).offsets.tolist() == list(range(100 + begin, 100 + len(rows)))


@settings(max_examples=100, deadline=None)
@given(records)
def test_metadata_columns_hold_the_kafka_fields(rows):
    batch, messages = batch_of(rows)
    table = parquet.metadata_columns(batch, 7)
    assert table.schema == parquet.METADATA_SCHEMA
    assert table["_kafka_offset"].to_pylist() == [m.offset() for m in messages]
    assert table["_kafka_partition"].to_pylist() == [3] * len(messages)
    assert table["_kafka_timestamp"].cast(pa.int64()).to_pylist() == [
        ts if kind else None for kind, ts in (m.timestamp() for m in messages)]
    assert table["_kafka_timestamp_type"].to_pylist() == [
        [None, "CreateTime", "LogAppendTime"][m.timestamp()[0]] for m in messages]
    assert table["_kafka_key"].to_pylist() == [m.key() for m in messages]
    assert [[(h["key"], h["value"]) for h in hs] for hs in table["_kafka_headers"].to_pylist()] == [
        list(m.headers() or []) for m in messages]


def native_run(batch: Batch) -> tuple:
    """A run laid out as archiver_native.Consumer.consume returns it (the layout Batch.from_native reads)."""
    entries = batch.headers.values
    names, values = entries.field(0), entries.field(1)

    def buffer(array, i, dtype=None):
        found = array.buffers()[i]
        data = b"" if found is None else found.to_pybytes()
        return data if dtype is None else np.frombuffer(data, dtype)[array.offset:array.offset + len(array) + 1].tobytes()

    return (batch.topic, batch.partition, batch.offsets.tobytes(), batch.timestamps.tobytes(), batch.types.tobytes(),
            batch.keys, batch.values,
            (buffer(batch.headers, 1, np.int32), buffer(names, 1, np.int32), buffer(names, 2),
             buffer(values, 1, np.int32), buffer(values, 2), None if values.null_count == 0 else buffer(values, 0),
             len(entries)))


@settings(max_examples=100, deadline=None)
@given(records)
def test_the_native_layout_reads_back_as_the_same_batch(rows):
    batch, _ = batch_of(rows)
    again = Batch.from_native(native_run(batch))
    assert again.headers.type == HEADER_TYPE
    assert [again.record(i) for i in range(len(again))] == [batch.record(i) for i in range(len(batch))]


@settings(max_examples=100, deadline=None)
@given(records, st.data())
def test_a_batch_of_arrow_keys_and_values_is_the_batch_of_the_same_lists(rows, data):
    batch, _ = batch_of(rows)
    arrow = Batch(batch.topic, batch.partition, batch.offsets, batch.timestamps, batch.types,
                  pa.array(batch.keys, pa.binary()), pa.array(batch.values, pa.binary()), batch.headers)
    begin = data.draw(st.integers(0, len(batch)))
    end = data.draw(st.integers(begin, len(batch)))
    rows_taken = data.draw(st.lists(st.integers(0, max(0, len(batch) - 1)), max_size=10)) if len(batch) else []
    for got, want in [(arrow, batch), (arrow.slice(begin, end), batch.slice(begin, end)),
                      (arrow.take(rows_taken), batch.take(rows_taken))]:
        assert [got.record(i) for i in range(len(got))] == [want.record(i) for i in range(len(want))]
        assert blob_list(got.values) == want.values and blob_list(got.keys) == want.keys
        assert blob_size(got.values) == blob_size(want.values)


def test_auto_falls_back_to_confluent_kafka_with_the_reason(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "archiver_native", None)  # not built
    config = {"bootstrap.servers": "localhost:1", "group.id": "g"}
    with caplog.at_level(logging.INFO, "archiver.source.consumer"):
        chosen = consumers.open_consumer(config, "auto")
    try:
        assert chosen.kind == "python"
        assert "archiver_native is not built" in caplog.text
    finally:
        chosen.close()
    with pytest.raises(TerminalError, match="run.kafka_client is native, but the native module archiver_native is not"):
        consumers.open_consumer(config, "native")


def test_settings_the_native_consumer_cannot_serve_are_named():
    pytest.importorskip("archiver_native")
    base = {"bootstrap.servers": "localhost:1", "group.id": "g", "logger": logging.getLogger("x")}
    assert native.unsupported(base) is None  # the logger is served (lines go to Python logging)
    assert "takes no Python callbacks (oauth_cb)" in native.unsupported(base | {"oauth_cb": print})
    oidc = {"sasl.mechanism": "OAUTHBEARER", "sasl.oauthbearer.method": "oidc"}
    assert "without libcurl, which OAUTHBEARER OIDC needs" in native.unsupported(base | oidc)
    chosen = consumers.open_consumer(base | {"error_cb": print}, "auto")
    try:
        assert chosen.kind == "python"
    finally:
        chosen.close()
    chosen = consumers.open_consumer(base, "auto")
    try:
        assert chosen.kind == "native"
    finally:
        chosen.close()
