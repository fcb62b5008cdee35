"""Arrow → Avro for a whole batch at once, with the arrow-avro writer that polars-avro wraps.

`encode_rows` has exactly the contract and the output of `codec.arrow.encode_rows` (the reference:
to_pylist + fastavro, ~100k rows/s), ten times faster. The batch is written as ONE in-memory Avro
object container file (null codec) by polars-avro's `AvroBuffSink`, which encodes by the Avro
schema found in the Arrow schema's `avro.schema` metadata (the header it writes shows a schema
derived from the Arrow types instead: it is ignored). The writer schema is the record schema with
a leading `fixed(8)` field holding one random marker per batch, so each record of the container is
the marker then exactly the datum the reference would give; the datums are cut out by splitting
the concatenated block data on the marker (the native decoder's trick, in reverse).

Why the cut is exact: the marker is drawn so that its first byte occurs nowhere else in it, so
two occurrences of it can never overlap; `bytes.split` therefore finds every occurrence, and the
n record starts are n of them. Exactly n occurrences (the data starting with one) means there is
no other, so the pieces are exactly the n datums. An occurrence inside a datum (probability about
size/2⁶⁴, and the marker is new for every batch) gives more pieces and the reference takes over.

What the writer gets wrong or cannot take as the archive holds it, and how this module copes:

* It writes by Arrow type and checks little: a null where the Avro type has none, an enum string
  that is not a symbol, a union struct with no or several branches set, a map with a key twice, a
  decimal wider than its precision, a float32 signalling NaN (the reference quiets it) or invalid
  UTF-8 would be written silently. Each is looked for in the rows actually written (a null
  record's fields may hold anything) and sends the batch to the reference, which raises.
* It writes a decimal on `bytes` in minimal two's complement; fastavro (so the reference) writes
  -2^(8k-1) one byte wider (-128 as ff80): batches holding such a value go to the reference.
* Its schema keeps no logical type but decimal (it then writes the stored integers of times and
  the uuid strings as they are) and renames every named type (it cannot resolve namespaces).
  Enums are given to it as dictionary arrays of the symbols, unions of several non-null branches
  as dense Arrow unions over the archive's struct of branches (enum branches marked with
  `avro.enum.symbols`: it also derives a schema from the Arrow types, for the header it writes,
  and refuses a union of a dictionary and a string otherwise).
* It refuses a union of one branch: `supports` says no to such schemas.

Any failure (PanicException included) sends the whole batch to the reference. polars-avro's sink
is version-pinned: `supports` probes each schema once against the reference, and every batch
has a few rows re-encoded by the reference as a spot check.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
from collections.abc import Callable, Sequence
from decimal import Context, Decimal
from typing import Any

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from archiver.codec import arrow as reference
from archiver.codec.native import load_avro_rs
from archiver.codec.plans import PlanCache
from archiver.codec.wire import avro_long as _long
from archiver.errors import ConfigError
from archiver.source.records import raw

try:  # header + datum of each row into one buffer; a SIMD check of UTF-8
    from archiver_native import frame_datums, utf8_valid
except ImportError:  # pragma: no cover - without the native module: a list of datums, Arrow's check
    frame_datums = utf8_valid = None

try:
    AvroBuffSink = load_avro_rs().AvroBuffSink  # pinned by the tests, probed per schema
except ImportError:  # pragma: no cover - without polars-avro every batch takes the reference path
    AvroBuffSink = None

logger = logging.getLogger(__name__)

__all__ = ["encode_column", "encode_rows", "supports"]

_MARKER_SIZE = 8
_SYNC_SIZE = 16
_MIN_ROWS = 100  # below, the reference is as fast (the native path costs ~1.5 ms per batch)


def supports(schema: Any) -> bool:
    """Whether rows of `schema` can take the native path (decided once per schema).

    Args:
        schema: The Avro schema, in any form `codec.arrow` takes (text, dict, fastavro-parsed).

    Returns:
        False when polars-avro is missing, the reference rejects the schema, the schema has a
        union of one branch only, or probe rows are not encoded to exactly the reference's bytes.
    """
    return _PLANS.get(schema) is not None


def encode_rows(table: pa.Table | pa.RecordBatch, schema: Any, *,
                tombstones: Sequence[bool] | None = None) -> list[bytes | None]:
    """Encode each row as an Avro datum (no wire-format header), natively when possible.

    Args:
        table: Value columns named as the Avro record's fields; other columns are ignored.
        schema: The Avro schema to write with, as for `supports`.
        tombstones: Optional flag per row; rows flagged True give None instead of a datum.

    Returns:
        Exactly what `codec.arrow.encode_rows` returns for the same arguments.

    Raises:
        ConfigError, TerminalError: as `codec.arrow.encode_rows` (which then handles the batch).
    """
    plan = _PLANS.get(schema) if table.num_rows >= _MIN_ROWS else None
    if plan is not None and (tombstones is None or len(tombstones) == table.num_rows):
        out = _natively(schema, table, lambda: plan.encode(table, tombstones), lambda out, row: out[row], tombstones)
        if out is not None:
            return out
    return reference.encode_rows(table, schema, tombstones=tombstones)


def encode_column(table: pa.Table | pa.RecordBatch, schema: Any, header: bytes = b"",
                  order: np.ndarray | None = None) -> pa.BinaryArray:
    """`header` and then the Avro datum of each row, as one Arrow binary array.

    The datums are those of `encode_rows`; natively, they are framed in one buffer by
    `archiver_native.frame_datums`, with no Python object per row.

    Args:
        table, schema: As for `encode_rows`.
        header: Bytes put before every datum (the Confluent wire-format header, or none).
        order: Row positions (a permutation): the datum of row `order[i]` comes i-th. Putting
            rows in order while framing them costs nothing; taking them afterwards does.

    Raises:
        ConfigError, TerminalError: as `codec.arrow.encode_rows` (which then handles the batch).
    """
    plan = _PLANS.get(schema) if table.num_rows >= _MIN_ROWS and frame_datums is not None else None
    if plan is not None:
        out = _natively(schema, table, lambda: plan.encode_column(table, header, order),
                        lambda out, row: out[row].as_py()[len(header):], None, order)
        if out is not None:
            return out
    datums = reference.encode_rows(table, schema)
    column = pa.array([header + datum for datum in datums] if header else datums, pa.binary())
    return column if order is None else column.take(pa.array(order))


def _natively(schema: Any, table: pa.Table | pa.RecordBatch, encode: Callable[[], Any],
              datum_of: Callable[[Any, int], bytes | None], tombstones: Sequence[bool] | None,
              order: np.ndarray | None = None) -> Any:
    """What `encode` gives, spot-checked; None when it fails (the schema is retired when it disagrees)."""
    try:
        out = encode()
        _spot_check(out, datum_of, table, schema, tombstones, order)
    except (KeyboardInterrupt, SystemExit):
        raise
    except _SpotCheckFailed as exc:
        logger.warning("native Avro encoding disagrees with the reference for record schema %s, "
                       "no longer used for it: %s", _schema_name(schema), exc)
        _PLANS.disable(schema)
    except BaseException as exc:  # noqa: BLE001 - includes pyo3's PanicException (a BaseException)
        logger.info("native Avro encoding not used for a batch of %d rows: %s", table.num_rows, _reason(exc))
    else:
        return out
    return None


class _Unfit(Exception):
    """The batch holds something the native writer would not write as the reference does."""


class _Unsupported(Exception):
    """The schema has something the native writer cannot write."""


class _SpotCheckFailed(Exception):
    """A row the native writer encoded differs from the reference's encoding."""


