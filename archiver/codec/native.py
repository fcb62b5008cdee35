"""Avro → Arrow for a whole batch at once, with the arrow-avro reader that polars-avro wraps.

The messages of a batch (all written with one writer schema) become ONE in-memory Avro
object-container block without being sliced: each record of the block is a random 8-byte marker
(inserted by a `bytes.join`) and then a message as it is, its wire-format header read as a
`fixed` field before the datum's fields; a last record of ours puts a marker after the last
message too. polars-avro's `AvroSource` decodes the block in one call, and the result is brought
to exactly the table `codec.arrow` (the reference) builds, so the two paths are interchangeable.

What the native reader gets wrong, and how this module copes (see DECODING-NOTES.md):

* Nothing tells it where a message ends: one with a trailing byte, or a truncated one, shifts
  the next record. Every marker and header must read back exactly; a marker is random per
  schema, so a shifted read cannot match it by accident.
* Bytes left over after the declared number of records make its next read loop forever, so
  exactly one batch of exactly the declared size is read, never a second.
* It reads a `["null", T]` union index other than the null branch's as T, whatever its value.
  Every union it is given is padded to three branches with one-byte fixed types, which makes it
  read a dense union and check the index range; a padding branch read means a bad index.
* It neither checks a decimal's precision nor that map keys are unique (the reference keeps
  the last value of a key): both are checked on the Arrow result.
* It parses uuid strings and turns durations into intervals, where the reference keeps the
  string as written and the 12 bytes: those logical types (and all the reference ignores) are
  dropped from the schema it is given, and so are namespaces, which it fails to resolve.
* It fails on fixed(0), on records without fields and on the null type inside a nested record,
  an array or a map: `supports` says no to those schemas.

Any failure sends the whole batch to the reference decoder, which reports the bad messages one
by one. polars-avro's reader is a private module: `supports` probes it once per schema, and the
tests compare both paths on random schemas and corrupt messages.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import io
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import fastavro
import pyarrow as pa
import pyarrow.compute as pc

from archiver.codec import arrow as reference
from archiver.codec.arrow import DecodedBatch
from archiver.codec.plans import PlanCache
from archiver.codec.wire import HEADER_SIZE
from archiver.codec.wire import avro_long as _long
from archiver.errors import ConfigError


def load_avro_rs():
    """polars-avro's Rust extension (a private module: pinned by the tests, probed per schema).

    Loaded without running polars_avro/__init__, which imports all of polars (~0.1 s of CPU at
    every start) for a scan/sink API we do not use; the extension itself only speaks the Arrow C
    interface. It is registered under its own name, so a later `import polars_avro` reuses it.
    """
    name = "polars_avro._avro_rs"
    if "polars_avro" in sys.modules or name in sys.modules:
        return importlib.import_module(name)
    package = importlib.util.find_spec("polars_avro")
    spec = package and importlib.machinery.PathFinder.find_spec(name, package.submodule_search_locations)
    if spec is None:
        raise ImportError(f"No module named {name!r}", name=name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


try:
    AvroSource = load_avro_rs().AvroSource
except ImportError:  # pragma: no cover - without polars-avro every batch takes the reference path
    AvroSource = None

logger = logging.getLogger(__name__)

__all__ = ["DecodedBatch", "decode_batch", "supports"]

_MARKER_SIZE = 8
_PADDED_UNION = 3  # arrow-avro reads a 2-branch union with null without checking the index
_PRIMITIVE_ZERO = {"null": b"", "boolean": b"\0", "int": b"\0", "long": b"\0", "float": bytes(4),
                   "double": bytes(8), "bytes": b"\0", "string": b"\0"}


def supports(schema: Any) -> bool:
    """Whether batches written with `schema` can take the native path (decided once per schema).

    Args:
        schema: The writer schema, in any form `codec.arrow` takes (text, dict, fastavro-parsed).

    Returns:
        False when polars-avro is missing, the reference rejects the schema (invalid, not a
        record, recursive), the schema has a type the native reader fails on (fixed(0), a record
        with no fields, the null type inside a nested record, an array or a map), or a probe
        record does not decode to exactly what the reference gives.
    """
    return _PLANS.get(schema) is not None


def decode_batch(messages: Sequence[bytes | None], schema: Any, *, header_size: int = HEADER_SIZE
                 ) -> DecodedBatch:
    """Decode wire-format messages into an Arrow table, natively when possible.

    Args:
        messages: Kafka message values, each a `header_size`-byte header and one Avro datum
            written with `schema`; None is a tombstone and gives an all-null row.
        schema: The writer schema, as for `supports`.
        header_size: Bytes before the datum; on the native path every message must have the
            same header (group messages by schema id first).

    Returns:
        The same as `codec.arrow.decode_batch` for these messages: when any message does not
        decode natively the whole batch is decoded by the reference, which reports it.

    Raises:
        ConfigError: the schema is unsupported by the reference too (see `codec.arrow`).
    """
    plan = _PLANS.get(schema)
    if plan is not None and any(m is not None for m in messages):
        try:
            table = plan.decode(messages, header_size)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - includes pyo3's PanicException (a BaseException)
            logger.info("native Avro decoding failed for a batch of %d messages, using the reference "
                        "decoder: %s", len(messages), _reason(exc))
        else:
            return DecodedBatch(table, list(range(len(messages))), [])
    return reference.decode_batch(messages, schema, header_size=header_size)


class _Mismatch(Exception):
    """The native result is not what the messages say (bad framing, bad value, bad index)."""


class _Unsupported(Exception):
    """The schema has something the native reader cannot hold."""


# --- per-schema plan -------------------------------------------------------------------------


@dataclass
class _Plan:
    """How to frame and read batches of one writer schema."""

    name: str  # the top-level record's name (renamed, see `_Rewriter`)
    fields: list[dict]  # its fields, rewritten for the native reader (see `_Rewriter`)
    zero: bytes  # a valid datum (every value zero or empty), for the probe
    token: str  # unique prefix of every name this module adds to the schema
    target: pa.Schema  # reference.arrow_schema(schema)
    marker: bytes = field(default_factory=lambda: os.urandom(_MARKER_SIZE))
    sync: bytes = field(default_factory=lambda: os.urandom(16))
    _prefixes: dict[int, bytes] = field(default_factory=dict)

    def decode(self, messages: Sequence[bytes | None], header_size: int) -> pa.Table:
        """The table of `messages`; raises if the native reader or any check fails."""
        count = len(messages)
        try:  # len() also finds the tombstones, at C speed
            size = sum(map(len, messages))
        except TypeError:
            present = [m for m in messages if m is not None]
            return _with_tombstones(self.decode(present, header_size), messages)
        # Block: (marker, message) per message, then (marker, a header and datum of ours) so
        # that a marker follows the last message too. One copy of the messages.
        last = bytes(header_size) + self.zero
        block_size = (count + 1) * _MARKER_SIZE + size + len(last)
        head = self._prefix(header_size) + _long(count + 1) + _long(block_size)
        data = self.marker.join([head, *messages, last + self.sync])
        batch = _read_block(data, count + 1)
        _expect_all(batch.column(0), self.marker, count + 1, "start marker")
        if header_size:
            _expect_all(batch.column(1), messages[0][:header_size], count, "header")
        first = 2 if header_size else 1
        columns = [_convert(batch.column(first + i), f.type, self.token) for i, f in enumerate(self.target)]
        return pa.Table.from_arrays(columns, schema=self.target).slice(0, count)

    def _prefix(self, header_size: int) -> bytes:
        """The container header (magic, metadata with the framing schema, sync marker)."""
        prefix = self._prefixes.get(header_size)
        if prefix is None:
            prefix = self._prefixes[header_size] = _container_header(self._framing(header_size), self.sync)
        return prefix

    def _framing(self, header_size: int) -> dict:
        """The record the block holds: start marker, header, then the record schema's fields."""
        taken = {f["name"] for f in self.fields} & {"_start", "_hdr"}
        start, hdr = (f"_start_{self.token}", f"_hdr_{self.token}") if taken else ("_start", "_hdr")
        marker = {"type": "fixed", "name": f"{self.token}Start", "size": _MARKER_SIZE}
        fields = [{"name": start, "type": marker}]
        if header_size:
            header = {"type": "fixed", "name": f"{self.token}Hdr", "size": header_size}
            fields.append({"name": hdr, "type": header})
        return {"type": "record", "name": self.name, "fields": fields + self.fields}


