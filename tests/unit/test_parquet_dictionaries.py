"""The sink learns which columns not to dictionary-encode from the files it writes."""

import io
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from archiver.writer import parquet

pytestmark = pytest.mark.unit


def dictionary_columns(data: bytes) -> set[str]:
    group = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0)
    return {group.column(i).path_in_schema for i in range(group.num_columns) if group.column(i).has_dictionary_page}


def table(rows: int) -> pa.Table:
    return pa.table({"id": [str(uuid.uuid4()) for _ in range(rows)],
                     "country": [["FR", "DE", "US"][i % 3] for i in range(rows)],
                     "tags": [[f"t{i % 4}", f"t{i % 7}"] for i in range(rows)]})


def test_a_column_that_did_not_repeat_is_written_plain_from_then_on():
    parquet._PLAIN.clear()
    first = parquet.encode(table(2000), {1: "{}"})
    assert dictionary_columns(first) == {"id", "country", "tags.list.element"}
    second = parquet.encode(table(2000), {1: "{}"})
    assert dictionary_columns(second) == {"country", "tags.list.element"}
    assert pq.read_table(io.BytesIO(second)).schema == pq.read_table(io.BytesIO(first)).schema


def test_small_files_teach_nothing():
    parquet._PLAIN.clear()
    parquet.encode(table(parquet.LEARN_MIN_ROWS - 1), {1: "{}"})  # every value of a small file can be unique
    assert dictionary_columns(parquet.encode(table(50), {1: "{}"})) == {"id", "country", "tags.list.element"}