def _spot_check(out: Any, datum_of: Callable[[Any, int], bytes | None], table: pa.Table | pa.RecordBatch,
                schema: Any, tombstones: Sequence[bool] | None, order: np.ndarray | None = None) -> None:
    """Re-encode the first, middle and last datums with the reference: a difference is a native bug.
    Datum i is of row i, or of row `order[i]`."""
    positions = sorted({0, len(out) // 2, len(out) - 1})
    rows = positions if order is None else [int(order[i]) for i in positions]
    flags = None if tombstones is None else [bool(tombstones[row]) for row in rows]
    picked = (pa.concat_tables([table.slice(row, 1) for row in rows]) if isinstance(table, pa.Table)
              else table.take(rows))  # a Table's take would first join the chunks of its nested columns
    expected = reference.encode_rows(picked, schema, tombstones=flags)  # one call: ~0.3 ms
    for position, datum in zip(positions, expected):
        if datum_of(out, position) != datum:
            raise _SpotCheckFailed(f"row {position}: {datum_of(out, position)!r} instead of {datum!r}")


# --- the plan of a schema ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Site:
    """One place of the Avro schema, with what checking and converting its Arrow array needs.

    kind: "null", "plain" (written as Arrow holds it), "float" (float32), "string", "decimal"
    (on bytes), "fixed_decimal", "enum", "record", "array", "map" or "union" (of several non-null
    branches: the archive's struct of branches).
    """

    kind: str
    nullable: bool = False  # the Avro type takes null here (["null", T] or a union with a null branch)
    children: tuple[_Site, ...] = ()  # record fields; array items; map values; union value branches
    symbols: tuple[str, ...] = ()  # enum
    branches: tuple[int | None, ...] = ()  # union: per Avro branch, its value branch index or None (null)


class _Compiler:
    """Builds the `_Site` tree and the schema the writer gets from a fastavro-parsed schema."""

    def __init__(self, named: dict[str, Any]):
        self._named = named
        self._names: dict[str, str] = {}  # new name by original full name
        self._sites: dict[str, _Site] = {}  # site by original full name

    def node(self, schema: Any) -> tuple[_Site, Any]:
        if isinstance(schema, list):
            return self._union(schema)
        if isinstance(schema, str):
            if schema in self._names:
                return self._sites[schema], self._names[schema]
            if schema in self._named:
                return self.node(self._named[schema])
            return _primitive(schema), schema
        kind = schema["type"]
        if kind in ("record", "enum", "fixed"):
            return self._named_type(schema)
        if kind == "array":
            items, avro = self.node(schema["items"])
            return _Site("array", children=(items,)), {"type": "array", "items": avro}
        if kind == "map":
            values, avro = self.node(schema["values"])
            return _Site("map", children=(values,)), {"type": "map", "values": avro}
        if isinstance(kind, (dict, list)) or kind in self._named:
            return self.node(kind)
        logical = schema.get("logicalType")
        if kind == "bytes" and _valid_decimal(schema):
            return _Site("decimal"), {"type": "bytes", **_decimal_attributes(schema)}
        if (logical, kind) in reference.TEMPORAL or kind in ("int", "long"):
            return _Site("plain"), kind  # the writer writes the stored integer of a time as it is
        return _primitive(kind), kind  # uuid, duration and unknown logical types: the base type

    def _named_type(self, schema: dict) -> tuple[_Site, Any]:
        full_name, kind = schema["name"], schema["type"]
        name = f"T{len(self._names)}"  # no namespace: all names are new, so none can clash
        if kind == "enum":
            site = _Site("enum", symbols=tuple(schema["symbols"]))
            avro = {"type": "enum", "name": name, "symbols": list(schema["symbols"])}
        elif kind == "fixed":
            avro = {"type": "fixed", "name": name, "size": schema["size"]}
            if _valid_decimal(schema):
                site = _Site("fixed_decimal")
                avro.update(_decimal_attributes(schema))
            else:
                site = _Site("plain")
        else:
            self._names[full_name] = name
            fields = [(f["name"], *self.node(f["type"])) for f in schema["fields"]]
            sites = tuple(s for _, s, _ in fields)
            site = _Site("record", children=sites)
            avro = {"type": "record", "name": name,
                    "fields": [{"name": n, "type": a} for n, _, a in fields]}
        self._names[full_name], self._sites[full_name] = name, site
        return site, avro

    def _union(self, branches: list) -> tuple[_Site, Any]:
        compiled = [self.node(branch) for branch in branches]
        avro = [a for _, a in compiled]
        values = [s for s, _ in compiled if s.kind != "null"]
        nullable = len(values) < len(compiled)
        if len(compiled) < 2:
            raise _Unsupported("a union of one branch (the native writer refuses it)")
        if not values:
            raise _Unsupported("a union of null types only")
        if len(values) == 1:  # ["null", T] or [T, "null"]: T, nullable (the writer's reading too)
            return _with_nullable(values[0]), avro
        indices, i = [], 0
        for site, _ in compiled:
            indices.append(None if site.kind == "null" else i)
            i += site.kind != "null"
        return _Site("union", nullable=nullable, children=tuple(values), branches=tuple(indices)), avro


def _with_nullable(site: _Site) -> _Site:
    return dataclasses.replace(site, nullable=True)


def _primitive(kind: str) -> _Site:
    return _Site({"null": "null", "float": "float", "string": "string"}.get(kind, "plain"))


def _valid_decimal(schema: dict) -> bool:
    """A decimal as the reference maps it (to a decimal Arrow type); others are their base type."""
    precision, scale = schema.get("precision"), schema.get("scale", 0)
    return (schema.get("logicalType") == "decimal" and isinstance(precision, int) and isinstance(scale, int)
            and 0 <= scale <= precision and 0 < precision <= reference.MAX_DECIMAL_PRECISION)


def _decimal_attributes(schema: dict) -> dict:
    return {"logicalType": "decimal", "precision": schema["precision"], "scale": schema.get("scale", 0)}


@dataclasses.dataclass
class _Plan:
    """A compiled schema: the sites of the top-level fields and the writer's record schema."""

    fields: list[tuple[str, _Site]]
    record: dict  # the writer schema without the marker field
    marker_field: str
    target: pa.Schema  # the reference's Arrow schema, all nullable (as archived)
    writer_schema: str = ""  # JSON: `record` with the marker field first

    def __post_init__(self) -> None:
        marker_type = {"type": "fixed", "name": "Marker", "size": _MARKER_SIZE}
        marker = {"name": self.marker_field, "type": marker_type}
        self.writer_schema = json.dumps({**self.record, "fields": [marker, *self.record["fields"]]})

    def encode(self, table: pa.Table | pa.RecordBatch, tombstones: Sequence[bool] | None
               ) -> list[bytes | None]:
        """The datum of each row (None for tombstones); raises when the batch does not fit."""
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        keep = None
        if tombstones is not None and any(tombstones):
            keep = pa.array([not t for t in tombstones], pa.bool_())
            table = table.filter(keep)
        datums = self._encode_values(table) if table.num_rows else []
        if keep is None:
            return datums
        values = iter(datums)
        return [None if t else next(values) for t in tombstones]

    def encode_column(self, table: pa.Table | pa.RecordBatch, header: bytes,
                      order: np.ndarray | None) -> pa.BinaryArray:
        """`header` + the datum of each row (in `order`) as one binary array; raises when the batch
        does not fit."""
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if not table.num_rows:
            return pa.array([], pa.binary())
        container, marker = self._container(table)
        try:
            data, offsets = frame_datums(container, marker, table.num_rows, header,
                                         None if order is None else raw(np.ascontiguousarray(order, np.int64)))
        except ValueError as e:
            raise _Unfit(str(e)) from None
        return pa.Array.from_buffers(pa.binary(), table.num_rows, [None, pa.py_buffer(offsets), pa.py_buffer(data)])

    def _encode_values(self, table: pa.Table) -> list[bytes]:
        container, marker = self._container(table)
        return _datums(container, marker, table.num_rows)

    def _container(self, table: pa.Table) -> tuple[bytes, bytes]:
        """The container file the writer writes (each record the marker, then a datum), and the marker."""
        marker = _new_marker()
        arrays = [_markers(marker, table.num_rows)]
        for (name, site), target in zip(self.fields, self.target):
            chunks = [_writable(chunk, site, None) for chunk in _column(table, target).chunks]
            arrays.append(pa.chunked_array(chunks, type=chunks[0].type))
        schema = pa.schema([pa.field(self.marker_field, pa.binary(_MARKER_SIZE))]
                           + [pa.field(name, a.type) for (name, _), a in zip(self.fields, arrays[1:])],
                           metadata={"avro.schema": self.writer_schema})
        out, table = io.BytesIO(), pa.Table.from_arrays(arrays, schema=schema)
        sink = AvroBuffSink(out, table, None)  # Schema.empty_table() cannot make a dense union
        sink.write(table)
        sink.close()
        return out.getvalue(), marker


def _column(table: pa.Table, target: pa.Field) -> pa.ChunkedArray:
    """The column of `target` in the reference's type (cast only where it differs, as the reference)."""
    if target.name not in table.column_names:
        raise ConfigError(f"the table has no column for the Avro field {target.name}")
    column = table.column(target.name)
    return column if reference._nullable_type(column.type) == target.type else column.cast(target.type)


def _new_marker() -> bytes:
    """8 random bytes whose first byte occurs nowhere else in them: no two occurrences can overlap."""
    while True:
        marker = os.urandom(_MARKER_SIZE)
        if marker[0] not in marker[1:]:
            return marker


def _markers(marker: bytes, count: int) -> pa.Array:
    buffers = [None, pa.py_buffer(marker * count)]
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(_MARKER_SIZE), count, buffers)


def _new_plan(schema: Any) -> _Plan:
    if AvroBuffSink is None:
        raise _Unsupported("polars-avro is not installed")
    target = reference.nullable_schema(reference.arrow_schema(schema))  # ConfigError as the reference
    if isinstance(schema, str) and schema.lstrip()[:1] in ("{", "[", '"'):
        schema = json.loads(schema)
    parsed = fastavro.parse_schema(schema)
    compiler = _Compiler(parsed.get("__named_schemas", {}))
    site, record = compiler.node(parsed)
    names = [f["name"] for f in record["fields"]]
    marker_field = next(n for n in (f"_marker{i or ''}" for i in range(len(names) + 1)) if n not in names)
    plan = _Plan(list(zip(names, site.children)), record, marker_field, target)
    _probe(plan, parsed)
    return plan


def _probe(plan: _Plan, parsed: dict) -> None:
    """Encode probe rows both ways; anything but the same bytes means the native writer is not fit."""
    datums = [_probe_datum(parsed, parsed.get("__named_schemas", {}), last) for last in (False, True)]
    batch = reference.decode_batch([*datums, None], parsed, header_size=0)
    if batch.errors:
        raise _Unsupported(f"the reference does not decode the probe rows: {batch.errors}")
    table = batch.table
    try:
        got = plan.encode(table, [False, False, True])
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - as in encode_rows
        raise _Unsupported(f"the native writer fails on probe rows: {_reason(exc)}") from None
    if got != [*datums, None]:
        raise _SpotCheckFailed(f"the native writer encodes probe rows as {got!r}, not {datums!r}")


def _probe_datum(node: Any, named: dict, last: bool) -> bytes:
    """A valid datum of `node`: first union branches, zeros and empties; or last branches and ones."""
    if isinstance(node, list):
        index = len(node) - 1 if last else 0
        return _long(index) + _probe_datum(node[index], named, last)
    if isinstance(node, str):
        if node in named:
            return _probe_datum(named[node], named, last)
        return {"null": b"", "boolean": b"\1", "int": b"\2", "long": b"\2", "float": b"\0\0\x80?",
                "double": bytes(6) + b"\xf0?", "bytes": b"\2\1", "string": b"\2x"}[node] if last else \
            {"null": b"", "boolean": b"\0", "int": b"\0", "long": b"\0", "float": bytes(4),
             "double": bytes(8), "bytes": b"\0", "string": b"\0"}[node]
    kind = node["type"]
    if kind == "record":
        return b"".join(_probe_datum(f["type"], named, last) for f in node["fields"])
    if kind == "enum":
        return _long(len(node["symbols"]) - 1 if last else 0)
    if kind == "fixed":
        size = node["size"]
        return bytes(size - 1) + b"\1" if last and size else bytes(size)  # 1: valid as a decimal too
    if kind == "array":
        return b"\2" + _probe_datum(node["items"], named, last) + b"\0" if last else b"\0"
    if kind == "map":
        return b"\2\2k" + _probe_datum(node["values"], named, last) + b"\0" if last else b"\0"
    if kind == "bytes" and node.get("logicalType") == "decimal":
        return b"\2\1" if last else b"\2\0"  # one byte (an empty decimal is not one)
    return _probe_datum(kind, named, last)


# --- checking and converting the arrays ----------------------------------------------------------


def _writable(array: pa.Array, site: _Site, written: pa.Array | None) -> pa.Array:
    """`array` as the writer needs it; raises _Unfit where the writer would not write as the reference.

    The writer gets enums as dictionary arrays of their symbols, unions of several non-null
    branches as dense unions and copies of sliced structs holding a struct (arrow-rs panics on
    importing those); the rest as it is, a container rebuilt only if something in it changed.
    `written` flags the rows that are written (None:
    all): a row under a null record, list or union value is not, and may hold anything (pyarrow
    fills a null struct's children with empty values). Checks of the values themselves look at
    every row, which can only send a batch to the reference needlessly, never wrongly.
    """
    if site.kind == "null":
        return array
    if array.null_count:
        nulls = array.is_null()
        if not site.nullable and (written is None or pc.any(pc.and_(nulls, written)).as_py()):
            raise _Unfit("a null where the Avro type has none")
        written = pc.invert(nulls) if written is None else pc.and_not(written, nulls)
    return _BY_KIND[site.kind](array, site, written)


def _as_is(array: pa.Array, site: _Site, written: pa.Array | None) -> pa.Array:
    return array


def _record(array: pa.Array, site: _Site, written: pa.Array | None) -> pa.Array:
    """A struct, rebuilt if a field changed (a struct at any depth may have been copied)."""
    if array.offset and any(pa.types.is_struct(f.type) for f in array.type):
        array = pa.concat_arrays([array])  # the writer panics on a sliced struct holding a struct
    fields = [array.field(i) for i in range(len(site.children))]
    children = [_writable(f, child, written) for f, child in zip(fields, site.children)]
    if all(c is f for c, f in zip(children, fields)):
        return array
    fields = [f.with_type(c.type) for f, c in zip(array.type, children)]
    mask = array.is_null() if array.null_count else None
    return pa.StructArray.from_arrays(children, fields=fields, mask=mask)


def _items(array: pa.Array, site: _Site, written: pa.Array | None) -> pa.Array:
    """A list or map array (its items are written where it is), rebuilt if its items changed."""
    offsets, values = _rebased(array)
    lengths = np.diff(offsets.to_numpy(zero_copy_only=False))
    keys = None
    if site.kind == "map":
        keys, values = values.field(0), values.field(1)
        _string(keys, site, None)
        _check_unique_keys(lengths, keys)
    if written is not None:
        written = written.take(pa.array(np.repeat(np.arange(len(array), dtype=np.int32), lengths)))
    items = _writable(values, site.children[0], written)
    if items is values:
        return array
    mask = array.is_null() if array.null_count else None
    if keys is None:
        kind = pa.list_(array.type.value_field.with_type(items.type))
        return pa.ListArray.from_arrays(offsets, items, type=kind, mask=mask)
    kind = pa.map_(array.type.key_field, array.type.item_field.with_type(items.type))
    return pa.MapArray.from_arrays(offsets, keys, items, type=kind, mask=mask)


def _rebased(array: pa.Array) -> tuple[pa.Array, pa.Array]:
    """The offsets (from 0) and values of a list or map array, also when it is a slice."""
    offsets = array.offsets
    start, end = offsets[0].as_py(), offsets[-1].as_py()
    if start or array.offset:  # from_arrays refuses a mask with sliced offsets: new ones, from 0
        offsets = pc.subtract(offsets, np.int32(start))
    return offsets, array.values.slice(start, end - start)


def _check_unique_keys(lengths: np.ndarray, keys: pa.Array) -> None:
    """The reference writes a map from a dict, which keeps one entry per key; the writer keeps all.

    Sorted by map and key, a key twice in a map is two equal neighbours (faster than a group-by).
    """
    if len(keys) < 2:
        return
    pairs = pa.table({"map": np.repeat(np.arange(len(lengths), dtype=np.int32), lengths), "key": keys})
    order = pc.sort_indices(pairs, sort_keys=[("map", "ascending"), ("key", "ascending")])
    maps, keys = pairs.column("map").take(order).to_numpy(), pairs.column("key").take(order)
    same_key = pc.equal(keys.slice(0, len(keys) - 1), keys.slice(1)).to_numpy(zero_copy_only=False)
    if np.any((maps[1:] == maps[:-1]) & same_key):
        raise _Unfit("a map has the same key twice")


def _enum(array: pa.Array, site: _Site, written: pa.Array | None) -> pa.Array:
    symbols = pa.array(site.symbols, pa.string())
    indices = pc.index_in(array, value_set=symbols)
    if indices.null_count != array.null_count:
        unknown = pc.and_(indices.is_null(), array.is_valid())
        if pc.any(unknown if written is None else pc.and_(unknown, written)).as_py():
            raise _Unfit("an enum value that is not a symbol of the enum")
    return pa.DictionaryArray.from_arrays(indices, symbols)


def _union(array: pa.Array, site: _Site, written: pa.Array | None) -> pa.Array:
    """The archive's struct of branches as a dense union in Avro branch order (offsets: row numbers).

    Exactly one branch must be set in each value written, as the reference requires.
    """
    n = len(array)
    values = array.flatten()  # with the union's nulls: pyarrow fills a null struct's children with values
    valid = [branch.is_valid() for branch in values]
    counts = pc.cast(valid[0], pa.int8())
    for flags in valid[1:]:
        counts = pc.add(counts, pc.cast(flags, pa.int8()))
    wrong = pc.not_equal(counts, np.int8(1))
    if pc.any(wrong if written is None else pc.and_(wrong, written)).as_py():
        raise _Unfit("a union value with no or several branches set")
    null_code = site.branches.index(None) if None in site.branches else 0
    types = pa.array(np.full(n, null_code, np.int8))
    children = []
    for code, branch in enumerate(site.branches):
        if branch is None:
            children.append(pa.nulls(n))
            continue
        if values[branch].null_count < n:
            types = pc.if_else(valid[branch], np.int8(code), types)
        branch_written = valid[branch] if written is None else pc.and_(written, valid[branch])
        children.append(_writable(values[branch], _with_nullable(site.children[branch]), branch_written))
    # The writer also derives a schema from the Arrow types (for the header it writes), which
    # refuses a union of a dictionary and a string unless the dictionary is marked as an enum.
    fields = [pa.field(f"b{i}", child.type, metadata=_enum_metadata(site, branch))
              for i, (child, branch) in enumerate(zip(children, site.branches))]
    offsets = np.arange(n, dtype=np.int32)
    buffers = [None, types.buffers()[1], pa.py_buffer(offsets)]
    return pa.UnionArray.from_buffers(pa.dense_union(fields), n, buffers, children=children)


def _enum_metadata(site: _Site, branch: int | None) -> dict | None:
    if branch is None or site.children[branch].kind != "enum":
        return None
    return {"avro.enum.symbols": json.dumps(site.children[branch].symbols)}


def _float(array: pa.Array, site: _Site, written: pa.Array | None) -> pa.Array:
    """The reference quiets a float32 signalling NaN (through a Python float); the writer does not."""
    if pc.any(pc.is_nan(array)).as_py():
        bits = array.view(pa.int32())
        nan = pc.equal(pc.bit_wise_and(bits, np.int32(0x7FC00000)), np.int32(0x7F800000))
        payload = pc.not_equal(pc.bit_wise_and(bits, np.int32(0x3FFFFF)), np.int32(0))
        if pc.any(pc.and_(nan, payload)).as_py():
            raise _Unfit("a float32 signalling NaN")
    return array


def _string(array: pa.Array, site: _Site, written: pa.Array | None) -> pa.Array:
    # UTF-8: the reference cannot make Python strings of invalid ones (Parquet readers do not check)
    if utf8_valid is not None and array.type == pa.string():
        _, offsets, data = array.buffers()
        if utf8_valid(raw(offsets), None if data is None else raw(data), array.offset, len(array)):
            return array  # the native check found nothing; else Arrow's names the problem
    try:
        array.validate(full=True)
    except pa.ArrowInvalid as exc:
        raise _Unfit(f"an invalid string: {_reason(exc)}") from None
    return array


def _decimal(array: pa.Array, site: _Site, written: pa.Array | None) -> pa.Array:
    try:
        array.validate(full=True)  # a value with more digits than its precision
    except pa.ArrowInvalid as exc:
        raise _Unfit(f"an invalid decimal: {_reason(exc)}") from None
    if site.kind == "decimal":
        wider = _wider_in_fastavro(array.type)
        if len(wider) and pc.any(pc.is_in(array, value_set=wider)).as_py():
            raise _Unfit("a decimal that fastavro writes one byte wider than the native writer")
    return array


def _wider_in_fastavro(decimal_type: pa.DataType) -> pa.Array:
    """The values -2^(8k-1) of the type: fastavro gives them k+1 bytes, minimal two's complement k."""
    limit, context = 10**decimal_type.precision, Context(prec=reference.MAX_DECIMAL_PRECISION + 1)  # exact
    values = [Decimal(-(2 ** (8 * k - 1))).scaleb(-decimal_type.scale, context) for k in range(1, 33)
              if 2 ** (8 * k - 1) < limit]
    return pa.array(values, decimal_type)


_BY_KIND = {"plain": _as_is, "record": _record, "array": _items, "map": _items, "enum": _enum,
            "union": _union, "float": _float, "string": _string, "decimal": _decimal,
            "fixed_decimal": _decimal}


# --- the container file ------------------------------------------------------------------------


def _datums(data: bytes, marker: bytes, count: int) -> list[bytes]:
    """The datums of the `count` records of a container file whose records are marker + datum."""
    return _split(_records(data, count), marker, count)


def _records(data: bytes, count: int) -> bytes:
    """The records of a container file of `count` records (null codec), its blocks joined."""
    if data[:4] != b"Obj\x01":
        raise _Unfit("the writer's output is not an Avro container file")
    metadata, pos = _metadata(data, 4)
    if metadata.get(b"avro.codec", b"null") != b"null":
        raise _Unfit(f"the writer used the codec {metadata[b'avro.codec']!r}")
    sync, pos = data[pos:pos + _SYNC_SIZE], pos + _SYNC_SIZE
    blocks, records = [], 0
    while pos < len(data):
        rows, pos = _read_long(data, pos)
        size, pos = _read_long(data, pos)
        if rows < 0 or size < 0:
            raise _Unfit("a negative block count or size in the writer's output")
        blocks.append(data[pos:pos + size])
        pos += size
        if data[pos:pos + _SYNC_SIZE] != sync:
            raise _Unfit("a block of the writer's output does not end with the sync marker")
        pos, records = pos + _SYNC_SIZE, records + rows
    if records != count:
        raise _Unfit(f"the writer wrote {records} records instead of {count}")
    return blocks[0] if len(blocks) == 1 else b"".join(blocks)


def _split(records: bytes, marker: bytes, count: int) -> list[bytes]:
    """The datums of `count` records that each are the marker, then a datum."""
    pieces = records.split(marker)
    # The marker cannot overlap itself, so these are all its occurrences: one per record start.
    if len(pieces) != count + 1 or pieces[0]:
        raise _Unfit("the marker occurs inside a datum")
    del pieces[0]
    return pieces


def _metadata(data: bytes, pos: int) -> tuple[dict[bytes, bytes], int]:
    """The metadata map of a container header starting at `pos`, and the position after it."""
    metadata = {}
    while True:
        entries, pos = _read_long(data, pos)
        if entries == 0:
            return metadata, pos
        if entries < 0:  # a block with its size in bytes
            entries = -entries
            _, pos = _read_long(data, pos)
        for _ in range(entries):
            key, pos = _read_bytes(data, pos)
            metadata[key], pos = _read_bytes(data, pos)


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    """Avro's zig-zag varint at `pos`, and the position after it."""
    shift = value = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _Unfit("a truncated or overlong varint in the writer's output")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return (value >> 1) ^ -(value & 1), pos


def _read_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    size, pos = _read_long(data, pos)
    if size < 0 or pos + size > len(data):
        raise _Unfit("a truncated byte string in the writer's output")
    return data[pos:pos + size], pos + size


def _schema_name(schema: Any) -> str:
    return schema.get("name", "?") if isinstance(schema, dict) else "?"


def _reason(exc: BaseException) -> str:
    detail = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


_PLANS: PlanCache[_Plan] = PlanCache(_new_plan, (ConfigError, _Unsupported, _SpotCheckFailed), "encoding")