def _new_plan(schema: Any) -> _Plan:
    if AvroSource is None:
        raise _Unsupported("polars-avro is not installed")
    target = reference.arrow_schema(schema)  # raises ConfigError for what the reference rejects
    parsed = fastavro.parse_schema(schema)
    rewriter = _Rewriter(_unused_token(json.dumps(parsed, default=repr)))
    record = rewriter.rewrite(parsed)
    zero = rewriter.zero(record)
    plan = _Plan(record["name"], record["fields"], zero, rewriter.token, target)
    _probe(plan, schema)
    return plan


def _probe(plan: _Plan, schema: Any) -> None:
    """Decode one record both ways; anything but the same table means the native reader is not fit."""
    messages = [bytes(HEADER_SIZE) + plan.zero, None]
    try:
        got = plan.decode(messages, HEADER_SIZE)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - as in decode_batch
        raise _Mismatch(f"the native reader fails on a probe record: {_reason(exc)}") from None
    expected = reference.decode_batch(messages, schema).table
    # Values, not Table.equals: the reference's all-null columns of type null carry a validity
    # buffer after a tombstone, which Table.equals counts as a difference.
    if got.schema != expected.schema or got.to_pylist() != expected.to_pylist():
        raise _Mismatch("the native reader decodes a probe record differently from the reference")


def _unused_token(text: str) -> str:
    """A name prefix that appears nowhere in the schema's text."""
    while True:
        token = f"Archiver{os.urandom(4).hex()}"
        if token not in text:
            return token


class _Rewriter:
    """The schema the native reader gets: the same encoding, only what it decodes right.

    Keeps the logical types the reference maps (timestamps, dates, times, valid decimals) and
    drops the others (uuid, duration, unknown or misplaced ones); drops defaults, docs, aliases
    and namespaces, renaming every named type (the native reader fails to resolve a reference
    to a namespaced name); pads every union to `_PADDED_UNION` branches with one-byte fixed types.
    """

    def __init__(self, token: str):
        self.token = token
        self.named: dict[str, dict] = {}  # rewritten named types by new name
        self._names: dict[str, str] = {}  # new name by original full name
        self._pads = 0

    def rewrite(self, node: Any, where: str = "inner") -> Any:
        """`node` rewritten; `where` it is: "top" (a top-level field), "branch" (of a union), "inner"."""
        if isinstance(node, list):
            branches = [self.rewrite(branch, "branch") for branch in node]
            while len(branches) < _PADDED_UNION:
                self._pads += 1
                branches.append({"type": "fixed", "name": f"{self.token}Pad{self._pads}", "size": 1})
            return branches
        if node == "null" and where == "inner":
            raise _Unsupported("the null type in a nested record, an array or a map (the native reader "
                               "declares it non-nullable and fails on the first value)")
        if isinstance(node, str):
            return node if node in _PRIMITIVE_ZERO else self._names[node]  # fastavro: a full name
        kind = node["type"]
        if kind in ("record", "enum", "fixed"):
            return self._named(node)
        if kind == "array":
            return {"type": "array", "items": self.rewrite(node["items"])}
        if kind == "map":
            return {"type": "map", "values": self.rewrite(node["values"])}
        if kind in _PRIMITIVE_ZERO:
            return _logical(node, kind) or kind
        return self.rewrite(kind, where)  # {"type": {...}} or {"type": "a.Name"}

    def _named(self, node: dict) -> dict:
        kind, full_name = node["type"], node["name"]
        name = self._names[full_name] = f"{self.token}T{len(self._names)}"
        if kind == "enum":
            out = {"type": "enum", "name": name, "symbols": list(node["symbols"])}
        elif kind == "fixed":
            if not node["size"]:
                raise _Unsupported(f"fixed {full_name} has size 0 (the native reader fails on it)")
            out = {"type": "fixed", "name": name, "size": node["size"], **(_logical(node, kind) or {})}
        elif not node["fields"]:
            raise _Unsupported(f"record {full_name} has no fields (the native reader fails on empty structs)")
        else:
            where = "top" if len(self._names) == 1 else "inner"  # the first name is the top level's
            fields = [{"name": f["name"], "type": self.rewrite(f["type"], where)} for f in node["fields"]]
            out = {"type": "record", "name": name, "fields": fields}
        self.named[name] = out
        return out

    def zero(self, node: Any) -> bytes:
        """A valid datum of the rewritten type `node`: first union branches, zeros and empties."""
        if isinstance(node, list):
            return b"\0" + self.zero(node[0])
        if isinstance(node, str):
            return _PRIMITIVE_ZERO[node] if node in _PRIMITIVE_ZERO else self.zero(self.named[node])
        kind = node["type"]
        if kind == "record":
            return b"".join(self.zero(f["type"]) for f in node["fields"])
        if kind == "fixed":
            return bytes(node["size"])
        if kind in ("enum", "array", "map"):
            return b"\0"
        if kind == "bytes" and node.get("logicalType") == "decimal":
            return b"\x02\0"  # one byte, zero (an empty decimal is not one)
        return _PRIMITIVE_ZERO[kind]


def _logical(node: dict, kind: str) -> dict | None:
    """The logical type attributes to keep, as the reference reads them, or None."""
    logical = node.get("logicalType")
    if (logical, kind) in reference.TEMPORAL:
        return {"type": kind, "logicalType": logical}
    if logical == "decimal" and kind in ("bytes", "fixed"):
        precision, scale = node.get("precision"), node.get("scale", 0)
        if (isinstance(precision, int) and isinstance(scale, int)
                and 0 <= scale <= precision and 0 < precision <= reference.MAX_DECIMAL_PRECISION):
            return {"type": kind, "logicalType": "decimal", "precision": precision, "scale": scale}
    return None


# --- container framing -----------------------------------------------------------------------


def _bytes(data: bytes) -> bytes:
    return _long(len(data)) + data


def _container_header(schema: dict, sync: bytes) -> bytes:
    meta = {b"avro.schema": json.dumps(schema).encode(), b"avro.codec": b"null"}
    entries = b"".join(_bytes(k) + _bytes(v) for k, v in meta.items())
    return b"Obj\x01" + _long(len(meta)) + entries + _long(0) + sync


def _read_block(data: bytes, rows: int) -> pa.RecordBatch:
    """The records of a one-block container file, which must hold `rows` records."""
    source = AvroSource([lambda: contextlib.nullcontext(io.BytesIO(data))], False, False)
    # One batch of exactly `rows` rows: asking for more when bytes are left over never returns.
    batch = pa.record_batch(next(iter(source.batch_iter(rows, None))))
    if batch.num_rows != rows:
        raise _Mismatch(f"{batch.num_rows} records decoded instead of {rows}")
    return batch


def _expect_all(column: pa.Array, value: bytes, count: int, what: str) -> None:
    """Check that every row of a fixed-size binary column is `value`."""
    size = len(value)
    data = column.buffers()[1]
    if column.offset or column.type != pa.binary(size) or data is None or data.size < size * count:
        raise _Mismatch(f"unexpected {what} column {column.type}")
    if data.to_pybytes()[: size * count] != value * count:
        raise _Mismatch(f"a record's {what} is not where the message framing puts it")


# --- native result → reference types ---------------------------------------------------------


def _convert(array: pa.Array, target: pa.DataType, token: str) -> pa.Array:
    """`array` as the reference builds it: type `target`, field names and nullability included."""
    if pa.types.is_union(array.type):
        return _from_union(array, target, token)
    if pa.types.is_null(target):
        return pa.nulls(len(array))
    mask = array.is_null() if array.null_count else None
    if pa.types.is_struct(target):
        children = [_convert(array.field(i), f.type, token) for i, f in enumerate(target)]
        return pa.StructArray.from_arrays(children, fields=list(target), mask=mask)
    if pa.types.is_map(target):
        _expect_unique_keys(array)
        items = _convert(array.items, target.item_type, token)
        return pa.MapArray.from_arrays(array.offsets, array.keys, items, type=target, mask=mask)
    if pa.types.is_list(target):
        values = _convert(array.values, target.value_type, token)
        return pa.ListArray.from_arrays(array.offsets, values, type=target, mask=mask)
    if pa.types.is_dictionary(array.type):  # enums
        array = array.dictionary_decode()
    if array.type != target:
        array = array.cast(target)  # zero-copy here: timestamp time zone, same-layout types
    if pa.types.is_decimal(target):
        array.validate(full=True)  # the native reader does not check precision; this does
    return array


def _expect_unique_keys(array: pa.MapArray) -> None:
    """The reference reads a map into a dict, which keeps one entry per key; this path keeps all."""
    if len(array.keys) < 2:
        return
    # As a list of keys: pyarrow's list kernels abort the process on a map array.
    keys = pa.ListArray.from_arrays(array.offsets, array.keys)
    pairs = pa.table({"map": pc.list_parent_indices(keys), "key": pc.list_flatten(keys)})
    if pairs.group_by(["map", "key"]).aggregate([]).num_rows != pairs.num_rows:
        raise _Mismatch("a map has the same key twice")


def _from_union(array: pa.UnionArray, target: pa.DataType, token: str) -> pa.Array:
    """A dense union as the reference maps it: the one value branch, or a struct of branches."""
    codes, offsets = array.type_codes, array.offsets
    values, null_code = [], None
    for i in range(array.type.num_fields):
        branch, code = array.type.field(i), array.type.type_codes[i]
        if branch.name.startswith(f"{token}Pad"):
            if pc.any(pc.equal(codes, code)).as_py():
                raise _Mismatch("union branch index out of range")
        elif pa.types.is_null(branch.type):
            null_code = code
        else:
            values.append((i, code))

    def branch_values(i: int, code: int, kind: pa.DataType) -> pa.Array:
        rows = pc.if_else(pc.equal(codes, code), offsets, pa.scalar(None, pa.int32()))
        return _convert(array.field(i), kind, token).take(rows)

    if not values:
        return pa.nulls(len(array), target)
    if len(values) == 1:
        return branch_values(*values[0], target)
    children = [branch_values(i, code, f.type) for (i, code), f in zip(values, target, strict=True)]
    mask = None if null_code is None else pc.equal(codes, null_code)
    return pa.StructArray.from_arrays(children, fields=list(target), mask=mask)


def _with_tombstones(table: pa.Table, messages: Sequence[bytes | None]) -> pa.Table:
    """`table` (one row per message that is not None) with an all-null row at each tombstone."""
    rows, next_row = [], 0
    for message in messages:
        if message is None:
            rows.append(None)
        else:
            rows.append(next_row)
            next_row += 1
    return table.take(pa.array(rows, pa.int32()))


def _reason(exc: BaseException) -> str:
    detail = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


_PLANS: PlanCache[_Plan] = PlanCache(_new_plan, (ConfigError, _Unsupported, _Mismatch), "decoding")
